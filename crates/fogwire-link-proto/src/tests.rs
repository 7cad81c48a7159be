//! Deterministic tests of handshake and link, two endpoints in memory with
//! virtual time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fogwire_identity::Keypair;
use fogwire_testkit::time::{Endpoint, epoch};
use proptest::prelude::*;

use crate::*;

const CONTROL: ChannelId = ChannelId(1);
const BULK: ChannelId = ChannelId(2);
/// A channel open to sealed bodies, like routing data.
const SEALED: ChannelId = ChannelId(3);

fn identity(seed: u8) -> LinkIdentity {
    LinkIdentity::generate(Arc::new(Keypair::from_seed(&[seed; 32]))).unwrap()
}

fn config() -> Arc<Config> {
    Arc::new(
        Config::default()
            .with_channel(ChannelConfig::new(CONTROL))
            .with_channel(ChannelConfig::new(BULK).with_receive_window(WINDOW_MIN))
            .with_channel(ChannelConfig::new(SEALED).with_sealed_bodies()),
    )
}

/// Runs a handshake between two fresh identities and returns the links.
fn handshake_pair(now: Instant) -> (Link, Link) {
    let (alice, bob) = (identity(1), identity(2));
    let initiator = Handshake::initiator(&alice, config(), bob.node_id(), now).unwrap();
    let responder = Handshake::responder(&bob, config(), now).unwrap();
    handshake_in_memory(initiator, responder, now).unwrap()
}

/// Two links joined by in-memory pipes, on virtual time.
type Pair = fogwire_testkit::time::Pair<Link, Link>;

impl Endpoint for Link {
    fn receive(&mut self, bytes: &[u8], now: Instant) {
        self.handle_input(now, bytes);
    }

    fn transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        let mut buffer = vec![0u8; 4 * (TRANSPORT_RECORD_LEN_MAX)];
        let sent = self.poll_transmit(now, &mut buffer);
        buffer.truncate(sent);
        (sent > 0).then_some(buffer)
    }

    fn timeout(&mut self, now: Instant) {
        self.handle_timeout(now);
    }
}

fn pair() -> Pair {
    let now = epoch();
    let (a, b) = handshake_pair(now);
    Pair::at(now, a, b)
}

fn events(link: &mut Link) -> Vec<Event> {
    std::iter::from_fn(|| link.poll_event()).collect()
}

fn messages(link: &mut Link, channel: ChannelId) -> Vec<Bytes> {
    events(link)
        .into_iter()
        .filter_map(|event| match event {
            Event::Message { channel: c, data } if c == channel => Some(data),
            _ => None,
        })
        .collect()
}

fn closed_reason(link: &mut Link) -> CloseReason {
    events(link)
        .into_iter()
        .find_map(|event| match event {
            Event::Closed(reason) => Some(reason),
            _ => None,
        })
        .expect("link reported no close")
}

// ----- handshake -----

#[test]
fn handshake_authenticates_both_sides_and_exchanges_channels() {
    let (a, b) = handshake_pair(epoch());
    assert_eq!(a.peer(), Keypair::from_seed(&[2; 32]).node_id());
    assert_eq!(b.peer(), Keypair::from_seed(&[1; 32]).node_id());
    assert_eq!(
        a.peer_channels().collect::<Vec<_>>(),
        vec![CONTROL, BULK, SEALED]
    );
}

#[test]
fn dialer_fails_closed_on_unexpected_identity_before_revealing_itself() {
    let now = epoch();
    let (alice, bob, carol) = (identity(1), identity(2), identity(3));
    let mut initiator = Handshake::initiator(&alice, config(), carol.node_id(), now).unwrap();
    let mut responder = Handshake::responder(&bob, config(), now).unwrap();
    let mut wire = Vec::new();
    initiator.take_transmit(&mut wire);
    responder.handle_input(&wire).unwrap();
    wire.clear();
    responder.take_transmit(&mut wire);
    let error = initiator.handle_input(&wire).unwrap_err();
    assert_eq!(
        error,
        HandshakeError::PeerIdentityMismatch {
            expected: carol.node_id(),
            found: bob.node_id(),
        }
    );
    assert_eq!(error.reason(), "identity_mismatch");
    assert!(!initiator.has_transmit(), "message 3 must not be sent");
}

#[test]
fn a_certificate_for_another_static_key_is_refused() {
    let now = epoch();
    let (alice, bob) = (identity(1), identity(2));
    // Bob presents a certificate made for a different Noise static key: the
    // identity is real but did not vouch for the key Noise authenticated.
    let impostor = identity(2);
    let mut initiator = Handshake::initiator(&alice, config(), bob.node_id(), now).unwrap();
    let mut responder = Handshake::responder(&bob, config(), now).unwrap();
    responder.local_payload = HandshakePayload {
        identity: bob.node_id(),
        certificate: impostor.certificate,
        channels: vec![],
    }
    .encode();
    let mut wire = Vec::new();
    initiator.take_transmit(&mut wire);
    responder.handle_input(&wire).unwrap();
    wire.clear();
    responder.take_transmit(&mut wire);
    assert_eq!(
        initiator.handle_input(&wire),
        Err(HandshakeError::BadIdentitySignature)
    );
}

#[test]
fn connecting_to_oneself_is_refused() {
    let now = epoch();
    let alice = identity(1);
    let mut initiator = Handshake::initiator(&alice, config(), alice.node_id(), now).unwrap();
    let mut responder = Handshake::responder(&alice, config(), now).unwrap();
    let mut wire = Vec::new();
    initiator.take_transmit(&mut wire);
    responder.handle_input(&wire).unwrap();
    wire.clear();
    responder.take_transmit(&mut wire);
    assert_eq!(
        initiator.handle_input(&wire),
        Err(HandshakeError::SelfConnection)
    );
}

#[test]
fn handshake_times_out_on_virtual_time() {
    let now = epoch();
    let mut responder = Handshake::responder(&identity(2), config(), now).unwrap();
    assert_eq!(
        responder.handle_timeout(now + Duration::from_secs(9)),
        Ok(())
    );
    assert_eq!(
        responder.handle_timeout(responder.deadline()),
        Err(HandshakeError::Timeout { timeout_ms: 10_000 })
    );
}

#[test]
fn truncated_first_message_waits_then_reports_the_close() {
    let now = epoch();
    let bob = identity(2);
    let mut initiator = Handshake::initiator(&identity(1), config(), bob.node_id(), now).unwrap();
    let mut responder = Handshake::responder(&bob, config(), now).unwrap();
    let mut wire = Vec::new();
    initiator.take_transmit(&mut wire);
    responder.handle_input(&wire[..wire.len() / 2]).unwrap();
    assert!(!responder.has_transmit());
    assert_eq!(
        responder.handle_eof(),
        HandshakeError::Closed { messages: 0 }
    );
}

#[test]
fn another_protocol_is_named_instead_of_an_overlong_record() {
    for (first_bytes, protocol) in [
        (&b"HTTP/1.1 400 Bad Request\r\n"[..], "HTTP"),
        (b"GET / HTTP/1.1\r\n", "HTTP"),
        (b"SSH-2.0-OpenSSH_9.6\r\n", "SSH"),
        (&[0x16, 0x03, 0x01, 0x02, 0x00], "TLS"),
    ] {
        let mut initiator =
            Handshake::initiator(&identity(1), config(), identity(2).node_id(), epoch()).unwrap();
        assert_eq!(
            initiator.handle_input(first_bytes),
            Err(HandshakeError::OtherProtocol { protocol }),
            "{protocol}"
        );
    }
}

#[test]
fn an_overlong_handshake_record_is_refused_from_its_length() {
    let mut responder = Handshake::responder(&identity(2), config(), epoch()).unwrap();
    assert_eq!(
        responder.handle_input(&[0xff, 0xff]),
        Err(HandshakeError::RecordTooLong {
            len: 65_535,
            max: HANDSHAKE_RECORD_LEN_MAX
        })
    );
}

#[test]
fn another_protocol_version_is_refused() {
    let now = epoch();
    let bob = identity(2);
    let mut responder = Handshake::responder(&bob, config(), now).unwrap();
    // A first message from a future version: e followed by version byte 3.
    // (Version 1, whose records had no clear bodies, is refused the same way.)
    let mut noise = snow::Builder::new(NOISE_PARAMS.parse().unwrap())
        .prologue(PROLOGUE)
        .unwrap()
        .local_private_key(&[7; 32])
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut message = [0u8; 64];
    let len = noise.write_message(&[3], &mut message).unwrap();
    let mut wire = (len as u16).to_be_bytes().to_vec();
    wire.extend_from_slice(&message[..len]);
    assert_eq!(
        responder.handle_input(&wire),
        Err(HandshakeError::UnsupportedVersion { version: 3 })
    );
}

// ----- the puzzle a listener under load asks -----

fn demanding(bits: u8, now: Instant) -> (Handshake, Handshake, puzzle::Puzzle) {
    let (alice, bob) = (identity(1), identity(2));
    let initiator = Handshake::initiator(&alice, config(), bob.node_id(), now).unwrap();
    let mut responder = Handshake::responder(&bob, config(), now).unwrap();
    let puzzle = puzzle::Puzzle {
        challenge: [9; puzzle::CHALLENGE_LEN],
        bits,
    };
    responder.demand_puzzle(puzzle);
    (initiator, responder, puzzle)
}

/// Passes what `from` has to send to `to`.
fn pass(from: &mut Handshake, to: &mut Handshake) -> Result<Vec<u8>, HandshakeError> {
    let mut wire = Vec::new();
    from.take_transmit(&mut wire);
    to.handle_input(&wire)?;
    Ok(wire)
}

#[test]
fn a_listener_under_load_answers_a_retry_and_links_once_the_puzzle_is_solved() {
    let now = epoch();
    let (mut initiator, mut responder, puzzle) = demanding(10, now);
    pass(&mut initiator, &mut responder).unwrap();
    // The answer is the RETRY record, nothing else: 2 + 21 bytes.
    let retry = pass(&mut responder, &mut initiator).unwrap();
    assert_eq!(retry.len(), 2 + puzzle::RETRY_LEN);
    assert_eq!(&retry[2..6], puzzle::RETRY_MAGIC);
    assert_eq!(initiator.puzzle(), Some(puzzle));
    assert!(
        !initiator.has_transmit(),
        "nothing is sent before the puzzle is solved"
    );
    let nonce = puzzle.solve().unwrap();
    initiator
        .answer_puzzle(nonce, fogwire_env::NoiseResolver::os())
        .unwrap();
    // The new first message carries the solution: 32 + 25 bytes.
    let first = pass(&mut initiator, &mut responder).unwrap();
    assert_eq!(first.len(), 2 + 32 + puzzle::SOLUTION_PAYLOAD_LEN);
    pass(&mut responder, &mut initiator).unwrap();
    pass(&mut initiator, &mut responder).unwrap();
    assert!(initiator.is_finished() && responder.is_finished());
    let (a, b) = (
        initiator.into_link(now).unwrap(),
        responder.into_link(now).unwrap(),
    );
    assert_eq!(a.peer(), identity(2).node_id());
    let mut pair = Pair::at(now, a, b);
    pair.a
        .send(CONTROL, Bytes::from_static(b"after the puzzle"))
        .unwrap();
    pair.pump();
    assert_eq!(
        messages(&mut pair.b, CONTROL),
        vec![Bytes::from_static(b"after the puzzle")]
    );
}

#[test]
fn a_first_message_after_the_retry_that_does_not_solve_the_puzzle_is_refused() {
    let now = epoch();
    // Unsolved again: the dialer ignored the RETRY.
    let (mut initiator, mut responder, _) = demanding(10, now);
    let first = pass(&mut initiator, &mut responder).unwrap();
    assert!(responder.has_transmit());
    assert_eq!(
        responder.handle_input(&first),
        Err(HandshakeError::PuzzleUnsolved)
    );
    // A wrong nonce.
    let (mut initiator, mut responder, puzzle) = demanding(10, now);
    pass(&mut initiator, &mut responder).unwrap();
    pass(&mut responder, &mut initiator).unwrap();
    let wrong = (0..).find(|nonce| !puzzle.check(*nonce)).unwrap();
    initiator
        .answer_puzzle(wrong, fogwire_env::NoiseResolver::os())
        .unwrap();
    assert_eq!(
        pass(&mut initiator, &mut responder),
        Err(HandshakeError::PuzzleUnsolved)
    );
    // Another connection's challenge.
    let (mut initiator, mut responder, puzzle) = demanding(10, now);
    pass(&mut initiator, &mut responder).unwrap();
    pass(&mut responder, &mut initiator).unwrap();
    let elsewhere = puzzle::Puzzle {
        challenge: [1; puzzle::CHALLENGE_LEN],
        ..puzzle
    };
    let mut stale = initiator.puzzle().unwrap();
    stale.challenge = elsewhere.challenge;
    let nonce = elsewhere.solve().unwrap();
    initiator
        .answer_puzzle(nonce, fogwire_env::NoiseResolver::os())
        .unwrap();
    let mut wire = Vec::new();
    initiator.take_transmit(&mut wire);
    // Replace the echoed challenge with the other connection's.
    let at = 2 + 32 + 1;
    wire[at..at + puzzle::CHALLENGE_LEN].copy_from_slice(&stale.challenge);
    assert_eq!(
        responder.handle_input(&wire),
        Err(HandshakeError::PuzzleUnsolved)
    );
}

#[test]
fn a_dialer_refuses_a_puzzle_too_hard_or_a_second_retry() {
    let now = epoch();
    let (mut initiator, mut responder, _) = demanding(puzzle::BITS_ACCEPTED_MAX + 1, now);
    pass(&mut initiator, &mut responder).unwrap();
    assert_eq!(
        pass(&mut responder, &mut initiator),
        Err(HandshakeError::PuzzleTooHard {
            bits: puzzle::BITS_ACCEPTED_MAX + 1,
            max: puzzle::BITS_ACCEPTED_MAX,
        })
    );
    let (mut initiator, mut responder, puzzle) = demanding(4, now);
    pass(&mut initiator, &mut responder).unwrap();
    let retry = pass(&mut responder, &mut initiator).unwrap();
    initiator
        .answer_puzzle(puzzle.solve().unwrap(), fogwire_env::NoiseResolver::os())
        .unwrap();
    assert_eq!(
        initiator.handle_input(&retry),
        Err(HandshakeError::MalformedPayload {
            detail: "a second RETRY"
        })
    );
}

#[test]
fn a_solution_nobody_asked_for_is_refused() {
    let now = epoch();
    let (mut initiator, mut demanding_responder, _) = demanding(4, now);
    pass(&mut initiator, &mut demanding_responder).unwrap();
    pass(&mut demanding_responder, &mut initiator).unwrap();
    let nonce = initiator.puzzle().unwrap().solve().unwrap();
    initiator
        .answer_puzzle(nonce, fogwire_env::NoiseResolver::os())
        .unwrap();
    let mut relaxed = Handshake::responder(&identity(2), config(), now).unwrap();
    assert_eq!(
        pass(&mut initiator, &mut relaxed),
        Err(HandshakeError::MalformedPayload {
            detail: "a puzzle's solution, but no puzzle was asked"
        })
    );
}

proptest! {
    #[test]
    fn random_bytes_never_complete_a_handshake_or_panic(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..6)
    ) {
        let now = epoch();
        let mut responder = Handshake::responder(&identity(2), config(), now).unwrap();
        for chunk in chunks {
            if responder.handle_input(&chunk).is_err() {
                break;
            }
            let mut sink = Vec::new();
            responder.take_transmit(&mut sink);
        }
        prop_assert!(!responder.is_finished());
    }
}

// ----- data, channels, flow control -----

#[test]
fn messages_arrive_in_order_on_each_channel() {
    let mut pair = pair();
    for index in 0..100u32 {
        pair.a
            .send(CONTROL, Bytes::from(index.to_be_bytes().to_vec()))
            .unwrap();
    }
    pair.a.send(BULK, Bytes::from_static(b"bulk")).unwrap();
    pair.pump();
    let all = events(&mut pair.b);
    let control: Vec<u32> = all
        .iter()
        .filter_map(|event| match event {
            Event::Message { channel, data } if *channel == CONTROL => {
                Some(u32::from_be_bytes(data[..].try_into().unwrap()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(control, (0..100).collect::<Vec<_>>());
    assert!(all.contains(&Event::Message {
        channel: BULK,
        data: Bytes::from_static(b"bulk")
    }));
    let stats = pair.b.stats();
    assert_eq!(stats.messages_in, 101);
    assert_eq!(pair.a.stats().bytes_out, stats.bytes_in);
}

#[test]
fn empty_and_largest_messages_are_carried_and_larger_ones_refused() {
    let mut pair = pair();
    pair.a.send(CONTROL, Bytes::new()).unwrap();
    pair.a
        .send(CONTROL, Bytes::from(vec![0xab; MESSAGE_LEN_MAX]))
        .unwrap();
    assert_eq!(
        pair.a
            .send(CONTROL, Bytes::from(vec![0; MESSAGE_LEN_MAX + 1])),
        Err(SendError::TooLong {
            len: MESSAGE_LEN_MAX + 1
        })
    );
    pair.pump();
    let received = messages(&mut pair.b, CONTROL);
    assert_eq!(received.len(), 2);
    assert!(received[0].is_empty());
    assert_eq!(received[1].len(), MESSAGE_LEN_MAX);
}

#[test]
fn a_sender_stops_at_the_window_and_resumes_when_the_receiver_consumes() {
    let mut pair = pair();
    let message = Bytes::from(vec![1u8; 16 * 1024]);
    let mut queued = 0;
    // Queue far more than the window; keep the queue topped up.
    let mut delivered = Vec::new();
    for _ in 0..10 {
        while pair.a.send(BULK, message.clone()).is_ok() {
            queued += 1;
        }
        pair.pump();
        delivered.extend(messages(&mut pair.b, BULK));
    }
    // Nothing consumed: at most one window's worth arrived.
    let window_messages = (WINDOW_MIN / message_cost(message.len())) as usize;
    assert_eq!(delivered.len(), window_messages);
    assert!(queued > window_messages);
    // Consuming returns credit and the flow resumes.
    pair.b
        .consumed(BULK, message_cost(message.len()) * delivered.len() as u32);
    pair.pump();
    let more = messages(&mut pair.b, BULK);
    assert_eq!(more.len(), window_messages);
}

#[test]
fn a_bulk_channel_cannot_starve_another_channel() {
    let mut pair = pair();
    let chunk = Bytes::from(vec![0u8; MESSAGE_LEN_MAX]);
    // Bulk traffic consumed as fast as it arrives, so it never stops.
    for round in 0..20 {
        while pair.a.send(BULK, chunk.clone()).is_ok() {}
        if round == 10 {
            pair.a.send(CONTROL, Bytes::from_static(b"urgent")).unwrap();
        }
        // One record at a time, to count how many frames pass first.
        let mut one_record = vec![0u8; TRANSPORT_RECORD_LEN_MAX];
        let mut frames_before_control = 0;
        loop {
            let sent = pair.a.poll_transmit(pair.now, &mut one_record);
            if sent == 0 {
                break;
            }
            pair.b.handle_input(pair.now, &one_record[..sent]);
            let got = events(&mut pair.b);
            let bulk_bytes: u32 = got
                .iter()
                .map(|event| match event {
                    Event::Message { channel, data } if *channel == BULK => {
                        message_cost(data.len())
                    }
                    _ => 0,
                })
                .sum();
            pair.b.consumed(BULK, bulk_bytes);
            if let Some(returned) = pair.b.transmit(pair.now) {
                pair.a.handle_input(pair.now, &returned);
            }
            if got
                .iter()
                .any(|event| matches!(event, Event::Message { channel, .. } if *channel == CONTROL))
            {
                // Round-robin: at most one bulk frame went ahead of it.
                assert!(frames_before_control <= 1, "{frames_before_control}");
                return;
            }
            if round >= 10 {
                frames_before_control += 1;
            }
        }
    }
    panic!("the control message never arrived");
}

#[test]
fn queues_are_bounded() {
    let mut pair = pair();
    let limit = ChannelConfig::SEND_QUEUE_BYTES_MAX_DEFAULT;
    let message = Bytes::from(vec![0u8; 1000]);
    let mut accepted = 0;
    while pair.a.send(CONTROL, message.clone()).is_ok() {
        accepted += 1;
    }
    assert_eq!(accepted, limit.div_ceil(1000));
    assert!(!pair.a.can_send(CONTROL));
    assert_eq!(
        pair.a.send(CONTROL, message),
        Err(SendError::QueueFull { channel: CONTROL })
    );
}

#[test]
fn sending_on_a_channel_the_peer_does_not_serve_is_refused_locally() {
    let mut pair = pair();
    assert_eq!(
        pair.a.send(ChannelId(99), Bytes::new()),
        Err(SendError::UnknownChannel {
            channel: ChannelId(99)
        })
    );
}

// ----- protocol violations -----

#[test]
fn a_frame_on_an_unknown_channel_closes_the_link_with_the_reason() {
    let mut pair = pair();
    // Make A believe B serves channel 99, as a buggy or hostile peer would.
    link::tests_support::add_send_channel(&mut pair.a, ChannelId(99));
    pair.a
        .send(ChannelId(99), Bytes::from_static(b"?"))
        .unwrap();
    pair.pump();
    let reason = closed_reason(&mut pair.b);
    assert_eq!(reason.side, CloseSide::Local);
    assert_eq!(reason.code, CloseCode::PROTOCOL_ERROR);
    assert!(reason.message.contains("unknown") || reason.message.contains("did not announce"));
    // A is told why.
    let told = closed_reason(&mut pair.a);
    assert_eq!(told.side, CloseSide::Remote);
    assert_eq!(told.message, reason.message);
    assert!(pair.a.is_closed() && pair.b.is_closed());
}

#[test]
fn overrunning_the_window_closes_the_link() {
    let mut pair = pair();
    link::tests_support::grant_credit(&mut pair.a, BULK, WINDOW_MAX);
    let chunk = Bytes::from(vec![0u8; MESSAGE_LEN_MAX]);
    for _ in 0..3 {
        while pair.a.send(BULK, chunk.clone()).is_ok() {}
        pair.pump();
    }
    let reason = closed_reason(&mut pair.b);
    assert_eq!(reason.code, CloseCode::PROTOCOL_ERROR);
    assert!(
        reason.message.contains("flow-control"),
        "{}",
        reason.message
    );
}

#[test]
fn a_corrupted_record_closes_the_link() {
    let mut pair = pair();
    pair.a.send(CONTROL, Bytes::from_static(b"hello")).unwrap();
    let mut record = pair.a.transmit(pair.now).unwrap();
    *record.last_mut().unwrap() ^= 0x01;
    pair.b.handle_input(pair.now, &record);
    let reason = closed_reason(&mut pair.b);
    assert_eq!(reason.message, "record failed to decrypt");
    assert!(messages(&mut pair.b, CONTROL).is_empty());
}

#[test]
fn input_after_close_is_discarded() {
    let mut pair = pair();
    pair.b.close(CloseCode::OPERATOR, "bye");
    pair.pump();
    pair.b.handle_input(pair.now, &[0u8; 10_000]);
    assert_eq!(pair.b.input_buffer().len(), 0);
}

// ----- keepalive, idle, close -----

#[test]
fn keepalives_measure_round_trip_time() {
    let mut pair = pair();
    assert_eq!(pair.a.rtt(), None);
    pair.advance(Duration::from_secs(15));
    let ping = pair.a.transmit(pair.now).unwrap();
    pair.now += Duration::from_millis(30);
    pair.b.handle_input(pair.now, &ping);
    let pong = pair.b.transmit(pair.now).unwrap();
    pair.a.handle_input(pair.now, &pong);
    assert_eq!(pair.a.rtt(), Some(Duration::from_millis(30)));
}

#[test]
fn a_silent_peer_is_dropped_after_the_idle_timeout() {
    let mut pair = pair();
    // B keeps answering while time passes in keepalive steps: no timeout.
    for _ in 0..10 {
        pair.advance(Duration::from_secs(15));
        pair.pump();
    }
    assert!(events(&mut pair.a).is_empty());
    // Now B goes silent: A's pings go unanswered.
    for _ in 0..3 {
        pair.advance(Duration::from_secs(15));
        let _ = pair.a.transmit(pair.now);
    }
    let reason = closed_reason(&mut pair.a);
    assert_eq!(reason.code, CloseCode::IDLE_TIMEOUT);
    assert_eq!(reason.side, CloseSide::Local);
}

#[test]
fn close_is_sent_with_its_reason_and_drops_queued_data() {
    let mut pair = pair();
    pair.a.send(CONTROL, Bytes::from_static(b"late")).unwrap();
    pair.a.close(CloseCode::SHUTDOWN, "node shutting down");
    assert_eq!(pair.a.send(CONTROL, Bytes::new()), Err(SendError::Closed));
    pair.pump();
    assert!(pair.a.is_closed());
    let all = events(&mut pair.b);
    assert_eq!(
        all,
        vec![Event::Closed(CloseReason {
            side: CloseSide::Remote,
            code: CloseCode::SHUTDOWN,
            message: "node shutting down".into()
        })]
    );
    assert_eq!(pair.a.poll_timeout(), None);
}

#[test]
fn eof_without_close_is_a_transport_close() {
    let mut pair = pair();
    pair.b.handle_eof();
    let reason = closed_reason(&mut pair.b);
    assert_eq!(reason.side, CloseSide::Transport);
    assert!(pair.b.is_closed());
}

proptest! {
    #[test]
    fn random_records_after_the_handshake_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2000)
    ) {
        let mut pair = pair();
        pair.b.handle_input(pair.now, &bytes);
        let _ = events(&mut pair.b);
        let _ = pair.b.transmit(pair.now);
    }
}

// ----- sealed bodies -----

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// `a` sends `message` on `channel`; returns the bytes it put on the wire.
fn wire_of(a: &mut Link, channel: ChannelId, message: Message) -> Vec<u8> {
    a.send(channel, message).unwrap();
    let mut wire = vec![0u8; 4 * TRANSPORT_RECORD_LEN_MAX];
    let len = a.poll_transmit(epoch(), &mut wire);
    wire.truncate(len);
    wire
}

/// Asserts that `link` delivered nothing and closed; returns why.
fn refused(link: &mut Link) -> CloseReason {
    let events = events(link);
    assert!(
        !events
            .iter()
            .any(|event| matches!(event, Event::Message { .. })),
        "{events:?}"
    );
    events
        .into_iter()
        .find_map(|event| match event {
            Event::Closed(reason) => Some(reason),
            Event::Message { .. } => None,
        })
        .expect("link reported no close")
}

fn sealed_message() -> (Message, Bytes) {
    let body = Bytes::from(b"end-to-end ciphertext ".repeat(64));
    let whole = Bytes::from([b"hdr".as_slice(), &body].concat());
    (Message::with_sealed_body(b"hdr", body), whole)
}

#[test]
fn a_sealed_body_crosses_in_the_clear_only_where_the_peer_opened_the_channel() {
    let (mut a, mut b) = handshake_pair(epoch());
    let (message, whole) = sealed_message();
    let wire = wire_of(&mut a, SEALED, message.clone());
    // The body is on the wire as it was given; the prefix is not.
    assert!(contains(&wire, &message.body()[..]));
    assert!(!contains(&wire, b"hdrend-to-end"));
    b.handle_input(epoch(), &wire);
    assert_eq!(messages(&mut b, SEALED), vec![whole.clone()]);
    // BULK is not open to sealed bodies: the link seals the body itself.
    let wire = wire_of(&mut a, BULK, message.clone());
    assert!(!contains(&wire, b"end-to-end"));
    b.handle_input(epoch(), &wire);
    assert_eq!(messages(&mut b, BULK), vec![whole]);
    assert!(!b.is_closed());
}

#[test]
fn the_link_vouches_for_a_sealed_message_s_prefix_and_lengths_not_its_body() {
    let (message, whole) = sealed_message();
    // An altered body byte is delivered: the end-to-end seal must catch it
    // (routing's session AEAD does).
    let (mut a, mut b) = handshake_pair(epoch());
    let mut wire = wire_of(&mut a, SEALED, message.clone());
    let last = wire.len() - 1;
    wire[last] ^= 1;
    b.handle_input(epoch(), &wire);
    let delivered = messages(&mut b, SEALED);
    assert_eq!(delivered.len(), 1);
    assert_ne!(delivered[0], whole);
    assert_eq!(delivered[0].len(), whole.len());
    // An altered clear length, or an altered prefix, ends the link.
    let (mut a, mut b) = handshake_pair(epoch());
    let mut wire = wire_of(&mut a, SEALED, message.clone());
    wire[2] ^= 1; // 256 bytes shorter
    b.handle_input(epoch(), &wire);
    assert!(refused(&mut b).message.contains("body length"));
    let (mut a, mut b) = handshake_pair(epoch());
    let mut wire = wire_of(&mut a, SEALED, message);
    wire[record::TRANSPORT_HEADER_LEN + frame::SEALED_DATA_HEADER_LEN] ^= 1;
    b.handle_input(epoch(), &wire);
    assert!(refused(&mut b).message.contains("decrypt"));
}

#[test]
fn a_clear_body_is_refused_where_it_was_not_allowed() {
    // SEALED_DATA on a channel this node did not open to sealed bodies.
    let (mut a, mut b) = handshake_pair(epoch());
    link::tests_support::open_to_sealed_bodies(&mut a, BULK);
    let wire = wire_of(&mut a, BULK, sealed_message().0);
    b.handle_input(epoch(), &wire);
    assert_eq!(
        refused(&mut b).message,
        ProtocolError::SealedBodyRefused { channel: BULK }.to_string()
    );
    // Clear bytes after a DATA frame.
    let (mut a, mut b) = handshake_pair(epoch());
    let mut wire = wire_of(&mut a, CONTROL, Message::from(b"plain".to_vec()));
    wire[3] = 1;
    wire.push(0);
    b.handle_input(epoch(), &wire);
    assert_eq!(
        refused(&mut b).message,
        ProtocolError::ClearBodyWithoutSealedData.to_string()
    );
}
