//! The membership task: owns the sans-IO [`Membership`], feeds it link
//! events, messages and time, and carries out what it asks (send, dial,
//! report).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fogwire_cluster_proto::JoinCode;
use fogwire_cluster_proto::placement::Member;
use fogwire_cluster_proto::swim::{Board, Event, Membership, Output, State};
use fogwire_identity::NodeId;
use tokio::sync::{Semaphore, mpsc};

use crate::discovery::{self, Discovery, Heard};
use crate::{ClusterError, Control, Dialer, Shared, lock};

/// A member is dialed at most this often.
const DIAL_BACKOFF: Duration = Duration::from_secs(2);
/// Dials in flight at once.
const DIALS_MAX: usize = 8;
/// Boards heard by mDNS that are remembered (to dial again).
const CANDIDATES_MAX: usize = 256;
/// How often heard boards that are not live members are dialed again:
/// this is how a board that lost every member finds its cluster again.
const REDIAL_INTERVAL: Duration = Duration::from_secs(5);
/// Refusals logged one by one per window; the rest are counted.
const REFUSALS_LOGGED: u32 = 8;
const REFUSAL_WINDOW: Duration = Duration::from_secs(10);
/// The status the API reads is rebuilt at most this often (and at every
/// membership event).
const STATUS_INTERVAL: Duration = Duration::from_millis(250);

struct Joined {
    membership: Membership,
    owner: bool,
    mdns: bool,
    _discovery: Option<Discovery>,
    candidates: BTreeMap<NodeId, (Vec<SocketAddr>, Instant)>,
    dialing: HashMap<NodeId, Instant>,
    dials: Arc<Semaphore>,
    discovered: u64,
    refusals: (Instant, u32),
    status_at: Instant,
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    dialer: Arc<dyn Dialer>,
    mut control: mpsc::Receiver<Control>,
    mut messages: mpsc::Receiver<(NodeId, u64, Bytes)>,
) {
    let (heard_sender, mut heard) = mpsc::channel::<Heard>(256);
    let mut joined: Option<Joined> = None;
    let mut redial = tokio::time::interval(REDIAL_INTERVAL);
    loop {
        let deadline = joined
            .as_ref()
            .map(|joined| joined.membership.next_deadline());
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let mut changed = false;
        tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => return,
            command = control.recv() => {
                let Some(command) = command else { return };
                match command {
                    Control::Join { code, owner, reply } => {
                        let result = join(&shared, &mut joined, code, owner, &heard_sender);
                        changed = result.is_ok();
                        let _ = reply.send(result);
                    }
                    Control::LinkUp(peer) => {
                        if let Some(joined) = &mut joined {
                            joined.membership.link_up(peer);
                        }
                    }
                    Control::LinkDown(peer) => {
                        if let Some(joined) = &mut joined {
                            joined.membership.link_down(peer, Instant::now());
                        }
                    }
                }
            }
            () = timer => {
                if let Some(joined) = &mut joined {
                    joined.membership.tick(Instant::now());
                }
            }
            message = messages.recv() => {
                let Some((peer, link_id, bytes)) = message else { return };
                let current = lock(&shared.links)
                    .get(&peer)
                    .is_some_and(|(id, _)| *id == link_id);
                if let Some(joined) = &mut joined
                    && current
                {
                    joined.membership.receive(peer, &bytes, Instant::now());
                }
            }
            Some(board) = heard.recv() => {
                if let Some(joined) = &mut joined {
                    joined.heard(&shared, &dialer, board);
                }
            }
            _ = redial.tick() => {
                if let Some(joined) = &mut joined {
                    joined.redial(&shared, &dialer);
                }
            }
        }
        if let Some(joined) = &mut joined {
            changed |= joined.flush(&shared, &dialer);
            joined.publish(&shared, changed);
        }
    }
}

fn join(
    shared: &Arc<Shared>,
    joined: &mut Option<Joined>,
    code: JoinCode,
    owner: bool,
    heard: &mpsc::Sender<Heard>,
) -> Result<(), ClusterError> {
    if let Some(current) = joined {
        let id = current.membership.join().cluster;
        if id == code.cluster {
            current.owner |= owner;
            return Ok(());
        }
        return Err(ClusterError::AlreadyJoined {
            current: id.to_string(),
        });
    }
    let options = &shared.options;
    let boot = match &options.dir {
        Some(dir) => crate::boot::advance(&dir.join("cluster-boot"))?,
        // No disk: the wall clock in milliseconds, which only ever grows
        // for boards that never restart (tests, the demo).
        None => fogwire_env::unix_ms(),
    };
    let me = options.key.node_id();
    let addrs = record_addrs(options.link_listen, &options.advertise);
    let seed = boot ^ u64::from_be_bytes(me.as_bytes()[..8].try_into().unwrap_or_default());
    let board = Board {
        key: options.key.clone(),
        join: code.clone(),
        boot,
        addrs,
        resources: options.resources,
    };
    let mut membership = Membership::new(options.swim.clone(), board, seed, Instant::now());
    let announced: Vec<IpAddr> = if options.link_listen.ip().is_unspecified() {
        Vec::new()
    } else {
        vec![options.link_listen.ip()]
    };
    let discovery = if options.mdns {
        match discovery::start(
            me,
            options.link_listen.port(),
            &announced,
            code.secret.tag(),
            heard.clone(),
            shared.shutdown.child_token(),
        ) {
            Ok(discovery) => Some(discovery),
            Err(error) => {
                tracing::warn!(
                    "cluster: {error}; boards of the cluster are not found on the local network, \
                     only through links made otherwise (`fogwire connect`)"
                );
                None
            }
        }
    } else {
        None
    };
    let peers: Vec<NodeId> = lock(&shared.links).keys().copied().collect();
    for peer in peers {
        membership.link_up(peer);
    }
    tracing::info!(
        cluster = %code.cluster,
        boot,
        mdns = discovery.is_some(),
        "cluster: joined; looking for the other boards"
    );
    shared.cluster.send_replace(Some(code.cluster));
    *joined = Some(Joined {
        membership,
        owner,
        mdns: discovery.is_some(),
        _discovery: discovery,
        candidates: BTreeMap::new(),
        dialing: HashMap::new(),
        dials: Arc::new(Semaphore::new(DIALS_MAX)),
        discovered: 0,
        refusals: (Instant::now(), 0),
        status_at: Instant::now(),
    });
    Ok(())
}

/// The link addresses a board names in its record: the configured ones;
/// else the listener's; else, for a wildcard listener, its interfaces'
/// (IPv4 first, no loopback, no IPv6 link-local).
fn record_addrs(listen: SocketAddr, advertise: &[SocketAddr]) -> Vec<SocketAddr> {
    if !advertise.is_empty() {
        return advertise.to_vec();
    }
    if !listen.ip().is_unspecified() {
        return vec![listen];
    }
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|interface| !interface.is_loopback())
        .map(|interface| interface.ip())
        // IPv4 always (a dual-stack wildcard takes it too); IPv6 only on
        // an IPv6 wildcard, and never link-local (it needs a scope).
        .filter(|ip| match ip {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => listen.is_ipv6() && (v6.segments()[0] & 0xffc0) != 0xfe80,
        })
        .collect();
    ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    ips.dedup();
    ips.into_iter()
        .map(|ip| SocketAddr::new(ip, listen.port()))
        .collect()
}

impl Joined {
    fn heard(&mut self, shared: &Arc<Shared>, dialer: &Arc<dyn Dialer>, board: Heard) {
        self.discovered += 1;
        if !self.candidates.contains_key(&board.node) && self.candidates.len() >= CANDIDATES_MAX {
            let oldest = self
                .candidates
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.candidates.remove(&oldest);
            }
        }
        self.candidates
            .insert(board.node, (board.addrs.clone(), Instant::now()));
        self.dial(shared, dialer, board.node, board.addrs);
    }

    /// Dials the boards heard on the network that are not live members
    /// with a link.
    fn redial(&mut self, shared: &Arc<Shared>, dialer: &Arc<dyn Dialer>) {
        let live: Vec<NodeId> = self
            .membership
            .members()
            .filter(|member| member.state == State::Alive && member.linked)
            .map(|member| member.record.node)
            .collect();
        let wanted: Vec<(NodeId, Vec<SocketAddr>)> = self
            .candidates
            .iter()
            .filter(|(id, _)| !live.contains(id))
            .map(|(id, (addrs, _))| (*id, addrs.clone()))
            .collect();
        for (node, addrs) in wanted {
            self.dial(shared, dialer, node, addrs);
        }
    }

    fn dial(
        &mut self,
        shared: &Arc<Shared>,
        dialer: &Arc<dyn Dialer>,
        node: NodeId,
        addrs: Vec<SocketAddr>,
    ) {
        if node == self.membership.me() || addrs.is_empty() {
            return;
        }
        if lock(&shared.links).contains_key(&node) {
            return;
        }
        let now = Instant::now();
        if self
            .dialing
            .get(&node)
            .is_some_and(|at| now.duration_since(*at) < DIAL_BACKOFF)
        {
            return;
        }
        if self.dialing.len() >= CANDIDATES_MAX * 2 {
            self.dialing
                .retain(|_, at| now.duration_since(*at) < DIAL_BACKOFF);
        }
        let Ok(permit) = self.dials.clone().try_acquire_owned() else {
            return;
        };
        self.dialing.insert(node, now);
        let dialer = dialer.clone();
        shared.tasks.spawn(async move {
            let _permit = permit;
            for addr in addrs {
                match dialer.dial(node, addr).await {
                    Ok(()) => return,
                    Err(error) => {
                        tracing::debug!(peer = %node.short(), %addr, "cluster: dial failed: {error}");
                    }
                }
            }
        });
    }

    /// Carries out the membership's outputs; whether membership changed.
    fn flush(&mut self, shared: &Arc<Shared>, dialer: &Arc<dyn Dialer>) -> bool {
        let mut changed = false;
        while let Some(output) = self.membership.poll_output() {
            match output {
                Output::Send { to, bytes } => {
                    let sender = lock(&shared.links).get(&to).map(|(_, s)| s.clone());
                    // A full link drops the message: membership is built
                    // for lost messages, and must never wait on a link.
                    if let Some(sender) = sender {
                        let _ = sender.try_send(bytes);
                    }
                }
                Output::Dial { node, addrs } => self.dial(shared, dialer, node, addrs),
                Output::Event(event) => {
                    changed = true;
                    self.log(&event);
                }
                Output::Refused { peer, reason } => self.log_refusal(peer, &reason),
            }
        }
        changed
    }

    fn log(&self, event: &Event) {
        let live = self.membership.live().len();
        match event {
            Event::Up(id) => tracing::info!(member = %id.short(), live, "cluster: member up"),
            Event::Suspected(id) => {
                tracing::info!(member = %id.short(), "cluster: member suspected (no answer to a probe); it has the suspicion time to answer");
            }
            Event::Failed(id) => tracing::warn!(
                member = %id.short(),
                live,
                "cluster: member failed: it did not answer within the suspicion time; its services move to other boards"
            ),
            Event::Forgotten(id) => {
                tracing::debug!(member = %id.short(), "cluster: failed member forgotten")
            }
            Event::Refuted { incarnation } => tracing::info!(
                incarnation,
                "cluster: other boards suspected this one and it refuted; a loaded board or a slow network does this"
            ),
        }
    }

    fn log_refusal(&mut self, peer: NodeId, reason: &fogwire_cluster_proto::swim::Refusal) {
        use fogwire_cluster_proto::member::RecordError;
        use fogwire_cluster_proto::swim::Refusal;
        // A board of another cluster linked for routing says hello too:
        // nothing is wrong, it is just not ours.
        if matches!(reason, Refusal::Record(RecordError::OtherCluster)) {
            tracing::debug!(peer = %peer.short(), "cluster: a linked board is in another cluster");
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.refusals.0) >= REFUSAL_WINDOW {
            if self.refusals.1 > REFUSALS_LOGGED {
                tracing::warn!(
                    more = self.refusals.1 - REFUSALS_LOGGED,
                    "cluster: more membership messages refused in the last {REFUSAL_WINDOW:?}"
                );
            }
            self.refusals = (now, 0);
        }
        self.refusals.1 += 1;
        if self.refusals.1 <= REFUSALS_LOGGED {
            tracing::warn!(peer = %peer.short(), "cluster: refused a board: {reason}");
        }
    }

    /// Publishes the live members (when they changed) and the status.
    fn publish(&mut self, shared: &Arc<Shared>, changed: bool) {
        let now = Instant::now();
        if changed {
            let live: Vec<Member> = self
                .membership
                .live()
                .into_iter()
                .map(|(id, resources)| Member { id, resources })
                .collect();
            shared.live.send_if_modified(|current| {
                if *current == live {
                    return false;
                }
                *current = live;
                true
            });
        } else if now.duration_since(self.status_at) < STATUS_INTERVAL {
            return;
        }
        self.status_at = now;
        let status = self.status(now);
        *lock(&shared.status) = status;
    }

    fn status(&self, now: Instant) -> fogwire_api::ClusterStatus {
        let membership = &self.membership;
        let own = membership.record();
        let me = fogwire_api::ClusterMember {
            node_id: own.node.to_string(),
            state: State::Alive.as_str().to_owned(),
            since_secs: 0.0,
            addrs: own.addrs.iter().map(ToString::to_string).collect(),
            boot: own.version.boot,
            incarnation: own.version.incarnation,
            cores: own.resources.cores,
            memory_mib: own.resources.memory_mib,
            disk_mib: own.resources.disk_mib,
            linked: true,
            this_board: true,
        };
        let others = membership
            .members()
            .map(|member| fogwire_api::ClusterMember {
                node_id: member.record.node.to_string(),
                state: member.state.as_str().to_owned(),
                since_secs: now.duration_since(member.since).as_secs_f64(),
                addrs: member
                    .record
                    .addrs
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                boot: member.record.version.boot,
                incarnation: member.record.version.incarnation,
                cores: member.record.resources.cores,
                memory_mib: member.record.resources.memory_mib,
                disk_mib: member.record.resources.disk_mib,
                linked: member.linked,
                this_board: false,
            });
        let counters = membership.counters();
        fogwire_api::ClusterStatus {
            cluster: Some(membership.join().cluster.to_string()),
            owner: self.owner,
            node_id: own.node.to_string(),
            boot: own.version.boot,
            incarnation: own.version.incarnation,
            health: membership.health(),
            mdns: self.mdns,
            members: std::iter::once(me).chain(others).collect(),
            counters: fogwire_api::ClusterCounters {
                messages: counters.received,
                refused: counters.refused,
                probes: counters.probes,
                probes_failed: counters.probes_failed,
                refutations: counters.refutations,
                discovered: self.discovered,
            },
            // Filled in by `Cluster::status` from the manifest's and the
            // supervisor's own reports.
            manifest: None,
            manifest_refused: None,
            placement: Vec::new(),
            unplaced: Vec::new(),
            services: Vec::new(),
        }
    }
}
