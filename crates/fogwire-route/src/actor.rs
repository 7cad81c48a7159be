//! The router task: one per node. It owns the sans-IO [`Router`] and
//! [`Topology`], moves their messages to and from the node's links, floods
//! adverts, repairs broken routes, and serves the [`crate::Routing`]
//! handle's commands. Everything arrives through one bounded inbox, so the
//! task never blocks on a link: a full link queue drops the packet (the
//! streams above recover) rather than stalling every route of the node.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fogwire_identity::NodeId;
use fogwire_link::proto::{ChannelId, Message};
use fogwire_link::{ChannelReceiver, ChannelSender, LinkHandle};
use fogwire_route_proto::control_plane::{self, ControlPlane, PlaneEvent, Settings};
use fogwire_route_proto::path::{self, Path, Query};
use fogwire_route_proto::repair::{Repair, RouteOpenError, Sources};
use fogwire_route_proto::router::stream::{RESET_CANCELLED, StreamError};
use fogwire_route_proto::router::{
    Event, Now, RouteEnd, RouteId, Router, SendError, SessionId, StreamId, Transmit,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::store::{Batch, Store};
use crate::stream::{RouteStream, Shared};
use crate::{
    CHANNEL_ADVERT, Constraints, Listing, NodeInfo, Opened, Options, RouteError, RoutingStats,
};

/// Inputs queued to the router task. Bounds what links can pile up in
/// front of it; a full inbox makes link readers wait, which backs the
/// links' flow control up to their peers.
pub(crate) const INBOX_LEN: usize = 1024;
/// Inputs handled in one go before timers are looked at again.
const BATCH_LEN: usize = 256;
/// Pings waiting for their pong.
const PINGS_MAX: usize = 1024;

pub(crate) enum Input {
    Control { from: NodeId, message: Bytes },
    Data { from: NodeId, packet: Bytes },
    Advert { from: NodeId, advert: Bytes },
    LinkUp(LinkHandle),
    LinkDown { peer: NodeId, link: u64 },
    Command(Command),
}

/// Receipts kept for the node to take, at most (one per route).
const FRESH_RECEIPTS_MAX: usize = 65_536;

pub(crate) enum Command {
    Nodes(oneshot::Sender<Vec<NodeInfo>>),
    /// The nodes whose advert lists a service.
    Serving {
        service: String,
        reply: oneshot::Sender<Vec<NodeId>>,
    },
    /// What `owner` (a service started at run time) adds to this node's
    /// advert; empty lists take its part out.
    Advertise {
        owner: String,
        services: Vec<String>,
        offers: Vec<fogwire_route_proto::advert::Offer>,
        reply: oneshot::Sender<()>,
    },
    /// The addresses this node's advert names from now on.
    SetAddresses {
        addresses: Vec<String>,
        reply: oneshot::Sender<()>,
    },
    /// Takes the receipts received since the last take.
    TakeReceipts(oneshot::Sender<Vec<Vec<u8>>>),
    Find {
        destination: NodeId,
        constraints: Constraints,
        alternatives: usize,
        reply: oneshot::Sender<Result<Vec<Path>, RouteError>>,
    },
    Open {
        destination: NodeId,
        constraints: Constraints,
        reply: oneshot::Sender<Result<Opened, RouteError>>,
    },
    Close {
        route: RouteId,
        reply: oneshot::Sender<bool>,
    },
    Routes(oneshot::Sender<Listing>),
    Ping {
        route: RouteId,
        reply: oneshot::Sender<Result<Duration, RouteError>>,
    },
    Datagram {
        via: crate::Via,
        port: u16,
        data: Bytes,
        reply: oneshot::Sender<Result<(), RouteError>>,
    },
    OpenStream {
        route: RouteId,
        reply: oneshot::Sender<Result<RouteStream, RouteError>>,
    },
    Write {
        session: SessionId,
        stream: StreamId,
        data: Bytes,
        reply: oneshot::Sender<Result<usize, StreamError>>,
    },
    Finish {
        session: SessionId,
        stream: StreamId,
    },
    Consumed {
        session: SessionId,
        stream: StreamId,
        bytes: u64,
    },
    Reset {
        session: SessionId,
        stream: StreamId,
    },
    Shutdown(oneshot::Sender<()>),
}

struct Neighbour {
    link: LinkHandle,
    control: ChannelSender,
    data: ChannelSender,
    advert: ChannelSender,
}

/// Who waits for a route this node is opening.
type Opening = oneshot::Sender<Result<Opened, RouteError>>;

impl From<RouteOpenError> for RouteError {
    fn from(error: RouteOpenError) -> Self {
        match error {
            RouteOpenError::NoPath(error) => RouteError::NoPath(error),
            RouteOpenError::Unknown(node) => RouteError::Unknown(node),
            RouteOpenError::Open(error) => RouteError::Open(error),
            _ => RouteError::NoRoute,
        }
    }
}

fn now() -> Now {
    fogwire_env::now()
}

pub(crate) struct Actor {
    node_id: NodeId,
    router: Router,
    plane: ControlPlane,
    sources: Sources,
    neighbours: HashMap<NodeId, Neighbour>,
    /// [`Sources::direct_wanted`], for whoever makes direct links.
    direct_wanted: tokio::sync::watch::Sender<Vec<NodeId>>,
    inputs: mpsc::Sender<Input>,
    opening: HashMap<RouteId, Opening>,
    streams: HashMap<(SessionId, StreamId), Arc<Shared>>,
    pings: HashMap<(SessionId, u64), oneshot::Sender<Result<Duration, RouteError>>>,
    next_ping: u64,
    incoming: mpsc::Sender<RouteStream>,
    services: crate::services::Services,
    /// The services and offers named at start, and those added at run
    /// time by each owner.
    base_advert: (Vec<String>, Vec<fogwire_route_proto::advert::Offer>),
    advertised:
        std::collections::BTreeMap<String, (Vec<String>, Vec<fogwire_route_proto::advert::Offer>)>,
    store: Option<Arc<Store>>,
    /// Receipts received since the node last took them (to redeem).
    fresh_receipts: HashMap<[u8; 16], Vec<u8>>,
    batch: Batch,
    writing: Option<JoinHandle<()>>,
    stats: RoutingStats,
    stopping: Option<oneshot::Sender<()>>,
}

impl Actor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        options: Options,
        inputs: mpsc::Sender<Input>,
        incoming: mpsc::Sender<RouteStream>,
        services: crate::services::Services,
        store: Option<Arc<Store>>,
        saved_adverts: Vec<Vec<u8>>,
        saved_seq: u64,
        receipts_stored: u64,
        direct_wanted: tokio::sync::watch::Sender<Vec<NodeId>>,
    ) -> Self {
        let node_id = options.identity.node_id();
        let router = Router::new(options.identity.clone(), options.router.clone());
        let base_advert = (options.services.clone(), options.offers.clone());
        let settings = Settings {
            keypair: options.identity.keypair().clone(),
            link_key: options
                .identity
                .noise_static_key()
                .try_into()
                .unwrap_or([0; 32]),
            lifetime: options.advert_lifetime,
            addresses: options.addresses.clone(),
            services: options.services.clone(),
            offers: options.offers.clone(),
            capacity_kbps: options.capacity_kbps,
        };
        let saved = saved_adverts.len();
        let plane = ControlPlane::new(settings, saved_adverts, saved_seq, now());
        let restored = plane.topology().len().saturating_sub(1);
        if saved > 0 {
            tracing::info!(
                adverts = restored,
                "restored the network graph from disk ({restored} nodes)"
            );
        }
        Self {
            node_id,
            router,
            plane,
            sources: Sources::default(),
            neighbours: HashMap::new(),
            direct_wanted,
            inputs,
            opening: HashMap::new(),
            streams: HashMap::new(),
            pings: HashMap::new(),
            next_ping: 1,
            incoming,
            services,
            base_advert,
            advertised: std::collections::BTreeMap::new(),
            store,
            fresh_receipts: HashMap::new(),
            batch: Batch::default(),
            writing: None,
            stats: RoutingStats {
                receipts_stored,
                ..RoutingStats::default()
            },
            stopping: None,
        }
    }

    pub(crate) async fn run(mut self, mut inbox: mpsc::Receiver<Input>) {
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        loop {
            self.flush();
            if self.stopping.is_some() {
                break;
            }
            let deadline = [self.router.poll_timeout(), self.plane.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            if let Some(deadline) = deadline {
                let deadline = tokio::time::Instant::from_std(deadline);
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
            }
            tokio::select! {
                input = inbox.recv() => {
                    let Some(input) = input else { break };
                    self.handle(input);
                    for _ in 0..BATCH_LEN {
                        match inbox.try_recv() {
                            Ok(input) => self.handle(input),
                            Err(_) => break,
                        }
                        if self.stopping.is_some() {
                            break;
                        }
                    }
                }
                () = &mut sleep, if deadline.is_some() => {
                    let now = now();
                    self.router.handle_timeout(now);
                    self.plane.handle_timeout(now);
                }
                _ = housekeeping.tick() => self.housekeeping(),
            }
        }
        self.finish().await;
    }

    /// Closes every route this node opened, and writes what is unsaved.
    async fn finish(&mut self) {
        let routes: Vec<RouteId> = self.router.routes().map(|route| route.id).collect();
        let now = now();
        for route in routes {
            self.router.close_route(route, now);
        }
        self.flush();
        if let Some(writing) = self.writing.take() {
            let _ = writing.await;
        }
        if let Some(store) = self.store.clone() {
            let batch = std::mem::take(&mut self.batch);
            if !batch.is_empty() {
                let _ = tokio::task::spawn_blocking(move || {
                    if let Err(error) = store.write(batch) {
                        tracing::warn!("{error}");
                    }
                })
                .await;
            }
        }
        if let Some(reply) = self.stopping.take() {
            let _ = reply.send(());
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Control { from, message } => self.router.handle_control(from, message, now()),
            Input::Data { from, packet } => self.router.handle_data(from, packet, now()),
            Input::Advert { from, advert } => self.plane.handle_advert(from, advert, now()),
            Input::LinkUp(link) => self.link_up(link),
            Input::LinkDown { peer, link } => self.link_down(peer, link),
            Input::Command(command) => self.command(command),
        }
    }

    /// Sends what the router produced and handles what it reported, until
    /// neither has anything left.
    fn flush(&mut self) {
        loop {
            let mut idle = true;
            while let Some(transmit) = self.router.poll_transmit() {
                idle = false;
                self.transmit(transmit);
            }
            while let Some(event) = self.router.poll_event() {
                idle = false;
                self.on_event(event);
            }
            while let Some((to, advert)) = self.plane.poll_transmit() {
                idle = false;
                if let Some(neighbour) = self.neighbours.get(&to)
                    && neighbour.advert.try_send(advert).is_err()
                {
                    self.stats.adverts_dropped += 1;
                }
            }
            while let Some(event) = self.plane.poll_event() {
                idle = false;
                self.on_plane_event(event);
            }
            if idle {
                return;
            }
        }
    }

    fn transmit(&mut self, transmit: Transmit) {
        match transmit {
            Transmit::Control { to, message } => {
                if let Some(neighbour) = self.neighbours.get(&to)
                    && neighbour.control.try_send(message).is_err()
                {
                    self.stats.control_dropped += 1;
                }
            }
            Transmit::Data { to, header, body } => {
                if let Some(neighbour) = self.neighbours.get(&to)
                    && neighbour
                        .data
                        // Every data packet's body is a session packet,
                        // sealed end to end: links need not seal it again.
                        .try_send(Message::with_sealed_body(&header, body))
                        .is_err()
                {
                    self.stats.data_dropped += 1;
                }
            }
        }
    }

    // ----- links -----

    fn link_up(&mut self, link: LinkHandle) {
        if link.is_closed() {
            return;
        }
        let peer = link.peer();
        let channel = |id: u16| ChannelId(id);
        let senders = (
            link.sender(channel(fogwire_route_proto::router::CHANNEL_CONTROL)),
            link.sender(channel(fogwire_route_proto::router::CHANNEL_DATA)),
            link.sender(channel(CHANNEL_ADVERT)),
        );
        let (Some(control), Some(data), Some(advert)) = senders else {
            tracing::info!(peer = %peer.short(), "peer does not route: its link carries no route channels");
            return;
        };
        let receivers = (
            link.take_receiver(channel(fogwire_route_proto::router::CHANNEL_CONTROL)),
            link.take_receiver(channel(fogwire_route_proto::router::CHANNEL_DATA)),
            link.take_receiver(channel(CHANNEL_ADVERT)),
        );
        let (Some(control_in), Some(data_in), Some(advert_in)) = receivers else {
            // Taken already: this link was announced before.
            return;
        };
        spawn_reader(control_in, self.inputs.clone(), move |message| {
            Input::Control {
                from: peer,
                message,
            }
        });
        spawn_reader(data_in, self.inputs.clone(), move |packet| Input::Data {
            from: peer,
            packet,
        });
        spawn_reader(advert_in, self.inputs.clone(), move |advert| {
            Input::Advert { from: peer, advert }
        });
        let rtt = link.snapshot().rtt;
        if let Some(previous) = self.neighbours.insert(
            peer,
            Neighbour {
                link,
                control,
                data,
                advert,
            },
        ) {
            // The same peer over a newer link: routes over the old one are
            // gone with it.
            tracing::debug!(peer = %peer.short(), old = previous.link.id(), "link replaced");
            self.router.link_down(peer, now());
        }
        self.router.link_up(peer);
        self.plane.link_up(peer, now());
        if let Some(rtt) = rtt {
            self.plane.set_rtt(peer, rtt, now());
        }
    }

    fn link_down(&mut self, peer: NodeId, link: u64) {
        if self
            .neighbours
            .get(&peer)
            .is_none_or(|neighbour| neighbour.link.id() != link)
        {
            return;
        }
        self.neighbours.remove(&peer);
        let now = now();
        self.router.link_down(peer, now);
        self.plane.link_down(peer, now);
    }

    // ----- adverts -----

    fn on_plane_event(&mut self, event: PlaneEvent) {
        match event {
            PlaneEvent::Stored { origin, bytes } => self.batch.put_advert(origin, &bytes),
            PlaneEvent::Expired(origin) => self.batch.remove_advert(origin),
            PlaneEvent::Seq(seq) => self.batch.seq = Some(seq),
            PlaneEvent::Sync(peer) => {
                // The new neighbour gets every advert this node holds, at
                // the pace its link's flow control allows.
                let Some(neighbour) = self.neighbours.get(&peer) else {
                    return;
                };
                let known: Vec<Bytes> = self
                    .plane
                    .topology()
                    .adverts()
                    .map(|(_, bytes)| Bytes::copy_from_slice(bytes))
                    .collect();
                let sync = neighbour.advert.clone();
                tokio::spawn(async move {
                    // Paced below what a receiver takes from one neighbour
                    // (a burst, then a rate), so a big graph arrives whole.
                    let mut pace = tokio::time::interval(control_plane::SYNC_INTERVAL);
                    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    for (sent, bytes) in known.into_iter().enumerate() {
                        if sent >= control_plane::SYNC_BURST {
                            pace.tick().await;
                        }
                        if sync.send(bytes).await.is_err() {
                            break;
                        }
                    }
                });
            }
            PlaneEvent::Refused { from, reason } => {
                tracing::debug!(peer = %from.short(), "advert refused: {reason}");
            }
        }
    }

    fn housekeeping(&mut self) {
        // Link latencies, as the keepalives measure them, for the adverts.
        for (peer, neighbour) in &self.neighbours {
            if let Some(rtt) = neighbour.link.snapshot().rtt {
                self.plane.set_rtt(*peer, rtt, now());
            }
        }
        self.plane.handle_timeout(now());
        // A shorter path (a direct link that just came up): routes move
        // onto it, their streams going on.
        let moved = self
            .sources
            .upgrade(&mut self.router, self.plane.topology_mut(), now());
        let wanted = self.sources.direct_wanted(now().instant);
        self.direct_wanted.send_if_modified(|current| {
            let changed = *current != wanted;
            if changed {
                *current = wanted;
            }
            changed
        });
        for (route, path) in moved {
            self.stats.routes_moved += 1;
            tracing::info!(
                route,
                hops = path.hops(),
                "a shorter path appeared; moving the route to {}",
                describe_path(&path.nodes)
            );
        }
        self.pings.retain(|_, reply| !reply.is_closed());
        self.persist();
    }

    fn persist(&mut self) {
        if self.writing.as_ref().is_some_and(|w| !w.is_finished()) || self.batch.is_empty() {
            return;
        }
        let Some(store) = self.store.clone() else {
            self.batch = Batch::default();
            return;
        };
        let batch = std::mem::take(&mut self.batch);
        self.stats.receipts_stored += batch.receipts.len() as u64;
        self.writing = Some(tokio::task::spawn_blocking(move || {
            if let Err(error) = store.write(batch) {
                tracing::warn!("{error}; routing state will be written again later");
            }
        }));
    }

    // ----- routes -----

    fn find(
        &mut self,
        destination: NodeId,
        constraints: &Constraints,
        alternatives: usize,
    ) -> Result<Vec<Path>, RouteError> {
        let query = Query {
            alternatives,
            ..constraints.query(self.node_id, destination)
        };
        Ok(path::find(self.plane.topology_mut().graph(), &query)?)
    }

    fn open(&mut self, destination: NodeId, constraints: Constraints, reply: Opening) {
        let query = constraints.query(self.node_id, destination);
        match self
            .sources
            .open(&mut self.router, self.plane.topology_mut(), query, now())
        {
            Ok((route, _)) => {
                self.opening.insert(route, reply);
            }
            Err(error) => {
                let _ = reply.send(Err(error.into()));
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::RouteUp {
                route,
                session,
                setup_time,
            } => {
                let path = self.router.route_path(route).map(<[NodeId]>::to_vec);
                self.sources.up(route, session, now().instant);
                if let (Some(reply), Some(source)) =
                    (self.opening.remove(&route), self.sources.get(route))
                {
                    let _ = reply.send(Ok(Opened {
                        route,
                        path: path.unwrap_or_default(),
                        setup_time,
                        latency_us: source.latency_us,
                    }));
                }
            }
            Event::RouteFailed { route, error } => {
                // A route being opened is tried again on a path avoiding
                // what failed (the graph can lag behind a link that just
                // went); one the caller gave up on is not.
                let Some(reply) = self.opening.remove(&route).filter(|r| !r.is_closed()) else {
                    self.sources.remove(route);
                    return;
                };
                let retried = self.sources.setup_failed(
                    &mut self.router,
                    self.plane.topology_mut(),
                    route,
                    &error,
                    now(),
                );
                match retried {
                    Ok((again, path)) => {
                        tracing::debug!(route = again, %error, "route setup failed; trying {}", describe_path(&path.nodes));
                        self.opening.insert(again, reply);
                    }
                    Err(_) => {
                        let _ = reply.send(Err(RouteError::Setup(error)));
                    }
                }
            }
            Event::RouteBroken { route, path, cause } => {
                self.stats.routes_broken += 1;
                let now = now();
                match self.sources.broken(
                    &mut self.router,
                    self.plane.topology_mut(),
                    route,
                    &path,
                    &cause,
                    now,
                ) {
                    Repair::Moving(best) => tracing::info!(
                        route,
                        hops = best.hops(),
                        "route broke ({cause:?}); moving it to {}",
                        describe_path(&best.nodes)
                    ),
                    Repair::Abandoned(why) => {
                        tracing::warn!(route, "route broke ({cause:?}) and is given up: {why}")
                    }
                }
            }
            Event::RouteRepaired {
                route, setup_time, ..
            } => {
                self.stats.routes_repaired += 1;
                self.sources.repaired(route);
                tracing::info!(
                    route,
                    "route repaired in {:.1} ms",
                    setup_time.as_secs_f64() * 1e3
                );
            }
            Event::RouteDown { route, reason } => {
                if let Some(reply) = self.opening.remove(&route) {
                    let _ = reply.send(Err(RouteError::Down(reason.clone())));
                }
                if let Some(session) = self.sources.remove(route).and_then(|source| source.session)
                {
                    self.fail_pings(session, &reason);
                }
                if reason != RouteEnd::Closed {
                    tracing::info!(route, "route {reason}");
                }
            }
            Event::SessionOpened { session, peer } => {
                tracing::debug!(session, peer = %peer.short(), "session opened");
            }
            Event::SessionResumed { session } => {
                tracing::debug!(session, "session resumed on a new route");
            }
            Event::SessionClosed { session, reason } => {
                tracing::debug!(session, "session closed ({reason:?})");
            }
            Event::Datagram {
                session,
                port,
                data,
            } => {
                if let Some(from) = self.router.session_peer(session) {
                    // Datagrams are unreliable: a slow service loses some.
                    let delivered = crate::services::deliver_datagram(
                        &self.services,
                        crate::services::Datagram {
                            from,
                            session,
                            port,
                            data,
                        },
                    );
                    if !delivered {
                        self.stats.datagrams_dropped += 1;
                    }
                }
            }
            Event::Pong { session, id, rtt } => {
                if let Some(reply) = self.pings.remove(&(session, id)) {
                    let _ = reply.send(Ok(rtt));
                }
            }
            Event::StreamOpened { session, stream } => {
                let shared = Arc::new(Shared::default());
                let peer = self.router.session_peer(session).unwrap_or(self.node_id);
                let handle =
                    RouteStream::new(session, stream, peer, shared.clone(), self.inputs.clone());
                self.streams.insert((session, stream), shared);
                if let Err(mpsc::error::TrySendError::Full(handle)) = self.incoming.try_send(handle)
                {
                    // Refused: nobody keeps up with new streams.
                    drop(handle);
                }
            }
            Event::StreamData {
                session,
                stream,
                data,
            } => match self.streams.get(&(session, stream)) {
                Some(shared) => shared.push(data),
                // Nobody reads it: let the sender go on.
                None => self
                    .router
                    .stream_consumed(session, stream, data.len() as u64),
            },
            Event::StreamFinished { session, stream } => {
                if let Some(shared) = self.streams.get(&(session, stream)) {
                    shared.finish();
                }
            }
            Event::StreamWritable { session, stream } => {
                if let Some(shared) = self.streams.get(&(session, stream)) {
                    shared.wake_writer();
                }
            }
            Event::StreamClosed {
                session,
                stream,
                error,
            } => {
                if let Some(shared) = self.streams.remove(&(session, stream)) {
                    shared.close(error);
                }
            }
            Event::Receipt { receipt, encoded } => {
                self.stats.receipts_received += 1;
                // The latest per route, until the node takes them to
                // redeem; bounded, the oldest routes' wait for the store.
                if self.fresh_receipts.len() < FRESH_RECEIPTS_MAX
                    || self.fresh_receipts.contains_key(&receipt.route_tag)
                {
                    self.fresh_receipts
                        .insert(receipt.route_tag, encoded.to_vec());
                }
                self.batch
                    .receipts
                    .insert(receipt.route_tag, encoded.to_vec());
            }
        }
    }

    fn fail_pings(&mut self, session: SessionId, reason: &RouteEnd) {
        let waiting: Vec<(SessionId, u64)> = self
            .pings
            .keys()
            .filter(|(s, _)| *s == session)
            .copied()
            .collect();
        for key in waiting {
            if let Some(reply) = self.pings.remove(&key) {
                let _ = reply.send(Err(RouteError::Down(reason.clone())));
            }
        }
    }

    fn route_session(&self, route: RouteId) -> Result<SessionId, RouteError> {
        self.sources
            .get(route)
            .ok_or(RouteError::UnknownRoute)?
            .session
            .ok_or(RouteError::NotUp)
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Nodes(reply) => {
                let _ = reply.send(self.nodes());
            }
            Command::Serving { service, reply } => {
                let serving = self
                    .plane
                    .topology()
                    .adverts()
                    .filter(|(advert, _)| advert.services.contains(&service))
                    .map(|(advert, _)| advert.origin)
                    .collect();
                let _ = reply.send(serving);
            }
            Command::Advertise {
                owner,
                services,
                offers,
                reply,
            } => {
                if services.is_empty() && offers.is_empty() {
                    self.advertised.remove(&owner);
                } else {
                    self.advertised.insert(owner, (services, offers));
                }
                let (mut services, mut offers) = self.base_advert.clone();
                for (extra, extra_offers) in self.advertised.values() {
                    services.extend(extra.iter().cloned());
                    offers.extend(extra_offers.iter().cloned());
                }
                services.dedup();
                self.plane.set_services(services, offers, now());
                let _ = reply.send(());
            }
            Command::SetAddresses { addresses, reply } => {
                self.plane.set_addresses(addresses, now());
                let _ = reply.send(());
            }
            Command::TakeReceipts(reply) => {
                let fresh = std::mem::take(&mut self.fresh_receipts);
                let _ = reply.send(fresh.into_values().collect());
            }
            Command::Find {
                destination,
                constraints,
                alternatives,
                reply,
            } => {
                let found = self.find(destination, &constraints, alternatives);
                let _ = reply.send(found);
            }
            Command::Open {
                destination,
                constraints,
                reply,
            } => self.open(destination, constraints, reply),
            Command::Close { route, reply } => {
                let _ = reply.send(self.router.close_route(route, now()));
            }
            Command::Routes(reply) => {
                let plane = self.plane.stats();
                let _ = reply.send(Listing {
                    routes: self.router.routes().collect(),
                    transit: self.router.rules().filter(|rule| rule.relay).collect(),
                    stats: RoutingStats {
                        adverts_sent: plane.adverts_sent,
                        adverts_accepted: plane.adverts_accepted,
                        adverts_refused: plane.adverts_refused,
                        session_packets_rejected: self.router.session_packets_rejected(),
                        ..self.stats.clone()
                    },
                });
            }
            Command::Ping { route, reply } => {
                let result = self.route_session(route).and_then(|session| {
                    if self.pings.len() >= PINGS_MAX {
                        return Err(RouteError::Busy);
                    }
                    let id = self.next_ping;
                    self.next_ping += 1;
                    self.router
                        .ping(session, id, now())
                        .map_err(RouteError::Send)?;
                    Ok((session, id))
                });
                match result {
                    Ok(key) => {
                        self.pings.insert(key, reply);
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            Command::Datagram {
                via,
                port,
                data,
                reply,
            } => {
                let session = match via {
                    crate::Via::Route(route) => self.route_session(route),
                    crate::Via::Session(session) => Ok(session),
                };
                let sent = session.and_then(|session| {
                    self.router
                        .send_datagram(session, port, &data)
                        .map_err(RouteError::Send)
                });
                let _ = reply.send(sent);
            }
            Command::OpenStream { route, reply } => {
                let opened = self.route_session(route).and_then(|session| {
                    let stream = self
                        .router
                        .open_stream(session, now())
                        .map_err(RouteError::Send)?;
                    let shared = Arc::new(Shared::default());
                    self.streams.insert((session, stream), shared.clone());
                    let peer = self.router.session_peer(session).unwrap_or(self.node_id);
                    Ok(RouteStream::new(
                        session,
                        stream,
                        peer,
                        shared,
                        self.inputs.clone(),
                    ))
                });
                let _ = reply.send(opened);
            }
            Command::Write {
                session,
                stream,
                data,
                reply,
            } => {
                let written = self
                    .router
                    .stream_write(session, stream, &data, now())
                    .map_err(|error| match error {
                        SendError::Finished => StreamError::Violation,
                        _ => StreamError::SessionClosed,
                    });
                let _ = reply.send(written);
            }
            Command::Finish { session, stream } => {
                let _ = self.router.stream_finish(session, stream, now());
            }
            Command::Consumed {
                session,
                stream,
                bytes,
            } => self.router.stream_consumed(session, stream, bytes),
            Command::Reset { session, stream } => {
                if self.streams.remove(&(session, stream)).is_some() {
                    self.router.stream_reset(session, stream, RESET_CANCELLED);
                }
            }
            Command::Shutdown(reply) => self.stopping = Some(reply),
        }
    }

    fn nodes(&mut self) -> Vec<NodeInfo> {
        let mut nodes: Vec<NodeInfo> = self
            .plane
            .topology()
            .adverts()
            .map(|(advert, _)| NodeInfo {
                advert: advert.clone(),
                this_node: advert.origin == self.node_id,
                neighbour: self.neighbours.contains_key(&advert.origin),
            })
            .collect();
        nodes.sort_by_key(|node| (!node.this_node, !node.neighbour, node.advert.origin));
        nodes
    }
}

fn spawn_reader(
    mut receiver: ChannelReceiver,
    inputs: mpsc::Sender<Input>,
    wrap: impl Fn(Bytes) -> Input + Send + 'static,
) {
    tokio::spawn(async move {
        while let Some(message) = receiver.recv().await {
            if inputs.send(wrap(message)).await.is_err() {
                break;
            }
        }
    });
}

/// A path as short ids: `fw1abc… → fw1def…`.
pub fn describe_path(nodes: &[NodeId]) -> String {
    nodes
        .iter()
        .map(NodeId::short)
        .collect::<Vec<_>>()
        .join(" → ")
}
