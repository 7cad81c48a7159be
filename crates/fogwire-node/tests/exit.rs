//! Exits and the SOCKS proxy, end to end over real nodes: a SOCKS client
//! on one node's proxy reaches a TCP server that only the exit's side may
//! be allowed to reach, over routes of one and three hops.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use fogwire_exit::{ExitConfig, ProxyConfig};
use fogwire_exit_proto::Policy;
use fogwire_exit_proto::policy::parse_network;
use fogwire_node::Node;
use fogwire_testkit::{data, nodes, wait};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BODY_LEN: usize = 3 * 1024 * 1024 + 17;

/// A server on loopback: for each connection, reads one line and answers
/// with `BODY_LEN` bytes of a pattern seeded by the line's length, then
/// closes.
async fn origin() -> SocketAddr {
    origin_of(BODY_LEN).await
}

/// As [`origin`], answering `body_len` bytes.
async fn origin_of(body_len: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut line = Vec::new();
                let mut byte = [0u8; 1];
                while socket.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
                    line.push(byte[0]);
                }
                let body = data::pattern(body_len, line.len() as u64);
                let _ = socket.write_all(&body).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    address
}

fn exit_allowing_loopback() -> ExitConfig {
    ExitConfig {
        policy: Policy {
            allow: vec![parse_network("127.0.0.0/8").unwrap()],
            ..Policy::default()
        },
        ..ExitConfig::default()
    }
}

/// A SOCKS CONNECT by hand, byte for byte as RFC 1928 has it: the reply
/// code, and the socket if it succeeded.
async fn socks_connect(
    proxy: SocketAddr,
    username: Option<&str>,
    destination: &[u8],
) -> (u8, TcpStream) {
    let mut socket = TcpStream::connect(proxy).await.unwrap();
    match username {
        None => socket.write_all(&[5, 1, 0]).await.unwrap(),
        Some(_) => socket.write_all(&[5, 2, 0, 2]).await.unwrap(),
    }
    let mut method = [0u8; 2];
    socket.read_exact(&mut method).await.unwrap();
    if let Some(user) = username {
        assert_eq!(method, [5, 2]);
        let mut auth = vec![1, user.len() as u8];
        auth.extend_from_slice(user.as_bytes());
        auth.extend_from_slice(&[1, b'x']);
        socket.write_all(&auth).await.unwrap();
        let mut accepted = [0u8; 2];
        socket.read_exact(&mut accepted).await.unwrap();
        assert_eq!(accepted, [1, 0]);
    } else {
        assert_eq!(method, [5, 0]);
    }
    let mut request = vec![5, 1, 0];
    request.extend_from_slice(destination);
    socket.write_all(&request).await.unwrap();
    let mut reply = [0u8; 10];
    socket.read_exact(&mut reply).await.unwrap();
    assert_eq!((reply[0], reply[3]), (5, 1), "a reply with an IPv4 address");
    (reply[1], socket)
}

fn by_name(name: &str, port: u16) -> Vec<u8> {
    let mut destination = vec![3, name.len() as u8];
    destination.extend_from_slice(name.as_bytes());
    destination.extend_from_slice(&port.to_be_bytes());
    destination
}

fn by_address(address: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(v4) = address else {
        panic!("an IPv4 address")
    };
    let mut destination = vec![1];
    destination.extend_from_slice(&v4.ip().octets());
    destination.extend_from_slice(&v4.port().to_be_bytes());
    destination
}

/// Sends a line and reads the body to the end.
async fn fetch(mut socket: TcpStream, line: &[u8]) -> Vec<u8> {
    socket.write_all(line).await.unwrap();
    let mut body = Vec::new();
    socket.read_to_end(&mut body).await.unwrap();
    body
}

async fn until_exit_known(client: &Node, exit: &Node) {
    let routing = client.routing().clone();
    let exit_id = exit.node_id();
    wait::until_async("the exit known and reachable", || {
        let routing = routing.clone();
        async move {
            let exits = fogwire_exit::exits(&routing).await.ok()?;
            exits
                .iter()
                .any(|e| e.node == exit_id && e.latency_us.is_some())
                .then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socks_connection_by_name_leaves_by_the_exit_over_three_hops() {
    let origin = origin().await;
    let mut client_options = nodes::options();
    client_options.socks = Some(ProxyConfig {
        min_hops: 3,
        ..ProxyConfig::new("127.0.0.1:0".parse().unwrap())
    });
    let client = nodes::start(client_options).await;
    let relay_1 = nodes::node().await;
    let relay_2 = nodes::node().await;
    let mut exit_options = nodes::options();
    exit_options.exit = Some(exit_allowing_loopback());
    let exit = nodes::start(exit_options).await;
    nodes::link(&client, &relay_1).await;
    nodes::link(&relay_1, &relay_2).await;
    nodes::link(&relay_2, &exit).await;
    until_exit_known(&client, &exit).await;
    let proxy = client.proxy().unwrap().local_addr();

    // By name: `localhost` is looked up at the exit; its IPv6 address is
    // not in the allow list, its IPv4 one is.
    let (code, socket) = socks_connect(proxy, None, &by_name("localhost", origin.port())).await;
    assert_eq!(code, 0, "SOCKS reply");
    let body = fetch(socket, b"GET one\n").await;
    assert_eq!(body.len(), BODY_LEN);
    assert!(
        body == data::pattern(BODY_LEN, 7),
        "the body, byte for byte"
    );

    // By address, under a username: a route of its own.
    let (code, socket) = socks_connect(proxy, Some("alice"), &by_address(origin)).await;
    assert_eq!(code, 0);
    assert!(fetch(socket, b"GET\n").await == data::pattern(BODY_LEN, 3));

    let routes = client.proxy().unwrap().routes();
    assert_eq!(routes.len(), 2, "one route per group: {routes:?}");
    assert_ne!(routes[0].3, routes[1].3);
    assert!(routes.iter().all(|route| route.2 == exit.node_id()));
    let listing = client.routing().routes().await.unwrap();
    for (_, _, _, route) in &routes {
        let info = listing.routes.iter().find(|r| r.id == *route).unwrap();
        assert_eq!(info.path.len(), 3, "three hops: {info:?}");
    }
    let stats = exit.exit().unwrap().stats();
    assert_eq!((stats.connected, stats.refused), (2, 0));
    // Out to the destination: the two lines; in from it: the two bodies.
    assert_eq!(
        stats.bytes_out,
        (b"GET one\n".len() + b"GET\n".len()) as u64
    );
    assert_eq!(stats.bytes_in, 2 * BODY_LEN as u64);
    let proxy_stats = client.proxy().unwrap().stats();
    assert_eq!(proxy_stats.bytes_down, 2 * BODY_LEN as u64);
    for node in [&client, &relay_1, &relay_2, &exit] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exit_refuses_its_own_host_and_bad_socks_gets_its_reply_code() {
    let origin = origin().await;
    let mut client_options = nodes::options();
    client_options.socks = Some(ProxyConfig::new("127.0.0.1:0".parse().unwrap()));
    let client = nodes::start(client_options).await;
    let mut exit_options = nodes::options();
    exit_options.exit = Some(ExitConfig::default());
    let exit = nodes::start(exit_options).await;
    nodes::link(&client, &exit).await;
    until_exit_known(&client, &exit).await;
    let proxy = client.proxy().unwrap().local_addr();

    // Loopback, by address and by name: not allowed by ruleset.
    let (code, _) = socks_connect(proxy, None, &by_address(origin)).await;
    assert_eq!(code, 0x02);
    let (code, _) = socks_connect(proxy, None, &by_name("localhost", origin.port())).await;
    assert_eq!(code, 0x02);
    let stats = exit.exit().unwrap().stats();
    assert_eq!((stats.refused, stats.connected), (2, 0));

    // Not SOCKS 5: closed without a word.
    let mut socket = TcpStream::connect(proxy).await.unwrap();
    socket
        .write_all(&[4, 1, 0, 80, 127, 0, 0, 1, 0])
        .await
        .unwrap();
    let mut rest = Vec::new();
    socket.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    // No acceptable method: 0xff, then closed.
    let mut socket = TcpStream::connect(proxy).await.unwrap();
    socket.write_all(&[5, 1, 0x80]).await.unwrap();
    let mut rest = Vec::new();
    socket.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, [5, 0xff]);
    // BIND: command not supported; an unknown address type: 0x08.
    for (request, code) in [
        (vec![5, 2, 0, 1, 127, 0, 0, 1, 0, 80], 0x07),
        (vec![5, 1, 0, 9, 127, 0, 0, 1, 0, 80], 0x08),
        (b"\x05\x01\x00\x03\x04a b.\x00\x50".to_vec(), 0x04),
    ] {
        let mut socket = TcpStream::connect(proxy).await.unwrap();
        socket.write_all(&[5, 1, 0]).await.unwrap();
        socket.write_all(&request).await.unwrap();
        let mut answer = Vec::new();
        socket.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer[..2], [5, 0], "method reply");
        assert_eq!(answer[2..4], [5, code], "reply to {request:?}");
    }
    // A username naming an exit nobody has: network unreachable.
    let (code, _) = socks_connect(proxy, Some("bob@fw1nobody"), &by_address(origin)).await;
    assert_eq!(code, 0x03);
    for node in [&client, &exit] {
        node.shutdown().await;
    }
}

/// A UDP server on loopback that answers each datagram with "echo:" and
/// the datagram.
async fn udp_echo() -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 65_536];
        while let Ok((len, from)) = socket.recv_from(&mut buffer).await {
            let mut answer = b"echo:".to_vec();
            answer.extend_from_slice(&buffer[..len]);
            let _ = socket.send_to(&answer, from).await;
        }
    });
    address
}

/// A SOCKS UDP datagram: the header for `destination`, then `payload`.
fn socks_udp(destination: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut datagram = vec![0, 0, 0];
    datagram.extend_from_slice(destination);
    datagram.extend_from_slice(payload);
    datagram
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_associate_carries_datagrams_through_the_exit_and_back() {
    let echo = udp_echo().await;
    let mut client_options = nodes::options();
    client_options.socks = Some(ProxyConfig::new("127.0.0.1:0".parse().unwrap()));
    let client = nodes::start(client_options).await;
    let relay = nodes::node().await;
    let mut exit_options = nodes::options();
    exit_options.exit = Some(exit_allowing_loopback());
    let exit = nodes::start(exit_options).await;
    nodes::link(&client, &relay).await;
    nodes::link(&relay, &exit).await;
    until_exit_known(&client, &exit).await;
    let proxy = client.proxy().unwrap().local_addr();

    // UDP ASSOCIATE; the reply names the UDP port to send to.
    let mut control = TcpStream::connect(proxy).await.unwrap();
    control
        .write_all(&[5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut reply = [0u8; 12];
    control.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[..4], [5, 0, 5, 0], "method, then success");
    let relay_at = SocketAddr::from((
        [reply[6], reply[7], reply[8], reply[9]],
        u16::from_be_bytes([reply[10], reply[11]]),
    ));
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();

    // By address, then by a name the exit resolves.
    for (destination, payload) in [
        (by_address(echo), &b"by address"[..]),
        (by_name("localhost", echo.port()), &b"by name"[..]),
    ] {
        udp.send_to(&socks_udp(&destination, payload), relay_at)
            .await
            .unwrap();
        let mut buffer = vec![0u8; 2048];
        let Ok(received) = tokio::time::timeout(wait::PATIENCE, udp.recv_from(&mut buffer)).await
        else {
            panic!(
                "no answer through the exit: proxy {:?}, exit {:?}",
                client.proxy().unwrap().stats(),
                exit.exit().unwrap().stats()
            );
        };
        let (len, _) = received.unwrap();
        // The header names the answer's source: the echo server.
        assert_eq!(buffer[..4], [0, 0, 0, 1]);
        assert_eq!(buffer[4..8], [127, 0, 0, 1]);
        assert_eq!(u16::from_be_bytes([buffer[8], buffer[9]]), echo.port());
        let mut expected = b"echo:".to_vec();
        expected.extend_from_slice(payload);
        assert_eq!(&buffer[10..len], &expected[..]);
    }
    // Too large for a route datagram: dropped and counted. From another
    // address than the client's: dropped.
    let big = vec![7u8; fogwire_exit::proxy::UDP_PAYLOAD_MAX + 1];
    udp.send_to(&socks_udp(&by_address(echo), &big), relay_at)
        .await
        .unwrap();
    let stranger = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    stranger
        .send_to(&socks_udp(&by_address(echo), b"x"), relay_at)
        .await
        .unwrap();
    let proxy_handle = client.proxy().unwrap();
    wait::until("the oversized and the stranger's datagrams counted", || {
        let stats = proxy_handle.stats();
        stats.udp_oversized == 1 && stats.udp_dropped >= 1
    })
    .await;
    let stats = proxy_handle.stats();
    assert_eq!((stats.udp_sent, stats.udp_received), (2, 2), "{stats:?}");
    // A route datagram to a port nobody serves at the exit: dropped, and
    // counted there.
    let route = proxy_handle.routes()[0].3;
    client
        .routing()
        .send_datagram(route, 4242, bytes::Bytes::from_static(b"anyone?"))
        .await
        .unwrap();
    wait::until_async("the datagram for no service counted", || async {
        let listing = exit.routing().routes().await.ok()?;
        (listing.stats.datagrams_dropped >= 1).then_some(())
    })
    .await;
    let exit_stats = exit.exit().unwrap().stats();
    assert_eq!(
        (exit_stats.udp_sent, exit_stats.udp_received),
        (2, 2),
        "{exit_stats:?}"
    );
    drop(control);
    for node in [&client, &relay, &exit] {
        node.shutdown().await;
    }
}

fn account(node: &Node) -> fogwire_ledger::proto::Id {
    fogwire_ledger::proto::Id(*node.node_id().as_bytes())
}

async fn balance(of: &Node, at: &Node) -> u64 {
    at.ledger()
        .client()
        .account(&account(of))
        .await
        .map(|view| view.account.balance)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charging_exit_refuses_a_client_without_coins_and_is_paid_by_one_with_them() {
    use fogwire_ledger::proto::{COIN, Genesis, Rules};
    const DOWNLOAD: usize = 100 * 1024 * 1024;
    const PRICE: u64 = COIN / 2;
    let origin = origin_of(DOWNLOAD).await;
    let (ledger_key, payer_key) = (nodes::keypair(), nodes::keypair());
    let ledger_id = fogwire_ledger::proto::Id(*ledger_key.node_id().as_bytes());
    let mut ledger_options = fogwire_node::NodeOptions::local(ledger_key);
    ledger_options.ledger.serve = Some(Genesis {
        rules: Rules::new(ledger_id, ledger_id),
        accounts: vec![(
            fogwire_ledger::proto::Id(*payer_key.node_id().as_bytes()),
            10 * COIN,
        )],
    });
    let ledger = nodes::start(ledger_options).await;
    let socks = || Some(ProxyConfig::new("127.0.0.1:0".parse().unwrap()));
    let mut payer_options = fogwire_node::NodeOptions::local(payer_key);
    payer_options.socks = socks();
    let payer = nodes::start(payer_options).await;
    let mut pauper_options = nodes::options();
    pauper_options.socks = socks();
    let pauper = nodes::start(pauper_options).await;
    let relay = nodes::node().await;
    let mut exit_options = nodes::options();
    exit_options.exit = Some(ExitConfig {
        price_per_gib: PRICE,
        ..exit_allowing_loopback()
    });
    let exit = nodes::start(exit_options).await;
    for node in [&payer, &pauper, &exit, &ledger] {
        nodes::link(node, &relay).await;
    }
    until_exit_known(&payer, &exit).await;
    until_exit_known(&pauper, &exit).await;
    wait::until_async("the ledger known to the exit", || async {
        (exit.ledger().node().await == Some(ledger.node_id())).then_some(())
    })
    .await;

    // No coins: refused, not allowed by ruleset.
    let proxy = pauper.proxy().unwrap().local_addr();
    let (code, _) = socks_connect(proxy, None, &by_address(origin)).await;
    assert_eq!(code, 0x02);
    assert_eq!(exit.exit().unwrap().stats().refused_unpaid, 1);

    // Coins: 100 MiB, beyond the exit's 64 MiB credit, so it goes on only
    // as receipts come.
    let proxy = payer.proxy().unwrap().local_addr();
    let (code, socket) = socks_connect(proxy, None, &by_address(origin)).await;
    assert_eq!(code, 0);
    let body = fetch(socket, b"GET\n").await;
    assert_eq!(body.len(), DOWNLOAD);
    assert!(body == data::pattern(DOWNLOAD, 3));
    let stats = exit.exit().unwrap().stats();
    assert!(stats.receipts >= 1, "{stats:?}");

    // The exit is paid for nearly every byte at its own price, the relay
    // for forwarding at the ledger's; the payer paid both.
    let carried = fogwire_ledger::proto::receipt::cost(DOWNLOAD as u64, PRICE);
    wait::until_async("the exit and the relay paid", || async {
        let (exit_has, relay_has) = (
            balance(&exit, &ledger).await,
            balance(&relay, &ledger).await,
        );
        (exit_has * 10 >= carried * 9 && relay_has > 0).then_some(())
    })
    .await;
    let paid = 10 * COIN - balance(&payer, &ledger).await;
    let earned = balance(&exit, &ledger).await + balance(&relay, &ledger).await;
    assert_eq!(
        paid, earned,
        "every coin the payer lost, the exit and relay got"
    );
    assert!(
        balance(&exit, &ledger).await
            <= fogwire_ledger::proto::receipt::cost(DOWNLOAD as u64 + (1 << 20), PRICE)
    );
    for node in [&payer, &pauper, &relay, &exit, &ledger] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_is_held_to_its_bandwidth_cap_at_the_exit() {
    const KBPS: u32 = 8_000;
    let origin = origin().await;
    let mut client_options = nodes::options();
    client_options.socks = Some(ProxyConfig::new("127.0.0.1:0".parse().unwrap()));
    let client = nodes::start(client_options).await;
    let mut exit_options = nodes::options();
    exit_options.exit = Some(ExitConfig {
        client_kbps: KBPS,
        ..exit_allowing_loopback()
    });
    let exit = nodes::start(exit_options).await;
    nodes::link(&client, &exit).await;
    until_exit_known(&client, &exit).await;
    let proxy = client.proxy().unwrap().local_addr();

    // Two connections at once, on a route just opened (their streams'
    // first packets may reach the exit in either order), share one cap.
    let started = std::time::Instant::now();
    let (one, two) = tokio::join!(
        async {
            let (code, socket) = socks_connect(proxy, None, &by_address(origin)).await;
            assert_eq!(code, 0);
            fetch(socket, b"GET\n").await
        },
        async {
            let (code, socket) = socks_connect(proxy, None, &by_address(origin)).await;
            assert_eq!(code, 0);
            fetch(socket, b"GET\n").await
        },
    );
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!((one.len(), two.len()), (BODY_LEN, BODY_LEN));
    // However fast the machine, the cap is a floor on the time: all the
    // bytes, less one burst (a quarter second), at the capped rate.
    let rate = f64::from(KBPS) * 1000.0 / 8.0;
    let floor = (2.0 * BODY_LEN as f64 - rate / 4.0 - 32.0 * 1024.0) / rate;
    assert!(
        elapsed >= floor,
        "{elapsed:.2} s for 2 × {BODY_LEN} bytes at {KBPS} kbit/s, under {floor:.2} s"
    );
    for node in [&client, &exit] {
        node.shutdown().await;
    }
}
