//! The service RPC between real nodes over real links: every node serves
//! the locator, which names the nodes that advertise a service.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use fogwire_identity::Keypair;
use fogwire_node::{Node, NodeOptions};
use fogwire_rpc_proto::{Value, code};

async fn node() -> Node {
    Node::start(NodeOptions::local(Arc::new(Keypair::generate().unwrap())))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_locator_names_the_nodes_that_offer_a_service() {
    let (a, b) = (node().await, node().await);
    a.connect(b.peer_addr()).await.unwrap();
    // Once both adverts are in, b's locator knows both nodes serve it.
    let started = Instant::now();
    let answer = loop {
        let call = a
            .rpc()
            .call(
                b.node_id(),
                "locator",
                0,
                vec![Value::from("locator")],
                None,
            )
            .await;
        if let Ok(call) = call {
            let chunks = call.collect().await.unwrap();
            let endpoints = chunks[0][0].as_array().unwrap().len();
            if endpoints == 2 {
                break chunks;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no answer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let [endpoints, version, methods] = &answer[0][..] else {
        panic!("three values: {answer:?}");
    };
    let endpoints: Vec<&str> = endpoints
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // b first: it serves it.
    assert_eq!(
        endpoints,
        vec![b.node_id().to_string(), a.node_id().to_string()]
    );
    assert_eq!(version.as_u64(), Some(1));
    assert_eq!(
        methods,
        &Value::Map(vec![(Value::from("resolve"), Value::from(0u64))])
    );
    // A service nobody offers: no endpoints, no methods.
    let chunks = a
        .rpc()
        .request(
            b.node_id(),
            "jobs",
            0,
            vec![Value::from("no-such-service")],
            None,
        )
        .await;
    assert_eq!(chunks.unwrap_err().code(), Some(code::UNKNOWN));
    let chunks = a
        .rpc()
        .request(
            b.node_id(),
            "locator",
            0,
            vec![Value::from("nothing")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(chunks[0][0], Value::Array(vec![]));
    // Bad arguments are answered as such.
    let error = a
        .rpc()
        .request(b.node_id(), "locator", 0, vec![Value::from(5)], None)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(code::BAD_ARGS));
}
