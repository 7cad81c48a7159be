//! Routing over real links on loopback: nodes that find each other through
//! flooded adverts, routes of several hops, pings, streams, and a relay
//! that dies in the middle of a transfer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use fogwire_identity::{Keypair, NodeId};
use fogwire_link::proto::{CloseCode, Config, LinkIdentity};
use fogwire_link::{LinkHandle, connect, establish, spawn};
use fogwire_route::services::{SINK, send_to_sink};
use fogwire_route::{
    Constraints, Datagram, Options, Routing, Service, ServiceError, Spec, link_channels,
};
use tokio::net::TcpListener;

struct Net {
    identities: Vec<Arc<LinkIdentity>>,
    routings: Vec<Routing>,
    links: Vec<(usize, usize, LinkHandle, LinkHandle)>,
}

fn link_config() -> Arc<Config> {
    Arc::new(Config {
        channels: link_channels(),
        ..Config::default()
    })
}

impl Net {
    fn new(count: usize) -> Self {
        let identities: Vec<Arc<LinkIdentity>> = (0..count)
            .map(|i| {
                Arc::new(
                    LinkIdentity::generate(Arc::new(Keypair::from_seed(&[i as u8 + 1; 32])))
                        .unwrap(),
                )
            })
            .collect();
        let routings = identities
            .iter()
            .map(|identity| Routing::start(Options::new(identity.clone())).unwrap())
            .collect();
        Self {
            identities,
            routings,
            links: Vec::new(),
        }
    }

    fn id(&self, index: usize) -> NodeId {
        self.identities[index].node_id()
    }

    /// Links `a` to `b` over TCP on loopback, and tells both routings (and,
    /// when it closes, that it is gone), as a node does.
    async fn link(&mut self, a: usize, b: usize) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let listener_identity = self.identities[b].clone();
        let accept = tokio::spawn(async move {
            let (stream, remote) = listener.accept().await.unwrap();
            establish(
                fogwire_link::LinkStream::Tcp(stream),
                remote,
                &listener_identity,
                link_config(),
            )
            .await
        });
        let outbound = connect(addr, self.id(b), &self.identities[a], link_config())
            .await
            .unwrap();
        let inbound = accept.await.unwrap().unwrap();
        let (at_a, at_b) = (spawn(outbound), spawn(inbound));
        for (routing, link) in [(&self.routings[a], &at_a), (&self.routings[b], &at_b)] {
            routing.link_up(link.clone());
            let (routing, link) = (routing.clone(), link.clone());
            tokio::spawn(async move {
                link.closed().await;
                routing.link_down(link.peer(), link.id());
            });
        }
        self.links.push((a, b, at_a, at_b));
    }

    /// Closes every link of `node`, as if it had died.
    async fn kill(&mut self, node: usize) {
        for (a, b, at_a, _) in &self.links {
            if *a == node || *b == node {
                at_a.close(CloseCode::SHUTDOWN, "killed").await;
            }
        }
    }

    /// Waits until every node knows the whole graph.
    async fn converge(&self) {
        let count = self.routings.len();
        fogwire_testkit::wait::until_async("every node to know the whole graph", || async {
            for routing in &self.routings {
                let nodes = routing.nodes().await.unwrap();
                let edges: usize = nodes.iter().map(|n| n.advert.links.len()).sum();
                if nodes.len() < count || edges < 2 * self.links.len() {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_of_one_to_three_hops_carry_pings_and_streams() {
    // A line 0-1-2-3 with a shortcut 0-2.
    let mut net = Net::new(4);
    for (a, b) in [(0, 1), (1, 2), (2, 3), (0, 2)] {
        net.link(a, b).await;
    }
    net.converge().await;
    let source = &net.routings[0];
    for hops in 1..=3 {
        let destination = net.id(hops);
        let opened = source
            .open(destination, Constraints::hops(hops))
            .await
            .unwrap_or_else(|e| panic!("{hops} hops: {e}"));
        assert_eq!(opened.path.len(), hops);
        assert_eq!(*opened.path.last().unwrap(), destination);
        let rtt = source
            .ping(opened.route, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(rtt > Duration::ZERO);
        let stream = source.connect(opened.route, SINK).await.unwrap();
        let transfer = send_to_sink(stream, 8 * 1024 * 1024 + 17, |_| {})
            .await
            .unwrap();
        assert!(transfer.intact(), "{hops} hops: {transfer:?}");
        let listing = source.routes().await.unwrap();
        let route = listing
            .routes
            .iter()
            .find(|r| r.id == opened.route)
            .unwrap();
        assert!(route.counters.bytes_forward > 8 * 1024 * 1024);
        // Every relay on the path carried the stream and counted it, in
        // the rule it holds for this route.
        for relay in &opened.path[..hops - 1] {
            let index = (0..net.routings.len())
                .find(|i| net.id(*i) == *relay)
                .unwrap();
            let carried = net.routings[index].routes().await.unwrap().transit_total();
            assert!(
                carried.bytes_forward > 8 * 1024 * 1024,
                "{hops} hops: relay {index} counted {carried:?}"
            );
        }
        assert!(source.close(opened.route).await.unwrap());
    }
    // Datagrams, both ways of a 2-hop route, each to its service's port:
    // the far end's service answers on the session the datagram came on.
    let (far_sender, mut far_datagrams) = tokio::sync::mpsc::channel(8);
    let far = &net.routings[2];
    let answering = Arc::new(Datagrams {
        seen: far_sender,
        answer_with: Some(far.clone()),
    });
    far.accept(Spec::streams("answer").with_datagrams(5), answering)
        .unwrap();
    // A port serves one service.
    let (other, _) = tokio::sync::mpsc::channel(1);
    let taken = far.accept(
        Spec::streams("other").with_datagrams(5),
        Arc::new(Datagrams {
            seen: other,
            answer_with: None,
        }),
    );
    assert!(matches!(
        taken,
        Err(ServiceError::PortTaken { port: 5, .. })
    ));
    let (near_sender, mut near_datagrams) = tokio::sync::mpsc::channel(8);
    source
        .accept(
            Spec::streams("answers").with_datagrams(5),
            Arc::new(Datagrams {
                seen: near_sender,
                answer_with: None,
            }),
        )
        .unwrap();
    let opened = source.open(net.id(2), Constraints::hops(2)).await.unwrap();
    // Nobody serves port 6 there: dropped.
    source
        .send_datagram(opened.route, 6, bytes::Bytes::from_static(b"to nobody"))
        .await
        .unwrap();
    source
        .send_datagram(opened.route, 5, bytes::Bytes::from_static(b"over two hops"))
        .await
        .unwrap();
    let there = far_datagrams.recv().await.unwrap();
    assert_eq!(there.from, net.id(0));
    assert_eq!(there.port, 5);
    assert_eq!(&there.data[..], b"over two hops");
    let back = near_datagrams.recv().await.unwrap();
    assert_eq!(back.from, net.id(2));
    assert_eq!(&back.data[..], b"answer: over two hops");
    assert!(
        far_datagrams.try_recv().is_err(),
        "port 6 reached a service"
    );
}

/// A datagram service that reports what it gets and may answer it.
struct Datagrams {
    seen: tokio::sync::mpsc::Sender<Datagram>,
    answer_with: Option<Routing>,
}

impl Service for Datagrams {
    fn accept(
        &self,
        _stream: fogwire_route::RouteStream,
    ) -> fogwire_route::services::BoxFuture<()> {
        Box::pin(std::future::ready(()))
    }

    fn datagram(&self, datagram: Datagram) {
        if let Some(routing) = self.answer_with.clone() {
            let mut answer = b"answer: ".to_vec();
            answer.extend_from_slice(&datagram.data);
            let session = datagram.session;
            tokio::spawn(async move {
                let _ = routing
                    .reply_datagram(session, 5, bytes::Bytes::from(answer))
                    .await;
            });
        }
        let _ = self.seen.try_send(datagram);
    }
}

/// Two linked nodes, and a route from the first to the second.
async fn two_nodes_and_a_route() -> (Net, fogwire_route::Opened) {
    let mut net = Net::new(2);
    net.link(0, 1).await;
    net.converge().await;
    let opened = net.routings[0]
        .open(net.id(1), Constraints::default())
        .await
        .unwrap();
    (net, opened)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_answers_and_unknown_services_are_refused() {
    let (net, opened) = two_nodes_and_a_route().await;
    let source = &net.routings[0];
    let mut echo = source.connect(opened.route, "echo").await.unwrap();
    echo.write_all(bytes::Bytes::from_static(b"hello echo"))
        .await
        .unwrap();
    echo.finish().await.unwrap();
    let answer = echo.read_to_end(1024).await.unwrap();
    assert_eq!(&answer[..], b"hello echo");
    let mut nobody = source
        .connect(opened.route, "no-such-service")
        .await
        .unwrap();
    nobody.finish().await.unwrap();
    assert!(
        nobody.read_to_end(1024).await.is_err(),
        "an unknown service must reset the stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_survives_its_relay_dying() {
    // Two ways from 0 to 3: through 1 and through 2.
    let mut net = Net::new(4);
    for (a, b) in [(0, 1), (1, 3), (0, 2), (2, 3)] {
        net.link(a, b).await;
    }
    net.converge().await;
    let source = net.routings[0].clone();
    let opened = source.open(net.id(3), Constraints::hops(2)).await.unwrap();
    let relay = if opened.path[0] == net.id(1) { 1 } else { 2 };
    let stream = source.connect(opened.route, SINK).await.unwrap();
    let total = 256 * 1024 * 1024;
    let (progress_sender, mut progress) = tokio::sync::watch::channel(0u64);
    let transfer = tokio::spawn(async move {
        send_to_sink(stream, total, |sent| {
            let _ = progress_sender.send(sent);
        })
        .await
    });
    progress
        .wait_for(|sent| *sent > 16 * 1024 * 1024)
        .await
        .unwrap();
    net.kill(relay).await;
    let transfer = transfer.await.unwrap().unwrap();
    assert!(transfer.intact(), "{transfer:?}");
    let listing = source.routes().await.unwrap();
    let route = listing
        .routes
        .iter()
        .find(|r| r.id == opened.route)
        .unwrap();
    assert_eq!(route.repairs, 1);
    assert_ne!(route.path[0], net.id(relay));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_opened_at_once_on_a_new_route_all_get_through() {
    let (net, opened) = two_nodes_and_a_route().await;
    let source = &net.routings[0];
    // Opened together (ids 1, 3, 5, 7) but written last first, as
    // tasks racing each other would: the far end sees the higher ids
    // before the lower ones, and opens every one.
    let mut streams = Vec::new();
    for _ in 0..4 {
        streams.push(source.open_stream(opened.route).await.unwrap());
    }
    for (index, stream) in streams.iter_mut().enumerate().rev() {
        let mut first = BytesMut::new();
        first.extend_from_slice(&fogwire_route::services::header("echo").unwrap());
        first.extend_from_slice(&[index as u8; 100]);
        stream.write_all(first.freeze()).await.unwrap();
        stream.finish().await.unwrap();
    }
    for (index, mut stream) in streams.into_iter().enumerate() {
        let answer =
            tokio::time::timeout(fogwire_testkit::wait::PATIENCE, stream.read_to_end(1024))
                .await
                .expect("an answer")
                .unwrap();
        assert_eq!(answer, vec![index as u8; 100]);
    }
}
