//! The tokio driver of reachability: one task owns the sans-IO
//! [`Reach`] core, reads the reachability channel of every link through
//! one bounded inbox, runs the dial-back probes it asks for, and keeps the
//! node's advert naming the addresses others can dial.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use fogwire_identity::NodeId;
use fogwire_link::proto::{ChannelId, Config as LinkConfig, HandshakeError, LinkIdentity};
use fogwire_link::{ChannelSender, EstablishError, LinkHandle};
use fogwire_relay_proto::reach::{Action, Reach, Reachability, Report, Settings};
use fogwire_relay_proto::wire::{CHANNEL_REACH, DialOutcome};
use fogwire_route::Routing;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The service a node's advert names while peers on public addresses
/// cannot dial it: others reach it over its own links instead of dialing.
pub const PRIVATE_SERVICE: &str = "reach:private";
/// Inputs waiting for the task; beyond, link events are dropped (and
/// logged) and channel readers wait.
const INBOX_LEN: usize = 1024;
/// Addresses an advert names at most.
const ADDRESSES_MAX: usize = fogwire_relay_proto::reach::ADVERTISED_MAX;

/// What reachability needs from the node.
#[derive(Debug, Clone)]
pub struct Options {
    /// This node's link identity: probes prove the other end is who asked.
    pub identity: Arc<LinkIdentity>,
    pub link_config: Arc<LinkConfig>,
    /// Where the node accepts links (the port is what checks dial).
    pub listen: SocketAddr,
    /// Addresses the operator configured (`route.advertise`): advertised
    /// as they are, whatever the checks find.
    pub configured: Vec<String>,
}

impl Options {
    /// The addresses advertised before any check: the configured ones, or
    /// else the listen address unless it is a wildcard (which tells
    /// others nothing).
    pub fn initial_addresses(&self) -> Vec<String> {
        if !self.configured.is_empty() {
            return self.configured.clone();
        }
        (!self.listen.ip().is_unspecified())
            .then(|| self.listen.to_string())
            .into_iter()
            .collect()
    }
}

#[derive(Debug)]
enum Input {
    LinkUp {
        peer: NodeId,
        link_id: u64,
        remote: SocketAddr,
        sender: ChannelSender,
    },
    LinkDown {
        peer: NodeId,
        link_id: u64,
    },
    Message {
        peer: NodeId,
        link_id: u64,
        bytes: Bytes,
    },
    Accepted(SocketAddr),
    ProbeDone {
        peer: NodeId,
        nonce: u64,
        outcome: DialOutcome,
    },
}

/// A node's reachability: a [`fogwire_link::LinkUser`] on channel
/// `0x0500`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reachable {
    inbox: mpsc::Sender<Input>,
    report: watch::Receiver<Report>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Reachable {
    /// Starts the task; it keeps `routing`'s advert up to date.
    pub fn start(
        options: Options,
        routing: Routing,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        let (inbox, receiver) = mpsc::channel(INBOX_LEN);
        let mut key = [0u8; 8];
        (fogwire_env::os_random())(&mut key);
        let reach = Reach::new(
            Settings::new(options.listen.port()),
            u64::from_le_bytes(key),
        );
        let (report_sender, report) = watch::channel(reach.report());
        let (advert_sender, advert) = watch::channel(Advert {
            addresses: options.initial_addresses(),
            private: false,
        });
        tasks.spawn(publish(advert, routing, shutdown.clone()));
        let driver = Driver {
            reach,
            options,
            inbox: inbox.clone(),
            links: HashMap::new(),
            report: report_sender,
            advert: advert_sender,
            tasks: tasks.clone(),
        };
        tasks.spawn(driver.run(receiver, shutdown.clone()));
        Self {
            inbox,
            report,
            shutdown,
            tasks,
        }
    }

    /// What the node knows of its reachability now.
    pub fn report(&self) -> Report {
        self.report.borrow().clone()
    }

    /// [`Reachable::report`] for the control API.
    pub fn status(&self) -> fogwire_api::Reach {
        let report = self.report();
        let ids = |ids: &[NodeId]| ids.iter().map(ToString::to_string).collect();
        fogwire_api::Reach {
            reachability: report.reachability.as_str().to_owned(),
            addresses: report
                .addresses
                .iter()
                .map(|address| fogwire_api::ReachAddress {
                    address: address.address,
                    public: address.public,
                    state: address.state.as_str().to_owned(),
                    seen_by: address.seen_by,
                    confirmed_by: ids(&address.confirmed_by),
                    refuted_by: ids(&address.refuted_by),
                })
                .collect(),
            serving: report.serving,
        }
    }

    /// Changes of [`Reachable::report`].
    pub fn watch(&self) -> watch::Receiver<Report> {
        self.report.clone()
    }

    fn offer(&self, input: Input) {
        if self.inbox.try_send(input).is_err() {
            tracing::warn!("reachability: event queue full; an event was dropped");
        }
    }
}

impl fogwire_link::LinkUser for Reachable {
    fn link_up(&self, link: LinkHandle) {
        let channel = ChannelId(CHANNEL_REACH);
        if !link.peer_channels().contains(&channel) {
            return;
        }
        let (Some(sender), Some(mut receiver)) =
            (link.sender(channel), link.take_receiver(channel))
        else {
            return;
        };
        let (peer, link_id) = (link.peer(), link.id());
        self.offer(Input::LinkUp {
            peer,
            link_id,
            remote: link.remote_addr(),
            sender,
        });
        let inbox = self.inbox.clone();
        let stop = self.shutdown.clone();
        self.tasks.spawn(async move {
            loop {
                let bytes = tokio::select! {
                    () = stop.cancelled() => return,
                    bytes = receiver.recv() => bytes,
                };
                let Some(bytes) = bytes else { return };
                let message = Input::Message {
                    peer,
                    link_id,
                    bytes,
                };
                if inbox.send(message).await.is_err() {
                    return;
                }
            }
        });
    }

    fn link_down(&self, peer: NodeId, link_id: u64) {
        self.offer(Input::LinkDown { peer, link_id });
    }

    fn accepted(&self, remote: SocketAddr) {
        // Only evidence for a running check: dropped silently when full.
        let _ = self.inbox.try_send(Input::Accepted(remote));
    }
}

/// What the advert says about reachability.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Advert {
    addresses: Vec<String>,
    private: bool,
}

struct Driver {
    reach: Reach,
    options: Options,
    inbox: mpsc::Sender<Input>,
    links: HashMap<NodeId, (u64, ChannelSender)>,
    report: watch::Sender<Report>,
    advert: watch::Sender<Advert>,
    tasks: TaskTracker,
}

impl Driver {
    async fn run(mut self, mut inbox: mpsc::Receiver<Input>, shutdown: CancellationToken) {
        loop {
            let deadline = self.reach.poll_timeout();
            let wake = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                input = inbox.recv() => match input {
                    Some(input) => self.handle(input),
                    None => return,
                },
                () = wake => self.reach.handle_timeout(Instant::now()),
            }
            self.flush();
        }
    }

    fn handle(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::LinkUp {
                peer,
                link_id,
                remote,
                sender,
            } => {
                self.links.insert(peer, (link_id, sender));
                self.reach.link_up(peer, remote, now);
            }
            Input::LinkDown { peer, link_id } => {
                if self.links.get(&peer).is_some_and(|(id, _)| *id == link_id) {
                    self.links.remove(&peer);
                    self.reach.link_down(peer, now);
                }
            }
            Input::Message {
                peer,
                link_id,
                bytes,
            } => {
                if self.links.get(&peer).is_none_or(|(id, _)| *id != link_id) {
                    return;
                }
                if let Err(error) = self.reach.handle_message(peer, &bytes, now) {
                    tracing::debug!(peer = %peer.short(), %error, "reachability: dropped a message");
                }
            }
            Input::Accepted(remote) => self.reach.accepted(remote),
            Input::ProbeDone {
                peer,
                nonce,
                outcome,
            } => self.reach.probe_done(peer, nonce, outcome),
        }
    }

    /// Sends what the core produced, starts its probes, and publishes.
    fn flush(&mut self) {
        while let Some((peer, bytes)) = self.reach.poll_transmit() {
            if let Some((_, sender)) = self.links.get(&peer) {
                // A full channel drops the message: checks time out and
                // move on.
                let _ = sender.try_send(bytes);
            }
        }
        while let Some(action) = self.reach.poll_action() {
            let Action::Probe {
                peer,
                nonce,
                address,
            } = action;
            let identity = self.options.identity.clone();
            let config = self.options.link_config.clone();
            let inbox = self.inbox.clone();
            self.tasks.spawn(async move {
                let outcome = match fogwire_link::probe(address, peer, &identity, config).await {
                    Ok(()) => DialOutcome::Reached,
                    Err(EstablishError::Handshake(HandshakeError::PeerIdentityMismatch {
                        ..
                    })) => DialOutcome::WrongNode,
                    Err(error) => {
                        tracing::debug!(peer = %peer.short(), %address, %error, "reachability: a check for a peer could not dial it");
                        DialOutcome::Unreachable
                    }
                };
                let _ = inbox
                    .send(Input::ProbeDone {
                        peer,
                        nonce,
                        outcome,
                    })
                    .await;
            });
        }
        if self.reach.take_changed() {
            self.announce();
        }
        self.report.send_if_modified(|report| {
            let now = self.reach.report();
            let changed = *report != now;
            *report = now;
            changed
        });
    }

    fn announce(&mut self) {
        let reachability = self.reach.reachability();
        let confirmed = self.reach.advertised();
        let listed = confirmed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        match reachability {
            Reachability::Public => {
                tracing::info!(addresses = %listed, "reachability: public — peers dialed this node")
            }
            Reachability::Private => tracing::info!(
                "reachability: private — peers on public addresses cannot dial this node (behind a NAT or firewall); it is reached over the links it keeps"
            ),
            Reachability::Local => {
                tracing::info!(addresses = %listed, "reachability: local — only peers on private networks dialed this node")
            }
            Reachability::Unknown => tracing::info!("reachability: unknown again"),
        }
        let mut addresses = self.options.initial_addresses();
        if self.options.configured.is_empty() {
            for address in confirmed {
                let address = address.to_string();
                if !addresses.contains(&address) {
                    addresses.push(address);
                }
            }
            addresses.truncate(ADDRESSES_MAX);
        }
        self.advert.send_replace(Advert {
            addresses,
            private: reachability == Reachability::Private,
        });
    }
}

/// Puts each new [`Advert`] into the node's signed advert.
async fn publish(
    mut advert: watch::Receiver<Advert>,
    routing: Routing,
    shutdown: CancellationToken,
) {
    let mut shown = advert.borrow().clone();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = advert.changed() => if changed.is_err() { return },
        }
        let now = advert.borrow_and_update().clone();
        if now.addresses != shown.addresses
            && let Err(error) = routing.set_addresses(now.addresses.clone()).await
        {
            tracing::debug!(%error, "reachability: could not update the advert's addresses");
            return;
        }
        if now.private != shown.private {
            let services = now
                .private
                .then(|| PRIVATE_SERVICE.to_owned())
                .into_iter()
                .collect();
            if routing
                .advertise("reach", services, Vec::new())
                .await
                .is_err()
            {
                return;
            }
        }
        shown = now;
    }
}
