//! The messenger on loopback (messages.md), beside same-run baselines:
//!
//! - latency: a message's trip to a node 3 hops away and its delivery
//!   receipt's trip back (send to `delivered` at the sender), beside one
//!   ping's round trip on a route over the same path;
//! - messages per second between two linked nodes, sent all at once and
//!   counted delivered (each on disk at the recipient, signed for), beside
//!   what one core seals and opens with Olm alone (vodozemac, the same
//!   text size);
//! - 1 000 messages queued for a stopped node: the time from the moment
//!   the sender has a path to it again to the last receipt, beside the
//!   time the node took from its start to being reachable;
//! - 1 000 messages held by the stopped node's mailbox (the node next to
//!   it) while the sender is away too: the time from the moment the node
//!   has a path to its mailbox again to the last message on its disk,
//!   beside the time it took from its start to that path.
//!
//! The recipients write to the sender first, as in a conversation (a
//! stranger may leave only 1 000 unread messages). Every node runs on its
//! own single-threaded runtime.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fogwire_identity::{Keypair, NodeId};
use fogwire_msg::Status;
use fogwire_node::NodeOptions;
use serde::Serialize;

use crate::link::{BenchError, median, on};
use crate::nodes::{BenchNode, bench_error, until};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Messages timed one by one over the 3-hop route.
    pub latency_messages: usize,
    /// Messages sent at once between neighbours.
    pub burst: usize,
    /// Messages queued for a stopped node.
    pub queued: usize,
    pub text_bytes: usize,
    /// Where the nodes keep their files (a temporary directory inside).
    pub dir: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            latency_messages: 50,
            burst: 10_000,
            queued: 1_000,
            text_bytes: 100,
            dir: std::env::temp_dir(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub text_bytes: usize,
    /// Medians over `latency_messages`.
    pub route_rtt_ms: f64,
    pub message_latency_ms: f64,
    pub latency_over_rtt_ms: f64,
    pub burst: usize,
    pub messages_per_sec: f64,
    /// One core sealing and opening with Olm alone.
    pub olm_messages_per_sec: f64,
    pub messages_to_olm: f64,
    pub queued: usize,
    /// From the stopped node's start until the sender has a path to it.
    pub reconnect_ms: f64,
    /// From then until the last queued message is signed for.
    pub queued_delivered_ms: f64,
    /// From the stopped node's start until it has a path to its mailbox.
    pub mailbox_reconnect_ms: f64,
    /// From then until the last message its mailbox held is on its disk.
    pub mailbox_delivered_ms: f64,
}

/// Which step is being measured, for progress output.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    Starting,
    Latency,
    Burst,
    Cipher,
    Queued,
    Mailbox,
}

/// The messenger's measures on a [`BenchNode`].
trait Messaging {
    fn routable(&self, to: NodeId) -> Result<bool, BenchError>;
    fn delivered(&self, peer: NodeId) -> Result<usize, BenchError> {
        self.count(peer, |record| {
            record.outgoing && matches!(record.status, Status::Delivered | Status::Read)
        })
    }
    fn stored(&self, peer: NodeId) -> Result<usize, BenchError> {
        self.count(peer, |record| {
            record.outgoing && record.status == Status::Stored
        })
    }
    fn received(&self, peer: NodeId) -> Result<usize, BenchError> {
        self.count(peer, |record| !record.outgoing)
    }
    /// How many messages of the conversation with `peer` pass `filter`.
    fn count(
        &self,
        peer: NodeId,
        filter: fn(&fogwire_msg::Record) -> bool,
    ) -> Result<usize, BenchError>;
    fn send_many(&self, peer: NodeId, count: usize, text: &str) -> Result<(), BenchError>;
    /// Sends `count` texts to `peer` at once; how long until it signed
    /// for every one.
    fn burst(&self, peer: NodeId, count: usize, text: &str) -> Result<Duration, BenchError>;
}

/// A node keeping its files in `dir/name`, so it can start again, with
/// its mailboxes.
fn start(
    name: &str,
    key: Arc<Keypair>,
    dir: &std::path::Path,
    mailboxes: fogwire_msg::Mailboxes,
) -> Result<BenchNode, BenchError> {
    let mut options = NodeOptions::local(key);
    options.data_dir = Some(dir.join(name));
    options.store_dir = Some(dir.join(name).join("store"));
    options.mailboxes = mailboxes;
    BenchNode::start(name, options)
}

impl Messaging for BenchNode {
    fn routable(&self, to: NodeId) -> Result<bool, BenchError> {
        let node = self.node.clone();
        on(&self.runtime, async move {
            node.routing()
                .find(to, fogwire_route::Constraints::default(), 1)
                .await
                .is_ok_and(|paths| !paths.is_empty())
        })
    }

    fn count(
        &self,
        peer: NodeId,
        filter: fn(&fogwire_msg::Record) -> bool,
    ) -> Result<usize, BenchError> {
        let node = self.node.clone();
        let records = on(&self.runtime, async move {
            node.messenger()
                .history(peer, None, usize::MAX, false)
                .await
        })?
        .map_err(bench_error)?;
        Ok(records.iter().filter(|record| filter(record)).count())
    }

    /// Counted from the live stream of changes, which costs the sender
    /// nothing it would not do anyway (reading the conversation now and
    /// then, as `delivered` does, holds the messenger's state for
    /// milliseconds at a time and would slow what is measured); the
    /// conversation is read only if the stream fell behind.
    fn burst(&self, peer: NodeId, count: usize, text: &str) -> Result<Duration, BenchError> {
        use tokio::sync::broadcast::error::RecvError;
        let node = self.node.clone();
        let text = text.to_owned();
        on(&self.runtime, async move {
            let messenger = node.messenger().clone();
            let mut events = messenger.follow();
            let started = Instant::now();
            let mut sends = tokio::task::JoinSet::new();
            for _ in 0..count {
                let messenger = messenger.clone();
                let text = text.clone();
                sends.spawn(async move { messenger.send(peer, text).await });
            }
            let mut sent = std::collections::HashSet::new();
            while let Some(record) = sends.join_next().await {
                sent.insert(record.map_err(bench_error)?.map_err(bench_error)?.id);
            }
            let signed = |record: &fogwire_msg::Record| {
                sent.contains(&record.id)
                    && matches!(record.status, Status::Delivered | Status::Read)
            };
            let mut delivered = std::collections::HashSet::new();
            while delivered.len() < sent.len() {
                match tokio::time::timeout(PATIENCE, events.recv()).await {
                    Err(_) => {
                        return Err(bench_error("gave up waiting: the burst to be delivered"));
                    }
                    Ok(Ok(record)) => {
                        if signed(&record) {
                            delivered.insert(record.id);
                        }
                    }
                    Ok(Err(RecvError::Lagged(_))) => {
                        let records = messenger
                            .history(peer, None, usize::MAX, false)
                            .await
                            .map_err(bench_error)?;
                        delivered = records
                            .iter()
                            .filter(|record| signed(record))
                            .map(|record| record.id)
                            .collect();
                    }
                    Ok(Err(RecvError::Closed)) => return Err(bench_error("the messenger stopped")),
                }
            }
            Ok(started.elapsed())
        })?
    }

    fn send_many(&self, peer: NodeId, count: usize, text: &str) -> Result<(), BenchError> {
        let node = self.node.clone();
        let text = text.to_owned();
        on(&self.runtime, async move {
            let mut sends = tokio::task::JoinSet::new();
            for _ in 0..count {
                let messenger = node.messenger().clone();
                let text = text.clone();
                sends.spawn(async move { messenger.send(peer, text).await });
            }
            while let Some(sent) = sends.join_next().await {
                sent.map_err(bench_error)?.map_err(bench_error)?;
            }
            Ok::<_, BenchError>(())
        })?
    }
}

const OFTEN: Duration = Duration::from_millis(5);
const PATIENCE: Duration = Duration::from_secs(120);

pub fn run(options: &Options, mut progress: impl FnMut(Step)) -> Result<Report, BenchError> {
    let dir = tempfile::Builder::new()
        .prefix("fogwire-bench-msg-")
        .tempdir_in(&options.dir)?;
    let text = "x".repeat(options.text_bytes.max(1));
    progress(Step::Starting);
    let key = || Keypair::generate().map(Arc::new).map_err(bench_error);
    let last_key = key()?;
    let far_id = last_key.node_id();
    // The node next to the far one holds its mail while it is away.
    let mailbox_key = key()?;
    let far_mailboxes = fogwire_msg::Mailboxes {
        mine: vec![mailbox_key.node_id()],
        serve_for: Vec::new(),
    };
    let mut nodes = Vec::new();
    for (index, name) in ["sender", "relay1", "relay2"].iter().enumerate() {
        let (key, mailboxes) = if index == 2 {
            let serving = fogwire_msg::Mailboxes {
                mine: Vec::new(),
                serve_for: vec![far_id],
            };
            (mailbox_key.clone(), serving)
        } else {
            (key()?, fogwire_msg::Mailboxes::default())
        };
        let node = start(name, key, dir.path(), mailboxes)?;
        if index > 0 {
            node.link_to(&nodes[index - 1])?;
        }
        nodes.push(node);
    }
    let far = start("far", last_key.clone(), dir.path(), far_mailboxes.clone())?;
    far.link_to(&nodes[2])?;
    until("a path to the far node", OFTEN, PATIENCE, || {
        nodes[0].routable(far_id)
    })?;
    // The recipients write first: the sender is their contact, not a
    // stranger held to 1 000 unread messages.
    let sender_id = nodes[0].node.node_id();
    for recipient in [&nodes[1], &far] {
        recipient.send_many(sender_id, 1, "hello")?;
        until("the first message to be delivered", OFTEN, PATIENCE, || {
            Ok(recipient.delivered(sender_id)? == 1)
        })?;
    }

    // Latency over 3 hops, beside the route's round trip.
    progress(Step::Latency);
    let sender = &nodes[0];
    let node = sender.node.clone();
    let rtts = on(&sender.runtime, async move {
        let route = node
            .routing()
            .open(far_id, fogwire_route::Constraints::hops(3))
            .await
            .map_err(bench_error)?;
        let mut rtts = Vec::new();
        for _ in 0..50 {
            let rtt = node
                .routing()
                .ping(route.route, Duration::from_secs(5))
                .await
                .map_err(bench_error)?;
            rtts.push(rtt.as_secs_f64() * 1e3);
        }
        let _ = node.routing().close(route.route).await;
        Ok::<_, BenchError>(rtts)
    })??;
    // One message first: the session and the delivery route exist, as in
    // a conversation under way.
    let mut latencies = Vec::new();
    for index in 0..=options.latency_messages.max(1) {
        let node = sender.node.clone();
        let text = text.clone();
        let took = on(&sender.runtime, async move {
            let mut events = node.messenger().follow();
            let started = Instant::now();
            let sent = node
                .messenger()
                .send(far_id, text)
                .await
                .map_err(bench_error)?;
            loop {
                let event = events.recv().await.map_err(bench_error)?;
                if event.id == sent.id && event.status == Status::Delivered {
                    return Ok::<_, BenchError>(started.elapsed());
                }
            }
        })??;
        if index > 0 {
            latencies.push(took.as_secs_f64() * 1e3);
        }
    }
    let route_rtt_ms = median(&rtts);
    let message_latency_ms = median(&latencies);

    // Messages per second between neighbours.
    progress(Step::Burst);
    let neighbour = nodes[1].node.node_id();
    let took = sender.burst(neighbour, options.burst, &text)?;
    let messages_per_sec = options.burst as f64 / took.as_secs_f64();

    progress(Step::Cipher);
    let olm_messages_per_sec = olm_rate(options.burst, &text);

    // 1 000 queued for a stopped node.
    progress(Step::Queued);
    far.stop();
    until("the sender to lose its path", OFTEN * 10, PATIENCE, || {
        Ok(!sender.routable(far_id)?)
    })?;
    let before = sender.delivered(far_id)?;
    sender.send_many(far_id, options.queued, &text)?;
    let started = Instant::now();
    let far = start("far", last_key.clone(), dir.path(), far_mailboxes.clone())?;
    far.link_to(&nodes[2])?;
    until("a path to the returning node", OFTEN, PATIENCE, || {
        sender.routable(far_id)
    })?;
    let reconnected = Instant::now();
    until(
        "the queued messages to be delivered",
        OFTEN * 2,
        PATIENCE,
        || Ok(sender.delivered(far_id)? >= before + options.queued),
    )?;
    let queued_delivered_ms = reconnected.elapsed().as_secs_f64() * 1e3;
    let reconnect_ms = (reconnected - started).as_secs_f64() * 1e3;

    // 1 000 held by the far node's mailbox while the sender is away too.
    progress(Step::Mailbox);
    let sender_id = sender.node.node_id();
    let before = far.received(sender_id)?;
    far.stop();
    until("the sender to lose its path", OFTEN * 10, PATIENCE, || {
        Ok(!sender.routable(far_id)?)
    })?;
    sender.send_many(far_id, options.queued, &text)?;
    until("the mailbox to hold them", OFTEN * 10, PATIENCE, || {
        Ok(sender.stored(far_id)? >= options.queued)
    })?;
    let mut nodes = nodes.into_iter();
    if let Some(sender) = nodes.next() {
        sender.stop();
    }
    let nodes: Vec<BenchNode> = nodes.collect();
    let started = Instant::now();
    let far = start("far", last_key, dir.path(), far_mailboxes)?;
    far.link_to(&nodes[1])?;
    let mailbox_id = mailbox_key.node_id();
    until("a path to the mailbox", OFTEN, PATIENCE, || {
        far.routable(mailbox_id)
    })?;
    let reconnected = Instant::now();
    until(
        "the held messages to be picked up",
        OFTEN * 2,
        PATIENCE,
        || Ok(far.received(sender_id)? >= before + options.queued),
    )?;
    let mailbox_delivered_ms = reconnected.elapsed().as_secs_f64() * 1e3;
    let mailbox_reconnect_ms = (reconnected - started).as_secs_f64() * 1e3;
    far.stop();
    for node in nodes {
        node.stop();
    }
    Ok(Report {
        text_bytes: text.len(),
        route_rtt_ms,
        message_latency_ms,
        latency_over_rtt_ms: message_latency_ms - route_rtt_ms,
        burst: options.burst,
        messages_per_sec,
        olm_messages_per_sec,
        messages_to_olm: messages_per_sec / olm_messages_per_sec,
        queued: options.queued,
        reconnect_ms,
        queued_delivered_ms,
        mailbox_reconnect_ms,
        mailbox_delivered_ms,
    })
}

/// Messages per second one core seals and opens with Olm alone: the
/// envelope's text sealed by one account's session and opened by the
/// other's, as the messenger does (without its records or the network).
fn olm_rate(count: usize, text: &str) -> f64 {
    use vodozemac::olm::{Account, OlmMessage, SessionConfig};
    let alice = Account::new();
    let mut bob = Account::new();
    bob.generate_fallback_key();
    let Some(fallback) = bob.fallback_key().values().next().copied() else {
        return 0.0;
    };
    let Ok(mut outbound) =
        alice.create_outbound_session(SessionConfig::version_1(), bob.curve25519_key(), fallback)
    else {
        return 0.0;
    };
    let Ok(OlmMessage::PreKey(first)) = outbound.encrypt(text) else {
        return 0.0;
    };
    let Ok(created) =
        bob.create_inbound_session(SessionConfig::version_1(), alice.curve25519_key(), &first)
    else {
        return 0.0;
    };
    let mut inbound = created.session;
    let started = Instant::now();
    for _ in 0..count {
        let Ok(message) = outbound.encrypt(text) else {
            return 0.0;
        };
        if inbound.decrypt(&message).is_err() {
            return 0.0;
        }
    }
    count as f64 / started.elapsed().as_secs_f64()
}
