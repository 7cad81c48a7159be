//! The tokio driver of reachability and relays: one task owns the sans-IO
//! [`Reach`], [`Clients`] and [`Relays`] cores, reads the reachability
//! channel of every link through one bounded inbox, runs the dial-back
//! probes it asks for, keeps the node's advert naming the addresses others
//! can dial, answers reservations as a relay, and — while the node is
//! private — keeps links with reservations at relays the adverts offer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fogwire_identity::NodeId;
use fogwire_link::manager::Links;
use fogwire_link::proto::{ChannelId, Config as LinkConfig, HandshakeError, LinkIdentity};
use fogwire_link::{ChannelSender, EstablishError, LinkHandle, PeerAddr, Transport};
use fogwire_relay_proto::reach::{Action, Reach, Reachability, Report, Settings};
use fogwire_relay_proto::relays::{
    self, Candidate, ClientSettings, Clients, RelayAction, RelayState, Relays, ServeSettings,
};
use fogwire_relay_proto::wire::{CHANNEL_REACH, DialOutcome, Message};
use fogwire_route::Routing;
use fogwire_route::proto::advert::Offer;
use tokio::sync::{mpsc, watch};

use crate::punch::{PunchError, Puncher};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The service a node's advert names while peers on public addresses
/// cannot dial it: others reach it over its own links instead of dialing.
pub const PRIVATE_SERVICE: &str = "reach:private";
/// The service a node's advert names when it takes links over QUIC on
/// the UDP port of its addresses' number.
pub const QUIC_SERVICE: &str = "link:quic";

/// Where a relay can be dialed.
#[derive(Debug, Clone, Default)]
struct RelayAddresses {
    addresses: Vec<String>,
    /// It takes links over QUIC too.
    quic: bool,
}
/// Inputs waiting for the task; beyond, link events are dropped (and
/// logged) and channel readers wait.
const INBOX_LEN: usize = 1024;
/// Addresses an advert names at most.
const ADDRESSES_MAX: usize = fogwire_relay_proto::reach::ADVERTISED_MAX;
/// How often a private node reads the adverts for relays, and how soon
/// again while it has fewer than it keeps.
const CANDIDATES_EVERY: Duration = Duration::from_secs(30);
const CANDIDATES_SOON: Duration = Duration::from_secs(5);
/// Reads in a row at the sooner pace before the usual one.
const SHORT_READS_MAX: u32 = 12;

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
    /// What this node offers as a relay, if it is one.
    pub serve: Option<ServeSettings>,
    /// How it uses relays while it is private.
    pub client: ClientSettings,
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
        transport: Transport,
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
    /// The relays the adverts offer, with their addresses.
    Candidates(Vec<(Candidate, RelayAddresses)>),
    /// Linking to a chosen relay ended.
    Linked {
        relay: NodeId,
        result: Result<(), String>,
    },
}

/// What the node knows of its reachability and relays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub reach: Report,
    /// The relays this node keeps, with their state and price.
    pub relays: Vec<(NodeId, RelayState, u64)>,
    /// What it offers as a relay, if it is one, and its clients.
    pub serving: Option<ServeSettings>,
    pub clients: Vec<NodeId>,
}

/// A node's reachability: a [`fogwire_link::LinkUser`] on channel
/// `0x0500`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reachable {
    inbox: mpsc::Sender<Input>,
    report: watch::Receiver<Status>,
    links: LinksSlot,
    puncher: Arc<Puncher>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Reachable {
    /// Starts the task; it keeps `routing`'s advert up to date, and
    /// links to relays through the link manager once
    /// [`Reachable::set_links`] hands it over.
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
        let me = options.identity.node_id();
        let relays = Relays::new(me, options.client.clone());
        let clients = Clients::new(options.serve.clone());
        let status = Status {
            reach: reach.report(),
            relays: Vec::new(),
            serving: options.serve.clone(),
            clients: Vec::new(),
        };
        let (report_sender, report) = watch::channel(status);
        let (advert_sender, advert) = watch::channel(Advert {
            addresses: options.initial_addresses(),
            private: false,
        });
        let relay_offer = options.serve.as_ref().map(offer);
        tasks.spawn(publish(
            advert,
            relay_offer,
            routing.clone(),
            shutdown.clone(),
        ));
        let links = LinksSlot::default();
        let puncher = Puncher::new(routing.clone(), links.clone(), report.clone());
        if let Err(error) = puncher.serve() {
            tracing::warn!(%error, "punch: cannot offer the punch service; peers cannot ask this node for direct links");
        }
        tasks.spawn(puncher.clone().run_auto(shutdown.clone()));
        let driver = Driver {
            puncher: puncher.clone(),
            reach,
            relays,
            clients,
            options,
            inbox: inbox.clone(),
            channels: HashMap::new(),
            relay_addresses: HashMap::new(),
            links: links.clone(),
            routing,
            next_candidates: None,
            short_reads: 0,
            chosen_before: 0,
            report: report_sender,
            advert: advert_sender,
            tasks: tasks.clone(),
            shutdown: shutdown.clone(),
        };
        tasks.spawn(driver.run(receiver, shutdown.clone()));
        Self {
            inbox,
            report,
            links,
            puncher,
            shutdown,
            tasks,
        }
    }

    /// Makes a direct link to `peer` (QUIC, through both NATs) by asking
    /// it over a route to punch with this node: relay.md §3.
    pub async fn punch(&self, peer: NodeId) -> Result<LinkHandle, PunchError> {
        self.puncher.punch(peer).await
    }

    /// The link manager, through which a private node links to relays.
    pub fn set_links(&self, links: Links) {
        *self.links.lock() = Some(links);
    }

    /// What the node knows of its reachability and relays now.
    pub fn report(&self) -> Status {
        self.report.borrow().clone()
    }

    /// [`Reachable::report`] for the control API.
    pub fn status(&self) -> fogwire_api::Reach {
        let status = self.report();
        let report = &status.reach;
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
            checks_for_peers: report.serving,
            relays: status
                .relays
                .iter()
                .map(|(id, state, price)| fogwire_api::RelayUse {
                    node_id: id.to_string(),
                    state: state.as_str().to_owned(),
                    price_per_gib: *price,
                })
                .collect(),
            relay: status
                .serving
                .as_ref()
                .map(|serving| fogwire_api::RelayServing {
                    clients: ids(&status.clients),
                    clients_max: serving.clients_max,
                    price_per_gib: serving.price_per_gib,
                }),
        }
    }

    /// Changes of [`Reachable::report`].
    pub fn watch(&self) -> watch::Receiver<Status> {
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
            transport: link.transport(),
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

/// The link manager, once the node hands it over. Emptied when the task
/// ends: the manager tells this subsystem of links, so holding it for good
/// would keep both (and every subsystem the manager tells) alive.
#[derive(Debug, Clone, Default)]
pub(crate) struct LinksSlot(Arc<Mutex<Option<Links>>>);

impl LinksSlot {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Option<Links>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A relay's offer in its advert.
fn offer(serve: &ServeSettings) -> Offer {
    Offer {
        service: relays::SERVICE.to_owned(),
        price_per_gib: serve.price_per_gib,
        terms: format!("up to {} clients", serve.clients_max),
    }
}

struct Driver {
    reach: Reach,
    relays: Relays,
    clients: Clients,
    options: Options,
    inbox: mpsc::Sender<Input>,
    /// The reachability channel of each linked peer.
    channels: HashMap<NodeId, (u64, ChannelSender, Transport)>,
    /// Where the relays the adverts offer can be dialed.
    relay_addresses: HashMap<NodeId, RelayAddresses>,
    puncher: Arc<Puncher>,
    links: LinksSlot,
    routing: Routing,
    /// When a private node next reads the adverts for relays.
    next_candidates: Option<Instant>,
    /// Reads in a row that left it short of relays.
    short_reads: u32,
    /// Relays chosen at the last flush (fewer now: one failed).
    chosen_before: usize,
    report: watch::Sender<Status>,
    advert: watch::Sender<Advert>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Driver {
    /// Runs `work` as a task of the node's, ended by its shutdown.
    fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let stop = self.shutdown.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = work => {}
            }
        });
    }

    async fn run(mut self, mut inbox: mpsc::Receiver<Input>, shutdown: CancellationToken) {
        loop {
            let deadline = [
                self.reach.poll_timeout(),
                self.relays.poll_timeout(),
                self.next_candidates,
            ]
            .into_iter()
            .flatten()
            .min();
            let wake = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                input = inbox.recv() => match input {
                    Some(input) => self.handle(input),
                    None => break,
                },
                () = wake => self.timeout(Instant::now()),
            }
            self.flush();
        }
        self.links.lock().take();
    }

    fn timeout(&mut self, now: Instant) {
        self.reach.handle_timeout(now);
        self.relays.handle_timeout(now);
        if self.next_candidates.is_some_and(|at| at <= now) {
            self.next_candidates = None;
            self.read_candidates();
        }
    }

    /// Reads the relays the adverts offer, off the task.
    fn read_candidates(&self) {
        let (routing, inbox) = (self.routing.clone(), self.inbox.clone());
        self.spawn(async move {
            let Ok(nodes) = routing.nodes().await else {
                return;
            };
            let offered = nodes
                .into_iter()
                .filter(|info| {
                    let services = &info.advert.services;
                    !info.this_node
                        && services.iter().any(|s| s == relays::SERVICE)
                        && !services.iter().any(|s| s == PRIVATE_SERVICE)
                        && !info.advert.addresses.is_empty()
                })
                .map(|info| {
                    let price_per_gib = info
                        .advert
                        .offers
                        .iter()
                        .find(|offer| offer.service == relays::SERVICE)
                        .map_or(0, |offer| offer.price_per_gib);
                    let candidate = Candidate {
                        id: info.advert.origin,
                        price_per_gib,
                    };
                    let quic = info.advert.services.iter().any(|s| s == QUIC_SERVICE);
                    let addresses = RelayAddresses {
                        addresses: info.advert.addresses,
                        quic,
                    };
                    (candidate, addresses)
                })
                .take(relays::CANDIDATES_MAX)
                .collect();
            let _ = inbox.send(Input::Candidates(offered)).await;
        });
    }

    fn handle(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::LinkUp {
                peer,
                link_id,
                remote,
                transport,
                sender,
            } => {
                self.channels.insert(peer, (link_id, sender, transport));
                self.reach.link_up(peer, remote, now);
                // A chosen relay's link is up (this comes before the dial
                // reports back): ask for the reservation now.
                self.relays.linked(peer);
            }
            Input::LinkDown { peer, link_id } => {
                if self
                    .channels
                    .get(&peer)
                    .is_some_and(|(id, _, _)| *id == link_id)
                {
                    self.channels.remove(&peer);
                    self.puncher.seen_lock().remove(&peer);
                    self.reach.link_down(peer, now);
                    if self.clients.is_client(&peer) {
                        self.clients.link_down(&peer);
                        tracing::info!(client = %peer.short(), "relay: a client's link is down; its reservation ends");
                    }
                    if self.relays.is_chosen(&peer) {
                        tracing::info!(relay = %peer.short(), "relay: the link to a relay this node uses is down; choosing another");
                        self.relays.link_failed(peer, now);
                        self.release(peer);
                    }
                }
            }
            Input::Message {
                peer,
                link_id,
                bytes,
            } => {
                let Some((id, _, transport)) = self.channels.get(&peer) else {
                    return;
                };
                if *id != link_id {
                    return;
                }
                let decoded = Message::decode(&bytes);
                if let (Transport::Quic, Ok(Message::Observed(address))) = (transport, &decoded) {
                    // Where a NAT maps this node's QUIC socket: what a
                    // peer punching to it must dial.
                    self.puncher.seen_lock().insert(peer, *address);
                }
                match decoded {
                    Ok(Message::Reserve { price_max }) => self.reserve(peer, price_max),
                    Ok(Message::Reservation { outcome }) => {
                        if outcome == fogwire_relay_proto::ReserveOutcome::Accepted {
                            tracing::info!(relay = %peer.short(), "relay: reserved; others reach this node through it");
                        } else {
                            tracing::info!(relay = %peer.short(), outcome = outcome.as_str(), "relay: refused a reservation; choosing another");
                        }
                        self.relays.reservation(peer, outcome, now);
                    }
                    Ok(message) => self.reach.handle_message(peer, message, now),
                    Err(error) => {
                        tracing::debug!(peer = %peer.short(), %error, "reachability: dropped a message")
                    }
                }
            }
            Input::Accepted(remote) => self.reach.accepted(remote),
            Input::ProbeDone {
                peer,
                nonce,
                outcome,
            } => self.reach.probe_done(peer, nonce, outcome),
            Input::Candidates(offered) => {
                self.relay_addresses = offered
                    .iter()
                    .map(|(candidate, addresses)| (candidate.id, addresses.clone()))
                    .collect();
                let candidates = offered
                    .into_iter()
                    .map(|(candidate, _)| candidate)
                    .collect();
                self.relays.set_candidates(candidates, now);
                if self.relays.is_needed() {
                    // Sooner while short of relays (adverts are still
                    // coming), for a minute; a network with fewer relays
                    // than this node keeps is read at the usual pace.
                    let short = self.relays.chosen().count() < self.options.client.keep;
                    self.short_reads = if short { self.short_reads + 1 } else { 0 };
                    let soon = short && self.short_reads <= SHORT_READS_MAX;
                    let every = if soon {
                        CANDIDATES_SOON
                    } else {
                        CANDIDATES_EVERY
                    };
                    self.next_candidates = Some(now + every);
                }
            }
            Input::Linked { relay, result } => match result {
                // Let go meanwhile (the node became public): not kept.
                Ok(()) if !self.relays.is_chosen(&relay) => self.release(relay),
                Ok(()) => self.relays.linked(relay),
                Err(error) => {
                    tracing::info!(relay = %relay.short(), %error, "relay: cannot link to a relay; choosing another");
                    self.relays.link_failed(relay, now);
                }
            },
        }
    }

    /// A peer asks this node to carry for it.
    fn reserve(&mut self, peer: NodeId, price_max: u64) {
        let outcome = self.clients.reserve(peer, price_max);
        if let Some(serving) = self.clients.settings() {
            let count = self.clients.clients().count();
            tracing::info!(client = %peer.short(), outcome = outcome.as_str(), clients = count, clients_max = serving.clients_max, "relay: a node asked this relay to carry for it");
        }
        self.send(peer, Message::Reservation { outcome }.encode().into());
    }

    fn send(&self, peer: NodeId, bytes: Bytes) {
        if let Some((_, sender, _)) = self.channels.get(&peer) {
            // A full channel drops the message: checks time out and move
            // on, reservations are asked again on the next link.
            let _ = sender.try_send(bytes);
        }
    }

    /// Stops keeping the link to a relay this node no longer uses.
    fn release(&self, relay: NodeId) {
        let Some(links) = self.links.lock().clone() else {
            return;
        };
        self.spawn(async move {
            links
                .release(&relay, "this node no longer uses the relay")
                .await;
        });
    }

    /// Links to a chosen relay at the addresses its advert names, and
    /// keeps the link.
    fn link(&self, relay: NodeId) {
        let RelayAddresses { addresses, quic } = self
            .relay_addresses
            .get(&relay)
            .cloned()
            .unwrap_or_default();
        let (links, inbox) = (self.links.lock().clone(), self.inbox.clone());
        self.spawn(async move {
            let mut result = Err("the link manager has not started".to_owned());
            if let Some(links) = links {
                result = Err("its advert names no address".to_owned());
                // Over QUIC when both ends can: the relay then tells this
                // node where its NAT maps its UDP socket, and the link's
                // traffic keeps that mapping open for hole punching.
                let quic = quic && links.quic_addr().is_some();
                let tries = addresses.iter().flat_map(|address| {
                    let tcp = PeerAddr::tcp(relay, address.clone());
                    quic.then(|| PeerAddr::quic(relay, address.clone()))
                        .into_iter()
                        .chain([tcp])
                });
                for addr in tries {
                    match links.keep(addr).await {
                        Ok(_) => {
                            result = Ok(());
                            break;
                        }
                        Err(error) => result = Err(error.to_string()),
                    }
                }
            }
            let _ = inbox.send(Input::Linked { relay, result }).await;
        });
    }

    /// Sends what the cores produced, starts their probes and links, and
    /// publishes.
    fn flush(&mut self) {
        let now = Instant::now();
        // Relays are taken when the node is found private and let go only
        // once it is found dialable: an unknown spell keeps them.
        let needed = match self.reach.reachability() {
            Reachability::Private => true,
            Reachability::Public | Reachability::Local => false,
            Reachability::Unknown => self.relays.is_needed(),
        };
        if needed != self.relays.is_needed() {
            self.relays.set_needed(needed, now);
            if needed {
                tracing::info!("relay: this node cannot be dialed; looking for relays");
                self.read_candidates();
            } else {
                tracing::info!("relay: this node can be dialed; letting its relays go");
                self.next_candidates = None;
            }
        }
        let chosen = self.relays.chosen().count();
        if self.relays.is_needed() && chosen < self.chosen_before {
            // A relay failed: look again soon.
            self.short_reads = 0;
            let soon = now + CANDIDATES_SOON;
            self.next_candidates = Some(self.next_candidates.map_or(soon, |at| at.min(soon)));
        }
        self.chosen_before = chosen;
        while let Some(action) = self.relays.poll_action() {
            match action {
                RelayAction::Link(relay) => self.link(relay),
                RelayAction::Unlink(relay) => self.release(relay),
            }
        }
        while let Some((peer, bytes)) = self.reach.poll_transmit() {
            self.send(peer, bytes);
        }
        while let Some((peer, bytes)) = self.relays.poll_transmit() {
            self.send(peer, bytes);
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
            self.spawn(async move {
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
        let status = Status {
            reach: self.reach.report(),
            relays: self.relays.chosen().collect(),
            serving: self.clients.settings().cloned(),
            clients: self.clients.clients().copied().collect(),
        };
        self.report.send_if_modified(|report| {
            let changed = *report != status;
            *report = status;
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
        // A private node's listening address is named only where a peer
        // dialed it (a LAN): elsewhere dialing it only wastes a timeout.
        let mut addresses = match reachability {
            Reachability::Private if self.options.configured.is_empty() => Vec::new(),
            _ => self.options.initial_addresses(),
        };
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

/// Puts the relay's offer, then each new [`Advert`], into the node's
/// signed advert.
async fn publish(
    mut advert: watch::Receiver<Advert>,
    relay_offer: Option<Offer>,
    routing: Routing,
    shutdown: CancellationToken,
) {
    if let Some(offer) = relay_offer {
        let services = vec![relays::SERVICE.to_owned()];
        if routing
            .advertise(relays::SERVICE, services, vec![offer])
            .await
            .is_err()
        {
            return;
        }
    }
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
