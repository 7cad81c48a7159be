use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fogwire_identity::NodeId;
use fogwire_link_proto::puzzle::Puzzle;
use fogwire_link_proto::{Config, Handshake, HandshakeError, Link, LinkIdentity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::PeerAddr;
use crate::transport::{LinkStream, Transport};

/// Who opened the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// We dialed the peer.
    Outbound,
    /// The peer dialed us.
    Inbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// A connection whose handshake succeeded: ready for [`crate::spawn`].
#[derive(Debug)]
pub struct Established {
    pub stream: LinkStream,
    pub link: Link,
    pub remote_addr: SocketAddr,
    pub direction: Direction,
    /// The bits of the puzzle solved on the way (the listener was under
    /// load), if any.
    pub puzzle_bits: Option<u8>,
}

impl Established {
    /// What the link runs over.
    pub fn transport(&self) -> Transport {
        self.stream.transport()
    }

    /// How the handshake went, for metric labels: `ok`, or
    /// `ok_after_puzzle` when a puzzle had to be solved first.
    pub fn outcome(&self) -> &'static str {
        match self.puzzle_bits {
            Some(_) => "ok_after_puzzle",
            None => "ok",
        }
    }
}

/// Why a link could not be established.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EstablishError {
    #[error("could not connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("connection failed during the handshake: {0}")]
    Io(#[source] io::Error),
    #[error("cannot resolve `{address}`: {detail}")]
    Resolve { address: String, detail: String },
    #[error("gave its handshake slot to a newer connection (every slot was taken)")]
    Evicted,
    #[error("cannot dial {addr} over QUIC: this node has no UDP transport ([link] udp = false)")]
    NoUdp { addr: String },
}

impl EstablishError {
    /// A short stable name, for metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            // The dialer left once this node had proven who it is: a
            // reachability check (relay.md §1), or a dialer that wanted
            // another node. Nothing went wrong here.
            EstablishError::Handshake(HandshakeError::Closed { messages: 2 }) => HUNG_UP,
            EstablishError::Connect { .. } => "connect",
            EstablishError::Handshake(error) => error.reason(),
            EstablishError::Io(_) => "io",
            EstablishError::Resolve { .. } => "resolve",
            EstablishError::Evicted => "evicted",
            EstablishError::NoUdp { .. } => "no_udp",
        }
    }
}

/// [`EstablishError::reason`] of an inbound handshake whose dialer hung up
/// after message 2, as reachability checks do.
pub const HUNG_UP: &str = "hung_up";

/// Dials `addr` and runs the handshake, expecting the peer to be
/// `expected_peer`. Connecting and the handshake together get the
/// configured handshake timeout.
pub async fn connect(
    addr: SocketAddr,
    expected_peer: NodeId,
    identity: &LinkIdentity,
    config: Arc<Config>,
) -> Result<Established, EstablishError> {
    let started = Instant::now();
    let handshake = Handshake::initiator(identity, config, expected_peer, started)?;
    let deadline = tokio::time::Instant::from_std(handshake.deadline());
    let stream = dial_before(addr, deadline).await?;
    run_handshake(
        LinkStream::Tcp(stream),
        handshake,
        addr,
        Direction::Outbound,
    )
    .await
}

/// [`connect`] over QUIC, from `endpoint` (whose UDP socket is the one
/// NATs have mapped for this node's other QUIC links).
pub async fn connect_quic(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    expected_peer: NodeId,
    identity: &LinkIdentity,
    config: Arc<Config>,
) -> Result<Established, EstablishError> {
    let handshake = Handshake::initiator(identity, config, expected_peer, Instant::now())?;
    let deadline = tokio::time::Instant::from_std(handshake.deadline());
    let stream = before(deadline, addr, crate::quic::dial(endpoint, addr)).await?;
    run_handshake(stream, handshake, addr, Direction::Outbound).await
}

/// Connects to `addr` (with the firewall mark), giving up at `deadline`.
async fn dial_before(
    addr: SocketAddr,
    deadline: tokio::time::Instant,
) -> Result<TcpStream, EstablishError> {
    before(deadline, addr, dial_marked(addr)).await
}

/// `connecting` to `addr`, given up at `deadline`.
async fn before<T>(
    deadline: tokio::time::Instant,
    addr: SocketAddr,
    connecting: impl Future<Output = io::Result<T>>,
) -> Result<T, EstablishError> {
    match tokio::time::timeout_at(deadline, connecting).await {
        Ok(Ok(connected)) => Ok(connected),
        Ok(Err(source)) => Err(EstablishError::Connect { addr, source }),
        Err(_) => Err(EstablishError::Connect {
            addr,
            source: io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
        }),
    }
}

/// Runs the dialer side of the handshake on a stream already connected to
/// `addr` (one bound to a chosen local address, say), expecting the peer
/// to be `expected_peer`, within the configured handshake timeout.
pub async fn connect_stream(
    stream: TcpStream,
    addr: SocketAddr,
    expected_peer: NodeId,
    identity: &LinkIdentity,
    config: Arc<Config>,
) -> Result<Established, EstablishError> {
    let handshake = Handshake::initiator(identity, config, expected_peer, Instant::now())?;
    run_handshake(
        LinkStream::Tcp(stream),
        handshake,
        addr,
        Direction::Outbound,
    )
    .await
}

/// Dials `addr`: resolves its host (names are resolved at each dial, so a
/// peer whose address changes is still found) and tries each address in
/// turn, as [`connect`] (or [`connect_quic`], from `quic`, for a QUIC
/// address) does, until one links. The last failure if none does.
pub async fn dial(
    addr: &PeerAddr,
    identity: &LinkIdentity,
    config: Arc<Config>,
    quic: Option<&quinn::Endpoint>,
) -> Result<Established, EstablishError> {
    let quic = match (addr.transport, quic) {
        (Transport::Tcp, _) => None,
        (Transport::Quic, Some(endpoint)) => Some(endpoint),
        (Transport::Quic, None) => {
            return Err(EstablishError::NoUdp {
                addr: addr.address.clone(),
            });
        }
    };
    let resolve_error = |detail: String| EstablishError::Resolve {
        address: addr.address.clone(),
        detail,
    };
    let resolved: Vec<SocketAddr> = tokio::time::timeout(
        config.handshake_timeout,
        tokio::net::lookup_host(addr.address.as_str()),
    )
    .await
    .map_err(|_| resolve_error("timed out".into()))?
    .map_err(|error| resolve_error(error.to_string()))?
    .collect();
    let mut last_error = resolve_error("no addresses".into());
    for socket_addr in resolved {
        let attempt = match quic {
            Some(endpoint) => {
                connect_quic(
                    endpoint,
                    socket_addr,
                    addr.node_id,
                    identity,
                    config.clone(),
                )
                .await
            }
            None => connect(socket_addr, addr.node_id, identity, config.clone()).await,
        };
        match attempt {
            Ok(established) => return Ok(established),
            Err(error) => last_error = error,
        }
    }
    Err(last_error)
}

/// Runs the listener side of the handshake on an accepted connection.
pub async fn establish(
    stream: LinkStream,
    remote_addr: SocketAddr,
    identity: &LinkIdentity,
    config: Arc<Config>,
) -> Result<Established, EstablishError> {
    establish_asking(stream, remote_addr, identity, config, None).await
}

/// [`establish`], asking the dialer to solve `puzzle` first, if any (the
/// node is under load: [`crate::admission`]).
pub async fn establish_asking(
    stream: LinkStream,
    remote_addr: SocketAddr,
    identity: &LinkIdentity,
    config: Arc<Config>,
    puzzle: Option<Puzzle>,
) -> Result<Established, EstablishError> {
    let mut handshake = Handshake::responder(identity, config, Instant::now())?;
    if let Some(puzzle) = puzzle {
        handshake.demand_puzzle(puzzle);
    }
    run_handshake(stream, handshake, remote_addr, Direction::Inbound).await
}

/// [`establish`] that gives up after `within` if that is sooner than the
/// configured handshake timeout (an admission under load shortens it:
/// [`crate::admission::Admitted::handshake_timeout`]).
pub async fn establish_within(
    stream: LinkStream,
    remote_addr: SocketAddr,
    identity: &LinkIdentity,
    config: Arc<Config>,
    within: Duration,
) -> Result<Established, EstablishError> {
    tokio::time::timeout(within, establish(stream, remote_addr, identity, config))
        .await
        .unwrap_or(Err(EstablishError::Handshake(HandshakeError::Timeout {
            timeout_ms: within.as_millis(),
        })))
}

/// Dials `addr` and runs the handshake only until the listener has proven
/// it is `expected_peer` (message 2), then hangs up without sending
/// message 3: the listener never gets a link, and never learns who dialed.
/// A reachability check: whether `expected_peer` can be dialed there.
pub async fn probe(
    addr: SocketAddr,
    expected_peer: NodeId,
    identity: &LinkIdentity,
    config: Arc<Config>,
) -> Result<(), EstablishError> {
    let mut handshake = Handshake::initiator(identity, config, expected_peer, Instant::now())?;
    let deadline = tokio::time::Instant::from_std(handshake.deadline());
    let timeout_ms = handshake.timeout().as_millis();
    let mut stream = LinkStream::Tcp(dial_before(addr, deadline).await?);
    let exchange = exchange(&mut stream, &mut handshake, Until::Proven);
    tokio::time::timeout_at(deadline, exchange)
        .await
        .unwrap_or_else(|_| Err(HandshakeError::Timeout { timeout_ms }.into()))
}

/// How far [`exchange`] runs the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    Finished,
    /// Until the peer's identity is proven.
    Proven,
}

async fn run_handshake(
    mut stream: LinkStream,
    mut handshake: Handshake,
    remote_addr: SocketAddr,
    direction: Direction,
) -> Result<Established, EstablishError> {
    // Records are batched by the link itself; waiting for more would only
    // add latency.
    if let LinkStream::Tcp(tcp) = &stream {
        tcp.set_nodelay(true).map_err(EstablishError::Io)?;
    }
    let deadline = tokio::time::Instant::from_std(handshake.deadline());
    let exchange = exchange(&mut stream, &mut handshake, Until::Finished);
    match tokio::time::timeout_at(deadline, exchange).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(error),
        Err(_) => {
            return Err(HandshakeError::Timeout {
                timeout_ms: handshake.timeout().as_millis(),
            }
            .into());
        }
    }
    let puzzle_bits = handshake.puzzle_solved();
    let link = handshake.into_link(Instant::now())?;
    Ok(Established {
        stream,
        link,
        remote_addr,
        direction,
        puzzle_bits,
    })
}

/// Sends and receives handshake messages until `until`.
async fn exchange(
    stream: &mut LinkStream,
    handshake: &mut Handshake,
    until: Until,
) -> Result<(), EstablishError> {
    let mut transmit = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        handshake.take_transmit(&mut transmit);
        if !transmit.is_empty() {
            stream
                .write_all(&transmit)
                .await
                .map_err(EstablishError::Io)?;
            transmit.clear();
        }
        if handshake.is_finished() {
            return Ok(());
        }
        let read = stream.read(&mut buffer).await.map_err(EstablishError::Io)?;
        if read == 0 {
            return Err(handshake.handle_eof().into());
        }
        handshake.handle_input(&buffer[..read])?;
        if until == Until::Proven && handshake.peer().is_some() {
            return Ok(());
        }
        if let Some(puzzle) = handshake.puzzle() {
            // The listener is under load: work before it does. Off
            // the event loop (up to 2^24 hashes; the deadline holds).
            let solved = tokio::task::spawn_blocking(move || puzzle.solve())
                .await
                .ok()
                .flatten()
                .ok_or(HandshakeError::PuzzleTooHard {
                    bits: puzzle.bits,
                    max: fogwire_link_proto::puzzle::BITS_ACCEPTED_MAX,
                })?;
            handshake.answer_puzzle(solved, fogwire_env::NoiseResolver::os())?;
        }
    }
}

/// Connections the kernel may hold for the accept loop. A burst larger than
/// this (a thousand peers redialing after an outage, or a SYN flood) would
/// otherwise overflow the queue, and with SYN cookies the dialers would
/// believe in connections the node never saw. The kernel caps it at
/// `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// A listener for links on `addr`, reusable at once after a restart.
pub fn listen(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // Restarting must not wait for the old connections' TIME_WAIT.
    socket.set_reuseaddr(true)?;
    // Connections accepted inherit the listener's mark.
    mark(&socket);
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The firewall mark of every link socket (`SO_MARK`, Linux). A VPN that
/// carries the host's default routes through an exit (`fogwire vpn up
/// --exit`) sends everything *not* so marked into its device; links keep
/// the routes they had, or they would loop into the tunnel they carry.
pub const SOCKET_MARK: u32 = 0x6677;

/// Marks `socket` with [`SOCKET_MARK`]. Setting a mark needs
/// CAP_NET_ADMIN, as the VPN does: without it nothing is marked, and no
/// VPN can take the default routes either.
pub fn mark(socket: &impl std::os::fd::AsFd) {
    #[cfg(target_os = "linux")]
    {
        let _ = socket2::SockRef::from(socket).set_mark(SOCKET_MARK);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// Connects to `addr` from a marked socket.
async fn dial_marked(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    mark(&socket);
    socket.connect(addr).await
}

/// What to do about a [`listen`] error, for its message: empty if nothing
/// useful can be said.
pub fn listen_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::AddrInUse => {
            " (another process, maybe another node, uses this port: set [link] listen to another)"
        }
        io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges)",
        _ => "",
    }
}
