//! The tokio driver of the service RPC (`fogwire-rpc-proto`,
//! `docs/protocol/rpc.md`): every link carries an RPC channel on which
//! this node serves its named services to the peer and calls the peer's.
//!
//! - [`Rpc::serve`] registers a [`Service`]: a method table and a handler
//!   that answers through a [`Replier`] (chunks, then choke or error) and
//!   learns when the caller gave up or the deadline passed.
//! - [`Rpc::call`] calls a method of a service on a linked peer and
//!   streams its replies; dropping the [`Call`] cancels it at the peer.
//!
//! - Every node serves the [`locator`]; with routing, RPC also reaches
//!   nodes that do not link, over streams on routes ([`Rpc::open_route`]).
//!
//! One task per link owns the link's [`Session`]; every queue is bounded.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fogwire_identity::NodeId;
use fogwire_link::proto::{ChannelConfig, ChannelId, CloseCode};
use fogwire_link::{ChannelReceiver, ChannelSender, Direction, LinkHandle};
use fogwire_rpc_proto::message::HEADER_SERVICE;
pub use fogwire_rpc_proto::session::Role;
use fogwire_rpc_proto::session::{CallError, Config as SessionConfig, Event, Session};
use fogwire_rpc_proto::{CHOKE, CHUNK, ERROR, Value, code};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod locator;
mod routes;

pub use routes::RPC_SERVICE;

/// The link channel RPC runs on.
pub const CHANNEL_RPC: ChannelId = ChannelId(0x0300);
/// Replies queued for one call before the connection waits for the
/// caller to take them.
const REPLY_QUEUE: usize = 64;
/// Commands queued for one connection's task.
const COMMAND_QUEUE: usize = 256;
/// Ids of pipe connections: far above any link id.
const PIPE_ID_FIRST: u64 = 1 << 62;
static PIPE_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(PIPE_ID_FIRST);
/// Malformed messages a peer may send before its link is closed.
const MALFORMED_MAX: u32 = 8;

/// The link channels RPC needs, to add to the link settings.
pub fn link_channels() -> Vec<ChannelConfig> {
    vec![
        ChannelConfig::new(CHANNEL_RPC)
            .with_receive_window(1024 * 1024)
            .with_send_queue_bytes_max(1024 * 1024),
    ]
}

/// A boxed future, for services.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A named service: its methods (index = method id on the wire) and what
/// each does.
pub trait Service: Send + Sync + 'static {
    fn methods(&self) -> &[&'static str];
    /// Answers one call. The future should end soon after
    /// [`Replier::cancelled`] fires (the caller gave up, or the deadline
    /// passed); whatever it has not answered by its end is answered with
    /// an error.
    fn call(&self, method: u64, args: Vec<Value>, reply: Replier) -> BoxFuture<()>;
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    #[error("no link to {0} that carries RPC: link to it first")]
    NotLinked(NodeId),
    #[error("the peer answered error {code}: {message}")]
    Remote { code: u64, message: String },
    #[error("the link went before the call ended")]
    Disconnected,
    #[error(transparent)]
    Local(#[from] CallError),
    #[error("RPC is shutting down")]
    Stopped,
}

impl RpcError {
    /// The error code (from the peer, or the deadline here), if any.
    pub fn code(&self) -> Option<u64> {
        match self {
            RpcError::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// One reply to a call.
#[derive(Debug)]
enum Reply {
    Chunk(Vec<Value>),
    Choke,
    Error { code: u64, message: String },
}

enum Command {
    Call {
        service: String,
        method: u64,
        args: Vec<Value>,
        timeout: Option<Duration>,
        replies: mpsc::Sender<Reply>,
        opened: oneshot::Sender<Result<u64, CallError>>,
    },
    Send {
        channel: u64,
        message: u64,
        args: Vec<Value>,
    },
    Cancel {
        channel: u64,
    },
}

/// How a service answers one call.
pub struct Replier {
    channel: u64,
    peer: NodeId,
    commands: mpsc::Sender<Command>,
    cancelled: CancellationToken,
    ended: bool,
}

impl std::fmt::Debug for Replier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replier")
            .field("channel", &self.channel)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Replier {
    /// Who called.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// The next piece of the answer; false once the call is gone.
    pub async fn chunk(&mut self, args: Vec<Value>) -> bool {
        !self.ended && self.send(CHUNK, args).await
    }

    /// The end of the answer.
    pub async fn choke(mut self) {
        if !self.ended {
            self.send(CHOKE, Vec::new()).await;
            self.ended = true;
        }
    }

    /// Ends the call with an error.
    pub async fn error(mut self, code: u64, message: &str) {
        if !self.ended {
            self.send(ERROR, vec![Value::from(code), Value::from(message)])
                .await;
            self.ended = true;
        }
    }

    /// Fires when the caller gave up or the deadline passed.
    pub async fn cancelled(&self) {
        self.cancelled.cancelled().await;
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.is_cancelled()
    }

    async fn send(&self, message: u64, args: Vec<Value>) -> bool {
        if self.cancelled.is_cancelled() {
            return false;
        }
        self.commands
            .send(Command::Send {
                channel: self.channel,
                message,
                args,
            })
            .await
            .is_ok()
    }
}

impl Drop for Replier {
    fn drop(&mut self) {
        if !self.ended && !self.cancelled.is_cancelled() {
            // The service ended without an answer: say so.
            let _ = self.commands.try_send(Command::Send {
                channel: self.channel,
                message: ERROR,
                args: vec![
                    Value::from(code::FAILED),
                    Value::from("the service ended without answering"),
                ],
            });
        }
    }
}

/// A call in progress: its replies, in order. Dropping it before the end
/// cancels it at the peer.
pub struct Call {
    channel: u64,
    replies: mpsc::Receiver<Reply>,
    commands: mpsc::Sender<Command>,
    done: bool,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Call {
    /// The next chunk; none after the choke.
    pub async fn next(&mut self) -> Option<Result<Vec<Value>, RpcError>> {
        if self.done {
            return None;
        }
        match self.replies.recv().await {
            Some(Reply::Chunk(args)) => Some(Ok(args)),
            Some(Reply::Choke) => {
                self.done = true;
                None
            }
            Some(Reply::Error { code, message }) => {
                self.done = true;
                Some(Err(RpcError::Remote { code, message }))
            }
            None => {
                self.done = true;
                Some(Err(RpcError::Disconnected))
            }
        }
    }

    /// Every chunk up to the choke.
    pub async fn collect(mut self) -> Result<Vec<Vec<Value>>, RpcError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next().await {
            out.push(chunk?);
        }
        Ok(out)
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.commands.try_send(Command::Cancel {
                channel: self.channel,
            });
        }
    }
}

struct Connection {
    link_id: u64,
    commands: mpsc::Sender<Command>,
}

struct RpcState {
    /// This node: calls to it go straight to its services.
    local: Option<NodeId>,
    /// How far nodes are found (the locator) and reached (RPC over routes).
    routing: Option<fogwire_route::Routing>,
    services: RwLock<HashMap<String, Arc<dyn Service>>>,
    connections: Mutex<HashMap<NodeId, Connection>>,
    session: SessionConfig,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl RpcState {
    /// The service served under `name`, if it has method `method`; else
    /// the error to answer (code and message).
    fn service(&self, name: &str, method: u64) -> Result<Arc<dyn Service>, (u64, String)> {
        let service = self
            .services
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| (code::UNKNOWN, format!("no service `{name}` here")))?;
        if method >= service.methods().len() as u64 {
            return Err((
                code::UNKNOWN,
                format!("service `{name}` has no method {method}"),
            ));
        }
        Ok(service)
    }

    /// Forgets the connection over link `link_id`, unless a newer link to
    /// `peer` replaced it.
    fn forget(&self, peer: NodeId, link_id: u64) {
        let mut connections = lock(&self.connections);
        if connections
            .get(&peer)
            .is_some_and(|connection| connection.link_id == link_id)
        {
            connections.remove(&peer);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A node's RPC: its services, and its connections to linked peers.
#[derive(Clone)]
pub struct Rpc {
    inner: Arc<RpcState>,
}

impl std::fmt::Debug for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rpc").finish_non_exhaustive()
    }
}

impl Default for Rpc {
    fn default() -> Self {
        Rpc::builder().build()
    }
}

/// Builds an [`Rpc`].
#[derive(Debug, Default)]
pub struct Builder {
    session: SessionConfig,
    local: Option<NodeId>,
    routing: Option<fogwire_route::Routing>,
}

impl Builder {
    /// Settings of each connection's session.
    pub fn session(mut self, session: SessionConfig) -> Self {
        self.session = session;
        self
    }

    /// Names this node, so that calls to it reach its own services
    /// without a link.
    pub fn local(mut self, node: NodeId) -> Self {
        self.local = Some(node);
        self
    }

    /// The node's routing: the locator finds services in its graph, and
    /// RPC reaches nodes that do not link over streams on its routes.
    pub fn routing(mut self, routing: fogwire_route::Routing) -> Self {
        self.routing = Some(routing);
        self
    }

    /// The RPC, serving the [`locator`] (and RPC over routes, if it has
    /// routing).
    pub fn build(self) -> Rpc {
        let rpc = Rpc {
            inner: Arc::new(RpcState {
                local: self.local,
                routing: self.routing.clone(),
                services: RwLock::default(),
                connections: Mutex::default(),
                session: self.session,
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        };
        rpc.serve(
            locator::LOCATOR,
            Arc::new(locator::Locator {
                rpc: Arc::downgrade(&rpc.inner),
                routing: self.routing.clone(),
            }),
        );
        if let Some(routing) = self.routing {
            let service = Arc::new(routes::RpcService(rpc.clone()));
            if let Err(error) = routing.accept(fogwire_route::Spec::streams(RPC_SERVICE), service) {
                tracing::error!(%error, "cannot serve RPC over routes");
            }
        }
        rpc
    }
}

impl Rpc {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The nodes that advertise RPC service `name` (this node first if it
    /// serves it), and its method table if this node serves it.
    pub async fn locate(&self, name: &str) -> (Vec<NodeId>, Vec<&'static str>) {
        locator::locate(self, self.inner.routing.as_ref(), name).await
    }

    /// Serves `service` under `name` to every peer (replacing whatever
    /// served that name).
    pub fn serve(&self, name: &str, service: Arc<dyn Service>) {
        self.inner
            .services
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(name.to_owned(), service);
    }

    /// Stops serving `name`; whether it was served.
    pub fn unserve(&self, name: &str) -> bool {
        self.inner
            .services
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(name)
            .is_some()
    }

    /// The method table of the service served here under `name`.
    pub fn methods_of(&self, name: &str) -> Option<Vec<&'static str>> {
        self.inner
            .services
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(name)
            .map(|service| service.methods().to_vec())
    }

    /// A link came up: serve and call on its RPC channel.
    pub fn link_up(&self, link: LinkHandle) {
        if !link.peer_channels().contains(&CHANNEL_RPC) {
            return;
        }
        let (Some(sender), Some(receiver)) =
            (link.sender(CHANNEL_RPC), link.take_receiver(CHANNEL_RPC))
        else {
            return;
        };
        let role = match link.direction() {
            Direction::Outbound => Role::Dialer,
            Direction::Inbound => Role::Acceptor,
        };
        let (commands, inbox) = mpsc::channel(COMMAND_QUEUE);
        let peer = link.peer();
        lock(&self.inner.connections).insert(
            peer,
            Connection {
                link_id: link.id(),
                commands: commands.clone(),
            },
        );
        let inner = self.inner.clone();
        self.inner.tasks.spawn(async move {
            let link_id = link.id();
            let wire = Wire::Link {
                link,
                sender,
                receiver,
            };
            run_connection(&inner, peer, wire, role, commands, inbox).await;
            inner.forget(peer, link_id);
        });
    }

    /// A connection to `peer` over a pipe of whole messages (the node
    /// frames a route stream into one): `incoming` brings the peer's
    /// messages, `outgoing` takes this side's. Calls to `peer` use it
    /// unless a link to `peer` carries RPC. It ends when `incoming` ends.
    pub fn pipe_up(
        &self,
        peer: NodeId,
        role: Role,
        incoming: mpsc::Receiver<Bytes>,
        outgoing: mpsc::Sender<Bytes>,
    ) {
        let (commands, inbox) = mpsc::channel(COMMAND_QUEUE);
        let id = PIPE_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut connections = lock(&self.inner.connections);
            // A link, when there is one, stays the way to the peer.
            if connections
                .get(&peer)
                .is_none_or(|c| c.link_id >= PIPE_ID_FIRST)
            {
                connections.insert(
                    peer,
                    Connection {
                        link_id: id,
                        commands: commands.clone(),
                    },
                );
            }
        }
        let inner = self.inner.clone();
        self.inner.tasks.spawn(async move {
            let wire = Wire::Pipe { incoming, outgoing };
            run_connection(&inner, peer, wire, role, commands, inbox).await;
            inner.forget(peer, id);
        });
    }

    /// Whether calls to `peer` have a way to go (a link or a pipe).
    pub fn is_connected(&self, peer: &NodeId) -> bool {
        self.inner.local.as_ref() == Some(peer) || lock(&self.inner.connections).contains_key(peer)
    }

    /// The link `link_id` to `peer` is gone.
    pub fn link_down(&self, peer: NodeId, link_id: u64) {
        self.inner.forget(peer, link_id);
    }

    /// Calls method `method` of `service` on `peer` with `args`, within
    /// `timeout` if given.
    pub async fn call(
        &self,
        peer: NodeId,
        service: &str,
        method: u64,
        args: Vec<Value>,
        timeout: Option<Duration>,
    ) -> Result<Call, RpcError> {
        if self.inner.local == Some(peer) {
            return self.call_local(peer, service, method, args, timeout);
        }
        let commands = lock(&self.inner.connections)
            .get(&peer)
            .map(|connection| connection.commands.clone())
            .ok_or(RpcError::NotLinked(peer))?;
        let (replies, receiver) = mpsc::channel(REPLY_QUEUE);
        let (opened, channel) = oneshot::channel();
        commands
            .send(Command::Call {
                service: service.to_owned(),
                method,
                args,
                timeout,
                replies,
                opened,
            })
            .await
            .map_err(|_| RpcError::Disconnected)?;
        let channel = channel.await.map_err(|_| RpcError::Disconnected)??;
        Ok(Call {
            channel,
            replies: receiver,
            commands,
            done: false,
        })
    }

    /// A call to a service of this node: the same [`Replier`] and
    /// [`Call`], joined by a task instead of a session.
    fn call_local(
        &self,
        me: NodeId,
        name: &str,
        method: u64,
        args: Vec<Value>,
        timeout: Option<Duration>,
    ) -> Result<Call, RpcError> {
        let service = self
            .inner
            .service(name, method)
            .map_err(|(code, message)| RpcError::Remote { code, message })?;
        let (commands, mut inbox) = mpsc::channel(REPLY_QUEUE);
        let (replies, receiver) = mpsc::channel(REPLY_QUEUE);
        let cancelled = self.inner.shutdown.child_token();
        let replier = Replier {
            channel: 0,
            peer: me,
            commands: commands.clone(),
            cancelled: cancelled.clone(),
            ended: false,
        };
        self.inner.tasks.spawn(service.call(method, args, replier));
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        self.inner.tasks.spawn(async move {
            loop {
                let command = tokio::select! {
                    command = inbox.recv() => command,
                    () = sleep_until_opt(deadline) => {
                        cancelled.cancel();
                        let _ = replies
                            .send(Reply::Error {
                                code: code::DEADLINE,
                                message: "the deadline passed".to_owned(),
                            })
                            .await;
                        return;
                    }
                };
                let reply = match command {
                    Some(Command::Send { message, args, .. }) => match message {
                        CHUNK => Reply::Chunk(args),
                        CHOKE => Reply::Choke,
                        _ => Reply::Error {
                            code: args.first().and_then(Value::as_u64).unwrap_or(code::FAILED),
                            message: args
                                .get(1)
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                        },
                    },
                    Some(Command::Cancel { .. }) | None => {
                        cancelled.cancel();
                        return;
                    }
                    Some(Command::Call { .. }) => continue,
                };
                let end = !matches!(reply, Reply::Chunk(_));
                if replies.send(reply).await.is_err() || end {
                    cancelled.cancel();
                    return;
                }
            }
        });
        Ok(Call {
            channel: 0,
            replies: receiver,
            commands,
            done: false,
        })
    }

    /// [`Rpc::call`], then every chunk of the answer.
    pub async fn request(
        &self,
        peer: NodeId,
        service: &str,
        method: u64,
        args: Vec<Value>,
        timeout: Option<Duration>,
    ) -> Result<Vec<Vec<Value>>, RpcError> {
        self.call(peer, service, method, args, timeout)
            .await?
            .collect()
            .await
    }

    /// Stops every connection's task.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        // Services often hold a way back to this RPC (to call other
        // nodes); dropping them breaks that cycle, so a stopped node's
        // files and sockets are released.
        self.inner
            .services
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
        lock(&self.inner.connections).clear();
    }
}

/// Sleeps until `at`; forever without one.
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// What carries a connection's messages: a link channel, or a pipe of
/// whole messages (a route stream, framed by the node).
enum Wire {
    Link {
        link: LinkHandle,
        sender: ChannelSender,
        receiver: ChannelReceiver,
    },
    Pipe {
        incoming: mpsc::Receiver<Bytes>,
        outgoing: mpsc::Sender<Bytes>,
    },
}

impl Wire {
    async fn recv(&mut self) -> Option<Bytes> {
        match self {
            Wire::Link { receiver, .. } => receiver.recv().await,
            Wire::Pipe { incoming, .. } => incoming.recv().await,
        }
    }

    async fn send(&self, bytes: Bytes) -> bool {
        match self {
            Wire::Link { sender, .. } => sender.send(bytes).await.is_ok(),
            Wire::Pipe { outgoing, .. } => outgoing.send(bytes).await.is_ok(),
        }
    }

    /// Ends the connection because the peer sends garbage.
    async fn refuse(&self) {
        if let Wire::Link { link, .. } = self {
            link.close(CloseCode::PROTOCOL_ERROR, "malformed RPC messages")
                .await;
        }
    }
}

/// One connection's RPC: reads the peer's messages into the session,
/// carries out local commands, sends what the session has to send.
async fn run_connection(
    inner: &Arc<RpcState>,
    peer: NodeId,
    mut wire: Wire,
    role: Role,
    commands: mpsc::Sender<Command>,
    mut inbox: mpsc::Receiver<Command>,
) {
    let mut session = Session::new(role, inner.session.clone());
    let mut calling: HashMap<u64, mpsc::Sender<Reply>> = HashMap::new();
    let mut serving: HashMap<u64, CancellationToken> = HashMap::new();
    let mut malformed = 0u32;
    loop {
        tokio::select! {
            bytes = wire.recv() => {
                let Some(bytes) = bytes else { break };
                if let Err(error) = session.receive(&bytes, Instant::now()) {
                    malformed += 1;
                    tracing::warn!(%peer, %error, "malformed RPC message");
                    if malformed >= MALFORMED_MAX {
                        wire.refuse().await;
                        break;
                    }
                }
            }
            command = inbox.recv() => {
                let Some(command) = command else { break };
                apply(&mut session, &mut calling, &mut serving, command);
            }
            () = sleep_until_opt(session.poll_timeout()) => {
                session.handle_timeout(Instant::now());
            }
            () = inner.shutdown.cancelled() => break,
        }
        while let Some(event) = session.poll_event() {
            dispatch(
                inner,
                &mut session,
                &mut calling,
                &mut serving,
                &commands,
                peer,
                event,
            )
            .await;
        }
        while let Some(bytes) = session.poll_transmit() {
            if !wire.send(bytes).await {
                break;
            }
        }
    }
    // Callers learn the link went (their queues close); services stop.
    for token in serving.values() {
        token.cancel();
    }
}

fn apply(
    session: &mut Session,
    calling: &mut HashMap<u64, mpsc::Sender<Reply>>,
    serving: &mut HashMap<u64, CancellationToken>,
    command: Command,
) {
    match command {
        Command::Call {
            service,
            method,
            args,
            timeout,
            replies,
            opened,
        } => {
            let headers = vec![(HEADER_SERVICE.to_owned(), Value::from(service))];
            let result = session.call(method, args, headers, timeout, Instant::now());
            if let Ok(channel) = result {
                calling.insert(channel, replies);
            }
            let _ = opened.send(result);
        }
        Command::Send {
            channel,
            message,
            args,
        } => {
            if message == CHOKE || message == ERROR {
                // A served call answered to the end (channels of this
                // side's calls are never in `serving`).
                serving.remove(&channel);
            }
            if let Err(error) = session.send(channel, message, args) {
                // A call that ended meanwhile (cancelled, timed out).
                tracing::debug!(channel, %error, "RPC reply not sent");
            }
        }
        Command::Cancel { channel } => {
            calling.remove(&channel);
            session.cancel(channel);
        }
    }
}

async fn dispatch(
    inner: &Arc<RpcState>,
    session: &mut Session,
    calling: &mut HashMap<u64, mpsc::Sender<Reply>>,
    serving: &mut HashMap<u64, CancellationToken>,
    commands: &mpsc::Sender<Command>,
    peer: NodeId,
    event: Event,
) {
    match event {
        Event::Invoked {
            channel,
            method,
            args,
            headers,
            ..
        } => {
            let name = headers
                .iter()
                .find(|(key, _)| key == HEADER_SERVICE)
                .and_then(|(_, value)| value.as_str())
                .unwrap_or("");
            let service = match inner.service(name, method) {
                Ok(service) => service,
                Err((code, message)) => {
                    let _ = session.fail(channel, code, &message);
                    return;
                }
            };
            let cancelled = inner.shutdown.child_token();
            serving.retain(|_, token| !token.is_cancelled());
            serving.insert(channel, cancelled.clone());
            let replier = Replier {
                channel,
                peer,
                commands: commands.clone(),
                cancelled,
                ended: false,
            };
            inner.tasks.spawn(service.call(method, args, replier));
        }
        Event::Chunk { channel, args } => {
            if let Some(replies) = calling.get(&channel) {
                // Waits while the caller is behind: backpressure.
                let _ = replies.send(Reply::Chunk(args)).await;
            }
            // More arguments on a served call: not taken by services yet.
        }
        Event::Choke { channel } => {
            if let Some(replies) = calling.remove(&channel) {
                let _ = replies.send(Reply::Choke).await;
            }
        }
        Event::Error {
            channel,
            code,
            message,
        } => {
            if let Some(replies) = calling.remove(&channel) {
                let _ = replies.send(Reply::Error { code, message }).await;
            } else if let Some(token) = serving.remove(&channel) {
                token.cancel();
            }
        }
    }
}

impl fogwire_link::LinkUser for Rpc {
    fn link_up(&self, link: LinkHandle) {
        Rpc::link_up(self, link);
    }

    fn link_down(&self, peer: NodeId, link_id: u64) {
        Rpc::link_down(self, peer, link_id);
    }
}
