use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use fogwire_identity::NodeId;
use fogwire_link_proto::{
    ChannelId, CloseCode, CloseReason, CloseSide, Event, Link, LinkStats, MESSAGE_CREDIT_OVERHEAD,
    Message, TRANSPORT_RECORD_LEN_MAX, message_cost,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use crate::channel::{ChannelReceiver, ChannelSender, CreditReturn};
use crate::{Direction, Established, LinkStream, Transport};

/// Bytes of encrypted records the driver gathers before writing; a few
/// largest records, so each write system call moves a good amount. The
/// buffer grows a largest record at a time, only while the link has that
/// much to send at once: a quiet link holds one record's worth.
const TRANSMIT_BUFFER_LEN: usize = 8 * (TRANSPORT_RECORD_LEN_MAX);
/// Most bytes the driver asks the socket for per read…
const READ_CHUNK_LEN: usize = 256 * 1024;
/// …starting from this, doubled each time a read fills what it asked: a
/// quiet link (or 300 self-made identities holding links) does not keep
/// 256 KiB of read buffer each.
const READ_CHUNK_FIRST: usize = 16 * 1024;
/// Messages an application may have queued per channel before `send` waits
/// (or `try_send` fails): at least this many…
const OUTBOUND_QUEUE_MESSAGES: usize = 32;
/// …and more for channels with deep send queues, one per this many bytes of
/// the queue, so that a burst of messages handed over faster than the link
/// task runs is not refused while the channel's queue has room…
const OUTBOUND_QUEUE_BYTES_PER_MESSAGE: usize = 16 * 1024;
/// …up to this many.
const OUTBOUND_QUEUE_MESSAGES_MAX: usize = 1024;
/// Commands (close requests) queued to a link's task.
const COMMAND_QUEUE_LEN: usize = 4;
/// How long a closing link may take to write out its CLOSE frame.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// After a link's last frame, how long, and how many bytes, it reads from
/// the peer until the peer closes too.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES_MAX: usize = 64 * 1024;

static NEXT_LINK_ID: AtomicU64 = AtomicU64::new(1);

/// Counters of a running link, updated by its task, readable by anyone.
#[derive(Debug, Default)]
pub struct LinkCounters {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    records_in: AtomicU64,
    records_out: AtomicU64,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    /// Latest round-trip time in microseconds; 0 until measured.
    rtt_micros: AtomicU64,
}

impl LinkCounters {
    fn store(&self, stats: LinkStats, rtt: Option<Duration>) {
        self.bytes_in.store(stats.bytes_in, Ordering::Relaxed);
        self.bytes_out.store(stats.bytes_out, Ordering::Relaxed);
        self.records_in.store(stats.records_in, Ordering::Relaxed);
        self.records_out.store(stats.records_out, Ordering::Relaxed);
        self.messages_in.store(stats.messages_in, Ordering::Relaxed);
        self.messages_out
            .store(stats.messages_out, Ordering::Relaxed);
        if let Some(rtt) = rtt {
            let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1);
            self.rtt_micros.store(micros, Ordering::Relaxed);
        }
    }
}

/// A copy of a link's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkSnapshot {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub records_in: u64,
    pub records_out: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub rtt: Option<Duration>,
}

impl LinkSnapshot {
    /// Adds `other`'s counters to these (totals over several links; the
    /// RTT is left as it is).
    pub fn add_counts(&mut self, other: &LinkSnapshot) {
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.records_in += other.records_in;
        self.records_out += other.records_out;
        self.messages_in += other.messages_in;
        self.messages_out += other.messages_out;
    }
}

enum Command {
    Close { code: CloseCode, message: String },
}

struct Shared {
    id: u64,
    peer: NodeId,
    remote_addr: SocketAddr,
    direction: Direction,
    transport: Transport,
    established_at: SystemTime,
    counters: LinkCounters,
    commands: mpsc::Sender<Command>,
    senders: Vec<ChannelSender>,
    receivers: Mutex<Vec<ChannelReceiver>>,
    closed: watch::Receiver<Option<CloseReason>>,
}

/// The application's handle on a running link. Cheap to clone; the link
/// keeps running when every handle is dropped, until it closes.
#[derive(Clone)]
pub struct LinkHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkHandle")
            .field("id", &self.shared.id)
            .field("peer", &self.shared.peer)
            .field("remote_addr", &self.shared.remote_addr)
            .field("direction", &self.shared.direction)
            .field("transport", &self.shared.transport)
            .finish_non_exhaustive()
    }
}

impl LinkHandle {
    /// Unique among the links of this process.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    pub fn peer(&self) -> NodeId {
        self.shared.peer
    }

    pub fn remote_addr(&self) -> SocketAddr {
        self.shared.remote_addr
    }

    pub fn direction(&self) -> Direction {
        self.shared.direction
    }

    /// What the link runs over.
    pub fn transport(&self) -> Transport {
        self.shared.transport
    }

    pub fn established_at(&self) -> SystemTime {
        self.shared.established_at
    }

    /// This link as the slot policy sees it; `kept`: the operator's;
    /// `paying`: its peer paid this node lately.
    pub fn occupant(&self, kept: bool, paying: bool) -> crate::slots::Occupant {
        crate::slots::Occupant {
            peer: self.peer(),
            address: self.remote_addr().ip(),
            inbound: self.direction() == Direction::Inbound,
            kept,
            paying,
            messages_in: self.shared.counters.messages_in.load(Ordering::Relaxed),
            age: self.established_at().elapsed().unwrap_or_default(),
        }
    }

    pub fn snapshot(&self) -> LinkSnapshot {
        let counters = &self.shared.counters;
        let rtt_micros = counters.rtt_micros.load(Ordering::Relaxed);
        LinkSnapshot {
            bytes_in: counters.bytes_in.load(Ordering::Relaxed),
            bytes_out: counters.bytes_out.load(Ordering::Relaxed),
            records_in: counters.records_in.load(Ordering::Relaxed),
            records_out: counters.records_out.load(Ordering::Relaxed),
            messages_in: counters.messages_in.load(Ordering::Relaxed),
            messages_out: counters.messages_out.load(Ordering::Relaxed),
            rtt: (rtt_micros > 0).then(|| Duration::from_micros(rtt_micros)),
        }
    }

    /// A sender for `channel`, if the peer serves it.
    pub fn sender(&self, channel: ChannelId) -> Option<ChannelSender> {
        self.shared
            .senders
            .iter()
            .find(|sender| sender.channel == channel)
            .cloned()
    }

    /// Channels the peer serves.
    pub fn peer_channels(&self) -> Vec<ChannelId> {
        self.shared.senders.iter().map(|s| s.channel).collect()
    }

    /// The receiver for `channel`, if this node serves it. Each receiver can
    /// be taken once.
    pub fn take_receiver(&self, channel: ChannelId) -> Option<ChannelReceiver> {
        let mut receivers = self.shared.receivers.lock().ok()?;
        let index = receivers.iter().position(|r| r.channel == channel)?;
        Some(receivers.swap_remove(index))
    }

    /// Asks the link to close with `code` and `message` (sent to the peer),
    /// and waits until it has.
    pub async fn close(&self, code: CloseCode, message: impl Into<String>) -> CloseReason {
        let command = Command::Close {
            code,
            message: message.into(),
        };
        // If the queue is full or gone, the link is already closing.
        let _ = self.shared.commands.try_send(command);
        self.closed().await
    }

    /// Waits until the link has closed and returns why.
    pub async fn closed(&self) -> CloseReason {
        let mut closed = self.shared.closed.clone();
        let reason = closed.wait_for(Option::is_some).await;
        match reason {
            Ok(reason) => reason
                .clone()
                .unwrap_or_else(|| CloseReason::transport("link task ended")),
            Err(_) => CloseReason::transport("link task ended"),
        }
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.closed.borrow().clone()
    }

    /// Waits for the peer's first answer on a link this side opened: the
    /// PONG to the ping every link starts with (the peer kept the link), or
    /// its CLOSE (it refused the link, at its link limit say: a handshake
    /// alone does not tell, the peer decides once it knows who dialed).
    /// Closes the link if nothing comes `within`.
    pub async fn answered(&self, within: Duration) -> Result<(), NoAnswer> {
        let answer = tokio::time::timeout(within, async {
            loop {
                if self.snapshot().rtt.is_some() {
                    return Ok(());
                }
                tokio::select! {
                    reason = self.closed() => return Err(NoAnswer::Closed(reason)),
                    // The driver records the PONG in the link's counters.
                    () = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
        })
        .await;
        match answer {
            Ok(answered) => answered,
            Err(_) => {
                self.close(CloseCode::NORMAL, "no answer after the handshake")
                    .await;
                Err(NoAnswer::Timeout { within })
            }
        }
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.borrow().is_some()
    }
}

/// Why a new link was not kept by its peer.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NoAnswer {
    #[error("{0}")]
    Closed(CloseReason),
    #[error("no answer within {} ms after the handshake", within.as_millis())]
    Timeout { within: Duration },
}

/// Starts the task that drives an established link.
pub fn spawn(established: Established) -> LinkHandle {
    let Established {
        stream,
        link,
        remote_addr,
        direction,
        ..
    } = established;
    let config_channels = receive_channels(&link);
    let windows: Vec<u32> = config_channels.iter().map(|(_, window)| *window).collect();
    let credit = Arc::new(CreditReturn::new(&windows));
    let mut inbound = Vec::with_capacity(config_channels.len());
    let mut receivers = Vec::with_capacity(config_channels.len());
    for (index, (channel, window)) in config_channels.into_iter().enumerate() {
        // Flow control bounds the messages in flight on a channel to its
        // window over the per-message overhead, so this queue never fills.
        let capacity = (window / MESSAGE_CREDIT_OVERHEAD) as usize + 1;
        let (sender, queue) = mpsc::channel(capacity);
        inbound.push((channel, sender));
        receivers.push(ChannelReceiver {
            channel,
            index,
            queue,
            credit: credit.clone(),
        });
    }
    let mut outbound = Vec::new();
    let mut senders = Vec::new();
    for channel in link.peer_channels() {
        let capacity = (link.send_queue_bytes_max(channel) / OUTBOUND_QUEUE_BYTES_PER_MESSAGE)
            .clamp(OUTBOUND_QUEUE_MESSAGES, OUTBOUND_QUEUE_MESSAGES_MAX);
        let (sender, queue) = mpsc::channel(capacity);
        outbound.push(Some((channel, queue)));
        senders.push(ChannelSender {
            channel,
            queue: sender,
        });
    }
    let (commands_sender, commands) = mpsc::channel(COMMAND_QUEUE_LEN);
    let (closed_sender, closed) = watch::channel(None);
    let shared = Arc::new(Shared {
        id: NEXT_LINK_ID.fetch_add(1, Ordering::Relaxed),
        peer: link.peer(),
        remote_addr,
        direction,
        transport: stream.transport(),
        established_at: SystemTime::now(),
        counters: LinkCounters::default(),
        commands: commands_sender,
        senders,
        receivers: Mutex::new(receivers),
        closed,
    });
    let driver = Driver {
        link,
        stream,
        shared: shared.clone(),
        inbound,
        outbound,
        credit,
        commands,
        close_reason: None,
    };
    tokio::spawn(async move {
        let reason = driver.run().await;
        let _ = closed_sender.send(Some(reason));
    });
    LinkHandle { shared }
}

fn receive_channels(link: &Link) -> Vec<(ChannelId, u32)> {
    link.receive_channels().collect()
}

struct Driver {
    link: Link,
    stream: LinkStream,
    shared: Arc<Shared>,
    inbound: Vec<(ChannelId, mpsc::Sender<Bytes>)>,
    /// `None` once every sender of that channel is gone.
    outbound: Vec<Option<(ChannelId, mpsc::Receiver<Message>)>>,
    credit: Arc<CreditReturn>,
    commands: mpsc::Receiver<Command>,
    close_reason: Option<CloseReason>,
}

impl Driver {
    async fn run(mut self) -> CloseReason {
        let mut transmit: Vec<u8> = Vec::new();
        let (mut transmit_start, mut transmit_end) = (0, 0);
        let mut read_chunk = READ_CHUNK_FIRST;
        let mut outbound_turn = 0;
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let (mut reader, mut writer) = self.stream.split();
        loop {
            let now = Instant::now();
            // Hand out what the core produced.
            while let Some(event) = self.link.poll_event() {
                match event {
                    Event::Message { channel, data } => {
                        deliver(&mut self.link, &self.inbound, channel, data);
                    }
                    Event::Closed(reason) => self.close_reason = Some(reason),
                }
            }
            if transmit_start == transmit_end {
                (transmit_start, transmit_end) = (0, 0);
            }
            // Top the buffer up whenever a largest record still fits, so each
            // write hands the kernel as much as is ready.
            if self.link.wants_transmit() {
                if transmit.len() - transmit_end < TRANSPORT_RECORD_LEN_MAX
                    && transmit.len() < TRANSMIT_BUFFER_LEN
                {
                    let grown =
                        (transmit.len() + TRANSPORT_RECORD_LEN_MAX).min(TRANSMIT_BUFFER_LEN);
                    transmit.resize(grown, 0);
                }
                if transmit.len() - transmit_end >= TRANSPORT_RECORD_LEN_MAX {
                    transmit_end += self.link.poll_transmit(now, &mut transmit[transmit_end..]);
                }
            }
            self.shared
                .counters
                .store(self.link.stats(), self.link.rtt());
            if self.link.is_closed() && transmit_start == transmit_end {
                break;
            }
            if self
                .close_reason
                .as_ref()
                .is_some_and(|reason| reason.side == CloseSide::Transport)
            {
                // The connection ended: nothing written now would arrive.
                break;
            }
            if self.link.is_closed() || self.close_reason.is_some() {
                // Only the CLOSE frame is left to write; bound how long that
                // may take if the peer stops reading.
                let flush = writer.write_all(&transmit[transmit_start..transmit_end]);
                let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, flush).await;
                transmit_start = transmit_end;
                if self.link.wants_transmit() {
                    continue;
                }
                break;
            }
            let deadline = self.link.poll_timeout();
            let timer_armed = deadline.is_some();
            if let Some(deadline) = deadline {
                let deadline = tokio::time::Instant::from_std(deadline);
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
            }
            let sendable: u64 = self
                .outbound
                .iter()
                .enumerate()
                .filter(|(_, slot)| {
                    slot.as_ref()
                        .is_some_and(|(channel, _)| self.link.can_send(*channel))
                })
                .fold(0, |mask, (index, _)| mask | (1 << index));
            let input = self.link.input_buffer();
            input.reserve(read_chunk);
            let asked = input.capacity() - input.len();
            let outbound = &mut self.outbound;
            tokio::select! {
                read = reader.read_buf(input) => match read {
                    Ok(0) => self.link.handle_eof(),
                    Ok(read) => {
                        if read >= asked {
                            read_chunk = (read_chunk * 2).min(READ_CHUNK_LEN);
                        }
                        self.link.process_input(Instant::now());
                    }
                    Err(error) => self.link.handle_transport_error(error.to_string()),
                },
                written = writer.write(&transmit[transmit_start..transmit_end]),
                    if transmit_start < transmit_end => match written {
                    Ok(0) => self.link.handle_transport_error("socket accepted no bytes"),
                    Ok(count) => transmit_start += count,
                    Err(error) => self.link.handle_transport_error(error.to_string()),
                },
                ready = poll_fn(|cx| poll_outbound(cx, outbound, sendable, &mut outbound_turn)) => {
                    match ready {
                        (index, Some(data)) => {
                            if let Some(Some((channel, queue))) = self.outbound.get_mut(index) {
                                // can_send was true, so this only fails if the
                                // link closed meanwhile; the message is moot then.
                                let _ = self.link.send(*channel, data);
                                // Take whatever else is ready on this channel in
                                // the same turn: fewer wake-ups, fuller writes.
                                while self.link.can_send(*channel) {
                                    match queue.try_recv() {
                                        Ok(data) => { let _ = self.link.send(*channel, data); }
                                        Err(_) => break,
                                    }
                                }
                            }
                        }
                        (index, None) => {
                            if let Some(slot) = self.outbound.get_mut(index) {
                                *slot = None;
                            }
                        }
                    }
                },
                () = self.credit.notify.notified() => {
                    for ((channel, _), pending) in self.inbound.iter().zip(&self.credit.pending) {
                        let credit = pending.swap(0, Ordering::Relaxed);
                        if credit > 0 {
                            self.link.consumed(*channel, credit);
                        }
                    }
                },
                command = self.commands.recv() => match command {
                    Some(Command::Close { code, message }) => self.link.close(code, message),
                    // Every handle is gone; the link lives on until it closes.
                    None => {}
                },
                () = &mut sleep, if timer_armed => {
                    self.link.handle_timeout(Instant::now());
                },
            }
        }
        self.shared
            .counters
            .store(self.link.stats(), self.link.rtt());
        // A connection that already ended (EOF, reset: the peer's process
        // died, say) has nobody left to flush to or linger for; the link's
        // users hear of it at once, so a cluster notices a dead board in
        // milliseconds rather than after these timeouts.
        let ended = self
            .close_reason
            .as_ref()
            .is_some_and(|reason| reason.side == CloseSide::Transport);
        if ended {
            drop((reader, writer));
            return self.finish();
        }
        let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, writer.shutdown()).await;
        // A lingering close: read (and drop) what the peer still sends
        // until it closes too, briefly. Closing with its bytes unread would
        // make the kernel answer with a reset, which can destroy our CLOSE
        // frame in the peer's receive buffer before it reads it — a dialer
        // refused for a limit would then learn only "broken pipe".
        let mut scratch = [0u8; 4096];
        let mut drained = 0;
        let _ = tokio::time::timeout(LINGER, async {
            while drained < LINGER_BYTES_MAX {
                match reader.read(&mut scratch).await {
                    Ok(0) | Err(_) => break,
                    Ok(count) => drained += count,
                }
            }
        })
        .await;
        drop((reader, writer));
        self.finish()
    }

    /// Logs why the link ended, and returns it.
    fn finish(&mut self) -> CloseReason {
        let reason = self
            .close_reason
            .take()
            .unwrap_or_else(|| CloseReason::transport("link ended without a reason"));
        tracing::info!(
            peer = %self.shared.peer,
            addr = %self.shared.remote_addr,
            direction = self.shared.direction.as_str(),
            transport = self.shared.transport.as_str(),
            "link {reason}"
        );
        reason
    }
}

fn deliver(
    link: &mut Link,
    inbound: &[(ChannelId, mpsc::Sender<Bytes>)],
    channel: ChannelId,
    data: Bytes,
) {
    let cost = message_cost(data.len());
    let Some((_, queue)) = inbound.iter().find(|(c, _)| *c == channel) else {
        link.consumed(channel, cost);
        return;
    };
    match queue.try_send(data) {
        Ok(()) => {}
        // Nobody listens on this channel any more: discard, and let the
        // peer carry on.
        Err(mpsc::error::TrySendError::Closed(_)) => link.consumed(channel, cost),
        Err(mpsc::error::TrySendError::Full(_)) => link.close(
            CloseCode::INTERNAL,
            format!("receive queue of channel {channel} overflowed"),
        ),
    }
}

/// Takes the next message from the application queues of channels the link
/// can accept messages on, taking turns between channels.
fn poll_outbound(
    cx: &mut std::task::Context<'_>,
    outbound: &mut [Option<(ChannelId, mpsc::Receiver<Message>)>],
    sendable: u64,
    turn: &mut usize,
) -> Poll<(usize, Option<Message>)> {
    let count = outbound.len();
    for step in 0..count {
        let index = (*turn + step) % count;
        if sendable & (1 << index) == 0 {
            continue;
        }
        if let Some((_, queue)) = &mut outbound[index]
            && let Poll::Ready(message) = queue.poll_recv(cx)
        {
            *turn = index + 1;
            return Poll::Ready((index, message));
        }
    }
    Poll::Pending
}
