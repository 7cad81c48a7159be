//! Links over real TCP sockets on loopback.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fogwire_identity::Keypair;
use fogwire_link::proto::{
    ChannelConfig, ChannelId, CloseCode, CloseSide, Config, HandshakeError, LinkIdentity,
    WINDOW_MIN,
};
use fogwire_link::{ChannelSendError, EstablishError, LinkHandle, connect, establish, spawn};
use tokio::net::TcpListener;

const CHAT: ChannelId = ChannelId(1);
const BULK: ChannelId = ChannelId(2);

fn identity(seed: u8) -> Arc<LinkIdentity> {
    Arc::new(LinkIdentity::generate(Arc::new(Keypair::from_seed(&[seed; 32]))).unwrap())
}

fn config() -> Arc<Config> {
    Arc::new(
        Config::default()
            .with_channel(ChannelConfig::new(CHAT))
            .with_channel(ChannelConfig::new(BULK).with_receive_window(WINDOW_MIN)),
    )
}

/// Links identity 1 (dialer) to identity 2 (listener) over loopback.
async fn linked_pair() -> (LinkHandle, LinkHandle) {
    let (dialer, listener_identity) = (identity(1), identity(2));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn({
        let listener_identity = listener_identity.clone();
        async move {
            let (stream, remote) = listener.accept().await.unwrap();
            establish(
                fogwire_link::LinkStream::Tcp(stream),
                remote,
                &listener_identity,
                config(),
            )
            .await
        }
    });
    let outbound = connect(addr, listener_identity.node_id(), &dialer, config())
        .await
        .unwrap();
    let inbound = accept.await.unwrap().unwrap();
    (spawn(outbound), spawn(inbound))
}

#[tokio::test]
async fn messages_flow_both_ways_and_close_carries_its_reason() {
    let (a, b) = linked_pair().await;
    assert_eq!(a.peer(), Keypair::from_seed(&[2; 32]).node_id());
    assert_eq!(b.peer(), Keypair::from_seed(&[1; 32]).node_id());
    let mut b_chat = b.take_receiver(CHAT).unwrap();
    let mut a_chat = a.take_receiver(CHAT).unwrap();
    for index in 0..1000u32 {
        a.sender(CHAT)
            .unwrap()
            .send(Bytes::from(index.to_be_bytes().to_vec()))
            .await
            .unwrap();
    }
    for index in 0..1000u32 {
        let message = b_chat.recv().await.unwrap();
        assert_eq!(message[..], index.to_be_bytes());
    }
    b.sender(CHAT)
        .unwrap()
        .send(Bytes::from_static(b"pong"))
        .await
        .unwrap();
    assert_eq!(&a_chat.recv().await.unwrap()[..], b"pong");

    let reason = a.close(CloseCode::OPERATOR, "maintenance").await;
    assert_eq!(reason.side, CloseSide::Local);
    let remote = b.closed().await;
    assert_eq!(remote.side, CloseSide::Remote);
    assert_eq!(remote.code, CloseCode::OPERATOR);
    assert_eq!(remote.message, "maintenance");
    // Receivers end, senders fail.
    assert_eq!(b_chat.recv().await, None);
    assert_eq!(
        a.sender(CHAT).unwrap().send(Bytes::new()).await,
        Err(ChannelSendError::Closed)
    );
    assert!(a.snapshot().bytes_out > 1000 * 4);
}

#[tokio::test]
async fn dialer_refuses_a_listener_with_another_identity() {
    let listener_identity = identity(2);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let (stream, remote) = listener.accept().await.unwrap();
        establish(
            fogwire_link::LinkStream::Tcp(stream),
            remote,
            &listener_identity,
            config(),
        )
        .await
    });
    let expected = Keypair::from_seed(&[3; 32]).node_id();
    let error = connect(addr, expected, &identity(1), config())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            EstablishError::Handshake(HandshakeError::PeerIdentityMismatch { .. })
        ),
        "{error}"
    );
    // The listener never learns who dialed: the dialer hung up after msg 2.
    let listener_error = accept.await.unwrap().unwrap_err();
    assert!(
        matches!(
            listener_error,
            EstablishError::Handshake(HandshakeError::Closed { messages: 2 })
        ),
        "{listener_error}"
    );
}

#[tokio::test]
async fn a_receiver_that_stops_reading_stalls_its_sender_without_buffering() {
    let (a, b) = linked_pair().await;
    let _b_bulk = b.take_receiver(BULK).unwrap(); // held, never read
    let sender = a.sender(BULK).unwrap();
    let chunk = Bytes::from(vec![0u8; 60_000]);
    let mut accepted = 0u64;
    let mut consecutive_full = 0;
    // Push until the sender has been refused for a good while.
    while consecutive_full < 200 {
        match sender.try_send(chunk.clone()) {
            Ok(()) => {
                accepted += 1;
                consecutive_full = 0;
            }
            Err(ChannelSendError::Full) => {
                consecutive_full += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(error) => panic!("{error}"),
        }
    }
    // What got through to B is bounded by B's window on that channel.
    let received = b.snapshot().messages_in;
    assert!(
        received * (60_000 + 32) <= u64::from(WINDOW_MIN),
        "received {received}"
    );
    // Everything else waits in bounded queues at A: the core's send queue
    // and the channel queue, not an ever-growing buffer.
    assert!(accepted < 100, "accepted {accepted}");
}

#[tokio::test]
async fn a_dropped_receiver_does_not_stall_the_peer() {
    let (a, b) = linked_pair().await;
    drop(b.take_receiver(BULK).unwrap());
    let sender = a.sender(BULK).unwrap();
    for _ in 0..100 {
        sender.send(Bytes::from(vec![0u8; 60_000])).await.unwrap();
    }
    // All 100 (6 MB, far above the window) went through and were discarded.
    fogwire_testkit::wait::until("all 100 messages in at B", || {
        b.snapshot().messages_in >= 100
    })
    .await;
    assert_eq!(b.snapshot().messages_in, 100);
}

#[tokio::test]
async fn a_dialer_solves_the_puzzle_a_listener_under_load_asks_and_links() {
    use fogwire_link::establish_asking;
    use fogwire_link::proto::puzzle::{Puzzle, RETRY_LEN};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener_identity = identity(2);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let puzzle = Puzzle {
        challenge: [5; 16],
        bits: 12,
    };
    let accept = tokio::spawn({
        let listener_identity = listener_identity.clone();
        async move {
            let mut results = Vec::new();
            for _ in 0..2 {
                let (stream, remote) = listener.accept().await.unwrap();
                let asked = Some(puzzle);
                results.push(
                    establish_asking(
                        fogwire_link::LinkStream::Tcp(stream),
                        remote,
                        &listener_identity,
                        config(),
                        asked,
                    )
                    .await,
                );
            }
            results
        }
    });
    // A fogwire dialer solves it without being told and links.
    let outbound = connect(addr, listener_identity.node_id(), &identity(1), config())
        .await
        .unwrap();
    // A flooder replaying a first message gets the RETRY and nothing more:
    // the listener spent no X25519 on it.
    let mut flooder = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut handshake = fogwire_link::proto::Handshake::initiator(
        &identity(3),
        config(),
        listener_identity.node_id(),
        std::time::Instant::now(),
    )
    .unwrap();
    let mut first = Vec::new();
    handshake.take_transmit(&mut first);
    flooder.write_all(&first).await.unwrap();
    let mut retry = vec![0u8; 2 + RETRY_LEN];
    flooder.read_exact(&mut retry).await.unwrap();
    assert_eq!(Puzzle::decode_retry(&retry[2..]), Some(Ok(puzzle)));
    // Sending the same first message again is refused, and the connection closed.
    flooder.write_all(&first).await.unwrap();
    let mut rest = Vec::new();
    flooder.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "no message 2 for an unsolved puzzle");
    let inbound = accept.await.unwrap();
    assert!(inbound[0].is_ok(), "{:?}", inbound[0].as_ref().err());
    assert!(
        matches!(
            inbound[1],
            Err(EstablishError::Handshake(HandshakeError::PuzzleUnsolved))
        ),
        "{:?}",
        inbound[1].as_ref().err()
    );
    let link = spawn(outbound);
    assert_eq!(link.peer(), listener_identity.node_id());
}

#[tokio::test]
async fn a_probe_proves_who_answers_and_leaves_the_listener_without_a_link() {
    let (dialer, listener_identity) = (identity(1), identity(2));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = |listener: TcpListener| {
        let listener_identity = listener_identity.clone();
        tokio::spawn(async move {
            let (stream, remote) = listener.accept().await.unwrap();
            (
                establish(
                    fogwire_link::LinkStream::Tcp(stream),
                    remote,
                    &listener_identity,
                    config(),
                )
                .await,
                listener,
            )
        })
    };
    // The right node answers: proven, and the listener gets no link (its
    // handshake ends after message 2, a hang-up that is nothing to warn of).
    let accept = serve(listener);
    fogwire_link::probe(addr, listener_identity.node_id(), &dialer, config())
        .await
        .unwrap();
    let (result, listener) = accept.await.unwrap();
    let error = result.unwrap_err();
    assert_eq!(error.reason(), fogwire_link::HUNG_UP, "{error}");
    // Another node answers there.
    let accept = serve(listener);
    let stranger = identity(3).node_id();
    let wrong = fogwire_link::probe(addr, stranger, &dialer, config()).await;
    assert!(
        matches!(
            wrong,
            Err(EstablishError::Handshake(
                HandshakeError::PeerIdentityMismatch { .. }
            ))
        ),
        "{wrong:?}"
    );
    let (_, listener) = accept.await.unwrap();
    // Nothing listens there.
    drop(listener);
    let nobody = fogwire_link::probe(addr, listener_identity.node_id(), &dialer, config()).await;
    assert!(
        matches!(nobody, Err(EstablishError::Connect { .. })),
        "{nobody:?}"
    );
}
