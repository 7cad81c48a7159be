//! The README's promises, through the commands a user types.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;

use fogwire_api::PeerState;

use crate::harness::{TestNode, fogwire, init_home, stderr, stdout, wait_until};

#[test]
fn two_nodes_started_by_hand_link_and_show_each_other() {
    let a = TestNode::start("");
    let b = TestNode::start("");
    let connect = a.cli(&["connect", &b.peer_addr()]);
    assert!(connect.status.success(), "connect: {}", stderr(&connect));
    assert!(stdout(&connect).contains("linked to"));

    let a_peers = a.peers();
    assert_eq!(a_peers.len(), 1);
    assert_eq!(a_peers[0].node_id, b.node_id().to_string());
    assert_eq!(a_peers[0].state, PeerState::Linked);
    assert_eq!(a_peers[0].direction.as_deref(), Some("outbound"));
    assert!(a_peers[0].wanted);
    wait_until("B to see A", || !b.peers().is_empty());
    let b_peers = b.peers();
    assert_eq!(b_peers[0].node_id, a.node_id().to_string());
    assert_eq!(b_peers[0].direction.as_deref(), Some("inbound"));
    wait_until("a measured RTT", || a.peers()[0].rtt_ms.is_some());

    // The human-readable table shows the full id.
    let table = stdout(&a.cli(&["peers"]));
    assert!(table.contains(&b.node_id().to_string()), "{table}");
    assert!(table.contains("linked"), "{table}");
    let status = stdout(&a.cli(&["status"]));
    assert!(status.contains("1 up"), "{status}");

    // Metrics count the link's bytes per peer.
    let metrics = stdout(&a.cli(&["metrics"]));
    assert!(
        metrics.contains(&format!(
            "fogwire_link_bytes_total{{peer=\"{}\",direction=\"out\"}}",
            b.node_id()
        )),
        "{metrics}"
    );
    assert!(metrics.contains("fogwire_handshakes_total{direction=\"outbound\",result=\"ok\"} 1"));
    // The same samples as JSON.
    let samples: Vec<serde_json::Value> =
        serde_json::from_slice(&a.cli(&["metrics", "--json"]).stdout).unwrap();
    let handshakes = samples
        .iter()
        .find(|sample| {
            sample["name"] == "fogwire_handshakes_total"
                && sample["labels"]["direction"] == "outbound"
                && sample["labels"]["result"] == "ok"
        })
        .unwrap_or_else(|| panic!("{samples:?}"));
    assert_eq!(handshakes["value"], 1.0);
    // Beside the links: the build, routing, the store and replication,
    // in one valid exposition (one `# EOF`, at the end).
    for family in [
        "fogwire_build_info{version=",
        "fogwire_known_nodes ",
        "fogwire_reachability{state=",
        "fogwire_transit_routes ",
        "fogwire_store_blobs ",
        "# TYPE fogwire_replication_served_bytes gauge",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }
    assert_eq!(metrics.matches("# EOF").count(), 1, "{metrics}");
    assert!(metrics.trim_end().ends_with("# EOF"), "{metrics}");

    let disconnect = a.cli(&["disconnect", &b.node_id().to_string()]);
    assert!(disconnect.status.success(), "{}", stderr(&disconnect));
    assert!(a.peers().is_empty());
    wait_until("B to see the link closed", || b.peers().is_empty());
    b.wait_for_log("closed by peer (operator): disconnected by the operator", 1);
}

#[test]
fn a_peer_linked_with_connect_is_linked_again_after_a_restart() {
    let mut a = TestNode::start("");
    let b = TestNode::start("");
    let connect = a.cli(&["connect", &b.peer_addr()]);
    assert!(connect.status.success(), "{}", stderr(&connect));
    let book = std::fs::read_to_string(a.home().join("data/peers")).unwrap();
    assert!(book.contains(&b.peer_addr()), "{book}");

    assert!(a.stop("TERM").success());
    let home = std::mem::replace(&mut a.home, tempfile::tempdir().unwrap());
    let a = TestNode::start_in(home);
    // No command: the node links to B by itself.
    wait_until("A to link to B again after its restart", || {
        a.peers()
            .iter()
            .any(|peer| peer.node_id == b.node_id().to_string() && peer.state == PeerState::Linked)
    });
}

/// Bound: a disconnected peer's links are refused for 10 minutes, so its
/// own redialing cannot undo the operator's `disconnect`.
#[test]
fn disconnect_is_respected_by_the_peer_that_keeps_redialing() {
    let a = TestNode::start("");
    let b = TestNode::start("reconnect_initial_ms = 50\nreconnect_max_ms = 100");
    // B wants A: it redials whenever the link drops.
    let connect = b.cli(&["connect", &a.peer_addr()]);
    assert!(connect.status.success(), "{}", stderr(&connect));
    wait_until("A to see B", || !a.peers().is_empty());

    let disconnect = a.cli(&["disconnect", &b.node_id().to_string()]);
    assert!(disconnect.status.success(), "{}", stderr(&disconnect));
    // B redials, and A refuses every time.
    wait_until("B to be refused three times", || {
        a.log_lines("disconnected by the operator (links refused for 10 min)") >= 3
    });
    assert_eq!(a.status().links, 0);
    assert!(a.peers().is_empty());
    let b_view = b.peers();
    assert_ne!(b_view[0].state, PeerState::Linked);

    // Connecting from A lifts the block.
    let again = a.cli(&["connect", &b.peer_addr()]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(a.status().links, 1);
}

#[test]
fn sigterm_closes_links_with_a_reason_and_leaves_no_trace() {
    let a = TestNode::start("");
    let b = TestNode::start("");
    assert!(a.cli(&["connect", &b.peer_addr()]).status.success());
    let mut b = b;
    let b_home = b.home.path().to_owned();
    let status = b.stop("TERM");
    assert!(status.success(), "exit status {status}");
    a.wait_for_log("closed by peer (shutdown): node shutting down", 1);
    assert!(!b_home.join("data/api.addr").exists());
    // A keeps the peer wanted and says why it cannot reach it.
    wait_until("A to report the failed redial", || {
        a.peers()
            .first()
            .is_some_and(|peer| peer.state != PeerState::Linked)
    });
    let mut a = a;
    assert!(a.stop("INT").success());
}

#[test]
fn sigint_shutdown_logs_a_clean_stop() {
    let mut node = TestNode::start("");
    let log_path = node.home().join("node.log");
    assert!(node.stop("INT").success());
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(log.contains("SIGINT received: shutting down"), "{log}");
    assert!(log.contains("stopped cleanly"), "{log}");
}

#[test]
fn connect_fails_closed_when_the_address_answers_with_another_identity() {
    let a = TestNode::start("");
    // A hang-up after its identity is nothing to warn of: B says so at
    // debug level (reachability checks hang up there too).
    let b = TestNode::start_logging(init_home("127.0.0.1:0"), "info,fogwire_link=debug");
    let c = TestNode::start("");
    // B's address with C's id: whoever answers must be C, and is not.
    let wrong = format!("{}@{}", c.node_id(), b.link_addr());
    let output = a.cli(&["connect", &wrong]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains(&format!("expected peer {}", c.node_id())),
        "{message}"
    );
    assert!(
        message.contains(&format!("presented identity {}", b.node_id())),
        "{message}"
    );
    assert!(a.peers().is_empty());
    // B saw the dialer hang up after B's identity, before learning A's.
    b.wait_for_log(
        "peer closed the connection after 2 of 3 handshake messages (a reachability check, or a \
         dialer that wanted another node)",
        1,
    );
}

#[test]
fn init_writes_a_commented_config_and_private_data() {
    let home = tempfile::tempdir().unwrap();
    let output = fogwire(home.path(), &["init"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = std::fs::read_to_string(home.path().join("fogwire.toml")).unwrap();
    assert!(text.starts_with("# fogwire node configuration."));
    assert!(text.contains("listen = \"0.0.0.0:7100\""));
    for (file, mode) in [
        ("data", 0o700),
        ("data/node.key", 0o600),
        ("data/api.token", 0o600),
    ] {
        let actual = std::fs::metadata(home.path().join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(actual, mode, "{file}");
    }
    let id = stdout(&fogwire(home.path(), &["id"]));
    assert!(stdout(&output).contains(id.trim()));
    let as_json: serde_json::Value =
        serde_json::from_slice(&fogwire(home.path(), &["id", "--json"]).stdout).unwrap();
    assert_eq!(as_json["node_id"], id.trim());
    // Running init again refuses to clobber.
    let again = fogwire(home.path(), &["init"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
    // A command for the node before it runs says how to start this very
    // node, home and all, as printed.
    let early = fogwire(home.path(), &["status"]);
    assert!(!early.status.success());
    let start = format!("fogwire --home {} node", home.path().display());
    assert!(stderr(&early).contains(&start), "{}", stderr(&early));
}

#[test]
fn output_into_a_pipe_nobody_reads_stops_quietly_as_unix_tools_do() {
    // `fogwire id | head -c 0`: the reader is gone before the first write.
    let home = init_home("127.0.0.1:0");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = std::process::Command::new(crate::harness::BINARY)
        .arg("--home")
        .arg(home.path())
        .arg("id")
        .stdout(writer)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(141), "{}", stderr(&output));
    assert_eq!(stderr(&output), "");
}

#[test]
fn completions_and_manual_pages_come_from_the_cli_itself() {
    let home = tempfile::tempdir().unwrap();
    for (shell, mark) in [
        ("bash", "_fogwire()"),
        ("zsh", "#compdef fogwire"),
        ("fish", "complete -c fogwire"),
    ] {
        let output = fogwire(home.path(), &["completions", shell]);
        assert!(output.status.success(), "{shell}: {}", stderr(&output));
        let script = stdout(&output);
        assert!(script.contains(mark), "{shell}");
        // Subcommands two levels down complete too.
        assert!(script.contains("join-code"), "{shell}");
    }
    let page = fogwire(home.path(), &["man"]);
    assert!(page.status.success(), "{}", stderr(&page));
    assert!(stdout(&page).contains(".TH fogwire 1"));
    let dir = home.path().join("man1");
    let pages = fogwire(home.path(), &["man", "--dir", dir.to_str().unwrap()]);
    assert!(pages.status.success(), "{}", stderr(&pages));
    let store_add = std::fs::read_to_string(dir.join("fogwire-store-add.1")).unwrap();
    assert!(store_add.contains("b3sum"), "{store_add}");
    // Neither needed a home: nothing was written into it but the pages.
    assert!(!home.path().join("fogwire.toml").exists());
}

#[test]
fn logs_can_be_json_and_a_bad_rust_log_is_reported_not_ignored() {
    // [log] format = "json": one object per line, a collector's format.
    let node = TestNode::start_with("log", "format = \"json\"");
    node.wait_for_log("listening", 1);
    let log = node.log();
    let first: serde_json::Value =
        serde_json::from_str(log.lines().next().unwrap()).unwrap_or_else(|e| panic!("{e}: {log}"));
    assert!(first["level"].is_string(), "{first}");
    assert!(first["fields"]["message"].is_string(), "{first}");
    drop(node);
    // A RUST_LOG that is no filter: said so, and the node logs at its
    // configured level instead.
    let node = TestNode::start_logging(init_home("127.0.0.1:0"), "fogwire=[bogus");
    node.wait_for_log("listening", 1);
    let log = node.log();
    assert!(
        log.contains("RUST_LOG=\"fogwire=[bogus\" is not a tracing filter"),
        "{log}"
    );
}

#[test]
fn the_node_tells_its_service_manager_it_is_ready_reloads_on_sighup_and_says_it_stops() {
    use std::os::unix::net::UnixDatagram;
    let home = init_home("127.0.0.1:0");
    // What systemd gives a Type=notify service: a datagram socket.
    let socket_path = home.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let next = || {
        let mut message = [0u8; 4096];
        let len = socket.recv(&mut message).expect("a notification");
        String::from_utf8_lossy(&message[..len]).into_owned()
    };
    let log_path = home.path().join("node.log");
    let mut node = std::process::Command::new(crate::harness::BINARY)
        .arg("--home")
        .arg(home.path())
        .arg("node")
        .env("NOTIFY_SOCKET", &socket_path)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let ready = next();
    assert!(ready.contains("READY=1"), "{ready}");
    // Ready means ready: the control API already answers.
    let status = fogwire(home.path(), &["status"]);
    assert!(status.status.success(), "{}", stderr(&status));

    let hangup = |node: &std::process::Child| {
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &node.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    let config = home.path().join("fogwire.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("# level = \"info\"", "level = \"debug\""),
    )
    .unwrap();
    hangup(&node);
    assert!(next().contains("RELOADING=1"));
    assert!(next().contains("READY=1"));
    let log = || std::fs::read_to_string(&log_path).unwrap();
    wait_until("the new level to be taken", || {
        log().contains("SIGHUP: log level changed")
    });
    // A file that no longer loads changes nothing, and says so.
    std::fs::write(&config, "[link\n").unwrap();
    hangup(&node);
    assert!(next().contains("RELOADING=1"));
    assert!(next().contains("READY=1"));
    wait_until("the bad file to be reported", || {
        log().contains("the running configuration stays as it was")
    });

    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &node.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(next().contains("STOPPING=1"));
    assert!(node.wait().unwrap().success(), "{}", log());
}

#[test]
fn the_node_refuses_a_key_file_others_can_read() {
    let home = init_home("127.0.0.1:0");
    let key = home.path().join("data/node.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = fogwire(home.path(), &["node"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("node.key has mode 0644"), "{message}");
    assert!(message.contains("chmod 600"), "{message}");
}

#[test]
fn config_errors_name_the_file_line_and_what_is_valid() {
    let home = tempfile::tempdir().unwrap();
    assert!(fogwire(home.path(), &["init"]).status.success());
    let path = home.path().join("fogwire.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("[link]\n", "[link]\nlisten_port = 7100\n"),
    )
    .unwrap();
    let output = fogwire(home.path(), &["node"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    let line = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("listen_port"))
        .unwrap()
        + 1;
    assert!(
        message.contains(&format!(
            "fogwire.toml:{line}:1: unknown field `listen_port`"
        )),
        "{message}"
    );
    assert!(message.contains("expected one of `listen`"), "{message}");

    // A control API on a public address is refused, with the fix.
    std::fs::write(&path, "[api]\nlisten = \"0.0.0.0:7101\"\n").unwrap();
    let message = stderr(&fogwire(home.path(), &["node"]));
    assert!(message.contains("fogwire.toml:2:10:"), "{message}");
    assert!(message.contains("loopback"), "{message}");
}

#[test]
fn the_control_api_requires_the_token_and_listens_on_loopback_only() {
    let node = TestNode::start("");
    let addr = std::fs::read_to_string(node.home().join("data/api.addr")).unwrap();
    let addr: std::net::SocketAddr = addr.trim().parse().unwrap();
    assert!(addr.ip().is_loopback());
    let token = std::fs::read_to_string(node.home().join("data/api.token")).unwrap();
    let request = |authorization: &str| {
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET /v1/status HTTP/1.1\r\nHost: x\r\n{authorization}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    let wrong_token = format!("Authorization: Bearer {}\r\n", "0".repeat(64));
    let good_token = format!("Authorization: Bearer {}\r\n", token.trim());
    assert!(request("").starts_with("HTTP/1.1 401"));
    assert!(request(&wrong_token).starts_with("HTTP/1.1 401"));
    assert!(request("Authorization: Basic eDp5\r\n").starts_with("HTTP/1.1 401"));
    let ok = request(&good_token);
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains(&node.node_id().to_string()));
}

/// One HTTP/1.1 request to the control API at `addr`; the whole response.
fn api_request(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(format!("{head}Host: x\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    // The node may answer before it reads a body it refuses.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

fn api_addr(node: &TestNode) -> std::net::SocketAddr {
    let addr = std::fs::read_to_string(node.home().join("data/api.addr")).unwrap();
    addr.trim().parse().unwrap()
}

#[test]
fn the_control_api_takes_the_auth_scheme_in_any_case_and_refuses_big_bodies_with_413() {
    let node = TestNode::start("");
    let addr = api_addr(&node);
    let token = std::fs::read_to_string(node.home().join("data/api.token")).unwrap();
    let token = token.trim();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let response = api_request(
            addr,
            &format!("GET /v1/status HTTP/1.1\r\nauthorization: {scheme} {token}\r\n"),
            b"",
        );
        assert!(response.starts_with("HTTP/1.1 200"), "{scheme}: {response}");
    }
    // A body over the API's 16 KiB limit: 413, whatever the endpoint.
    let body = vec![b'x'; 64 * 1024];
    let response = api_request(
        addr,
        &format!(
            "POST /v1/store/add HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ),
        &body,
    );
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
}

/// Bound: the control API holds at most 256 connections; past that, the
/// oldest that never sent a request is closed, so idle sockets cannot lock
/// the operator out; and a connection that sends no request is closed
/// after the 10 s header timeout.
#[test]
fn idle_api_connections_are_capped_and_timed_out_and_the_cli_still_answers() {
    let node = TestNode::start("");
    let addr = api_addr(&node);
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // The CLI still gets its answer...
    let status = node.cli(&["status"]);
    assert!(status.status.success(), "{}", stderr(&status));
    // ...because the oldest idle connections made room (closed: EOF).
    let closed = |mut stream: &TcpStream| {
        stream
            .set_read_timeout(Some(fogwire_testkit::wait::PATIENCE))
            .unwrap();
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => true,
            Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
            // hyper may say 408 before it closes; then the EOF follows.
            Ok(_) => {
                let mut rest = Vec::new();
                stream.read_to_end(&mut rest).is_ok()
            }
        }
    };
    assert!(
        closed(&idle[0]),
        "the oldest idle connection was not closed"
    );
    // The newest were not evicted; the header timeout closes them.
    assert!(
        closed(&idle[299]),
        "an idle connection outlived the header timeout"
    );
    // A kept-alive connection that asked once and then idles is closed by
    // the same timeout (hyper starts it again after each answer).
    let token = std::fs::read_to_string(node.home().join("data/api.token")).unwrap();
    let mut kept_alive = TcpStream::connect(addr).unwrap();
    kept_alive
        .write_all(
            format!(
                "GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
                token.trim()
            )
            .as_bytes(),
        )
        .unwrap();
    let mut head = [0u8; 12];
    kept_alive.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let mut answer = Vec::new();
    kept_alive
        .set_read_timeout(Some(fogwire_testkit::wait::PATIENCE))
        .unwrap();
    assert!(
        kept_alive.read_to_end(&mut answer).is_ok(),
        "a kept-alive idle connection was never closed"
    );
    let status = node.cli(&["status"]);
    assert!(status.status.success(), "{}", stderr(&status));
}

#[test]
fn connect_fails_truthfully_where_no_fogwire_link_answers() {
    let node = TestNode::start("");
    let other = TestNode::start("");
    let other_id = other.node_id();
    // The control API's port: HTTP, not a link.
    let http = node.cli(&["connect", &format!("{other_id}@{}", api_addr(&other))]);
    assert!(!http.status.success());
    assert!(stderr(&http).contains("speaks HTTP"), "{}", stderr(&http));
    // A port nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let nothing = node.cli(&["connect", &format!("{other_id}@{closed}")]);
    assert!(!nothing.status.success());
    assert!(
        stderr(&nothing).contains("could not connect"),
        "{}",
        stderr(&nothing)
    );
    // Neither is kept as a wanted peer.
    assert!(node.peers().is_empty());
}

#[test]
fn connect_to_a_full_node_says_it_was_refused_and_keeps_nothing() {
    let full = TestNode::start("max_links = 1");
    let first = TestNode::start("");
    let linked = first.cli(&["connect", &full.peer_addr()]);
    assert!(linked.status.success(), "{}", stderr(&linked));
    let late = TestNode::start("");
    let refused = late.cli(&["connect", &full.peer_addr()]);
    assert!(!refused.status.success(), "{}", stdout(&refused));
    assert!(stderr(&refused).contains("refused"), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("no room"), "{}", stderr(&refused));
    assert!(late.peers().is_empty(), "a refused peer is not kept");
    assert_eq!(full.status().links, 1);
}

#[test]
fn the_demo_runs_eight_linked_nodes_routes_repairs_and_exits_cleanly() {
    let scratch = tempfile::tempdir().unwrap();
    let image = scratch.path().join("mandelbrot.png");
    let output = std::process::Command::new(crate::harness::BINARY)
        .args(["demo", "--duration", "3", "--stream", "64M", "--image"])
        .arg(&image)
        .output()
        .unwrap();
    let text = stdout(&output);
    assert!(output.status.success(), "{text}\n{}", stderr(&output));
    assert!(text.contains("8 nodes, 10 links"), "{text}");
    for link in ["n0↔n1", "n7↔n0", "n0↔n4", "n2↔n6"] {
        assert!(text.contains(link), "{link} missing:\n{text}");
    }
    // Routes of 1, 2 and 3 hops, pinged; a relay killed mid-stream; the
    // route repaired and the stream intact; bytes per route.
    for hops in ["1 hop ", "2 hops", "3 hops"] {
        let line = text
            .lines()
            .find(|line| line.trim_start().starts_with(hops))
            .unwrap_or_else(|| panic!("no {hops} route:\n{text}"));
        assert!(line.contains("ping") && line.contains(" ms"), "{line}");
    }
    assert!(text.contains("killed n"), "{text}");
    assert!(text.contains("moved the route to"), "{text}");
    // The box assembles itself first: every role of the later stages
    // comes from one manifest, placed with no leader.
    assert!(text.contains("boards see each other alive after"), "{text}");
    assert!(text.contains("the ledger pinned to n1"), "{text}");
    assert!(
        text.contains("every board computed the same placement"),
        "{text}"
    );
    // A page fetched through the SOCKS proxy and the exit.
    assert!(text.contains("through exit n"), "{text}");
    assert!(text.contains("the page, intact"), "{text}");
    // As root, the VPN between two nodes, each in a namespace of its own.
    if crate::netns::namespaces_available("demo") {
        let ping = text
            .lines()
            .find(|line| line.contains("ping over the VPN:"))
            .unwrap_or_else(|| panic!("no ping over the VPN:\n{text}"));
        assert!(ping.contains(" received"), "{ping}");
    }
    assert!(text.contains("got every byte, in order, once"), "{text}");
    assert!(text.contains("ROUTE  PATH"), "{text}");
    // The store stage: a directory published through a feed on n0 reaches
    // every other node and comes back byte for byte.
    assert!(text.contains("7 of 7 followers replicated it"), "{text}");
    assert!(text.contains("restored it byte for byte"), "{text}");
    // The compute stage: 16 bands on 3 workers each, the manifest's cheat
    // caught every time; the image correct, written as a PNG.
    assert!(text.contains("16 bands accepted"), "{text}");
    assert!(
        text.contains("sent 16 wrong result(s), every one caught and outvoted"),
        "{text}"
    );
    assert!(text.contains("the image is correct"), "{text}");
    // Coins: n1 keeps the ledger (the manifest pins it there); the buyer
    // pays for the job from escrow, the agreeing workers and the hub are
    // paid, the cheat loses its deposit; relays and servers earn by
    // receipt; the supply adds up.
    assert!(text.contains("ledger: n1 keeps it"), "{text}");
    assert!(text.contains("buys the job"), "{text}");
    assert!(text.contains("payment: 0."), "{text}");
    assert!(text.contains("to the hub"), "{text}");
    assert!(
        text.contains("caught dissenting: up to 1 coins of its deposit slashed"),
        "{text}"
    );
    assert!(text.contains("coins/hour"), "{text}");
    // The end of the cluster stage: a board running a service switched
    // off, declared failed everywhere, and its service running on a spare.
    let moved = text
        .lines()
        .find(|line| line.contains("every board declared"))
        .unwrap_or_else(|| panic!("no board switched off:\n{text}"));
    assert!(moved.contains(" runs on n"), "{moved}");
    // Relays and seeders earn: their receipts are redeemed.
    let redeemed = text
        .lines()
        .filter(|line| line.contains(" receipt(s) redeemed"))
        .find_map(|line| line.strip_prefix("ledger: ")?.split(' ').next())
        .and_then(|count| count.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no receipts line:\n{text}"));
    assert!(redeemed > 0, "{text}");
    assert!(text.contains("supply check passed"), "{text}");
    assert!(
        std::fs::read(&image)
            .unwrap()
            .starts_with(b"\x89PNG\r\n\x1a\n")
    );
    // Only the killed relay's links are down.
    let down = text
        .lines()
        .filter(|line| {
            line.contains('↔')
                && line.split_whitespace().nth(1) == Some("down")
                && !line.contains("node killed")
        })
        .count();
    assert_eq!(down, 0, "a link was down:\n{text}");
    assert!(
        text.contains("10 of 10 links closed with a reason"),
        "{text}"
    );
}

#[test]
fn configured_peers_are_redialed_with_backoff_until_they_answer() {
    // B's identity and address are fixed before B runs, so A can be
    // configured with B as a peer while B is still down.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let b_home = init_home(&listen);
    let b_id = stdout(&fogwire(b_home.path(), &["id"])).trim().to_owned();

    let a_home = init_home("127.0.0.1:0");
    let config = a_home.path().join("fogwire.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("peers = []", &format!("peers = [\"{b_id}@{listen}\"]"));
    let text = text.replace(
        "[link]\n",
        "[link]\nreconnect_initial_ms = 100\nreconnect_max_ms = 400\n",
    );
    std::fs::write(&config, text).unwrap();
    let a = TestNode::start_in(a_home);

    // B is down: A keeps trying and says why.
    a.wait_for_log("cannot link to peer", 2);
    assert!(a.log().contains("Connection refused"), "{}", a.log());
    let peers = a.peers();
    assert_eq!(peers.len(), 1);
    assert_ne!(peers[0].state, PeerState::Linked);

    // B comes up: A links to it by itself.
    let mut b = TestNode::start_in(b_home);
    wait_until("A to link to B", || {
        a.peers()
            .first()
            .is_some_and(|p| p.state == PeerState::Linked)
    });
    // B is killed without a goodbye, then restarted: A notices and relinks.
    let b_home = {
        let home = tempfile::tempdir().unwrap();
        for entry in ["fogwire.toml", "data/node.key", "data/api.token"] {
            let from = b.home().join(entry);
            let to = home.path().join(entry);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&from, &to).unwrap();
        }
        std::fs::set_permissions(
            home.path().join("data"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        home
    };
    assert!(!b.stop("KILL").success());
    wait_until("A to see the link gone", || {
        a.peers()
            .first()
            .is_some_and(|p| p.state != PeerState::Linked)
    });
    let _b = TestNode::start_in(b_home);
    wait_until("A to relink to B", || {
        a.peers()
            .first()
            .is_some_and(|p| p.state == PeerState::Linked)
    });
}

#[test]
fn a_frozen_peer_is_dropped_after_the_idle_timeout() {
    let settings = "keepalive_interval_ms = 200\nidle_timeout_ms = 1000";
    let a = TestNode::start(settings);
    let b = TestNode::start(settings);
    assert!(a.cli(&["connect", &b.peer_addr()]).status.success());
    // Freeze B: its socket stays open, but it answers nothing.
    b.signal("STOP");
    a.wait_for_log(
        "closed by us (idle_timeout): nothing received for 1000 ms",
        1,
    );
    b.signal("CONT");
}

#[test]
fn the_demo_stops_cleanly_on_ctrl_c() {
    let out_dir = tempfile::tempdir().unwrap();
    let out_path = out_dir.path().join("demo.out");
    let mut demo = std::process::Command::new(crate::harness::BINARY)
        .args(["demo", "--duration", "0", "--nodes", "4", "--no-compute"])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the demo to draw its table", || {
        std::fs::read_to_string(&out_path).is_ok_and(|text| text.contains("LINK"))
    });
    let interrupt = std::process::Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupt.success());
    let status = demo.wait().unwrap();
    let text = std::fs::read_to_string(&out_path).unwrap();
    assert!(status.success(), "{status}\n{text}");
    assert!(
        text.contains("interrupted: shutting the nodes down"),
        "{text}"
    );
    assert!(text.contains("4 of 4 links closed with a reason"), "{text}");
}

#[test]
fn bench_link_reports_each_figure_beside_its_baselines() {
    let output = std::process::Command::new(crate::harness::BINARY)
        .args([
            "bench",
            "link",
            "--seconds",
            "0.2",
            "--sizes",
            "1024,65516",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(report["raw_tcp_bytes_per_sec"].as_f64().unwrap() > 0.0);
    let sizes = report["sizes"].as_array().unwrap();
    assert_eq!(sizes.len(), 2);
    for size in sizes {
        for key in [
            "link_bytes_per_sec",
            "cipher_bytes_per_sec",
            "link_to_cipher",
            "link_to_raw_tcp",
        ] {
            assert!(size[key].as_f64().unwrap() > 0.0, "{key} in {size}");
        }
    }
}

#[test]
fn bench_rpc_reports_a_call_beside_a_bare_round_trip() {
    let output = std::process::Command::new(crate::harness::BINARY)
        .args([
            "bench",
            "rpc",
            "--round-trips",
            "50",
            "--calls",
            "500",
            "--in-flight",
            "8",
            "--rounds",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for key in ["link_round_trip_us", "call_us", "calls_per_sec"] {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key} in {report}");
    }
}

#[test]
fn bench_socks_reports_each_path_beside_a_direct_download() {
    let output = std::process::Command::new(crate::harness::BINARY)
        .args([
            "bench",
            "socks",
            "--seconds",
            "0.2",
            "--rounds",
            "1",
            "--connects",
            "3",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let paths = report["paths"].as_array().unwrap();
    let hops: Vec<u64> = paths.iter().map(|p| p["hops"].as_u64().unwrap()).collect();
    assert_eq!(hops, [0, 1, 3]);
    for path in paths {
        assert!(path["bytes_per_sec"].as_f64().unwrap() > 0.0, "{path}");
        assert!(path["first_byte_ms"].as_f64().unwrap() > 0.0, "{path}");
    }
    assert!(paths[2]["route_rtt_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn ip_prints_the_address_derived_from_a_node_id() {
    let home = init_home("127.0.0.1:0");
    let own = fogwire(home.path(), &["ip"]);
    assert!(own.status.success(), "{}", stderr(&own));
    let address: std::net::Ipv6Addr = stdout(&own).trim().parse().unwrap();
    assert_eq!(address.segments()[..2], [0xfd77, 0x6972]);
    let id = stdout(&fogwire(home.path(), &["id"]));
    let by_id = fogwire(home.path(), &["ip", id.trim(), "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&by_id.stdout).unwrap();
    assert_eq!(json["address"], address.to_string());
    assert_eq!(json["node_id"], id.trim());
}

#[test]
fn config_show_prints_every_setting_in_effect_and_hides_the_join_code() {
    let home = init_home("127.0.0.1:0");
    let path = home.path().join("fogwire.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("[store]\n", "[store]\ncache_bytes_max = 1000\n")
            .replace("[exit]\n", "[exit]\ndeny_ports = [25, \"6000-6100\"]\n"),
    )
    .unwrap();
    let shown = fogwire(home.path(), &["config", "show"]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let text = stdout(&shown);
    assert!(text.contains("cache_bytes_max = 1000"), "{text}");
    // A default the file leaves out is shown too.
    assert!(text.contains("max_links = 256"), "{text}");
    // What it prints is a configuration that reads back the same.
    let config = fogwire_node::config::Config::load(&path).unwrap();
    let again = fogwire_node::config::Config::parse(&path, &text).unwrap();
    assert_eq!(again, config);

    // A join code is a secret: hidden unless asked for.
    let created = TestNode::start("");
    let join: fogwire_api::ClusterCreated =
        serde_json::from_slice(&created.cli(&["cluster", "init", "--json"]).stdout).unwrap();
    assert!(join.join_code.starts_with("fwjoin1"));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "[cluster]\n",
            &format!("[cluster]\njoin = \"{}\"\n", join.join_code),
        ),
    )
    .unwrap();
    let hidden = stdout(&fogwire(home.path(), &["config", "show", "--json"]));
    assert!(!hidden.contains(&join.join_code), "{hidden}");
    assert!(hidden.contains("hidden"), "{hidden}");
    let shown = stdout(&fogwire(home.path(), &["config", "show", "--secrets"]));
    assert!(shown.contains(&join.join_code), "{shown}");

    // A bad file is an error naming its line, and a non-zero exit.
    std::fs::write(&path, "[link]\nmax_links = \"many\"\n").unwrap();
    let failed = fogwire(home.path(), &["config", "show"]);
    assert!(!failed.status.success());
    assert!(
        stderr(&failed).contains("fogwire.toml:2"),
        "{}",
        stderr(&failed)
    );
}

#[test]
fn a_name_given_to_a_node_is_taken_and_shown_by_every_command() {
    let mut a = TestNode::start("");
    let b = TestNode::start("");
    let linked = a.cli(&["connect", &b.peer_addr()]);
    assert!(linked.status.success(), "{}", stderr(&linked));
    let b_id = b.node_id().to_string();
    wait_until("a to know b from its advert", || {
        stdout(&a.cli(&["nodes"])).contains(&b_id)
    });

    // Given by a unique start of the id; shown beside it.
    let given = a.cli(&["name", "board-2", &b_id[..12]]);
    assert!(given.status.success(), "{}", stderr(&given));
    assert!(stdout(&given).contains(&b_id), "{}", stdout(&given));
    let peers = stdout(&a.cli(&["peers"]));
    assert!(peers.contains(&format!("board-2 ({b_id})")), "{peers}");
    let nodes = stdout(&a.cli(&["nodes"]));
    assert!(nodes.contains(&format!("board-2 ({b_id})")), "{nodes}");
    // Taken where an id is: a ping, a route, the ledger's accounts.
    let ping = a.cli(&["ping", "board-2", "--count", "1"]);
    assert!(ping.status.success(), "{}", stderr(&ping));
    let found = a.cli(&["route", "find", "board-2", "--json"]);
    assert!(found.status.success(), "{}", stderr(&found));
    assert!(stdout(&found).contains(&b_id));

    // Names that would read as something else are refused.
    for bad in ["fw1x", "me", "Board", "a/b"] {
        let refused = a.cli(&["name", bad, &b_id]);
        assert!(!refused.status.success(), "{bad} was taken");
    }
    let unknown = a.cli(&["name", "ghost", "fw1qqqqq"]);
    assert!(!unknown.status.success());

    // Kept across a restart; listed; forgotten.
    assert!(a.stop("TERM").success());
    a = a.start_again();
    let names: Vec<fogwire_api::NodeName> =
        serde_json::from_slice(&a.cli(&["names", "--json"]).stdout).unwrap();
    assert_eq!(
        names,
        vec![fogwire_api::NodeName {
            name: "board-2".into(),
            node_id: b_id.clone()
        }]
    );
    let dropped = a.cli(&["disconnect", "board-2"]);
    assert!(dropped.status.success(), "{}", stderr(&dropped));
    let forgotten = a.cli(&["name", "board-2", "--remove"]);
    assert!(forgotten.status.success(), "{}", stderr(&forgotten));
    let again = a.cli(&["name", "board-2", "--remove"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("no node is named"),
        "{}",
        stderr(&again)
    );
}
