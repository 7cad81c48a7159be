//! The messenger between real nodes over real routes on loopback:
//! messages through a relay, sealed end to end, delivered once and in
//! order with signed receipts back; a recipient stopped while 100
//! messages are sent, then restarted; forged, replayed and tampered
//! envelopes refused; a flooding stranger held to its quota; history
//! that survives a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use fogwire_identity::{Keypair, NodeId};
use fogwire_msg::state::{STRANGER_UNREAD_MAX, State};
use fogwire_msg::{Record, Status};
use fogwire_msg_proto::wire::Sealing;
use fogwire_msg_proto::{Envelope, Frame, Receipt, ReceiptKind, Refusal};
use fogwire_node::{Node, NodeOptions};
use fogwire_route::{Constraints, RouteStream};
use fogwire_testkit::nodes::{keypair, link, node, start, until_routable};
use fogwire_testkit::wait;

/// A conversation at `node` with `peer`, as stored (not marking it read).
async fn conversation(node: &Node, peer: NodeId) -> Vec<Record> {
    node.messenger()
        .history(peer, None, 100_000, false)
        .await
        .unwrap()
}

async fn until_statuses(node: &Node, peer: NodeId, count: usize, status: Status) {
    wait::until_async("messages to reach their status", || async {
        let records = conversation(node, peer).await;
        let done = records
            .iter()
            .filter(|record| record.outgoing && record.status == status)
            .count();
        (done == count).then_some(())
    })
    .await;
}

/// Sends each of `texts` from `from` to `to`, in order.
async fn send_each(from: &Node, to: NodeId, texts: &[String]) {
    for text in texts {
        from.messenger().send(to, text.clone()).await.unwrap();
    }
}

/// The received texts of a conversation, in the order shown.
fn received(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter(|record| !record.outgoing)
        .map(|record| record.text.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_a_relay_once_in_order_with_receipts_both_ways() {
    let (alice, relay, carol) = (node().await, node().await, node().await);
    link(&alice, &relay).await;
    link(&relay, &carol).await;
    assert_eq!(until_routable(&alice, &carol).await, 2);
    let texts: Vec<String> = (0..100).map(|index| format!("message {index}")).collect();
    send_each(&alice, carol.node_id(), &texts).await;
    until_statuses(&alice, carol.node_id(), 100, Status::Delivered).await;
    let at_carol = conversation(&carol, alice.node_id()).await;
    assert_eq!(received(&at_carol), texts, "each once, in order");
    assert!(
        at_carol
            .iter()
            .all(|record| record.status == Status::Unread)
    );

    // Carol reads them: Alice gets read receipts; Carol answers.
    let inbox = carol.messenger().inbox(1_000, true).await.unwrap();
    assert_eq!(inbox.len(), 100);
    assert!(
        carol
            .messenger()
            .inbox(1_000, false)
            .await
            .unwrap()
            .is_empty()
    );
    until_statuses(&alice, carol.node_id(), 100, Status::Read).await;
    carol
        .messenger()
        .send(alice.node_id(), "got them all".into())
        .await
        .unwrap();
    until_statuses(&carol, alice.node_id(), 1, Status::Delivered).await;
    let at_alice = conversation(&alice, carol.node_id()).await;
    assert_eq!(received(&at_alice), vec!["got them all".to_owned()]);
    let contacts = alice.messenger().contacts().await.unwrap();
    let (peer, contact) = &contacts[0];
    assert_eq!(
        (*peer, contact.messages, contact.unread),
        (carol.node_id(), 101, 1)
    );
    let found = alice
        .messenger()
        .history(carol.node_id(), Some("MESSAGE 4".into()), 100, false)
        .await
        .unwrap();
    let found: Vec<&str> = found.iter().map(|record| record.text.as_str()).collect();
    assert_eq!(found.len(), 11, "message 4 and 40..49: {found:?}");
}

fn persistent(key: Arc<Keypair>, dir: &std::path::Path) -> NodeOptions {
    let mut options = NodeOptions::local(key);
    options.data_dir = Some(dir.to_owned());
    options.store_dir = Some(dir.join("store"));
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_to_a_stopped_node_arrive_once_in_order_when_it_returns_and_history_survives() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (alice_key, carol_key) = (keypair(), keypair());
    let alice = start(persistent(alice_key.clone(), dirs.0.path())).await;
    let relay = node().await;
    let carol = start(persistent(carol_key.clone(), dirs.1.path())).await;
    link(&alice, &relay).await;
    link(&relay, &carol).await;
    until_routable(&alice, &carol).await;
    let carol_id = carol.node_id();
    // One message first, so a session exists (and survives restarts).
    alice
        .messenger()
        .send(carol.node_id(), "before".into())
        .await
        .unwrap();
    until_statuses(&alice, carol.node_id(), 1, Status::Delivered).await;

    carol.shutdown().await;
    drop(carol);
    let texts: Vec<String> = (0..100)
        .map(|index| format!("while away {index}"))
        .collect();
    send_each(&alice, carol_id, &texts).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let queued = conversation(&alice, carol_id).await;
    assert_eq!(
        queued
            .iter()
            .filter(|record| record.status == Status::Queued)
            .count(),
        100,
        "nothing can be delivered while Carol is down"
    );

    // Alice restarts too, while the messages wait: the outbox is on disk.
    alice.shutdown().await;
    drop(alice);
    let alice = start(persistent(alice_key, dirs.0.path())).await;
    link(&alice, &relay).await;
    let carol = start(persistent(carol_key.clone(), dirs.1.path())).await;
    link(&relay, &carol).await;
    until_statuses(&alice, carol_id, 101, Status::Delivered).await;
    let at_carol = conversation(&carol, alice.node_id()).await;
    let mut expected = vec!["before".to_owned()];
    expected.extend(texts);
    assert_eq!(received(&at_carol), expected, "each once, in order");

    // Every node restarted: history is all there.
    carol.shutdown().await;
    drop(carol);
    let carol = start(persistent(carol_key, dirs.1.path())).await;
    assert_eq!(
        received(&conversation(&carol, alice.node_id()).await),
        expected
    );
}

/// A raw sender: a real node (so its route streams are its own), and a
/// messenger state of its own key, to seal what it likes.
struct Raw {
    node: Node,
    state: State,
    _dir: tempfile::TempDir,
}

impl Raw {
    async fn start() -> Self {
        let key = keypair();
        let node = start(NodeOptions::local(key.clone())).await;
        let dir = tempfile::tempdir().unwrap();
        let state = State::load(&dir.path().join("raw.redb"), key, 1).unwrap();
        Self {
            node,
            state,
            _dir: dir,
        }
    }

    async fn wire_to(&self, to: &Node) -> Wire {
        let route = self
            .node
            .routing()
            .open(to.node_id(), Constraints::default())
            .await
            .unwrap();
        let stream = self
            .node
            .routing()
            .connect(route.route, fogwire_msg::SERVICE)
            .await
            .unwrap();
        Wire {
            stream,
            reader: fogwire_msg::frames::FrameReader::default(),
        }
    }

    /// Sealed envelopes of `count` fresh texts for `to`.
    fn seal(&mut self, to: &NodeId, count: usize) -> Vec<Vec<u8>> {
        let texts = (0..count).map(|index| format!("raw {index}")).collect();
        let records = self.state.queue(to, texts, 1).unwrap();
        self.state.seal(to, &records).unwrap()
    }
}

/// A stream to a messenger, and what it has read of the answers.
struct Wire {
    stream: RouteStream,
    reader: fogwire_msg::frames::FrameReader,
}

impl Wire {
    async fn send(&mut self, frames: &[Frame]) {
        self.stream
            .write_all(fogwire_msg::frames::encode_all(frames))
            .await
            .unwrap();
    }

    async fn answers(&mut self) -> Vec<Frame> {
        self.reader
            .next_batch(&mut self.stream, Duration::from_secs(30))
            .await
            .unwrap()
    }

    /// Sends `frames` and reads answers until `count` frames came.
    async fn exchange(&mut self, frames: &[Frame], count: usize) -> Vec<Frame> {
        self.send(frames).await;
        let mut answers = Vec::new();
        while answers.len() < count {
            answers.extend(self.answers().await);
        }
        answers
    }
}

fn delivered(frames: &[Frame], by: NodeId) -> usize {
    frames
        .iter()
        .map(|frame| match frame {
            Frame::Receipt(bytes) => {
                let receipt = Receipt::verify(bytes).unwrap();
                assert_eq!((receipt.by, receipt.kind), (by, ReceiptKind::Delivered));
                receipt.ids.len()
            }
            _ => 0,
        })
        .sum()
}

fn refusals(frames: &[Frame]) -> Vec<Refusal> {
    frames
        .iter()
        .filter_map(|frame| match frame {
            Frame::Refused { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_tampered_envelopes_are_refused_and_a_flooding_stranger_is_held_to_its_quota()
 {
    let carol = node().await;
    let alice = node().await;
    let mut raw = Raw::start().await;
    link(&raw.node, &carol).await;
    link(&alice, &carol).await;
    until_routable(&raw.node, &carol).await;
    let mut wire = raw.wire_to(&carol).await;
    let carol_id = carol.node_id();

    // The card, then one honest message: taken once, even when replayed.
    let answer = wire.exchange(&[Frame::CardRequest], 1).await;
    let Frame::Card(card) = &answer[0] else {
        panic!("no card: {answer:?}")
    };
    assert!(raw.state.remember_card(&carol_id, card).unwrap());
    let honest = raw.seal(&carol_id, 1).remove(0);
    let answer = wire.exchange(&[Frame::Envelope(honest.clone())], 1).await;
    assert_eq!(delivered(&answer, carol_id), 1);
    let answer = wire.exchange(&[Frame::Envelope(honest.clone())], 1).await;
    assert_eq!(
        delivered(&answer, carol_id),
        1,
        "a replay is acknowledged again"
    );
    let raw_id = raw.node.node_id();
    assert_eq!(conversation(&carol, raw_id).await.len(), 1, "and kept once");

    // A replay under a new id, a relabelled time, a flipped ciphertext
    // bit, a forged sender, a card that is not the sender's.
    let mut relabelled = Envelope::decode(&honest).unwrap();
    relabelled.id.0[0] ^= 1;
    let mut retimed = Envelope::decode(&raw.seal(&carol_id, 1)[0]).unwrap();
    retimed.sent_ms += 1;
    let mut flipped = Envelope::decode(&raw.seal(&carol_id, 1)[0]).unwrap();
    let last = flipped.ciphertext.len() - 1;
    flipped.ciphertext[last] ^= 1;
    let mut forged = Envelope::decode(&raw.seal(&carol_id, 1)[0]).unwrap();
    forged.sender = alice.node_id();
    let stranger = Keypair::generate().unwrap();
    let mut stolen_card = Envelope::decode(&honest).unwrap();
    assert_eq!(stolen_card.sealing, Sealing::PreKey);
    stolen_card.id.0[1] ^= 1;
    stolen_card.card = Some(
        fogwire_msg_proto::Card::verify(card)
            .map(|mut card| {
                card.node = stranger.node_id();
                card.sign(&stranger)
            })
            .unwrap(),
    );
    let bad: Vec<Frame> = [relabelled, retimed, flipped, forged, stolen_card]
        .iter()
        .map(|envelope| Frame::Envelope(envelope.encode()))
        .collect();
    let answer = wire.exchange(&bad, 5).await;
    assert_eq!(delivered(&answer, carol_id), 0);
    assert_eq!(
        refusals(&answer),
        vec![
            Refusal::Tampered,
            Refusal::Tampered,
            Refusal::Undecryptable,
            Refusal::Misaddressed,
            Refusal::Undecryptable,
        ]
    );
    assert_eq!(conversation(&carol, raw_id).await.len(), 1);

    // A flood from a stranger: its quota is taken, then refused. (The
    // gaps the refusals above left are given up on only after a while,
    // so what follows is held: it counts against the quota all the same.)
    let mut taken = 1;
    let mut refused = 0;
    while refused == 0 {
        let batch: Vec<Frame> = raw
            .seal(&carol_id, 200)
            .into_iter()
            .map(Frame::Envelope)
            .collect();
        let mut answers = Vec::new();
        wire.send(&batch).await;
        let mut named = 0;
        while named < batch.len() {
            let frames = wire.answers().await;
            named += delivered(&frames, carol_id) + refusals(&frames).len();
            answers.extend(frames);
        }
        taken += delivered(&answers, carol_id);
        refused += refusals(&answers)
            .iter()
            .filter(|reason| **reason == Refusal::OverQuota)
            .count();
        assert!(
            taken <= STRANGER_UNREAD_MAX as usize + 200,
            "never held to its quota"
        );
    }
    assert_eq!(taken, STRANGER_UNREAD_MAX as usize);
    let contacts = carol.messenger().contacts().await.unwrap();
    let (_, contact) = contacts.iter().find(|(peer, _)| *peer == raw_id).unwrap();
    assert_eq!(contact.unread + contact.held, STRANGER_UNREAD_MAX);

    // Alice, whom Carol wrote to, is not held to the stranger's quota.
    carol
        .messenger()
        .send(alice.node_id(), "hello".into())
        .await
        .unwrap();
    alice
        .messenger()
        .send(carol_id, "hello back".into())
        .await
        .unwrap();
    until_statuses(&alice, carol_id, 1, Status::Delivered).await;

    // A frame announcing more than the bound closes the stream before
    // anything is buffered for it; the service serves the next stream.
    wire.stream
        .write_all(bytes::Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 3]))
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(_)) = wire.stream.read().await {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "the stream stayed open after an oversized frame"
    );
    let mut wire = raw.wire_to(&carol).await;
    let answer = wire.exchange(&[Frame::CardRequest], 1).await;
    assert!(matches!(answer[0], Frame::Card(_)));
}

/// Alice writes to Carol once (a session; she learns Carol's card, and so
/// her mailboxes), Carol stops, and Alice writes `texts`: they wait,
/// stored, at Carol's mailboxes.
async fn leave_mail(alice: &Node, carol: Node, texts: &[String]) {
    let carol_id = carol.node_id();
    alice
        .messenger()
        .send(carol_id, "before".into())
        .await
        .unwrap();
    until_statuses(alice, carol_id, 1, Status::Delivered).await;
    carol.shutdown().await;
    drop(carol);
    send_each(alice, carol_id, texts).await;
    until_statuses(alice, carol_id, texts.len(), Status::Stored).await;
}

/// Options for a node whose mail is held by `mailboxes`.
fn with_mailboxes(mut options: NodeOptions, mailboxes: &[NodeId]) -> NodeOptions {
    options.mailboxes.mine = mailboxes.to_vec();
    options
}

/// Options for a mailbox of `owner`.
fn mailbox_of(mut options: NodeOptions, owner: NodeId) -> NodeOptions {
    options.mailboxes.serve_for = vec![owner];
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_for_a_stopped_node_waits_at_its_mailboxes_and_arrives_once_when_one_mailbox_is_dead()
{
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let (alice_key, carol_key, m1_key, m2_key) = (keypair(), keypair(), keypair(), keypair());
    let carol_id = carol_key.node_id();
    let mailboxes = [m1_key.node_id(), m2_key.node_id()];
    let hub = node().await;
    let alice = start(persistent(alice_key.clone(), dirs[0].path())).await;
    let carol = start(with_mailboxes(
        persistent(carol_key.clone(), dirs[1].path()),
        &mailboxes,
    ))
    .await;
    let m1 = start(mailbox_of(
        persistent(m1_key.clone(), dirs[2].path()),
        carol_id,
    ))
    .await;
    let m2 = start(mailbox_of(persistent(m2_key, dirs[3].path()), carol_id)).await;
    for node in [&alice, &carol, &m1, &m2] {
        link(node, &hub).await;
    }
    until_routable(&alice, &carol).await;
    assert_eq!(carol.messenger().mailboxes(), mailboxes);
    // Carol goes away; Alice's messages wait at both mailboxes.
    let texts: Vec<String> = (0..100).map(|index| format!("held {index}")).collect();
    leave_mail(&alice, carol, &texts).await;
    for mailbox in [&m1, &m2] {
        let (count, bytes) = mailbox.messenger().held_for(carol_id).await.unwrap();
        assert_eq!(count, 100, "each mailbox holds every message");
        assert!(bytes > 100 * 100, "sealed, with their overhead: {bytes}");
    }

    // Alice leaves too (so nothing is delivered directly) and the first
    // mailbox dies; Carol returns and gets her mail from the second.
    alice.shutdown().await;
    drop(alice);
    m1.shutdown().await;
    drop(m1);
    let carol = start(with_mailboxes(
        persistent(carol_key.clone(), dirs[1].path()),
        &mailboxes,
    ))
    .await;
    link(&carol, &hub).await;
    let mut expected = vec!["before".to_owned()];
    expected.extend(texts.iter().cloned());
    let alice_id = alice_key.node_id();
    wait::until_async("Carol's mail picked up from the live mailbox", || async {
        (received(&conversation(&carol, alice_id).await) == expected).then_some(())
    })
    .await;
    wait::until_async("the mailbox to drop what Carol took", || async {
        (m2.messenger().held_for(carol_id).await.unwrap() == (0, 0)).then_some(())
    })
    .await;

    // The dead mailbox returns with its copies: Carol takes them as the
    // duplicates they are, and still shows each message once.
    let m1 = start(mailbox_of(persistent(m1_key, dirs[2].path()), carol_id)).await;
    link(&m1, &hub).await;
    wait::until_async("the returned mailbox to be emptied", || async {
        (m1.messenger().held_for(carol_id).await.unwrap() == (0, 0)).then_some(())
    })
    .await;
    assert_eq!(received(&conversation(&carol, alice_id).await), expected);

    // Alice returns: Carol's delivery receipts reach her.
    let alice = start(persistent(alice_key, dirs[0].path())).await;
    link(&alice, &hub).await;
    until_statuses(&alice, carol_id, 101, Status::Delivered).await;
    assert_eq!(received(&conversation(&carol, alice_id).await), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_holds_mail_only_for_its_owners_from_their_senders_within_quotas() {
    // Carol is away until the end: what the mailbox holds is all there is.
    let (carol_key, mailbox_key) = (keypair(), keypair());
    let carol_id = carol_key.node_id();
    let mailbox = start(mailbox_of(
        NodeOptions::local(mailbox_key.clone()),
        carol_id,
    ))
    .await;
    let raw = Raw::start().await;
    link(&raw.node, &mailbox).await;
    until_routable(&raw.node, &mailbox).await;
    let route = raw
        .node
        .routing()
        .open(mailbox.node_id(), Constraints::default())
        .await
        .unwrap();
    let stream = raw
        .node
        .routing()
        .connect(route.route, fogwire_msg::mailbox::SERVICE)
        .await
        .unwrap();
    let mut wire = Wire {
        stream,
        reader: fogwire_msg::frames::FrameReader::default(),
    };
    let raw_id = raw.node.node_id();
    let envelope = |sender: NodeId, recipient: NodeId, index: u32| {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&index.to_be_bytes());
        Frame::Envelope(
            Envelope {
                sender,
                recipient,
                id: fogwire_msg_proto::MessageId(id),
                sent_ms: 1,
                sealing: Sealing::Normal,
                card: None,
                ciphertext: vec![7; 200],
            }
            .encode(),
        )
    };
    let stored = |frames: &[Frame]| -> usize {
        frames
            .iter()
            .map(|frame| match frame {
                Frame::Receipt(bytes) => {
                    let receipt = Receipt::verify(bytes).unwrap();
                    assert_eq!(
                        (receipt.by, receipt.kind, receipt.to),
                        (mailbox.node_id(), ReceiptKind::Stored, raw_id)
                    );
                    receipt.ids.len()
                }
                _ => 0,
            })
            .sum()
    };

    // Mail for a node the mailbox does not serve, and mail under another
    // sender's name, are refused.
    let stranger = keypair().node_id();
    let answer = wire
        .exchange(
            &[
                envelope(raw_id, stranger, 0),
                envelope(stranger, carol_id, 1),
            ],
            2,
        )
        .await;
    assert_eq!(
        refusals(&answer),
        vec![Refusal::NotServed, Refusal::Misaddressed]
    );

    // A stranger to Carol may leave only its small quota; a repeat is
    // acknowledged, not counted.
    let flood: Vec<Frame> = (0..150)
        .map(|index| envelope(raw_id, carol_id, 100 + index))
        .collect();
    let mut answers = Vec::new();
    wire.send(&flood).await;
    while stored(&answers) + refusals(&answers).len() < flood.len() {
        answers.extend(wire.answers().await);
    }
    let quota = fogwire_msg_proto::mailbox::STRANGER_MAX as usize;
    assert_eq!(stored(&answers), quota);
    assert_eq!(refusals(&answers), vec![Refusal::OverQuota; 150 - quota]);
    let answer = wire.exchange(&flood[..1], 1).await;
    assert_eq!(stored(&answer), 1, "a repeat is acknowledged again");
    let held = || async { mailbox.messenger().held_for(carol_id).await.unwrap() };
    assert_eq!(held().await.0, quota as u64);

    // Nobody but Carol picks up Carol's mail, nor drops it.
    let ids: Vec<fogwire_msg_proto::MessageId> = flood[..quota]
        .iter()
        .map(|frame| match frame {
            Frame::Envelope(bytes) => Envelope::decode(bytes).unwrap().id,
            _ => unreachable!(),
        })
        .collect();
    wire.send(&[Frame::Taken(ids)]).await;
    let answer = wire.exchange(&[Frame::Pickup { max: 256 }], 1).await;
    assert_eq!(answer, vec![Frame::BatchEnd { remaining: 0 }]);
    assert_eq!(held().await.0, quota as u64);

    // Carol returns and picks it up (it does not open: it was never
    // sealed), and the mailbox drops it all the same.
    let carol = start(with_mailboxes(
        NodeOptions::local(carol_key),
        &[mailbox_key.node_id()],
    ))
    .await;
    link(&carol, &mailbox).await;
    wait::until_async("Carol to pick up her mail", || async {
        (held().await == (0, 0)).then_some(())
    })
    .await;
}

/// Waits until every board of `boards` counts them all as live members.
async fn until_one_cluster(boards: &[&Node]) {
    wait::until("every board to see the whole cluster", || {
        boards.iter().all(|board| {
            let status = board.cluster().status();
            status
                .members
                .iter()
                .filter(|member| member.state == "alive")
                .count()
                == boards.len()
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_away_from_its_cluster_has_its_mail_held_by_two_boards_chosen_by_rendezvous() {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let keys: Vec<Arc<Keypair>> = (0..4).map(|_| keypair()).collect();
    let board_options = |index: usize| {
        let mut options = persistent(keys[index].clone(), dirs[index].path());
        options.cluster.mdns = false;
        options
    };
    let mut boards = Vec::new();
    for index in 0..4 {
        boards.push(start(board_options(index)).await);
    }
    let code = boards[0].cluster().init().await.unwrap();
    for board in &boards[1..] {
        board.cluster().join(code.clone()).await.unwrap();
        link(board, &boards[0]).await;
    }
    until_one_cluster(&boards.iter().collect::<Vec<_>>()).await;
    let alice = node().await;
    link(&alice, &boards[0]).await;

    // The last board is Carol: two of the others hold her mail.
    let carol_id = keys[3].node_id();
    let ids: Vec<NodeId> = keys.iter().map(|key| key.node_id()).collect();
    let chosen = fogwire_msg_proto::mailbox::rendezvous(&carol_id, &ids, 2);
    assert_eq!(chosen.len(), 2);
    wait::until("Carol's card to name her cluster's mailboxes", || {
        boards[3].messenger().mailboxes() == chosen
    })
    .await;
    until_routable(&alice, &boards[3]).await;
    let texts: Vec<String> = (0..20).map(|index| format!("to the box {index}")).collect();
    leave_mail(&alice, boards.pop().unwrap(), &texts).await;
    for board in &boards {
        let (held, _) = board.messenger().held_for(carol_id).await.unwrap();
        let expected = if chosen.contains(&board.node_id()) {
            20
        } else {
            0
        };
        assert_eq!(held, expected, "only the chosen boards hold Carol's mail");
    }

    // Alice leaves; Carol comes back to her cluster and picks her mail up.
    let alice_id = alice.node_id();
    alice.shutdown().await;
    drop(alice);
    let carol = start(board_options(3)).await;
    link(&carol, &boards[0]).await;
    let mut expected = vec!["before".to_owned()];
    expected.extend(texts);
    wait::until_async("Carol's mail picked up from her boards", || async {
        (received(&conversation(&carol, alice_id).await) == expected).then_some(())
    })
    .await;
}

/// `count` boards in one new cluster, linked in a star to the first (the
/// owner: it made the cluster and holds its key).
async fn cluster_of(count: usize) -> Vec<Node> {
    let mut boards = Vec::new();
    for _ in 0..count {
        let mut options = fogwire_testkit::nodes::options();
        options.cluster.mdns = false;
        boards.push(start(options).await);
    }
    let code = boards[0].cluster().init().await.unwrap();
    for board in &boards[1..] {
        board.cluster().join(code.clone()).await.unwrap();
        link(board, &boards[0]).await;
    }
    until_one_cluster(&boards.iter().collect::<Vec<_>>()).await;
    boards
}

fn cluster_id(board: &Node) -> NodeId {
    board.cluster().cluster().unwrap().key()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_peer_by_public_key_when_the_other_owner_accepts_and_all_their_boards_link() {
    use fogwire_msg::{MsgError, PeeringError, PeeringState};
    let (a, b) = (cluster_of(2).await, cluster_of(2).await);
    // The clusters meet only through a node of neither.
    let hub = node().await;
    link(&a[0], &hub).await;
    link(&b[0], &hub).await;
    let (a_id, b_id) = (cluster_id(&a[0]), cluster_id(&b[0]));
    let tag = fogwire_msg_proto::peering::owner_tag(&b_id);
    wait::until_async("B's owner board to advertise it holds B's key", || async {
        let owners = a[0].routing().serving(&tag).await.ok()?;
        (owners == vec![b[0].node_id()]).then_some(())
    })
    .await;

    // Only the owner board asks; not for its own cluster, nor for one
    // nobody holds the key of.
    let refused = |result: Result<fogwire_msg::Peering, MsgError>| match result {
        Err(MsgError::Peering(why)) => why,
        other => panic!("not refused: {other:?}"),
    };
    assert!(matches!(
        refused(a[1].messenger().peer_request(b_id).await),
        PeeringError::NotOwner
    ));
    assert!(matches!(
        refused(a[0].messenger().peer_request(a_id).await),
        PeeringError::Itself
    ));
    assert!(matches!(
        refused(a[0].messenger().peer_request(keypair().node_id()).await),
        PeeringError::NotFound(_)
    ));
    // Nothing is peered before the other owner agrees.
    assert!(matches!(
        refused(b[0].messenger().peer_accept(a_id).await),
        PeeringError::NotAsked(_)
    ));

    let asked = a[0].messenger().peer_request(b_id).await.unwrap();
    assert_eq!(asked.state, PeeringState::Requested);
    let at_b = b[0].messenger().peerings().await.unwrap();
    assert_eq!(at_b.len(), 1);
    assert_eq!(
        (at_b[0].0, at_b[0].1.state, at_b[0].1.requester),
        (a_id, PeeringState::Asked, Some(*a[0].node_id().as_bytes()))
    );
    assert!(b[1].messenger().peerings().await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_secs(3)).await;
    for board in &b {
        for other in &a[1..] {
            assert!(
                board.link(&other.node_id()).is_none(),
                "linked before B agreed"
            );
        }
    }

    let agreed = b[0].messenger().peer_accept(a_id).await.unwrap();
    assert_eq!(agreed.state, PeeringState::Peered);
    assert_eq!(agreed.their_boards().len(), 2);
    // Every board of each cluster links to every board of the other.
    wait::until("every board of A linked to every board of B", || {
        a.iter()
            .all(|x| b.iter().all(|y| x.link(&y.node_id()).is_some()))
    })
    .await;
    for board in a.iter().chain(&b) {
        wait::until_async("every board to keep the peering", || async {
            let peerings = board.messenger().peerings().await.unwrap();
            (peerings.len() == 1 && peerings[0].1.state == PeeringState::Peered).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_is_paid_in_the_ledger_by_the_owner_whose_mail_it_held() {
    use fogwire_ledger::proto::{COIN, Genesis, Id, Rules};
    let (carol_key, mailbox_key) = (keypair(), keypair());
    let (carol_id, mailbox_id) = (carol_key.node_id(), mailbox_key.node_id());
    // The mailbox runs the ledger; mail is paid at a price that makes a
    // few kilobytes worth coins.
    let mut rules = Rules::new(Id(*mailbox_id.as_bytes()), Id(*mailbox_id.as_bytes()));
    rules.price_per_gib_served = 1_000_000 * COIN;
    let mut mailbox_options = mailbox_of(NodeOptions::local(mailbox_key), carol_id);
    mailbox_options.ledger.serve = Some(Genesis {
        rules,
        accounts: vec![(Id(*carol_id.as_bytes()), 1_000 * COIN)],
    });
    let mailbox = start(mailbox_options).await;
    let dir = tempfile::tempdir().unwrap();
    let carol_options = || with_mailboxes(persistent(carol_key.clone(), dir.path()), &[mailbox_id]);
    let carol = start(carol_options()).await;
    let alice = node().await;
    link(&alice, &mailbox).await;
    link(&carol, &mailbox).await;
    until_routable(&alice, &carol).await;
    let texts: Vec<String> = (0..50).map(|index| format!("paid for {index}")).collect();
    leave_mail(&alice, carol, &texts).await;
    let (_, held_bytes) = mailbox.messenger().held_for(carol_id).await.unwrap();

    let carol = start(carol_options()).await;
    link(&carol, &mailbox).await;
    wait::until_async("Carol to pick up her mail", || async {
        (mailbox.messenger().held_for(carol_id).await.unwrap() == (0, 0)).then_some(())
    })
    .await;
    let client = mailbox.ledger().client().clone();
    let owed = fogwire_ledger::proto::receipt::cost(held_bytes, 1_000_000 * COIN);
    assert!(owed > 0);
    wait::until_async("the mailbox's receipt redeemed", || {
        let client = client.clone();
        async move {
            let paid = client.account(&Id(*mailbox_id.as_bytes())).await.ok()?;
            (paid.account.balance == owed).then_some(())
        }
    })
    .await;
    let left = client.account(&Id(*carol_id.as_bytes())).await.unwrap();
    assert_eq!(left.account.balance, 1_000 * COIN - owed);
    drop(carol);
}
