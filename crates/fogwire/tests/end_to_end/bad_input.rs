//! Hostile and broken peers against a real node process. Each case must end
//! with that one connection closed and a log line saying why, while the node
//! keeps serving its other links and its memory stays bounded.

use std::time::Duration;

use fogwire_identity::{Domain, Keypair};
use fogwire_link_proto::{HandshakePayload, NOISE_PARAMS, PROLOGUE, VERSION, frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{PATIENCE, TestNode, WatchPeer};

/// Settings for the target node: a short handshake timeout keeps the
/// stalled-handshake cases quick.
const TARGET_SETTINGS: &str = "handshake_timeout_ms = 1000";

/// Reads until the node closes the connection; returns what was read.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return received,
            Ok(Ok(read)) => received.extend_from_slice(&buffer[..read]),
            Err(_) => panic!("the node never closed the connection"),
        }
    }
}

fn record(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// A transport record (link.md §2) with no clear body.
fn transport_record(sealed: &[u8]) -> Vec<u8> {
    let mut out = (sealed.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(sealed);
    out
}

/// A peer written from docs/protocol/link.md with snow directly (not with
/// fogwire-link), so that it can then break the rules on purpose.
struct RawPeer {
    stream: TcpStream,
    transport: snow::TransportState,
}

impl RawPeer {
    /// Completes a handshake as the dialer. `forge_certificate` signs a
    /// different static key than the one used, as an impostor would.
    async fn handshake(target: &TestNode, forge_certificate: bool) -> Result<Self, TcpStream> {
        let params: snow::params::NoiseParams = NOISE_PARAMS.parse().unwrap();
        let static_keys = snow::Builder::new(params.clone())
            .generate_keypair()
            .unwrap();
        let mut noise = snow::Builder::new(params)
            .local_private_key(&static_keys.private)
            .unwrap()
            .prologue(PROLOGUE)
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut stream = TcpStream::connect(target.link_addr()).await.unwrap();
        let mut message = [0u8; 1024];
        let len = noise.write_message(&[VERSION], &mut message).unwrap();
        stream.write_all(&record(&message[..len])).await.unwrap();

        let mut prefix = [0u8; 2];
        stream.read_exact(&mut prefix).await.unwrap();
        let mut message2 = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        stream.read_exact(&mut message2).await.unwrap();
        let mut payload = [0u8; 1024];
        let len = noise.read_message(&message2, &mut payload).unwrap();
        let responder = HandshakePayload::decode(&payload[..len]).unwrap();
        assert_eq!(responder.identity, target.node_id());
        responder
            .verify(noise.get_remote_static().unwrap())
            .unwrap();

        let keypair = Keypair::generate().unwrap();
        let certified_key = if forge_certificate {
            vec![0x42; 32]
        } else {
            static_keys.public.clone()
        };
        let ours = HandshakePayload {
            identity: keypair.node_id(),
            certificate: keypair.sign(Domain::LINK_STATIC_KEY, &certified_key),
            channels: vec![],
        };
        let len = noise.write_message(&ours.encode(), &mut message).unwrap();
        stream.write_all(&record(&message[..len])).await.unwrap();
        if forge_certificate {
            return Err(stream);
        }
        Ok(Self {
            stream,
            transport: noise.into_transport_mode().unwrap(),
        })
    }

    async fn send_frame(&mut self, plaintext: &[u8]) {
        let mut ciphertext = vec![0u8; plaintext.len() + 16];
        let len = self
            .transport
            .write_message(plaintext, &mut ciphertext)
            .unwrap();
        self.stream
            .write_all(&transport_record(&ciphertext[..len]))
            .await
            .unwrap();
    }

    /// Reads records until the node closes; returns the reason of its CLOSE
    /// frame.
    async fn close_reason(mut self) -> String {
        let bytes = read_until_closed(&mut self.stream).await;
        let mut rest = &bytes[..];
        let mut reason = None;
        while rest.len() >= 4 {
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            let clear = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            let body = &rest[4..4 + len];
            rest = &rest[4 + len + clear..];
            let mut plaintext = vec![0u8; len];
            let plain_len = self.transport.read_message(body, &mut plaintext).unwrap();
            if plaintext[0] == frame::TYPE_CLOSE {
                reason = Some(String::from_utf8_lossy(&plaintext[3..plain_len]).into_owned());
            }
        }
        reason.expect("the node closed without a CLOSE frame")
    }
}

/// A node under test with a well-behaved peer linked to it.
async fn target() -> (TestNode, WatchPeer) {
    let node = TestNode::start(TARGET_SETTINGS);
    let watch = WatchPeer::link_to(&node).await;
    node.wait_for_log("link up", 1);
    (node, watch)
}

async fn after_attack(node: &mut TestNode, watch: &WatchPeer) {
    watch.assert_still_served().await;
    assert!(node.is_running(), "the node died");
    assert_eq!(node.status().links, 1, "the node lost its good link");
}

#[tokio::test]
async fn a_port_scan_is_logged_and_harmless() {
    let (mut node, watch) = target().await;
    for _ in 0..20 {
        drop(TcpStream::connect(node.link_addr()).await.unwrap());
    }
    node.wait_for_log(
        "peer closed the connection after 0 of 3 handshake messages",
        20,
    );
    after_attack(&mut node, &watch).await;
}

#[tokio::test]
async fn random_bytes_are_refused() {
    let (mut node, watch) = target().await;
    // A fixed xorshift stream: arbitrary bytes, the same on every run.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let garbage: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut stream = TcpStream::connect(node.link_addr()).await.unwrap();
    let _ = stream.write_all(&garbage).await;
    read_until_closed(&mut stream).await;
    node.wait_for_log("inbound connection closed", 1);
    let log = node.log();
    assert!(
        log.contains("reason=\"too_long\"") || log.contains("reason=\"noise\""),
        "{log}"
    );
    // Random bytes that do fit a first message fail in Noise instead.
    let mut stream = TcpStream::connect(node.link_addr()).await.unwrap();
    let mut small = record(&garbage[..33]);
    small.extend_from_slice(&record(&garbage[33..133]));
    let _ = stream.write_all(&small).await;
    read_until_closed(&mut stream).await;
    node.wait_for_log("inbound connection closed", 2);
    after_attack(&mut node, &watch).await;
}

#[tokio::test]
async fn a_truncated_handshake_times_out_or_is_reported_closed() {
    let (mut node, watch) = target().await;
    // Half of a first message, then silence: the handshake timeout ends it.
    let mut stalled = TcpStream::connect(node.link_addr()).await.unwrap();
    stalled
        .write_all(&[0, 33, 1, 2, 3, 4, 5, 6, 7, 8])
        .await
        .unwrap();
    read_until_closed(&mut stalled).await;
    node.wait_for_log("handshake not finished within 1000 ms", 1);
    // Half of a first message, then hanging up.
    let mut hung_up = TcpStream::connect(node.link_addr()).await.unwrap();
    hung_up.write_all(&[0, 33, 1, 2, 3]).await.unwrap();
    drop(hung_up);
    node.wait_for_log(
        "peer closed the connection after 0 of 3 handshake messages",
        1,
    );
    after_attack(&mut node, &watch).await;
}

#[tokio::test]
async fn a_peer_presenting_the_wrong_key_is_refused() {
    let (mut node, watch) = target().await;
    let Err(mut stream) = RawPeer::handshake(&node, true).await else {
        panic!("forged handshake was not forged");
    };
    read_until_closed(&mut stream).await;
    node.wait_for_log(
        "peer's link key is not signed by the identity it presents",
        1,
    );
    assert!(node.log().contains("reason=\"bad_signature\""));
    after_attack(&mut node, &watch).await;
}

#[tokio::test]
async fn oversized_frames_are_refused() {
    let (mut node, watch) = target().await;
    // During the handshake: a length prefix far above the handshake limit
    // is refused from its two bytes alone, before any body is buffered.
    let mut stream = TcpStream::connect(node.link_addr()).await.unwrap();
    stream.write_all(&[0xff, 0xff, 0, 0, 0]).await.unwrap();
    read_until_closed(&mut stream).await;
    node.wait_for_log(
        "handshake message of 65535 bytes exceeds the 1024-byte limit",
        1,
    );

    // After the handshake: a CLOSE frame longer than the protocol allows.
    let mut peer = RawPeer::handshake(&node, false).await.ok().unwrap();
    let mut oversized = vec![frame::TYPE_CLOSE, 0, 0];
    oversized.extend_from_slice(&[b'x'; 1000]);
    peer.send_frame(&oversized).await;
    assert_eq!(
        peer.close_reason().await,
        "malformed CLOSE frame: reason above 256 bytes"
    );
    node.wait_for_log("malformed CLOSE frame: reason above 256 bytes", 1);

    // And a PING with more bytes than a PING has.
    let mut peer = RawPeer::handshake(&node, false).await.ok().unwrap();
    let mut long_ping = vec![frame::TYPE_PING];
    long_ping.extend_from_slice(&[0; 100]);
    peer.send_frame(&long_ping).await;
    assert_eq!(
        peer.close_reason().await,
        "malformed PING frame: wrong length"
    );
    after_attack(&mut node, &watch).await;
}

#[tokio::test]
async fn a_frame_on_an_unknown_channel_is_refused() {
    let (mut node, watch) = target().await;
    let mut peer = RawPeer::handshake(&node, false).await.ok().unwrap();
    // The spec-built handshake worked: the node logged a link up for it.
    node.wait_for_log("link up", 2);
    peer.send_frame(&[frame::TYPE_DATA, 0x12, 0x34, b'h', b'i'])
        .await;
    let reason = peer.close_reason().await;
    assert_eq!(
        reason,
        "frame on channel 0x1234, which this node did not announce"
    );
    node.wait_for_log(
        "closed by us (protocol_error): frame on channel 0x1234, which this node did not announce",
        1,
    );
    after_attack(&mut node, &watch).await;
}

#[tokio::test]
async fn a_thousand_half_open_connections_are_bounded() {
    let (mut node, watch) = target().await;
    let rss_before = node.rss_kib();
    let log_before = node.log().lines().count();

    let target_addr = node.link_addr();
    let mut connections = Vec::new();
    for _ in 0..1000 {
        connections.push(tokio::spawn(async move {
            // Open from one address (not the node's own 127.0.0.1), send
            // nothing, and wait for the node to end it.
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
            let mut stream = socket.connect(target_addr).await.unwrap();
            read_until_closed(&mut stream).await;
        }));
    }
    // While they are open, the node holds at most its number of handshakes
    // in progress from one address, far below its total...
    for _ in 0..5 {
        assert!(node.status().pending_handshakes <= 8);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ...so a peer from another address still links in the middle of it.
    let newcomer = WatchPeer::link_to(&node).await;
    newcomer.assert_still_served().await;
    newcomer
        .link
        .close(fogwire_link::proto::CloseCode::NORMAL, "test over")
        .await;
    for connection in connections {
        connection.await.unwrap();
    }
    // Every one of the 1000 is accounted for in the log: the first of a
    // 10 s window each with its own line, the rest counted per address in
    // a summary when the window ends. So the log stays short.
    let accounted = || {
        let log = node.log();
        let lines: Vec<&str> = log.lines().skip(log_before).collect();
        let one_by_one = lines
            .iter()
            .filter(|line| {
                line.contains("refused connection")
                    || line.contains("handshake not finished within 1000 ms")
            })
            .count() as u64;
        let summarised: u64 = lines
            .iter()
            .filter_map(|line| {
                let rest = line.split("refused or failed ").nth(1)?;
                let (count, rest) = rest.split_once(' ')?;
                rest.starts_with("inbound connections from 127.0.0.3")
                    .then(|| count.parse::<u64>().ok())?
            })
            .sum();
        (one_by_one, summarised, lines.len())
    };
    crate::harness::wait_until("every connection accounted for in the log", || {
        let (one_by_one, summarised, _) = accounted();
        one_by_one + summarised >= 1000
    });
    let (one_by_one, summarised, lines) = accounted();
    assert!(one_by_one <= 2 * 32, "{one_by_one} lines one by one");
    assert!(summarised > 0);
    assert!(lines < 200, "the flood wrote {lines} log lines");
    assert!(node.log_lines("refused connection") > 0);
    crate::harness::wait_until("the newcomer's link to close", || node.status().links == 1);
    after_attack(&mut node, &watch).await;
    let growth_kib = node.rss_kib().saturating_sub(rss_before);
    assert!(growth_kib < 32 * 1024, "memory grew by {growth_kib} KiB");
}
