//! Reachability on real nodes over loopback: nodes check each other's
//! addresses, and a peer that lies or floods gets nothing for it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fogwire_identity::Keypair;
use fogwire_link::proto::{ChannelId, Config as LinkConfig, LinkIdentity};
use fogwire_node::Node;
use fogwire_relay::proto::{CHANNEL_REACH, DialOutcome, Message};
use fogwire_testkit::{nodes, wait};
use tokio::net::TcpListener;

fn reach(node: &Node) -> fogwire_api::Reach {
    node.status().reach
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_one_machine_dial_each_other_back_and_are_local() {
    let (a, b) = (nodes::node().await, nodes::node().await);
    nodes::link(&a, &b).await;
    for (node, other) in [(&a, &b), (&b, &a)] {
        wait::until("the node's address confirmed by its peer", || {
            let reach = reach(node);
            reach.reachability == "local"
                && reach.addresses.iter().any(|address| {
                    address.address == node.local_addr()
                        && address.state == "confirmed"
                        && address.confirmed_by == [other.node_id().to_string()]
                })
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_lies_or_floods_gets_no_address_confirmed_and_at_most_the_limits() {
    let node = nodes::node().await;
    // The liar: linked, speaking reachability, with a listener of its own
    // that counts the node's dials.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let dials = Arc::new(AtomicUsize::new(0));
    tokio::spawn({
        let dials = dials.clone();
        async move {
            while let Ok((stream, _)) = listener.accept().await {
                dials.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        }
    });
    let identity =
        Arc::new(LinkIdentity::generate(Arc::new(Keypair::generate().unwrap())).unwrap());
    let config = LinkConfig {
        channels: fogwire_relay::link_channels(),
        ..LinkConfig::default()
    };
    let established = fogwire_link::connect(
        node.local_addr(),
        node.node_id(),
        &identity,
        Arc::new(config),
    )
    .await
    .unwrap();
    let link = fogwire_link::spawn(established);
    let channel = ChannelId(CHANNEL_REACH);
    let (sender, mut receiver) = (
        link.sender(channel).unwrap(),
        link.take_receiver(channel).unwrap(),
    );
    let mut next = async || Message::decode(&receiver.recv().await.unwrap()).unwrap();
    assert!(matches!(next().await, Message::Observed(_)));

    // It claims the node is seen at a public address, and says it dialed
    // it there without dialing.
    let forged = "203.0.113.9:4000".parse().unwrap();
    sender
        .send(Message::Observed(forged).encode())
        .await
        .unwrap();
    let Message::DialBack { nonce, port: asked } = next().await else {
        panic!("the node asks the only peer that sees it there");
    };
    assert_eq!(asked, node.local_addr().port());
    let lie = Message::DialBackResult {
        nonce,
        outcome: DialOutcome::Reached,
    };
    sender.send(lie.encode()).await.unwrap();

    // Then it floods the node with checks to run for it. Refusals beyond
    // the link's queue are dropped: they cost the node nothing.
    for nonce in 0..100 {
        let flood = Message::DialBack { nonce, port };
        sender.send(flood.encode()).await.unwrap();
    }
    // Then it asks again, one at a time, until an answer to the latest is
    // REFUSED: the per-peer limit is spent. An answer can be lost while
    // the flood's refusals fill the link's queue, so a question left
    // unanswered for a few seconds is asked again under a new nonce (a late
    // answer is still read and counted).
    let mut served = 0;
    let mut refused = false;
    let mut nonce = 1000;
    while !refused {
        nonce += 1;
        assert!(nonce < 1100, "the node never refused");
        let ask = Message::DialBack { nonce, port };
        sender.send(ask.encode()).await.unwrap();
        while let Ok(answer) = tokio::time::timeout(Duration::from_secs(5), next()).await {
            let Message::DialBackResult {
                nonce: answered,
                outcome,
            } = answer
            else {
                panic!("unexpected {answer:?}");
            };
            if outcome != DialOutcome::Refused {
                served += 1;
            }
            if answered == nonce {
                refused = outcome == DialOutcome::Refused;
                break;
            }
        }
    }
    let per_peer = fogwire_relay::proto::Settings::new(1).serve_per_peer;
    assert!(served <= per_peer, "{served} checks run for one peer");
    assert!(dials.load(Ordering::SeqCst) <= per_peer);

    // The lie confirmed nothing: the address is still being checked, and
    // the node is not public, nor does its advert name the address.
    let reach = reach(&node);
    assert_eq!(reach.reachability, "unknown", "{reach:?}");
    let claimed = reach
        .addresses
        .iter()
        .find(|a| a.address.ip() == forged.ip())
        .unwrap();
    assert_eq!(claimed.state, "checking");
    let nodes = node.routing().nodes().await.unwrap();
    let own = nodes
        .iter()
        .find(|info| info.advert.origin == node.node_id())
        .unwrap();
    assert!(
        !own.advert
            .addresses
            .iter()
            .any(|a| a.starts_with("203.0.113.9"))
    );
}
