//! Direct links over QUIC on real nodes over loopback: two nodes that
//! reach each other only through a third ask each other to punch, and
//! get a QUIC link; a node without UDP says so; a peer that floods asks
//! gets the bounds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use fogwire_link::Transport;
use fogwire_node::Node;
use fogwire_relay::PunchError;
use fogwire_relay::proto::punch::{Outcome, PunchMessage};
use fogwire_testkit::nodes;

/// Two nodes linked only to a hub: they reach each other through it.
async fn through_a_hub(b_options: fogwire_node::NodeOptions) -> (Node, Node, Node) {
    let hub = nodes::node().await;
    let a = nodes::node().await;
    let b = nodes::start(b_options).await;
    nodes::link(&a, &hub).await;
    nodes::link(&b, &hub).await;
    nodes::until_routable(&a, &b).await;
    nodes::until_routable(&b, &a).await;
    (hub, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_that_meet_through_a_hub_punch_a_direct_quic_link_and_routes_take_it() {
    let (_hub, a, b) = through_a_hub(nodes::options()).await;
    assert!(a.link(&b.node_id()).is_none());
    let link = a.direct(b.node_id()).await.unwrap();
    assert_eq!(link.peer(), b.node_id());
    assert_eq!(link.transport(), Transport::Quic);
    // Both ends hold the one link the duplicate rule kept.
    fogwire_testkit::wait::until("both ends to hold the same QUIC link", || {
        let (ours, theirs) = (a.link(&b.node_id()), b.link(&a.node_id()));
        ours.zip(theirs).is_some_and(|(ours, theirs)| {
            ours.transport() == Transport::Quic && theirs.transport() == Transport::Quic
        })
    })
    .await;
    // A route to the other end now takes one hop: the direct link.
    let hops = nodes::until_routable(&a, &b).await;
    fogwire_testkit::wait::until_async("a route over the direct link", || async {
        let paths = a
            .routing()
            .find(b.node_id(), fogwire_route::Constraints::default(), 1)
            .await
            .ok()?;
        (paths.first()?.nodes.len() == 2).then_some(())
    })
    .await;
    let _ = hops;
    // Asking again is answered by the link there is.
    let again = a.direct(b.node_id()).await.unwrap();
    assert_eq!(again.transport(), Transport::Quic);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_udp_answers_so_and_nothing_is_dialed() {
    let mut options = nodes::options();
    options.link_udp = false;
    let (_hub, a, b) = through_a_hub(options).await;
    let error = a.direct(b.node_id()).await.unwrap_err();
    assert!(
        matches!(error, PunchError::Refused(Outcome::NoUdp)),
        "{error}"
    );
    assert!(a.link(&b.node_id()).is_none());
    // And it cannot ask either.
    let error = b.direct(a.node_id()).await.unwrap_err();
    assert!(matches!(error, PunchError::NoUdp), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_flooding_asks_gets_one_punch_at_a_time_and_a_few_a_minute() {
    let (_hub, a, b) = through_a_hub(nodes::options()).await;
    let routing = a.routing();
    // Two hops asked for: a route that wants no direct link, so A does
    // not punch on its own meanwhile.
    let opened = routing
        .open(b.node_id(), fogwire_route::Constraints::hops(2))
        .await
        .unwrap();
    // Asks naming an address where nothing answers: each punch B admits
    // runs its whole window, so B's bounds show.
    let nowhere: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut outcomes = Vec::new();
    for nonce in 0..12u64 {
        let mut stream = routing
            .connect(opened.route, fogwire_relay::proto::punch::SERVICE)
            .await
            .unwrap();
        let ask = PunchMessage::Punch {
            nonce,
            addresses: vec![nowhere],
        };
        stream.write_all(ask.encode().into()).await.unwrap();
        let answer = stream.read_to_end(1024).await.unwrap();
        match PunchMessage::decode_framed(&answer).unwrap() {
            Some((
                PunchMessage::Answer {
                    nonce: n, outcome, ..
                },
                _,
            )) => {
                assert_eq!(n, nonce);
                outcomes.push(outcome);
            }
            other => panic!("not an answer: {other:?}"),
        }
    }
    let ready = outcomes.iter().filter(|o| **o == Outcome::Ready).count();
    assert_eq!(ready, 1, "one at a time: {outcomes:?}");
    assert!(a.link(&b.node_id()).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_through_the_hub_moves_onto_the_punched_link_and_its_stream_carries_on_intact() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let (hub, a, b) = through_a_hub(nodes::options()).await;
    let routing = a.routing().clone();
    let opened = routing
        .open(b.node_id(), fogwire_route::Constraints::default())
        .await
        .unwrap();
    assert_eq!(opened.path, [hub.node_id(), b.node_id()]);
    let mut stream = routing
        .connect(opened.route, fogwire_route::services::SINK)
        .await
        .unwrap();
    // Writes until the route has moved, and a little more after.
    let moved = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let moved = moved.clone();
        async move {
            let mut hasher = blake3::Hasher::new();
            let (mut sent, mut after) = (0u64, 0u64);
            let mut chunk = vec![0u8; 64 * 1024];
            while after < 4 * 1024 * 1024 {
                chunk.iter_mut().enumerate().for_each(|(i, byte)| {
                    *byte = (sent as usize + i).wrapping_mul(31) as u8;
                });
                hasher.update(&chunk);
                stream.write_all(chunk.clone().into()).await.unwrap();
                sent += chunk.len() as u64;
                if moved.load(Ordering::SeqCst) {
                    after += chunk.len() as u64;
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            stream.finish().await.unwrap();
            let reply = stream.read_exact(40).await.unwrap();
            (sent, *hasher.finalize().as_bytes(), reply)
        }
    });
    a.direct(b.node_id()).await.unwrap();
    fogwire_testkit::wait::until_async("the route to move onto the direct link", || async {
        let listing = routing.routes().await.ok()?;
        let route = listing.routes.iter().find(|r| r.id == opened.route)?;
        (route.path == [b.node_id()] && listing.stats.routes_moved == 1).then_some(())
    })
    .await;
    moved.store(true, Ordering::SeqCst);
    let (sent, hash, reply) = writer.await.unwrap();
    assert_eq!(u64::from_be_bytes(reply[..8].try_into().unwrap()), sent);
    assert_eq!(&reply[8..], &hash[..], "every byte arrived, in order, once");
}
