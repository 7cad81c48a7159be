//! The messenger through the real binary: two hand-started nodes exchange
//! messages through a relay, by a name; a message sent while the
//! recipient is down arrives once when it is back; the live stream shows
//! the receipts; mail for an absent node waits at the mailbox its
//! configuration names; two clusters peer by public key.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use fogwire_api::{ContactView, GraphNode, GroupEntryView, GroupView, MessageView};

use crate::harness::{BINARY, TestNode, json, stderr, stdout, wait_until};

fn history(node: &TestNode, with: &str) -> Vec<MessageView> {
    json(&node.cli(&["msg", "history", with, "--peek", "--json"]))
}

#[test]
fn two_nodes_exchange_messages_through_a_relay_and_an_absent_one_gets_its_mail_once_on_return() {
    let alice = TestNode::start("");
    let relay = TestNode::start("");
    let carol = TestNode::start("");
    for node in [&alice, &carol] {
        let linked = node.cli(&["connect", &relay.peer_addr()]);
        assert!(linked.status.success(), "{}", stderr(&linked));
    }
    wait_until("Alice to learn Carol through the relay", || {
        let graph: Vec<GraphNode> = json(&alice.cli(&["nodes", "--json"]));
        graph.len() == 3
    });
    let carol_id = carol.node_id().to_string();
    let alice_id = alice.node_id().to_string();
    let named = alice.cli(&["name", "carol", &carol_id]);
    assert!(named.status.success(), "{}", stderr(&named));

    // Alice follows her messages while she writes.
    let mut follow = Command::new(BINARY)
        .arg("--home")
        .arg(alice.home())
        .args(["msg", "follow", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["following"], alice_id.as_str(), "{first}");

    let sent = alice.cli(&["msg", "send", "carol", "hello", "there", "--wait"]);
    assert!(sent.status.success(), "{}", stderr(&sent));
    assert!(stderr(&sent).contains("signed for it"), "{}", stderr(&sent));
    let id = stdout(&sent).trim().to_owned();

    let inbox: Vec<MessageView> = json(&carol.cli(&["msg", "inbox", "--json"]));
    assert_eq!(inbox.len(), 1);
    assert_eq!(
        (
            inbox[0].text.as_str(),
            inbox[0].peer.as_str(),
            inbox[0].direction.as_str()
        ),
        ("hello there", alice_id.as_str(), "in")
    );
    assert_eq!(inbox[0].id, id);
    let again = carol.cli(&["msg", "inbox"]);
    assert!(
        stderr(&again).contains("no unread messages"),
        "{}",
        stderr(&again)
    );
    wait_until("Alice to get Carol's read receipt", || {
        history(&alice, "carol")[0].status == "read"
    });

    // The live stream saw the message queued, delivered and read.
    let mut statuses = Vec::new();
    while statuses.last().map(String::as_str) != Some("read") {
        let line = lines.next().unwrap().unwrap();
        let message: MessageView = serde_json::from_str(&line).unwrap();
        assert_eq!(message.id, id);
        statuses.push(message.status);
    }
    assert_eq!(statuses, ["queued", "delivered", "read"]);
    let _ = follow.kill();
    let _ = follow.wait();

    // Carol goes away; what Alice writes waits, and says so.
    let mut carol = carol;
    carol.stop("TERM");
    let queued = alice.cli(&["msg", "send", "carol", "while", "you", "were", "away"]);
    assert!(queued.status.success(), "{}", stderr(&queued));
    assert!(
        stderr(&queued).contains("queued for"),
        "{}",
        stderr(&queued)
    );
    let waited = alice.cli(&[
        "msg",
        "send",
        "carol",
        "still",
        "there?",
        "--wait",
        "--timeout",
        "2",
    ]);
    assert!(!waited.status.success(), "delivered to a stopped node?");
    assert!(
        stderr(&waited).contains("not delivered within 2 s"),
        "{}",
        stderr(&waited)
    );

    // Carol is back (her peer book links her to the relay again): both
    // arrive, once each, in order.
    let carol = carol.start_again();
    wait_until("Alice's queued messages to be delivered", || {
        history(&alice, "carol")
            .iter()
            .all(|message| message.status == "delivered" || message.status == "read")
    });
    let at_carol = history(&carol, &alice_id);
    let texts: Vec<&str> = at_carol
        .iter()
        .map(|message| message.text.as_str())
        .collect();
    assert_eq!(
        texts,
        ["hello there", "while you were away", "still there?"]
    );

    // And she answers.
    let answered = carol.cli(&["msg", "send", &alice_id[..16], "welcome", "back", "--wait"]);
    assert!(answered.status.success(), "{}", stderr(&answered));
    let contacts: Vec<ContactView> = json(&alice.cli(&["msg", "contacts", "--json"]));
    assert_eq!(contacts.len(), 1);
    assert_eq!(
        (
            contacts[0].peer.as_str(),
            contacts[0].messages,
            contacts[0].unread
        ),
        (carol_id.as_str(), 4, 1)
    );
    let table = stdout(&alice.cli(&["msg", "contacts"]));
    assert!(
        table.contains("carol") && table.contains("welcome back"),
        "{table}"
    );
}

/// A cluster of two hand-started boards (mDNS off: the second links to
/// the first by hand): the board that made it, the other, and its id.
fn two_board_cluster() -> (TestNode, TestNode, String) {
    let owner = TestNode::start_with("cluster", "mdns = false");
    let other = TestNode::start_with("cluster", "mdns = false");
    let created: fogwire_api::ClusterCreated = json(&owner.cli(&["cluster", "init", "--json"]));
    let joined = other.cli(&["cluster", "join", &created.join_code]);
    assert!(joined.status.success(), "{}", stderr(&joined));
    let linked = other.cli(&["connect", &owner.peer_addr()]);
    assert!(linked.status.success(), "{}", stderr(&linked));
    (owner, other, created.cluster)
}

fn peerings(board: &TestNode) -> Vec<fogwire_api::ClusterPeering> {
    let peers: fogwire_api::ClusterPeerings = json(&board.cli(&["cluster", "peers", "--json"]));
    peers.peerings
}

#[test]
fn two_clusters_peer_by_public_key_through_the_cli() {
    let (a0, a1, a_id) = two_board_cluster();
    let (b0, b1, b_id) = two_board_cluster();
    let hub = TestNode::start("");
    for owner in [&a0, &b0] {
        let linked = owner.cli(&["connect", &hub.peer_addr()]);
        assert!(linked.status.success(), "{}", stderr(&linked));
    }

    // A board without the cluster key cannot peer its cluster.
    let refused = a1.cli(&["cluster", "peer", &b_id]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("only the board that holds the cluster key"),
        "{}",
        stderr(&refused)
    );

    // A's owner asks B's, once B's owner board is known to the network.
    wait_until("B's owner to take A's request", || {
        a0.cli(&["cluster", "peer", &b_id]).status.success()
    });
    let asked = peerings(&b0);
    assert_eq!(asked.len(), 1);
    assert_eq!(
        (asked[0].cluster.as_str(), asked[0].state.as_str()),
        (a_id.as_str(), "asked")
    );
    let listed = b0.cli(&["cluster", "peers"]);
    assert!(
        stdout(&listed).contains("fogwire cluster accept"),
        "{}",
        stdout(&listed)
    );

    let accepted = b0.cli(&["cluster", "accept", &a_id]);
    assert!(accepted.status.success(), "{}", stderr(&accepted));
    assert!(
        stdout(&accepted).contains("Peered"),
        "{}",
        stdout(&accepted)
    );

    // Every board of A links to every board of B.
    wait_until(
        "every board of one cluster linked to every board of the other",
        || {
            [&a0, &a1].iter().all(|x| {
                let linked: Vec<String> = x
                    .peers()
                    .into_iter()
                    .filter(|peer| matches!(peer.state, fogwire_api::PeerState::Linked))
                    .map(|peer| peer.node_id)
                    .collect();
                [&b0, &b1]
                    .iter()
                    .all(|y| linked.contains(&y.node_id().to_string()))
            })
        },
    );
    for board in [&a0, &a1, &b0, &b1] {
        wait_until("every board to keep the peering", || {
            let kept = peerings(board);
            kept.len() == 1 && kept[0].state == "peered" && kept[0].linked == 2
        });
    }
}

/// Adds `line` under `[msg]` in a stopped node's configuration.
fn configure_msg(node: &TestNode, line: &str) {
    let path = node.home().join("fogwire.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("[msg]\n"), "no [msg] in the template");
    std::fs::write(&path, text.replace("[msg]\n", &format!("[msg]\n{line}\n"))).unwrap();
}

#[test]
fn mail_for_an_absent_node_waits_at_the_mailbox_its_config_names_and_arrives_once() {
    let alice = TestNode::start("");
    let mut mailbox = TestNode::start("");
    let mut carol = TestNode::start("");
    let (mailbox_id, carol_id) = (mailbox.node_id().to_string(), carol.node_id().to_string());
    let alice_id = alice.node_id().to_string();
    // Carol's own always-on node holds her mail: each names the other.
    mailbox.stop("TERM");
    carol.stop("TERM");
    configure_msg(&mailbox, &format!("mailbox_for = [\"{carol_id}\"]"));
    configure_msg(&carol, &format!("mailboxes = [\"{mailbox_id}\"]"));
    let mailbox = mailbox.start_again();
    let carol = carol.start_again();
    for node in [&alice, &carol] {
        let linked = node.cli(&["connect", &mailbox.peer_addr()]);
        assert!(linked.status.success(), "{}", stderr(&linked));
    }
    let named = alice.cli(&["name", "carol", &carol_id]);
    assert!(named.status.success(), "{}", stderr(&named));
    wait_until("Alice to learn Carol through the mailbox node", || {
        let graph: Vec<GraphNode> = json(&alice.cli(&["nodes", "--json"]));
        graph.len() == 3
    });
    let sent = alice.cli(&["msg", "send", "carol", "before", "--wait"]);
    assert!(sent.status.success(), "{}", stderr(&sent));

    // Carol goes away: the mailbox holds what Alice writes, and `--wait`
    // says so (and fails: it is not delivered).
    let mut carol = carol;
    carol.stop("TERM");
    let waited = alice.cli(&[
        "msg",
        "send",
        "carol",
        "held",
        "for",
        "you",
        "--wait",
        "--timeout",
        "5",
    ]);
    assert!(!waited.status.success(), "delivered to a stopped node?");
    assert!(
        stderr(&waited).contains("mailbox holds it"),
        "{}",
        stderr(&waited)
    );
    assert_eq!(history(&alice, "carol").last().unwrap().status, "stored");

    // Alice leaves too; Carol returns and takes her mail from the mailbox.
    let mut alice = alice;
    alice.stop("TERM");
    let carol = carol.start_again();
    wait_until("Carol to pick up her mail", || {
        let texts: Vec<String> = history(&carol, &alice_id)
            .into_iter()
            .map(|message| message.text)
            .collect();
        texts == ["before", "held for you"]
    });
    // Alice returns: the message reads delivered, and Carol shows it once.
    let alice = alice.start_again();
    wait_until("Alice to learn it was delivered", || {
        history(&alice, "carol")
            .iter()
            .all(|message| message.status == "delivered" || message.status == "read")
    });
    assert_eq!(history(&carol, &alice_id).len(), 2);
}

#[test]
fn a_group_made_with_the_cli_carries_its_members_messages_and_follows_its_membership() {
    let owner = TestNode::start("");
    let relay = TestNode::start("");
    let bob = TestNode::start("");
    let carol = TestNode::start("");
    for node in [&owner, &bob, &carol] {
        let linked = node.cli(&["connect", &relay.peer_addr()]);
        assert!(linked.status.success(), "{}", stderr(&linked));
    }
    let (bob_id, carol_id) = (bob.node_id().to_string(), carol.node_id().to_string());
    for member in [&bob_id, &carol_id] {
        wait_until("the owner to find a path to each member", || {
            owner
                .cli(&["route", "find", member, "--json"])
                .status
                .success()
        });
    }
    let named = owner.cli(&["name", "bob", &bob_id]);
    assert!(named.status.success(), "{}", stderr(&named));

    let made = owner.cli(&["msg", "group", "create", "book club", "--json"]);
    assert!(made.status.success(), "{}", stderr(&made));
    let group: GroupView = json(&made);
    assert_eq!((group.name.as_str(), group.members.len()), ("book club", 1));
    // By name, and by the start of its id.
    let added = owner.cli(&["msg", "group", "add", "book club", "bob"]);
    assert!(added.status.success(), "{}", stderr(&added));
    assert!(stderr(&added).contains("2 member(s)"), "{}", stderr(&added));
    let added = owner.cli(&["msg", "group", "add", &group.id[..8], &carol_id]);
    assert!(added.status.success(), "{}", stderr(&added));

    // A member that is not the owner cannot add; a group nobody has is
    // said to be missing.
    wait_until("Bob to join", || {
        let groups: Vec<GroupView> = json(&bob.cli(&["msg", "groups", "--json"]));
        groups.first().is_some_and(|known| known.members.len() == 3)
    });
    let refused = bob.cli(&["msg", "group", "add", "book club", &carol_id]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("only the group's owner"),
        "{}",
        stderr(&refused)
    );
    let missing = bob.cli(&["msg", "group", "send", "no such group", "hi"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("fogwire msg groups"),
        "{}",
        stderr(&missing)
    );

    let sent = bob.cli(&["msg", "group", "send", "book club", "chapter", "one"]);
    assert!(sent.status.success(), "{}", stderr(&sent));
    assert!(
        stderr(&sent).contains("queued for 2 member(s)"),
        "{}",
        stderr(&sent)
    );
    for member in [&owner, &carol] {
        wait_until("Bob's message to reach every member", || {
            let history: Vec<GroupEntryView> =
                json(&member.cli(&["msg", "group", "history", "book club", "--json"]));
            history
                .iter()
                .any(|entry| entry.text.as_deref() == Some("chapter one") && entry.from == bob_id)
        });
    }
    let shown = carol.cli(&["msg", "group", "history", "book club"]);
    assert!(stdout(&shown).contains("chapter one"), "{}", stdout(&shown));

    // Carol leaves; the owner removes her; she reads nothing more.
    let left = carol.cli(&["msg", "group", "leave", "book club", "--json"]);
    assert!(left.status.success(), "{}", stderr(&left));
    assert_eq!(json::<GroupView>(&left).standing, "left");
    wait_until("the owner to remove Carol", || {
        let groups: Vec<GroupView> = json(&owner.cli(&["msg", "groups", "--json"]));
        groups[0].members.len() == 2
    });
    let sent = owner.cli(&["msg", "group", "send", "book club", "just", "us", "--json"]);
    assert!(sent.status.success(), "{}", stderr(&sent));
    assert_eq!(json::<GroupEntryView>(&sent).sent_to, 1);
    wait_until("the owner's message to reach Bob", || {
        let history: Vec<GroupEntryView> =
            json(&bob.cli(&["msg", "group", "history", "book club", "--json"]));
        history
            .iter()
            .any(|entry| entry.text.as_deref() == Some("just us"))
    });
    let listed = owner.cli(&["msg", "groups"]);
    assert!(stdout(&listed).contains("book club"), "{}", stdout(&listed));
}
