//! An established link: encrypted frames, channels, flow control,
//! keepalives and close.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fogwire_identity::NodeId;

use crate::cipher::TransportCipher;
use crate::error::{CloseCode, CloseReason, CloseSide, ProtocolError, SendError};
use crate::frame::{self, Frame};
use crate::handshake::payload::AnnouncedChannel;
use crate::message::Message;
use crate::record::{RecordReader, TRANSPORT_HEADER_LEN, write_transport_header};
use crate::{
    CLEAR_BODY_LEN_MAX, ChannelConfig, ChannelId, Config, FRAME_LEN_MAX, MESSAGE_LEN_MAX,
    RECORD_LEN_MAX, TAG_LEN, WINDOW_MAX, message_cost,
};

/// What a link reports to its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message arrived on a channel. Once the application has taken it,
    /// the driver calls [`Link::consumed`] with [`message_cost`] of its
    /// length, which lets the peer send more.
    Message { channel: ChannelId, data: Bytes },
    /// The link ended. Reported once; nothing is received after it. If the
    /// close was local, the CLOSE frame still has to be flushed.
    Closed(CloseReason),
}

/// Counters of one link. Records are what crosses the wire (each carries one
/// frame); bytes include record prefixes and tags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub records_in: u64,
    pub records_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub messages_in: u64,
    pub messages_out: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// A CLOSE frame is waiting to be sent; nothing else will be.
    Closing,
    Closed,
}

#[derive(Debug)]
struct SendChannel {
    id: ChannelId,
    /// Bytes the peer lets us send right now.
    credit: u32,
    queue: VecDeque<Message>,
    queued_bytes: usize,
    queued_bytes_max: usize,
    /// The peer accepts SEALED_DATA here.
    sealed_bodies: bool,
}

impl SendChannel {
    /// Whether `message` goes out as SEALED_DATA, its body in the clear.
    fn sends_sealed(&self, message: &Message) -> bool {
        self.sealed_bodies && message.has_sealed_body()
    }
}

#[derive(Debug)]
struct ReceiveChannel {
    id: ChannelId,
    window: u32,
    /// This node accepts SEALED_DATA here.
    sealed_bodies: bool,
    /// Credit used by messages received and not yet consumed.
    outstanding: u32,
    /// Credit consumed and not yet returned to the peer.
    update_due: u32,
}

/// Both directions of an established, encrypted link.
///
/// Sans-IO: [`Link::handle_input`] takes received bytes,
/// [`Link::poll_transmit`] produces bytes to send, [`Link::poll_event`]
/// yields messages and the close, and the caller drives time through
/// [`Link::poll_timeout`] and [`Link::handle_timeout`].
pub struct Link {
    cipher: TransportCipher,
    config: Arc<Config>,
    peer: NodeId,
    reader: RecordReader,
    send: Vec<SendChannel>,
    receive: Vec<ReceiveChannel>,
    /// Index in `send` of the channel served first in the next round.
    round_robin: usize,
    pong_due: Option<u64>,
    ping_due: bool,
    ping_in_flight: Option<(u64, Instant)>,
    next_ping_nonce: u64,
    close_due: Option<(CloseCode, String)>,
    state: State,
    events: VecDeque<Event>,
    last_receive: Instant,
    next_keepalive: Instant,
    rtt: Option<Duration>,
    stats: LinkStats,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("peer", &self.peer)
            .field("state", &self.state)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Link {
    pub(crate) fn new(
        cipher: TransportCipher,
        peer: NodeId,
        peer_channels: Vec<AnnouncedChannel>,
        config: Arc<Config>,
        leftover: BytesMut,
        now: Instant,
    ) -> Self {
        let send = peer_channels
            .into_iter()
            .map(
                |AnnouncedChannel {
                     id,
                     window,
                     sealed_bodies,
                 }| SendChannel {
                    id,
                    credit: window,
                    sealed_bodies,
                    queue: VecDeque::new(),
                    queued_bytes: 0,
                    queued_bytes_max: config
                        .channel(id)
                        .map_or(ChannelConfig::SEND_QUEUE_BYTES_MAX_DEFAULT, |channel| {
                            channel.send_queue_bytes_max
                        }),
                },
            )
            .collect();
        let receive = config
            .channels
            .iter()
            .map(|channel| ReceiveChannel {
                id: channel.id,
                window: channel.receive_window,
                sealed_bodies: channel.sealed_bodies,
                outstanding: 0,
                update_due: 0,
            })
            .collect();
        let mut reader = RecordReader::new(RECORD_LEN_MAX);
        reader.extend(&leftover);
        let mut link = Self {
            cipher,
            peer,
            reader,
            send,
            receive,
            round_robin: 0,
            pong_due: None,
            ping_due: false,
            ping_in_flight: None,
            next_ping_nonce: 1,
            close_due: None,
            state: State::Open,
            events: VecDeque::new(),
            last_receive: now,
            // The first PING goes out at once, so the round-trip time is
            // known from the start rather than after a keepalive interval.
            next_keepalive: now,
            rtt: None,
            stats: LinkStats::default(),
            config,
        };
        if !leftover.is_empty() {
            link.process_input(now);
        }
        link
    }

    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// Round-trip time measured by the latest PING/PONG.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Channels this node serves, with the receive window of each.
    pub fn receive_channels(&self) -> impl Iterator<Item = (ChannelId, u32)> + '_ {
        self.receive
            .iter()
            .map(|channel| (channel.id, channel.window))
    }

    /// Channels the peer serves (those this node may send on).
    pub fn peer_channels(&self) -> impl Iterator<Item = ChannelId> + '_ {
        self.send.iter().map(|channel| channel.id)
    }

    /// Whether the link has ended and its CLOSE frame, if any, has been
    /// produced by [`Link::poll_transmit`]. The driver closes the socket once
    /// it has written out everything it was given.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    // ----- input -----

    /// The buffer the driver may read socket data into directly, followed by
    /// [`Link::process_input`]. Saves a copy over [`Link::handle_input`].
    pub fn input_buffer(&mut self) -> &mut BytesMut {
        self.reader.buffer_mut()
    }

    /// Feeds bytes received from the peer.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        self.reader.extend(data);
        self.process_input(now);
    }

    /// Processes bytes placed in [`Link::input_buffer`].
    pub fn process_input(&mut self, now: Instant) {
        while self.state != State::Closed {
            let (record, sealed_len) = match self.reader.next_transport_record(CLEAR_BODY_LEN_MAX) {
                Ok(Some(record)) => record,
                Ok(None) => break,
                Err(too_long) => {
                    // Only a clear body can be too long: the sealed part's
                    // limit is the largest length its field can hold.
                    self.fail(ProtocolError::ClearBodyTooLong { len: too_long.len });
                    break;
                }
            };
            self.last_receive = now;
            self.stats.records_in += 1;
            self.stats.bytes_in += (TRANSPORT_HEADER_LEN + record.len()) as u64;
            if let Err(error) = self.process_record(now, record, sealed_len) {
                self.fail(error);
            }
        }
        if self.state == State::Closed {
            // Nothing after the end is read; do not let it pile up.
            self.reader.take_buffered();
        }
    }

    /// One transport record: `record` holds the sealed part (its first
    /// `sealed_len` bytes) and the clear body after it.
    fn process_record(
        &mut self,
        now: Instant,
        mut record: BytesMut,
        sealed_len: usize,
    ) -> Result<(), ProtocolError> {
        if sealed_len < TAG_LEN {
            return Err(ProtocolError::RecordTooShort { len: sealed_len });
        }
        // Decrypted where it lies: DATA payloads handed to the application
        // are slices of the received record, never copies.
        let plaintext_len = self
            .cipher
            .receive
            .open_in_place(&mut record[..sealed_len])
            .map_err(|_| ProtocolError::Decrypt)?;
        let clear_len = record.len() - sealed_len;
        if record[..plaintext_len].first() == Some(&frame::TYPE_SEALED_DATA) {
            // The frame is at most 21 bytes: decode a copy, then move the
            // prefix up against the body, so the message is one slice.
            let frame = Frame::decode(Bytes::copy_from_slice(&record[..plaintext_len]))?;
            let Frame::SealedData {
                channel,
                body_len,
                prefix,
            } = frame
            else {
                return Err(ProtocolError::ClearBodyWithoutSealedData);
            };
            if usize::from(body_len) != clear_len {
                return Err(ProtocolError::MalformedFrame {
                    frame: "SEALED_DATA",
                    detail: "body length differs from the record's clear body",
                });
            }
            let start = sealed_len - prefix.len();
            record[start..sealed_len].copy_from_slice(&prefix);
            let payload = record.freeze().slice(start..);
            return self.accept_message(channel, payload, true);
        }
        if clear_len != 0 {
            return Err(ProtocolError::ClearBodyWithoutSealedData);
        }
        record.truncate(plaintext_len);
        let plaintext = record.freeze();
        match Frame::decode(plaintext)? {
            Frame::Data { channel, payload } => self.accept_message(channel, payload, false)?,
            // Its type byte was checked above.
            Frame::SealedData { .. } => return Err(ProtocolError::ClearBodyWithoutSealedData),
            Frame::WindowUpdate { channel, increment } => {
                let Some(send) = self.send.iter_mut().find(|c| c.id == channel) else {
                    return Err(ProtocolError::UnknownSendChannel { channel });
                };
                send.credit = send
                    .credit
                    .checked_add(increment)
                    .filter(|credit| *credit <= WINDOW_MAX)
                    .ok_or(ProtocolError::WindowOverflow { channel })?;
            }
            Frame::Ping { nonce } => self.pong_due = Some(nonce),
            Frame::Pong { nonce } => {
                if let Some((expected, sent_at)) = self.ping_in_flight
                    && expected == nonce
                {
                    self.rtt = Some(now.saturating_duration_since(sent_at));
                    self.ping_in_flight = None;
                }
            }
            Frame::Close { code, reason } => {
                let reason = CloseReason {
                    side: CloseSide::Remote,
                    code: CloseCode(code),
                    message: reason,
                };
                self.finish(reason);
            }
        }
        Ok(())
    }

    /// A message received on `channel`; `sealed_body`: its body came in
    /// the clear, after a SEALED_DATA frame.
    fn accept_message(
        &mut self,
        channel: ChannelId,
        payload: Bytes,
        sealed_body: bool,
    ) -> Result<(), ProtocolError> {
        let Some(receive) = self.receive.iter_mut().find(|c| c.id == channel) else {
            return Err(ProtocolError::UnknownChannel { channel });
        };
        if sealed_body && !receive.sealed_bodies {
            return Err(ProtocolError::SealedBodyRefused { channel });
        }
        let cost = message_cost(payload.len());
        if cost > receive.window - receive.outstanding {
            return Err(ProtocolError::FlowControl {
                channel,
                window: receive.window,
            });
        }
        receive.outstanding += cost;
        self.stats.messages_in += 1;
        if self.state == State::Open {
            self.events.push_back(Event::Message {
                channel,
                data: payload,
            });
        }
        Ok(())
    }

    /// The peer closed the connection without a CLOSE frame.
    pub fn handle_eof(&mut self) {
        self.handle_transport_error("peer closed the connection without a CLOSE frame");
    }

    /// The connection failed (reset, write error…).
    pub fn handle_transport_error(&mut self, message: impl Into<String>) {
        match self.state {
            State::Open => self.finish(CloseReason::transport(message)),
            // Already reported; the CLOSE frame can no longer be delivered.
            State::Closing => self.state = State::Closed,
            State::Closed => {}
        }
    }

    fn finish(&mut self, reason: CloseReason) {
        if self.state == State::Open {
            self.events.push_back(Event::Closed(reason));
        }
        self.state = State::Closed;
        self.close_due = None;
    }

    fn fail(&mut self, error: ProtocolError) {
        self.close(CloseCode::PROTOCOL_ERROR, error.to_string());
    }

    // ----- output -----

    /// Queues a message on `channel`. The queue holds at most the channel's
    /// `send_queue_bytes_max` plus one message.
    pub fn send(&mut self, channel: ChannelId, data: impl Into<Message>) -> Result<(), SendError> {
        let data = data.into();
        if self.state != State::Open {
            return Err(SendError::Closed);
        }
        if data.len() > MESSAGE_LEN_MAX {
            return Err(SendError::TooLong { len: data.len() });
        }
        let Some(send) = self.send.iter_mut().find(|c| c.id == channel) else {
            return Err(SendError::UnknownChannel { channel });
        };
        // The limit is checked before the message is added, so the queue may
        // overshoot it by one message; in exchange a limit below the message
        // size can never block a channel, and `can_send` is exact.
        if send.queued_bytes >= send.queued_bytes_max {
            return Err(SendError::QueueFull { channel });
        }
        send.queued_bytes += data.len();
        send.queue.push_back(data);
        Ok(())
    }

    /// Whether [`Link::send`] on `channel` would take a message now.
    pub fn can_send(&self, channel: ChannelId) -> bool {
        self.state == State::Open
            && self
                .send
                .iter()
                .find(|c| c.id == channel)
                .is_some_and(|send| send.queued_bytes < send.queued_bytes_max)
    }

    /// Most bytes `channel` queues for sending (its configured limit).
    pub fn send_queue_bytes_max(&self, channel: ChannelId) -> usize {
        self.send
            .iter()
            .find(|c| c.id == channel)
            .map_or(0, |send| send.queued_bytes_max)
    }

    /// Bytes queued on `channel` and not yet encrypted.
    pub fn queued_bytes(&self, channel: ChannelId) -> usize {
        self.send
            .iter()
            .find(|c| c.id == channel)
            .map_or(0, |send| send.queued_bytes)
    }

    /// The application has taken messages worth `credit` (the sum of their
    /// [`message_cost`]) from `channel`; the peer may send that much more.
    pub fn consumed(&mut self, channel: ChannelId, credit: u32) {
        if let Some(receive) = self.receive.iter_mut().find(|c| c.id == channel) {
            let credit = credit.min(receive.outstanding);
            receive.outstanding -= credit;
            receive.update_due += credit;
        }
    }

    /// Closes the link: a CLOSE frame with `code` and `message` is sent next
    /// and nothing after it. Queued messages are dropped.
    pub fn close(&mut self, code: CloseCode, message: impl Into<String>) {
        if self.state != State::Open {
            return;
        }
        let message = message.into();
        self.events
            .push_back(Event::Closed(CloseReason::local(code, message.clone())));
        self.close_due = Some((code, message));
        self.state = State::Closing;
        for send in &mut self.send {
            send.queue.clear();
            send.queued_bytes = 0;
        }
    }

    /// Whether [`Link::poll_transmit`] has anything to write.
    pub fn wants_transmit(&self) -> bool {
        match self.state {
            State::Closed => false,
            State::Closing => true,
            State::Open => {
                self.pong_due.is_some()
                    || self.ping_due
                    || self.receive.iter().any(|r| self.update_is_due(r))
                    || self.send.iter().any(|s| {
                        s.queue
                            .front()
                            .is_some_and(|m| message_cost(m.len()) <= s.credit)
                    })
            }
        }
    }

    fn update_is_due(&self, receive: &ReceiveChannel) -> bool {
        // Return credit in batches of a quarter window: fewer frames, and the
        // peer still has three quarters left while the update travels.
        receive.update_due > 0 && receive.update_due >= receive.window / 4
    }

    /// Encrypts pending frames as records into `out` and returns how many
    /// bytes it wrote. Control frames go first; then channels take turns, one
    /// frame each, so that a busy channel cannot starve the others. `out`
    /// should hold at least one largest record ([`crate::TRANSPORT_RECORD_LEN_MAX`]).
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> usize {
        let mut written = 0;
        while let Some(next) = self.next_frame() {
            let (frame_len, clear_len) = self.frame_len(next);
            let sealed_len = frame_len + TAG_LEN;
            let record_len = TRANSPORT_HEADER_LEN + sealed_len + clear_len;
            if written + record_len > out.len() {
                break;
            }
            let record = &mut out[written..written + record_len];
            let (header, rest) = record.split_at_mut(TRANSPORT_HEADER_LEN);
            let (sealed, clear) = rest.split_at_mut(sealed_len);
            let frame_len = self.stage(next, now, sealed, clear);
            match self.cipher.send.seal_in_place(sealed, frame_len) {
                Ok(len) => write_transport_header(header, len, clear_len),
                Err(_) => {
                    // 2^64 − 1 records under one key: unreachable in practice,
                    // and never wrapped around.
                    self.finish(CloseReason::local(
                        CloseCode::INTERNAL,
                        "record counter exhausted",
                    ));
                    break;
                }
            }
            written += record_len;
            self.stats.records_out += 1;
            self.stats.bytes_out += record_len as u64;
        }
        written
    }

    fn next_frame(&self) -> Option<NextFrame> {
        match self.state {
            State::Closed => return None,
            State::Closing => return Some(NextFrame::Close),
            State::Open => {}
        }
        if let Some(nonce) = self.pong_due {
            return Some(NextFrame::Pong(nonce));
        }
        if let Some(index) = self.receive.iter().position(|r| self.update_is_due(r)) {
            return Some(NextFrame::WindowUpdate(index));
        }
        if self.ping_due {
            return Some(NextFrame::Ping);
        }
        let channels = self.send.len();
        (0..channels)
            .map(|turn| (self.round_robin + turn) % channels)
            .find(|&index| {
                let send = &self.send[index];
                send.queue
                    .front()
                    .is_some_and(|message| message_cost(message.len()) <= send.credit)
            })
            .map(NextFrame::Data)
    }

    /// The length of the frame `next` and of the clear body after it.
    fn frame_len(&self, next: NextFrame) -> (usize, usize) {
        match next {
            NextFrame::Data(index) => {
                let send = &self.send[index];
                match send.queue.front() {
                    Some(message) if send.sends_sealed(message) => (
                        frame::SEALED_DATA_HEADER_LEN + message.prefix().len(),
                        message.body().len(),
                    ),
                    Some(message) => (frame::DATA_HEADER_LEN + message.len(), 0),
                    None => (frame::DATA_HEADER_LEN, 0),
                }
            }
            NextFrame::Close => (self.close_frame().encoded_len(), 0),
            NextFrame::Pong(_) | NextFrame::Ping => (9, 0),
            NextFrame::WindowUpdate(_) => (7, 0),
        }
    }

    fn close_frame(&self) -> Frame {
        let (code, reason) = self
            .close_due
            .clone()
            .unwrap_or((CloseCode::NORMAL, String::new()));
        Frame::Close {
            code: code.0,
            reason,
        }
    }

    /// Writes the frame `next` at the start of `out` (and a SEALED_DATA
    /// frame's body into `clear`, which [`Link::frame_len`] sized), updates
    /// the state as if it were sent, and returns the frame's length.
    fn stage(&mut self, next: NextFrame, now: Instant, out: &mut [u8], clear: &mut [u8]) -> usize {
        let frame = match next {
            NextFrame::Data(index) => {
                self.round_robin = (index + 1) % self.send.len();
                let send = &mut self.send[index];
                let Some(payload) = send.queue.pop_front() else {
                    return 0;
                };
                send.queued_bytes -= payload.len();
                send.credit -= message_cost(payload.len());
                self.stats.messages_out += 1;
                if send.sends_sealed(&payload) {
                    let body = payload.body();
                    // At most MESSAGE_LEN_MAX, which fits.
                    let body_len = u16::try_from(body.len()).unwrap_or(u16::MAX);
                    frame::encode_sealed_data_header(send.id, body_len, out);
                    let prefix = payload.prefix();
                    let end = frame::SEALED_DATA_HEADER_LEN + prefix.len();
                    out[frame::SEALED_DATA_HEADER_LEN..end].copy_from_slice(prefix);
                    clear.copy_from_slice(body);
                    return end;
                }
                // Written here rather than through Frame::encode so the
                // payload is copied once, straight into the record.
                frame::encode_data_header(send.id, out);
                payload.copy_to(&mut out[frame::DATA_HEADER_LEN..]);
                return frame::DATA_HEADER_LEN + payload.len();
            }
            NextFrame::Pong(nonce) => {
                self.pong_due = None;
                Frame::Pong { nonce }
            }
            NextFrame::WindowUpdate(index) => {
                let receive = &mut self.receive[index];
                let increment = std::mem::take(&mut receive.update_due);
                Frame::WindowUpdate {
                    channel: receive.id,
                    increment,
                }
            }
            NextFrame::Ping => {
                self.ping_due = false;
                let nonce = self.next_ping_nonce;
                self.next_ping_nonce += 1;
                self.ping_in_flight = Some((nonce, now));
                Frame::Ping { nonce }
            }
            NextFrame::Close => {
                let frame = self.close_frame();
                self.state = State::Closed;
                self.close_due = None;
                frame
            }
        };
        debug_assert!(frame.encoded_len() <= FRAME_LEN_MAX);
        frame.encode(out)
    }

    // ----- time -----

    /// When [`Link::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Open => Some(
                self.next_keepalive
                    .min(self.last_receive + self.config.idle_timeout),
            ),
            State::Closing | State::Closed => None,
        }
    }

    /// Sends keepalives and closes a link that has gone quiet.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state != State::Open {
            return;
        }
        let idle_timeout = self.config.idle_timeout;
        if now >= self.last_receive + idle_timeout {
            self.close(
                CloseCode::IDLE_TIMEOUT,
                format!("nothing received for {} ms", idle_timeout.as_millis()),
            );
            return;
        }
        if now >= self.next_keepalive {
            self.ping_due = true;
            self.next_keepalive = now + self.config.keepalive_interval;
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NextFrame {
    Pong(u64),
    WindowUpdate(usize),
    Ping,
    Close,
    Data(usize),
}

/// Hooks for the crate's tests to act as a misbehaving peer would.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub(crate) fn add_send_channel(link: &mut Link, id: ChannelId) {
        link.send.push(SendChannel {
            id,
            credit: WINDOW_MAX,
            queue: VecDeque::new(),
            queued_bytes: 0,
            queued_bytes_max: ChannelConfig::SEND_QUEUE_BYTES_MAX_DEFAULT,
            sealed_bodies: false,
        });
    }

    /// Acts as if the peer had opened `channel` to sealed bodies.
    pub(crate) fn open_to_sealed_bodies(link: &mut Link, channel: ChannelId) {
        if let Some(send) = link.send.iter_mut().find(|c| c.id == channel) {
            send.sealed_bodies = true;
        }
    }

    pub(crate) fn grant_credit(link: &mut Link, channel: ChannelId, credit: u32) {
        if let Some(send) = link.send.iter_mut().find(|c| c.id == channel) {
            send.credit = credit;
        }
    }
}
