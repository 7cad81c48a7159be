//! Who may see the dashboard: the token (or its cookie, which only reads)
//! on the control API; on `[web]`, anyone, read-only, for what the
//! operator switched on, within a rate and a stream bound per address.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::{TestNode, wait_until};

/// One request on a new connection; the answer's head and body (the body
/// only as far as `Connection: close` lets it end, or up to a timeout for
/// streams: then what came).
fn request(addr: &str, method: &str, path: &str, headers: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) => (head.to_owned(), body.to_owned()),
        None => (text, String::new()),
    }
}

/// A dashboard stream opened and never read: its connection, once the
/// answer's head says whether it was taken.
fn open_stream(addr: &str, headers: &str) -> (String, TcpStream) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /dash/events?view=board HTTP/1.1\r\nHost: x\r\n{headers}\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
        head.push(byte[0]);
    }
    (String::from_utf8_lossy(&head).into_owned(), stream)
}

fn api_addr(node: &TestNode) -> String {
    std::fs::read_to_string(node.home().join("data/api.addr"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn the_dashboard_needs_the_token_and_its_cookie_only_reads() {
    let node = TestNode::start("");
    let addr = api_addr(&node);
    let token = std::fs::read_to_string(node.home().join("data/api.token")).unwrap();
    let token = token.trim();

    // A browser without the token is told how to get in.
    let (head, body) = request(&addr, "GET", "/dash/", "Accept: text/html\r\n");
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(body.contains("fogwire dashboard"), "{body}");
    let (head, _) = request(&addr, "GET", "/dash/login?token=00", "");
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (head, _) = request(&addr, "GET", "/dash/events", "");
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");

    // The link `fogwire dashboard` prints sets the cookie.
    let (head, _) = request(&addr, "GET", &format!("/dash/login?token={token}"), "");
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    assert!(head.contains("location: /dash/"), "{head}");
    let cookie_line = head
        .lines()
        .find(|line| line.starts_with("set-cookie:"))
        .unwrap();
    assert!(cookie_line.contains("HttpOnly"), "{cookie_line}");
    assert!(cookie_line.contains("SameSite=Strict"), "{cookie_line}");
    let cookie = format!("Cookie: fogwire_token={token}\r\n");
    let (head, body) = request(&addr, "GET", "/dash/", &cookie);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(body.contains("/dash/dash.js"), "{body}");
    // The cookie reads; it never writes.
    let (head, _) = request(&addr, "GET", "/v1/status", &cookie);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (head, _) = request(&addr, "POST", "/v1/cluster/init", &cookie);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (head, _) = request(&addr, "GET", "/dash/events?view=everything", &cookie);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");

    // Streams are bounded, and a reader that never reads holds only its own.
    let streams: Vec<(String, TcpStream)> = (0..16).map(|_| open_stream(&addr, &cookie)).collect();
    for (head, _) in &streams {
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("content-type: text/event-stream"), "{head}");
    }
    let (head, _) = open_stream(&addr, &cookie);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    // The rest of the API still answers.
    let (head, _) = request(&addr, "GET", "/v1/status", &cookie);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    drop(streams);
    wait_until("a stream slot to come back", || {
        open_stream(&addr, &cookie).0.starts_with("HTTP/1.1 200")
    });
}

#[test]
fn the_web_listener_serves_only_what_is_switched_on_read_only_and_rate_limited() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let node = TestNode::start_with(
        "web",
        &format!(
            "listen = \"127.0.0.1:{port}\"\ngateway = false\nmetrics = true\n\
             requests_per_second = 1\nburst = 12"
        ),
    );
    let web = format!("127.0.0.1:{port}");
    wait_until("[web] to listen", || TcpStream::connect(&web).is_ok());
    assert_eq!(
        node.log_lines("[web] listening with no token, read-only"),
        1
    );

    let (head, body) = request(&web, "GET", "/dash/", "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("/dash/dash.js"), "{body}");
    let (head, body) = request(&web, "GET", "/metrics", "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("fogwire_build_info"), "{body}");
    // Nothing of the API, nothing switched off, nothing but reads.
    for path in ["/v1/status", "/dash/login?token=x", "/tree/00"] {
        let (head, body) = request(&web, "GET", path, "");
        assert!(head.starts_with("HTTP/1.1 404"), "{path}: {head}");
        assert!(body.contains("not served here"), "{body}");
    }
    let (head, _) = request(&web, "POST", "/dash/", "");
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");

    // Two streams an address; a third is refused, whatever they read.
    let first = open_stream(&web, "");
    let second = open_stream(&web, "");
    assert!(first.0.starts_with("HTTP/1.1 200"), "{}", first.0);
    assert!(second.0.starts_with("HTTP/1.1 200"), "{}", second.0);
    let (head, _) = open_stream(&web, "");
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");

    // Past the burst, an address waits.
    let refused: Vec<String> = (0..30)
        .map(|_| request(&web, "GET", "/dash/dash.css", "").0)
        .filter(|head| head.starts_with("HTTP/1.1 429"))
        .collect();
    assert!(!refused.is_empty(), "30 requests at once, none refused");
    assert!(refused[0].contains("retry-after: 1"), "{}", refused[0]);
}
