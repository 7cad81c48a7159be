//! Hole punching's driver (`docs/protocol/relay.md` §3): asks a node
//! reached over a route (through its relay) for a direct QUIC link, and
//! answers such asks, within the bounds of [`Punches`].
//!
//! Each side names the addresses its QUIC socket is seen at — what peers
//! report on QUIC links (a NAT's mapping), and its public addresses with
//! the UDP port — and then both dial all of the other's at once. The
//! first packets out open each NAT for the other's; the link manager's
//! duplicate rule keeps one link if both dials succeed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fogwire_identity::NodeId;
use fogwire_link::manager::{Links, NodeEvent};
use fogwire_link::{LinkHandle, PeerAddr};
use fogwire_relay_proto::punch::{self, Outcome, PunchMessage, Punches};
use fogwire_relay_proto::reach::Reachability;
use fogwire_route::services::{BoxFuture, Limits, Service, Spec};
use fogwire_route::{Constraints, RouteStream, Routing};
use tokio::sync::watch;

use crate::reach::{LinksSlot, Status};

/// How long an ask waits for its answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long both sides dial each other's addresses before giving up
/// (QUIC resends its first packet meanwhile).
const DIAL_WINDOW: Duration = Duration::from_secs(5);

/// Why no direct link was made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PunchError {
    #[error("the link manager has not started")]
    NotStarted,
    #[error("this node has no UDP transport ([link] udp = false)")]
    NoUdp,
    #[error("no route to the node: {0}")]
    Route(String),
    #[error("the node did not answer: {0}")]
    NoAnswer(String),
    #[error("the node will not punch now: {}", .0.as_str())]
    Refused(Outcome),
    #[error("the node named no address to dial")]
    NoAddress,
    #[error("the operator disconnected that node lately")]
    Blocked,
    #[error("no direct link within {} s: the NATs between the two nodes let no packet through (a symmetric NAT on either side does that); the nodes still reach each other through relays", DIAL_WINDOW.as_secs())]
    Failed,
}

/// Who asks for a direct link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asker {
    /// `fogwire connect <id>`: lifts a `disconnect` of the peer.
    Operator,
    /// The node on its own, for routes over relays: never does.
    Node,
}

/// What punching shares between asking and answering.
#[derive(Debug)]
pub(crate) struct Puncher {
    pub routing: Routing,
    pub links: LinksSlot,
    pub report: watch::Receiver<Status>,
    /// Where peers see this node's QUIC socket: from OBSERVED on QUIC
    /// links, per peer.
    pub udp_seen: Mutex<HashMap<NodeId, SocketAddr>>,
    punches: Mutex<Punches>,
}

impl Puncher {
    pub fn new(routing: Routing, links: LinksSlot, report: watch::Receiver<Status>) -> Arc<Self> {
        Arc::new(Self {
            routing,
            links,
            report,
            udp_seen: Mutex::default(),
            punches: Mutex::new(Punches::new(punch::Limits::default())),
        })
    }

    /// Offers the `punch` service on the node's routes.
    pub fn serve(self: &Arc<Self>) -> Result<(), fogwire_route::ServiceError> {
        let spec = Spec {
            limits: Limits {
                streams_queued: 16,
                streams_at_once: 16,
                datagrams_queued: 0,
            },
            ..Spec::streams(punch::SERVICE)
        };
        self.routing.accept(spec, Arc::new(Answering(self.clone())))
    }

    pub fn seen_lock(&self) -> MutexGuard<'_, HashMap<NodeId, SocketAddr>> {
        self.udp_seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn punches(&self) -> MutexGuard<'_, Punches> {
        self.punches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn links(&self) -> Result<Links, PunchError> {
        self.links.lock().clone().ok_or(PunchError::NotStarted)
    }

    /// The addresses this node's QUIC socket may be reached at, best
    /// first: as peers see it on QUIC links, then its public addresses
    /// with the UDP port, then the socket's own address if it is bound to
    /// one.
    fn candidates(&self, udp: SocketAddr) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = self.seen_lock().values().copied().collect();
        let report = self.report.borrow();
        out.extend(
            report
                .reach
                .addresses
                .iter()
                .map(|seen| SocketAddr::new(seen.address.ip(), udp.port())),
        );
        if !udp.ip().is_unspecified() {
            out.push(udp);
        }
        let mut unique = Vec::with_capacity(out.len());
        for address in out {
            if !unique.contains(&address) {
                unique.push(address);
            }
        }
        unique.truncate(punch::ADDRESSES_MAX);
        unique
    }

    /// Makes a direct link to `peer`, which this node reaches over routes:
    /// asks it over a route to punch, and dials the addresses it names
    /// while it dials this node's.
    pub async fn punch(&self, peer: NodeId) -> Result<LinkHandle, PunchError> {
        self.punch_for(peer, Asker::Operator).await
    }

    async fn punch_for(&self, peer: NodeId, asker: Asker) -> Result<LinkHandle, PunchError> {
        let links = self.links()?;
        if let Some(link) = links.link(&peer) {
            return Ok(link);
        }
        match asker {
            // The operator asks for this link: the peer's dialing, which
            // the punch needs, is welcome even if it was disconnected.
            Asker::Operator => links.allow(&peer),
            // On its own the node never undoes the operator's disconnect.
            Asker::Node if links.is_blocked(&peer) => return Err(PunchError::Blocked),
            Asker::Node => {}
        }
        let udp = links.quic_addr().ok_or(PunchError::NoUdp)?;
        let mine = self.candidates(udp);
        let opened = self
            .routing
            .open(peer, Constraints::default())
            .await
            .map_err(|error| PunchError::Route(error.to_string()))?;
        let asked = async {
            let mut stream = self
                .routing
                .connect(opened.route, punch::SERVICE)
                .await
                .map_err(|error| PunchError::Route(error.to_string()))?;
            let mut nonce = [0u8; 8];
            (fogwire_env::os_random())(&mut nonce);
            let nonce = u64::from_le_bytes(nonce);
            let ask = PunchMessage::Punch {
                nonce,
                addresses: mine,
            };
            stream
                .write_all(ask.encode().into())
                .await
                .map_err(|error| PunchError::NoAnswer(error.to_string()))?;
            let answer = read_message(&mut stream).await;
            let _ = stream.finish().await;
            match answer.map_err(PunchError::NoAnswer)? {
                PunchMessage::Answer {
                    nonce: answered,
                    outcome: Outcome::Ready,
                    addresses,
                } if answered == nonce => Ok(addresses),
                PunchMessage::Answer {
                    nonce: answered,
                    outcome,
                    ..
                } if answered == nonce => Err(PunchError::Refused(outcome)),
                _ => Err(PunchError::NoAnswer("an answer to another ask".into())),
            }
        };
        let theirs = asked.await;
        let _ = self.routing.close(opened.route).await;
        let targets: Vec<SocketAddr> = theirs?
            .into_iter()
            .filter(|address| punch::dialable(address, udp.ip().is_loopback()))
            .collect();
        if targets.is_empty() {
            return Err(PunchError::NoAddress);
        }
        dial_all(&links, peer, &targets).await
    }

    /// Answers one ask on a `punch` stream.
    async fn answer(&self, mut stream: RouteStream) {
        let peer = stream.peer();
        let Ok(PunchMessage::Punch { nonce, addresses }) = read_message(&mut stream).await else {
            tracing::debug!(peer = %peer.short(), "punch: a stream without a valid ask; dropped");
            return;
        };
        let links = self.links.lock().clone();
        let udp = links.as_ref().and_then(Links::quic_addr);
        let outcome = match udp {
            None => Outcome::NoUdp,
            Some(_) => self.punches().admit(peer, Instant::now()),
        };
        let mine = udp.map(|udp| self.candidates(udp)).unwrap_or_default();
        let answer = PunchMessage::Answer {
            nonce,
            outcome,
            addresses: if outcome == Outcome::Ready {
                mine
            } else {
                Vec::new()
            },
        };
        let sent = stream.write_all(answer.encode().into()).await;
        let _ = stream.finish().await;
        let (Some(links), Some(udp), Outcome::Ready) = (links, udp, outcome) else {
            tracing::debug!(peer = %peer.short(), outcome = outcome.as_str(), "punch: declined an ask");
            return;
        };
        if sent.is_ok() {
            let targets: Vec<SocketAddr> = addresses
                .into_iter()
                .filter(|address| punch::dialable(address, udp.ip().is_loopback()))
                .collect();
            match dial_all(&links, peer, &targets).await {
                Ok(link) => {
                    tracing::info!(peer = %peer.short(), addr = %link.remote_addr(), "punch: direct link up (asked by the peer)")
                }
                Err(error) => {
                    tracing::info!(peer = %peer.short(), %error, "punch: no direct link (asked by the peer)")
                }
            }
        }
        self.punches().done(&peer);
    }
}

/// First pause before a destination whose punch failed is tried again;
/// it doubles up to the last.
const RETRY_FIRST: Duration = Duration::from_secs(60);
const RETRY_MAX: Duration = Duration::from_secs(30 * 60);
/// Destinations whose failures are remembered at most.
const RETRIES_MAX: usize = 1024;
/// Punches this node starts on its own at once.
const AUTO_AT_ONCE: usize = 2;
/// How often the wanted destinations are looked at again (they also wake
/// the task when they change).
const AUTO_EVERY: Duration = Duration::from_secs(5);

impl Puncher {
    /// Punches, on its own, a direct link to each destination of this
    /// node's routes that run over relays and would take one
    /// (`Routing::direct_wanted`), if its advert says it takes QUIC links
    /// and either end is behind a NAT (private); a failed destination is
    /// tried again after a pause that doubles from 1 min to 30 min. Runs
    /// until `stop`.
    pub async fn run_auto(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut wanted = self.routing.direct_wanted();
        let mut retry: HashMap<NodeId, (Instant, Duration)> = HashMap::new();
        let mut running = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                changed = wanted.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(AUTO_EVERY) => {}
                Some(Ok((peer, result))) = running.join_next(), if !running.is_empty() => {
                    match result {
                        Ok(()) => { retry.remove(&peer); }
                        Err(pause) => {
                            if retry.len() >= RETRIES_MAX {
                                let now = Instant::now();
                                retry.retain(|_, (at, _)| *at > now);
                            }
                            if retry.len() < RETRIES_MAX {
                                retry.insert(peer, (Instant::now() + pause, pause));
                            }
                        }
                    }
                }
            }
            let destinations = wanted.borrow_and_update().clone();
            let Ok(links) = self.links() else { continue };
            if destinations.is_empty() || links.quic_addr().is_none() {
                continue;
            }
            let now = Instant::now();
            let due: Vec<NodeId> = destinations
                .into_iter()
                .filter(|peer| links.link(peer).is_none())
                .filter(|peer| retry.get(peer).is_none_or(|(at, _)| *at <= now))
                .collect();
            if due.is_empty() || running.len() >= AUTO_AT_ONCE {
                continue;
            }
            let Ok(nodes) = self.routing.nodes().await else {
                continue;
            };
            for peer in due {
                if running.len() >= AUTO_AT_ONCE {
                    break;
                }
                // Between nodes behind NATs, reached through relays; two
                // nodes others can dial have no relay between them to
                // save (and `fogwire connect` links them if asked).
                let offers = |service: &str| {
                    nodes.iter().any(|info| {
                        info.advert.origin == peer
                            && info.advert.services.iter().any(|s| s == service)
                    })
                };
                let private_here = self.report.borrow().reach.reachability == Reachability::Private;
                if !offers(crate::QUIC_SERVICE) || !(private_here || offers(crate::PRIVATE_SERVICE))
                {
                    continue;
                }
                let pause = retry
                    .get(&peer)
                    .map_or(RETRY_FIRST, |(_, last)| (*last * 2).min(RETRY_MAX));
                // Marked now, so the next look does not start it again.
                retry.insert(peer, (Instant::now() + AUTO_EVERY * 12, pause));
                let puncher = self.clone();
                running.spawn(async move {
                    let result = match puncher.punch_for(peer, Asker::Node).await {
                        Ok(link) => {
                            tracing::info!(peer = %peer.short(), addr = %link.remote_addr(), "punch: direct link up; routes to the peer move onto it");
                            Ok(())
                        }
                        Err(error) => {
                            tracing::info!(peer = %peer.short(), %error, retry_in_s = pause.as_secs(), "punch: no direct link; routes keep going through relays");
                            Err(pause)
                        }
                    };
                    (peer, result)
                });
            }
        }
    }
}

/// The `punch` route service.
struct Answering(Arc<Puncher>);

impl Service for Answering {
    fn accept(&self, stream: RouteStream) -> BoxFuture<()> {
        let puncher = self.0.clone();
        Box::pin(async move { puncher.answer(stream).await })
    }
}

/// Reads one framed message from `stream`, within [`ANSWER_TIMEOUT`].
async fn read_message(stream: &mut RouteStream) -> Result<PunchMessage, String> {
    let read = async {
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            match PunchMessage::decode_framed(&buffer) {
                Ok(Some((message, _))) => return Ok(message),
                Ok(None) => {}
                Err(error) => return Err(error.to_string()),
            }
            match stream.read().await {
                Some(Ok(bytes)) => buffer.extend_from_slice(&bytes),
                Some(Err(error)) => return Err(error.to_string()),
                None => return Err("the stream ended before a message".into()),
            }
            if buffer.len() > 1 + punch::MESSAGE_LEN_MAX {
                return Err("more bytes than a message".into());
            }
        }
    };
    tokio::time::timeout(ANSWER_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| Err(format!("no message within {} s", ANSWER_TIMEOUT.as_secs())))
}

/// Dials `peer` over QUIC at every one of `targets` at once, until a link
/// to it is up (this dial's, or the peer's dialing this node) or
/// [`DIAL_WINDOW`] ends.
async fn dial_all(
    links: &Links,
    peer: NodeId,
    targets: &[SocketAddr],
) -> Result<LinkHandle, PunchError> {
    let mut events = links.subscribe();
    let mut dials = tokio::task::JoinSet::new();
    for target in targets {
        let (links, addr) = (links.clone(), PeerAddr::quic(peer, target.to_string()));
        dials.spawn(async move { links.dial(&addr).await });
    }
    let linked = async {
        loop {
            tokio::select! {
                dialed = dials.join_next(), if !dials.is_empty() => {
                    if let Some(Ok(Ok(link))) = dialed {
                        return Some(link);
                    }
                }
                event = events.recv() => match event {
                    Ok(NodeEvent::LinkUp { peer: up, link }) if up == peer => return Some(link),
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                },
            }
            if let Some(link) = links.link(&peer) {
                return Some(link);
            }
        }
    };
    let result = tokio::time::timeout(DIAL_WINDOW, linked).await;
    dials.abort_all();
    let link = match result {
        Ok(Some(link)) => link,
        _ => links.link(&peer).ok_or(PunchError::Failed)?,
    };
    // Both ends may have dialed: the one link both keep.
    links
        .settled(link)
        .await
        .map_err(|_| PunchError::Failed)
        .or_else(|error| links.link(&peer).ok_or(error))
}
