//! `fogwire rpc call` between hand-started nodes: the locator of another
//! node, called by method name, and the errors a user can meet.

use crate::harness::{TestNode, stderr, stdout, wait_until};

#[test]
fn rpc_call_asks_another_nodes_locator_by_method_name() {
    let a = TestNode::start("");
    let b = TestNode::start("");
    let linked = a.cli(&["connect", &b.peer_addr()]);
    assert!(linked.status.success(), "{}", stderr(&linked));
    let (a_id, b_id) = (a.node_id().to_string(), b.node_id().to_string());
    // b's locator names both nodes once b has a's advert.
    wait_until("b's locator knows both nodes", || {
        let out = a.cli(&["rpc", "call", &b_id[..12], "locator", "resolve", "locator"]);
        out.status.success() && stdout(&out).contains(&a_id)
    });
    let out = a.cli(&["rpc", "call", &b_id, "locator", "resolve", "locator"]);
    let text = stdout(&out);
    let answer: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(
        answer[0][0],
        serde_json::Value::from(b_id.as_str()),
        "{text}"
    );
    assert_eq!(answer[1], serde_json::Value::from(1));
    assert_eq!(answer[2]["resolve"], serde_json::Value::from(0));
    // By index too.
    let by_index = a.cli(&["rpc", "call", &b_id, "locator", "0", "nothing"]);
    assert_eq!(stdout(&by_index).trim(), "[[],1,{}]");
    // Errors say what is wrong.
    let no_method = a.cli(&["rpc", "call", &b_id, "locator", "frobnicate"]);
    assert!(!no_method.status.success());
    assert!(
        stderr(&no_method).contains("no method `frobnicate`")
            || stderr(&no_method).contains("does not serve a method `frobnicate`"),
        "{}",
        stderr(&no_method)
    );
    let no_service = a.cli(&["rpc", "call", &b_id, "jobs", "0"]);
    assert!(!no_service.status.success());
    assert!(
        stderr(&no_service).contains("no service `jobs`"),
        "{}",
        stderr(&no_service)
    );
    let no_node = a.cli(&["rpc", "call", "fw1zzzzzz", "locator", "0"]);
    assert!(!no_node.status.success());
    assert!(
        stderr(&no_node).contains("fogwire nodes"),
        "{}",
        stderr(&no_node)
    );
}
