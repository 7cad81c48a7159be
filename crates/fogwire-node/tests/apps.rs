//! An app plugged into a node with one line in its builder: a service on
//! routes, reached from another node by name (streams) and by port
//! (datagrams).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fogwire_node::Node;
use fogwire_route::services::BoxFuture;
use fogwire_route::{Constraints, Datagram, RouteStream, Routing, Service, Spec};
use fogwire_testkit::{nodes, wait};

/// The app: reverses each stream's bytes, and echoes datagrams reversed
/// on the session they came on.
struct Reverse {
    routing: Routing,
}

const REVERSE: Spec = Spec::streams("reverse").with_datagrams(40);

impl Service for Reverse {
    fn accept(&self, mut stream: RouteStream) -> BoxFuture<()> {
        Box::pin(async move {
            let mut all = Vec::new();
            while let Some(Ok(chunk)) = stream.read().await {
                all.extend_from_slice(&chunk);
            }
            all.reverse();
            let _ = stream.write_all(Bytes::from(all)).await;
            let _ = stream.finish().await;
            while stream.read().await.is_some() {}
        })
    }

    fn datagram(&self, datagram: Datagram) {
        let routing = self.routing.clone();
        let mut data = datagram.data.to_vec();
        data.reverse();
        tokio::spawn(async move {
            let _ = routing
                .reply_datagram(
                    datagram.session,
                    REVERSE.datagram_port.unwrap_or(0),
                    data.into(),
                )
                .await;
        });
    }
}

/// Counts datagrams coming back.
struct Inbox(tokio::sync::mpsc::Sender<Bytes>);

impl Service for Inbox {
    fn accept(&self, _stream: RouteStream) -> BoxFuture<()> {
        Box::pin(std::future::ready(()))
    }

    fn datagram(&self, datagram: Datagram) {
        let _ = self.0.try_send(datagram.data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_is_one_line_in_the_builder_and_answers_over_routes() {
    let options = nodes::options;
    // The one line: the app's spec and how to build it from the node.
    let server = Node::builder(options())
        .service(REVERSE, |parts| {
            Arc::new(Reverse {
                routing: parts.routing.clone(),
            })
        })
        .start()
        .await
        .unwrap();
    let (sender, mut answers) = tokio::sync::mpsc::channel(4);
    let client = Node::builder(options())
        .service(Spec::streams("inbox").with_datagrams(40), move |_| {
            Arc::new(Inbox(sender))
        })
        .start()
        .await
        .unwrap();
    client.connect(server.peer_addr()).await.unwrap();
    let opened = wait::until_async("a route to the server", || async {
        client
            .routing()
            .open(server.node_id(), Constraints::default())
            .await
            .ok()
    })
    .await;
    let mut stream = client
        .routing()
        .connect(opened.route, "reverse")
        .await
        .unwrap();
    stream
        .write_all(Bytes::from_static(b"fogwire"))
        .await
        .unwrap();
    stream.finish().await.unwrap();
    assert_eq!(&stream.read_exact(7).await.unwrap()[..], b"eriwgof");

    client
        .routing()
        .send_datagram(opened.route, 40, Bytes::from_static(b"route"))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), answers.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&answer[..], b"etuor");
    client.shutdown().await;
    server.shutdown().await;
}
