//! The service RPC between real nodes over real links: every node serves
//! the locator, which names the nodes that advertise a service.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fogwire_rpc_proto::{Value, code};
use fogwire_testkit::nodes::{self, node};
use fogwire_testkit::wait;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_locator_names_the_nodes_that_offer_a_service() {
    let (a, b) = (node().await, node().await);
    a.connect(b.peer_addr()).await.unwrap();
    // Once both adverts are in, b's locator knows both nodes serve it.
    let answer = wait::until_async("b's locator to name both nodes", || async {
        let call = a
            .rpc()
            .call(
                b.node_id(),
                "locator",
                0,
                vec![Value::from("locator")],
                None,
            )
            .await
            .ok()?;
        let chunks = call.collect().await.unwrap();
        let endpoints = chunks[0][0].as_array().unwrap().len();
        (endpoints == 2).then_some(chunks)
    })
    .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_runs_over_a_route_to_a_node_that_is_no_neighbour() {
    let (a, b, c) = (node().await, node().await, node().await);
    a.connect(b.peer_addr()).await.unwrap();
    b.connect(c.peer_addr()).await.unwrap();
    // a learns of c from the adverts b passes on.
    nodes::until_routable(&a, &c).await;
    // A frame too long for RPC: c drops that stream and serves on.
    let route = a
        .routing()
        .open(c.node_id(), fogwire_route::Constraints::default())
        .await
        .unwrap();
    let mut raw = a.routing().connect(route.route, "rpc").await.unwrap();
    raw.write_all(bytes::Bytes::from_static(&[0xff; 8]))
        .await
        .unwrap();
    // Now a real connection over a route.
    a.rpc().open_route(c.node_id()).await.unwrap();
    assert!(a.link(&c.node_id()).is_none(), "a linked to c directly");
    let answer = a
        .rpc()
        .request(
            c.node_id(),
            "locator",
            0,
            vec![Value::from("locator")],
            Some(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    let endpoints = answer[0][0].as_array().unwrap();
    assert_eq!(
        endpoints[0].as_str(),
        Some(c.node_id().to_string().as_str())
    );
    // Many calls at once share the one stream.
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (rpc, c_id) = (a.rpc().clone(), c.node_id());
        calls.spawn(async move {
            rpc.request(c_id, "locator", 0, vec![Value::from("x")], None)
                .await
                .unwrap()
        });
    }
    while let Some(done) = calls.join_next().await {
        assert_eq!(done.unwrap().len(), 1);
    }
    for n in [&a, &b, &c] {
        n.shutdown().await;
    }
}
