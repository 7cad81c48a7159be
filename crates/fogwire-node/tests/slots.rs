//! Link slots under attack, over real sockets: self-made identities from
//! one address get no more than their share, silent links give way to
//! newcomers, and a peer the node dials itself always gets a slot.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use fogwire_identity::Keypair;
use fogwire_link::LinkHandle;
use fogwire_link::proto::{CloseCode, Config as LinkConfig, LinkIdentity};
use fogwire_link::slots::SlotPolicy;
use fogwire_node::Node;
use fogwire_testkit::{nodes, wait};

/// A node with these slot rules.
async fn node_with(slots: SlotPolicy) -> Node {
    let mut options = nodes::options();
    options.limits.slots = slots;
    nodes::start(options).await
}

/// A link from a fresh, self-made identity that never sends a message.
async fn stranger(node: &Node) -> LinkHandle {
    let identity = LinkIdentity::generate(Arc::new(Keypair::generate().unwrap())).unwrap();
    let established = fogwire_link::connect(
        node.local_addr(),
        node.node_id(),
        &identity,
        Arc::new(LinkConfig::default()),
    )
    .await
    .unwrap();
    fogwire_link::spawn(established)
}

async fn closed_for_lack_of_room(link: &LinkHandle) -> bool {
    let reason = tokio::time::timeout(Duration::from_secs(30), link.closed())
        .await
        .expect("the link was neither kept nor closed");
    reason.code == CloseCode::LIMIT
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_its_share_of_links_and_no_more() {
    let node = node_with(SlotPolicy {
        max_links: 64,
        per_address: 4,
        grace: Duration::from_secs(3600),
    })
    .await;
    let mut kept = Vec::new();
    for _ in 0..4 {
        kept.push(stranger(&node).await);
    }
    wait::until("four strangers linked", || node.links().len() == 4).await;
    // The fifth and sixth from the same address are closed at once.
    for _ in 0..2 {
        let refused = stranger(&node).await;
        assert!(closed_for_lack_of_room(&refused).await);
    }
    assert_eq!(node.links().len(), 4);
    assert!(kept.iter().all(|link| !link.is_closed()));
    // A peer the node dials itself is the operator's: it gets a slot, from
    // the same address.
    let friend = nodes::node().await;
    node.connect(friend.peer_addr()).await.unwrap();
    assert_eq!(node.links().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_links_give_way_and_the_operators_peers_always_get_a_slot() {
    // No grace: a link that has sent nothing may lose its slot at once.
    let node = node_with(SlotPolicy {
        max_links: 3,
        per_address: 16,
        grace: Duration::ZERO,
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(stranger(&node).await);
    }
    wait::until("three strangers linked", || node.links().len() == 3).await;
    // The node is full: a newcomer takes the slot of a silent link.
    let newcomer = stranger(&node).await;
    let evicted = wait::until_some("a silent link evicted", || {
        silent.iter().position(LinkHandle::is_closed)
    })
    .await;
    assert!(closed_for_lack_of_room(&silent[evicted]).await);
    assert!(!newcomer.is_closed());
    assert_eq!(node.links().len(), 3);
    // A peer the node dials gets a slot too, and keeps it: strangers
    // cannot take it back.
    let friend = nodes::node().await;
    node.connect(friend.peer_addr()).await.unwrap();
    assert_eq!(node.links().len(), 3);
    for _ in 0..4 {
        let _ = stranger(&node).await;
    }
    wait::until("the strangers to churn", || {
        node.links().len() == 3 && node.link(&friend.node_id()).is_some()
    })
    .await;
    assert!(node.link(&friend.node_id()).is_some_and(|l| !l.is_closed()));
}

/// Whether the node has closed `stream` (end of stream or reset), without
/// waiting.
fn closed_by_node(stream: &std::net::TcpStream) -> bool {
    use std::io::Read;
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    match (&*stream).read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// A node with four handshake slots, to fill them cheaply.
async fn node_with_four_handshake_slots() -> Node {
    let mut options = nodes::options();
    options.limits.max_pending_handshakes = 4;
    nodes::start(options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_that_never_finish_get_less_time_as_slots_fill() {
    let node = node_with_four_handshake_slots().await;
    // Four connections that never send a byte: the first two get the whole
    // handshake timeout (10 s), the third half of it, the last a tenth.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(std::net::TcpStream::connect(node.local_addr()).unwrap());
        wait::until("the connection admitted", || {
            node.status().pending_handshakes == idle.len()
        })
        .await;
    }
    wait::until("the last idle connection closed", || {
        closed_by_node(&idle[3])
    })
    .await;
    // The first ones, with the whole timeout, are still waiting.
    assert!(!closed_by_node(&idle[0]));
    assert!(!closed_by_node(&idle[1]));
    // And an honest peer still links.
    let friend = nodes::node().await;
    friend.connect(node.peer_addr()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_handshake_slot_is_held_by_silent_sockets_a_peer_still_links() {
    // Bound proven: once every slot is taken, sockets that have sent
    // nothing hold none a newcomer needs: it takes the oldest one's slot
    // instead of being refused.
    let node = node_with_four_handshake_slots().await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(std::net::TcpStream::connect(node.local_addr()).unwrap());
    }
    wait::until("every slot held", || node.status().pending_handshakes == 4).await;
    let friend = nodes::node().await;
    friend
        .connect(node.peer_addr())
        .await
        .expect("a peer links although silent sockets held every slot");
    assert!(
        closed_by_node(&idle[0]),
        "the oldest silent socket kept its slot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_first_messages_gets_puzzles_and_a_peer_still_links() {
    // Bound proven: past PUZZLE_FREE_PER_SEC handshakes a second, a first
    // message is answered with a RETRY (a 23-byte record, no X25519)
    // rather than message 2; a fogwire peer dialing meanwhile solves the
    // puzzle and links.
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use fogwire_link::admission::PUZZLE_FREE_PER_SEC;
    use fogwire_link::proto::Handshake;
    use fogwire_link::proto::puzzle::RETRY_LEN;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let node = nodes::node().await;
    let addr = node.local_addr();
    let flooder = LinkIdentity::generate(Arc::new(Keypair::generate().unwrap())).unwrap();
    let mut first = Vec::new();
    Handshake::initiator(
        &flooder,
        Arc::new(LinkConfig::default()),
        node.node_id(),
        std::time::Instant::now(),
    )
    .unwrap()
    .take_transmit(&mut first);
    let first = Arc::new(first);
    let (retries, seconds, stop) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let started = std::time::Instant::now();
    let mut flood = Vec::new();
    for source in 2..10u8 {
        let (first, retries, seconds, stop) = (
            first.clone(),
            retries.clone(),
            seconds.clone(),
            stop.clone(),
        );
        flood.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(([127, 0, 0, source], 0).into()).unwrap();
                let Ok(mut stream) = socket.connect(addr).await else {
                    continue;
                };
                if stream.write_all(&first).await.is_err() {
                    continue;
                }
                let mut length = [0u8; 2];
                if stream.read_exact(&mut length).await.is_err() {
                    continue;
                }
                let counter = match usize::from(u16::from_be_bytes(length)) {
                    RETRY_LEN => &retries,
                    _ => &seconds,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    wait::until("the node asks for puzzles", || {
        retries.load(Ordering::Relaxed) >= 500
    })
    .await;
    let friend = nodes::node().await;
    friend
        .connect(node.peer_addr())
        .await
        .expect("a peer links during a flood of first messages");
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    // The friend solved a puzzle on its way in: no flooder solves any.
    assert!(
        node.metrics_text().contains(
            r#"fogwire_handshakes_total{direction="inbound",result="ok_after_puzzle"} 1"#
        ),
        "{}",
        node.metrics_text()
    );
    // Message 2 (X25519 spent) went to at most the free rate.
    let free_bound = u64::from(PUZZLE_FREE_PER_SEC) * (elapsed.as_secs() + 2);
    let answered = seconds.load(Ordering::Relaxed);
    assert!(
        answered <= free_bound,
        "{answered} first messages got message 2 in {elapsed:?} (bound {free_bound})"
    );
}
