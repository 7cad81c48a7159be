//! RPC between two real nodes' links on loopback: calls, streamed
//! replies, unknown services and methods, deadlines, cancellation, and
//! calls both ways at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fogwire_identity::Keypair;
use fogwire_link::proto::{Config, LinkIdentity};
use fogwire_link::{LinkHandle, connect, establish, spawn};
use fogwire_rpc::{BoxFuture, Replier, Rpc, RpcError, Service};
use fogwire_rpc_proto::{Value, code};
use fogwire_testkit::wait;
use tokio::net::TcpListener;

/// A test service: `echo` answers its arguments; `count(n)` streams n
/// chunks; `wait` answers only when cancelled (and counts that).
struct Test {
    cancelled: Arc<AtomicUsize>,
}

impl Service for Test {
    fn methods(&self) -> &[&'static str] {
        &["echo", "count", "wait"]
    }

    fn call(&self, method: u64, args: Vec<Value>, mut reply: Replier) -> BoxFuture<()> {
        let cancelled = self.cancelled.clone();
        Box::pin(async move {
            match method {
                0 => {
                    reply.chunk(args).await;
                    reply.choke().await;
                }
                1 => {
                    let n = args.first().and_then(Value::as_u64).unwrap_or(0);
                    for i in 0..n {
                        if !reply.chunk(vec![Value::from(i)]).await {
                            return;
                        }
                    }
                    reply.choke().await;
                }
                _ => {
                    reply.cancelled().await;
                    cancelled.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    }
}

fn config() -> Arc<Config> {
    let mut config = Config::default();
    for channel in fogwire_rpc::link_channels() {
        config = config.with_channel(channel);
    }
    Arc::new(config)
}

/// Two RPC ends joined by one link: (dialer, acceptor, their links).
async fn pair() -> (Rpc, Rpc, Arc<AtomicUsize>, [LinkHandle; 2]) {
    let identity =
        |seed: u8| LinkIdentity::generate(Arc::new(Keypair::from_seed(&[seed; 32]))).unwrap();
    let (dialer_id, acceptor_id) = (identity(1), identity(2));
    let expected = acceptor_id.node_id();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepting = tokio::spawn(async move {
        let (stream, remote) = listener.accept().await.unwrap();
        spawn(
            establish(
                fogwire_link::LinkStream::Tcp(stream),
                remote,
                &acceptor_id,
                config(),
            )
            .await
            .unwrap(),
        )
    });
    let outbound = spawn(connect(addr, expected, &dialer_id, config()).await.unwrap());
    let inbound = accepting.await.unwrap();
    let cancelled = Arc::new(AtomicUsize::new(0));
    let (client, server) = (Rpc::default(), Rpc::default());
    for rpc in [&client, &server] {
        rpc.serve(
            "test",
            Arc::new(Test {
                cancelled: cancelled.clone(),
            }),
        );
    }
    client.link_up(outbound.clone());
    server.link_up(inbound.clone());
    (client, server, cancelled, [outbound, inbound])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_returns_its_streamed_answer() {
    let (client, _server, _, links) = pair().await;
    let server_id = links[0].peer();
    let echoed = client
        .request(
            server_id,
            "test",
            0,
            vec![Value::from("hi"), Value::from(7)],
            None,
        )
        .await
        .unwrap();
    assert_eq!(echoed, vec![vec![Value::from("hi"), Value::from(7)]]);
    let counted = client
        .request(server_id, "test", 1, vec![Value::from(500)], None)
        .await
        .unwrap();
    assert_eq!(counted.len(), 500);
    assert_eq!(counted[499], vec![Value::from(499)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_services_and_methods_are_refused_by_name() {
    let (client, _server, _, links) = pair().await;
    let server_id = links[0].peer();
    let error = client
        .request(server_id, "nope", 0, vec![], None)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(code::UNKNOWN));
    assert!(error.to_string().contains("no service `nope`"), "{error}");
    let error = client
        .request(server_id, "test", 9, vec![], None)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(code::UNKNOWN));
    // Not linked at all.
    let stranger = Keypair::generate().unwrap().node_id();
    assert_eq!(
        client
            .call(stranger, "test", 0, vec![], None)
            .await
            .unwrap_err(),
        RpcError::NotLinked(stranger)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_ends_the_call_and_stops_the_service() {
    let (client, _server, cancelled, links) = pair().await;
    let error = client
        .request(
            links[0].peer(),
            "test",
            2,
            vec![],
            Some(Duration::from_millis(50)),
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(code::DEADLINE), "{error}");
    wait::until("the call cancelled at the service", || {
        cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_call_cancels_it_at_the_peer() {
    let (client, _server, cancelled, links) = pair().await;
    let call = client
        .call(links[0].peer(), "test", 2, vec![], None)
        .await
        .unwrap();
    drop(call);
    wait::until("the call cancelled at the service", || {
        cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ends_call_each_other_at_once() {
    let (client, server, _, links) = pair().await;
    let (a, b) = (links[0].peer(), links[1].peer());
    let mut calls = Vec::new();
    for i in 0..50u64 {
        calls.push(
            client
                .call(a, "test", 1, vec![Value::from(i)], None)
                .await
                .unwrap(),
        );
        calls.push(
            server
                .call(b, "test", 1, vec![Value::from(i)], None)
                .await
                .unwrap(),
        );
    }
    for (index, call) in calls.into_iter().enumerate() {
        assert_eq!(call.collect().await.unwrap().len(), index / 2);
    }
}

#[tokio::test]
async fn calls_to_this_node_reach_its_own_services_without_a_link() {
    let me = Keypair::from_seed(&[9; 32]).node_id();
    let cancelled = Arc::new(AtomicUsize::new(0));
    let service = Arc::new(Test {
        cancelled: cancelled.clone(),
    });
    // An RPC that is not told which node it is sees it as just another
    // unlinked peer.
    let unnamed = Rpc::default();
    unnamed.serve("test", service.clone());
    assert!(matches!(
        unnamed.request(me, "test", 0, vec![], None).await,
        Err(RpcError::NotLinked(_))
    ));
    let rpc = Rpc::builder().local(me).build();
    rpc.serve("test", service);
    let echoed = rpc
        .request(me, "test", 0, vec![Value::from("hi")], None)
        .await
        .unwrap();
    assert_eq!(echoed, vec![vec![Value::from("hi")]]);
    let counted = rpc
        .request(me, "test", 1, vec![Value::from(100u64)], None)
        .await
        .unwrap();
    assert_eq!(counted.len(), 100);
    let missing = rpc.request(me, "nope", 0, vec![], None).await.unwrap_err();
    assert_eq!(missing.code(), Some(code::UNKNOWN));
    let late = rpc
        .request(me, "test", 2, vec![], Some(Duration::from_millis(20)))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Some(code::DEADLINE));
    // Dropping a call cancels it at the service.
    let call = rpc.call(me, "test", 2, vec![], None).await.unwrap();
    drop(call);
    wait::until("the dropped call cancelled at the service", || {
        cancelled.load(Ordering::SeqCst) >= 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_holding_every_call_slot_is_told_busy_at_once_and_slots_come_back() {
    // Bound proven: one connection has at most 256 calls served at once
    // (served_max); each call beyond is answered BUSY rather than queued,
    // and a slot comes back when its call ends. The caller asks for no
    // deadline at all (the longest): the node cuts it to 24 h.
    let (client, _server, cancelled, links) = pair().await;
    let server_id = links[0].peer();
    let (busy, other) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut waiting = tokio::task::JoinSet::new();
    for _ in 0..300 {
        let mut call = client
            .call(server_id, "test", 2, vec![], Some(Duration::MAX))
            .await
            .unwrap();
        let (busy, other) = (busy.clone(), other.clone());
        waiting.spawn(async move {
            match call.next().await {
                Some(Err(error)) if error.code() == Some(code::BUSY) => {
                    busy.fetch_add(1, Ordering::SeqCst)
                }
                _ => other.fetch_add(1, Ordering::SeqCst),
            };
            // A served call waits here until it is dropped.
            std::future::pending::<()>().await;
        });
    }
    wait::until("the calls past 256 told busy", || {
        busy.load(Ordering::SeqCst) == 44
    })
    .await;
    // Nothing else answered: the other 256 are being served.
    assert_eq!(other.load(Ordering::SeqCst), 0);
    // Ending the held calls gives the slots back.
    waiting.abort_all();
    wait::until("every held call cancelled at the service", || {
        cancelled.load(Ordering::SeqCst) == 256
    })
    .await;
    let echoed = client
        .request(server_id, "test", 0, vec![Value::from("again")], None)
        .await
        .unwrap();
    assert_eq!(echoed, vec![vec![Value::from("again")]]);
}
