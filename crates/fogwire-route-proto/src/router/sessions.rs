//! The sessions at this node's route ends, with their streams: opening,
//! resuming and ending sessions, and every stream operation — writing,
//! acknowledging, retransmitting, credit, resets — over a session's route.
//!
//! A session sends through the rule of its route; [`Output`] lends it the
//! rule table and the router's queues for the length of one operation.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fogwire_identity::NodeId;

use super::message::TeardownReason;
use super::rules::RuleTable;
use super::session::{self, SessionCipher, SessionKeys, TOKEN_LEN};
use super::stream::{self, Expiry, Frame, ReceiveHalf, SendHalf, StreamError};
use super::{Event, RouteId, SendError, SessionId, StreamId, Transmit};

/// Pings in flight per session whose send time is remembered.
const PINGS_MAX: usize = 64;
/// A datagram starts with the port of the service it is for.
pub(super) const DATAGRAM_PORT_LEN: usize = 2;

/// Which end of its route a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    Source(RouteId),
    Destination,
}

#[derive(Debug)]
struct Stream {
    send: SendHalf,
    receive: ReceiveHalf,
    /// A write was cut short: report [`Event::StreamWritable`] on room.
    writer_blocked: bool,
    /// The entry of this stream in the timer set, if any.
    timer: Option<Instant>,
}

/// Peer stream ids skipped over that a session still lets open.
const SKIPPED_MAX: usize = 256;

#[derive(Debug)]
pub(super) struct Session {
    pub(super) peer: NodeId,
    pub(super) end: End,
    token: [u8; TOKEN_LEN],
    /// The rule of the route the session runs on, while it has one.
    pub(super) label: Option<u32>,
    cipher: Option<SessionCipher>,
    pings: VecDeque<(u64, Instant)>,
    streams: BTreeMap<StreamId, Stream>,
    next_stream: StreamId,
    highest_peer_stream: StreamId,
    /// The peer's stream ids below the highest seen whose first DATA has
    /// not come yet: streams opened at about the same time may arrive out
    /// of order (one sender task overtaking another, a lost packet
    /// resent). The last [`SKIPPED_MAX`] are remembered; older ones count
    /// as streams that have ended.
    skipped_peer_streams: BTreeSet<StreamId>,
    /// A destination whose route broke: since when, and why.
    detached: Option<(Instant, TeardownReason)>,
}

impl Session {
    /// Whether `stream` is numbered like the streams the peer opens.
    fn opened_by_peer(&self, stream: StreamId) -> bool {
        // The source opens odd streams, the destination even ones.
        let peer_parity = match self.end {
            End::Source(_) => 0,
            End::Destination => 1,
        };
        stream % 2 == peer_parity
    }

    pub(super) fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Seals a packet and queues it on the session's route.
    fn send(
        &mut self,
        out: &mut Output<'_>,
        kind: u8,
        body_len: usize,
        write_body: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), SendError> {
        let (Some(label), Some(cipher)) = (self.label, self.cipher.as_mut()) else {
            return Err(SendError::NotUp);
        };
        out.rules
            .send_sealed(label, cipher, kind, body_len, write_body, out.transmits)
    }

    fn send_bytes(&mut self, out: &mut Output<'_>, kind: u8, body: &[u8]) {
        let _ = self.send(out, kind, body.len(), |buffer| {
            buffer.extend_from_slice(body)
        });
    }
}

/// What a session operation may touch beyond the sessions: the rule table
/// (its route's rule carries its packets) and the router's queues.
pub(super) struct Output<'a> {
    pub(super) rules: &'a mut RuleTable,
    pub(super) transmits: &'a mut VecDeque<Transmit>,
    pub(super) events: &'a mut VecDeque<Event>,
}

/// Every session this node is an end of.
#[derive(Debug)]
pub(super) struct Sessions {
    map: BTreeMap<SessionId, Session>,
    /// Tokens of the sessions this node is the destination of.
    tokens: HashMap<[u8; TOKEN_LEN], SessionId>,
    /// Stream retransmission timers: (when, session, stream). Entries may
    /// be stale; the stream's own `timer` says which one counts.
    timers: BTreeSet<(Instant, SessionId, StreamId)>,
    next: SessionId,
    config: stream::Config,
    /// Session packets that failed to open (altered, replayed, or for a
    /// session without keys) and were dropped.
    pub(super) rejected: u64,
}

impl Sessions {
    pub(super) fn new(config: stream::Config) -> Self {
        Self {
            map: BTreeMap::new(),
            tokens: HashMap::new(),
            timers: BTreeSet::new(),
            next: 1,
            config,
            rejected: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn get(&self, session: SessionId) -> Option<&Session> {
        self.map.get(&session)
    }

    /// Every session's id, in order.
    #[cfg(test)]
    pub(super) fn ids(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.map.keys().copied()
    }

    /// The session a destination knows by `token`, if its peer is `peer`.
    pub(super) fn by_token(&self, token: &[u8; TOKEN_LEN], peer: NodeId) -> Option<SessionId> {
        self.tokens
            .get(token)
            .copied()
            .filter(|id| self.map.get(id).is_some_and(|s| s.peer == peer))
    }

    pub(super) fn knows_token(&self, token: &[u8; TOKEN_LEN]) -> bool {
        self.tokens.contains_key(token)
    }

    /// A new session on the rule `label`.
    pub(super) fn open(
        &mut self,
        peer: NodeId,
        end: End,
        token: [u8; TOKEN_LEN],
        label: u32,
        keys: SessionKeys,
    ) -> SessionId {
        let id = self.next;
        self.next += 1;
        self.map.insert(
            id,
            Session {
                peer,
                end,
                token,
                label: Some(label),
                cipher: Some(SessionCipher::new(keys)),
                pings: VecDeque::new(),
                streams: BTreeMap::new(),
                next_stream: match end {
                    End::Source(_) => 1,
                    End::Destination => 2,
                },
                highest_peer_stream: 0,
                skipped_peer_streams: BTreeSet::new(),
                detached: None,
            },
        );
        if end == End::Destination {
            self.tokens.insert(token, id);
        }
        id
    }

    /// The session moved to the rule `label` with new keys (its route was
    /// repaired); returns the rule it ran on before, if any.
    pub(super) fn moved(
        &mut self,
        session: SessionId,
        label: u32,
        keys: SessionKeys,
    ) -> Option<u32> {
        let session = self.map.get_mut(&session)?;
        session.cipher = Some(SessionCipher::new(keys));
        session.detached = None;
        session.label.replace(label)
    }

    /// The session's route is gone for now; a destination waits for the
    /// source to resume it (`since`, `reason`).
    pub(super) fn detach(&mut self, session: SessionId, since: Option<(Instant, TeardownReason)>) {
        if let Some(session) = self.map.get_mut(&session) {
            session.label = None;
            if since.is_some() {
                session.detached = since;
            }
        }
    }

    pub(super) fn any_detached(&self) -> bool {
        self.map.values().any(|s| s.detached.is_some())
    }

    /// Destinations whose source did not resume them within `grace`.
    pub(super) fn detached_too_long(
        &self,
        now: Instant,
        grace: Duration,
    ) -> Vec<(SessionId, TeardownReason)> {
        self.map
            .iter()
            .filter_map(|(id, s)| match s.detached {
                Some((since, reason)) if since + grace <= now => Some((*id, reason)),
                _ => None,
            })
            .collect()
    }

    /// Removes a session and reports each of its streams closed.
    pub(super) fn end(
        &mut self,
        session: SessionId,
        error: StreamError,
        events: &mut VecDeque<Event>,
    ) {
        let Some(ended) = self.map.remove(&session) else {
            return;
        };
        if ended.end == End::Destination {
            self.tokens.remove(&ended.token);
        }
        for stream in ended.streams.keys() {
            events.push_back(Event::StreamClosed {
                session,
                stream: *stream,
                error: Some(error.clone()),
            });
        }
    }

    // ----- packets -----

    /// A packet of `session` arrived on rule `label`: opens it and acts on
    /// what it carries.
    pub(super) fn deliver(
        &mut self,
        session_id: SessionId,
        label: u32,
        body: &[u8],
        now: Instant,
        out: &mut Output<'_>,
    ) {
        let Some(session) = self.map.get_mut(&session_id) else {
            return;
        };
        if session.label != Some(label) {
            return;
        }
        let Some(Ok((kind, payload))) = session.cipher.as_mut().map(|c| c.open(body)) else {
            // Links carry session packets as sealed bodies, which they do
            // not authenticate (link.md §4): this is where an altered one
            // ends.
            self.rejected += 1;
            return;
        };
        match kind {
            session::KIND_DATAGRAM if payload.len() >= DATAGRAM_PORT_LEN => {
                let port = u16::from_be_bytes([payload[0], payload[1]]);
                out.events.push_back(Event::Datagram {
                    session: session_id,
                    port,
                    data: payload.slice(DATAGRAM_PORT_LEN..),
                });
            }
            session::KIND_PING => session.send_bytes(out, session::KIND_PONG, &payload),
            session::KIND_PONG => {
                let Ok(id) = <[u8; 8]>::try_from(&payload[..]).map(u64::from_be_bytes) else {
                    return;
                };
                if let Some(position) = session.pings.iter().position(|(p, _)| *p == id)
                    && let Some((_, sent)) = session.pings.remove(position)
                {
                    out.events.push_back(Event::Pong {
                        session: session_id,
                        id,
                        rtt: now.saturating_duration_since(sent),
                    });
                }
            }
            session::KIND_STREAM_DATA | session::KIND_STREAM_ACK | session::KIND_STREAM_RESET => {
                if let Ok(frame) = Frame::decode(kind, payload) {
                    self.on_stream_frame(session_id, frame, now, out);
                }
            }
            _ => {}
        }
    }

    /// Sends a packet of `kind` on a session.
    pub(super) fn send_packet(
        &mut self,
        session: SessionId,
        kind: u8,
        body: &[u8],
        out: &mut Output<'_>,
    ) -> Result<(), SendError> {
        self.map
            .get_mut(&session)
            .ok_or(SendError::UnknownSession)?
            .send(out, kind, body.len(), |buffer| {
                buffer.extend_from_slice(body)
            })
    }

    /// Sends an end-to-end ping, remembering when.
    pub(super) fn ping(
        &mut self,
        session_id: SessionId,
        id: u64,
        now: Instant,
        out: &mut Output<'_>,
    ) -> Result<(), SendError> {
        self.send_packet(session_id, session::KIND_PING, &id.to_be_bytes(), out)?;
        if let Some(session) = self.map.get_mut(&session_id) {
            if session.pings.len() >= PINGS_MAX {
                session.pings.pop_front();
            }
            session.pings.push_back((id, now));
        }
        Ok(())
    }

    // ----- streams -----

    fn new_stream(&self, now: Instant) -> Stream {
        Stream {
            send: SendHalf::new(&self.config, self.config.window, now),
            receive: ReceiveHalf::new(self.config.window),
            writer_blocked: false,
            timer: None,
        }
    }

    fn stream_mut(
        &mut self,
        session_id: SessionId,
        stream_id: StreamId,
    ) -> Result<&mut Stream, SendError> {
        self.map
            .get_mut(&session_id)
            .ok_or(SendError::UnknownSession)?
            .streams
            .get_mut(&stream_id)
            .ok_or(SendError::UnknownStream)
    }

    /// Makes sure the timer set has an entry at or before the stream's
    /// retransmission time.
    fn arm_timer(&mut self, session_id: SessionId, stream_id: StreamId) {
        let Ok(stream) = self.stream_mut(session_id, stream_id) else {
            return;
        };
        if let Some(at) = stream.send.rto_at
            && stream.timer.is_none_or(|entry| entry > at)
        {
            stream.timer = Some(at);
            self.timers.insert((at, session_id, stream_id));
        }
    }

    /// Opens a stream on a session (even one whose route is being
    /// repaired: its data waits).
    pub(super) fn open_stream(
        &mut self,
        session_id: SessionId,
        now: Instant,
    ) -> Result<StreamId, SendError> {
        let stream = self.new_stream(now);
        let streams_max = self.config.streams_max;
        let session = self
            .map
            .get_mut(&session_id)
            .ok_or(SendError::UnknownSession)?;
        if session.streams.len() >= streams_max {
            return Err(SendError::TooManyStreams);
        }
        let id = session.next_stream;
        session.next_stream = session
            .next_stream
            .checked_add(2)
            .ok_or(SendError::Exhausted)?;
        session.streams.insert(id, stream);
        Ok(id)
    }

    /// Queues as much of `data` as the stream has room for and sends what
    /// the windows allow; returns how many bytes were taken.
    pub(super) fn write(
        &mut self,
        session_id: SessionId,
        stream_id: StreamId,
        data: &Bytes,
        now: Instant,
        out: &mut Output<'_>,
    ) -> Result<usize, SendError> {
        let stream = self.stream_mut(session_id, stream_id)?;
        if stream.send.is_finished() {
            return Err(SendError::Finished);
        }
        let taken = stream.send.write(data);
        if taken < data.len() {
            stream.writer_blocked = true;
        }
        self.pump(session_id, stream_id, now, out);
        Ok(taken)
    }

    /// Ends this side of a stream: a FIN follows the data written.
    pub(super) fn finish(
        &mut self,
        session_id: SessionId,
        stream_id: StreamId,
        now: Instant,
        out: &mut Output<'_>,
    ) -> Result<(), SendError> {
        self.stream_mut(session_id, stream_id)?.send.finish();
        self.pump(session_id, stream_id, now, out);
        Ok(())
    }

    /// The application took `bytes` of a stream's data.
    pub(super) fn consumed(
        &mut self,
        session_id: SessionId,
        stream_id: StreamId,
        bytes: u64,
        out: &mut Output<'_>,
    ) {
        let Ok(stream) = self.stream_mut(session_id, stream_id) else {
            return;
        };
        if stream.receive.consume(bytes) {
            self.send_ack(session_id, stream_id, out);
        }
    }

    /// Abandons a stream: the other end hears RESET with `code`.
    pub(super) fn reset(
        &mut self,
        session_id: SessionId,
        stream_id: StreamId,
        code: u8,
        error: StreamError,
        out: &mut Output<'_>,
    ) {
        let Some(session) = self.map.get_mut(&session_id) else {
            return;
        };
        if session.streams.remove(&stream_id).is_none() {
            return;
        }
        session.send_bytes(
            out,
            session::KIND_STREAM_RESET,
            &stream::encode_reset(stream_id, code),
        );
        out.events.push_back(Event::StreamClosed {
            session: session_id,
            stream: stream_id,
            error: Some(error),
        });
    }

    /// A session's new route is up: every stream starts again from what
    /// the other end acknowledged, and tells the other end what arrived.
    pub(super) fn resume_streams(
        &mut self,
        session_id: SessionId,
        now: Instant,
        out: &mut Output<'_>,
    ) {
        let Some(session) = self.map.get_mut(&session_id) else {
            return;
        };
        let ids: Vec<StreamId> = session.streams.keys().copied().collect();
        for stream in session.streams.values_mut() {
            stream.send.rewind(now);
        }
        for stream in ids {
            self.send_ack(session_id, stream, out);
            self.pump(session_id, stream, now, out);
        }
    }

    /// Sends the segments a stream's windows allow.
    fn pump(
        &mut self,
        session_id: SessionId,
        stream_id: StreamId,
        now: Instant,
        out: &mut Output<'_>,
    ) {
        let Some(session) = self.map.get_mut(&session_id) else {
            return;
        };
        let Some(label) = session.label else {
            return;
        };
        let Some(stream) = session.streams.get_mut(&stream_id) else {
            return;
        };
        while let Some(segment) = stream.send.next_segment(now) {
            let Some(cipher) = session.cipher.as_mut() else {
                break;
            };
            let send = &stream.send;
            let sent = out.rules.send_sealed(
                label,
                cipher,
                session::KIND_STREAM_DATA,
                stream::DATA_HEADER_LEN + segment.len,
                |buffer| {
                    stream::write_data_header(buffer, stream_id, segment.offset, segment.fin);
                    send.copy_range(segment.offset, segment.len, buffer);
                },
                out.transmits,
            );
            if sent.is_err() {
                break;
            }
        }
        stream.send.arm_probe(now);
        self.arm_timer(session_id, stream_id);
    }

    fn send_ack(&mut self, session_id: SessionId, stream_id: StreamId, out: &mut Output<'_>) {
        let Some(session) = self.map.get_mut(&session_id) else {
            return;
        };
        let Some(stream) = session.streams.get_mut(&stream_id) else {
            return;
        };
        let (received, limit) = stream.receive.ack();
        session.send_bytes(
            out,
            session::KIND_STREAM_ACK,
            &stream::encode_ack(stream_id, received, limit),
        );
    }

    /// Removes a stream both of whose sides are finished.
    fn close_if_done(&mut self, session_id: SessionId, stream_id: StreamId, out: &mut Output<'_>) {
        let Some(session) = self.map.get_mut(&session_id) else {
            return;
        };
        if session
            .streams
            .get(&stream_id)
            .is_some_and(|s| s.send.is_done() && s.receive.is_finished())
        {
            session.streams.remove(&stream_id);
            out.events.push_back(Event::StreamClosed {
                session: session_id,
                stream: stream_id,
                error: None,
            });
        }
    }

    fn on_stream_frame(
        &mut self,
        session_id: SessionId,
        frame: Frame,
        now: Instant,
        out: &mut Output<'_>,
    ) {
        let new_stream = self.new_stream(now);
        let (streams_max, window) = (self.config.streams_max, self.config.window);
        let Some(session) = self.map.get_mut(&session_id) else {
            return;
        };
        match frame {
            Frame::Data {
                stream: stream_id,
                offset,
                fin,
                data,
            } => {
                if !session.streams.contains_key(&stream_id) {
                    let opens = session.opened_by_peer(stream_id)
                        && (stream_id > session.highest_peer_stream
                            || session.skipped_peer_streams.remove(&stream_id));
                    if !opens {
                        // A stream that has ended: its sender may have missed
                        // the last acknowledgement. Acknowledge the segment.
                        let past = if session.opened_by_peer(stream_id) {
                            stream_id <= session.highest_peer_stream
                        } else {
                            stream_id < session.next_stream
                        };
                        if past {
                            let received = offset + data.len() as u64 + u64::from(fin);
                            let body = stream::encode_ack(stream_id, received, received + window);
                            session.send_bytes(out, session::KIND_STREAM_ACK, &body);
                        }
                        return;
                    }
                    if stream_id > session.highest_peer_stream {
                        // The ids skipped over may still open (the peer
                        // numbers its streams by twos).
                        let next = match session.highest_peer_stream {
                            // None yet: the peer's first id, by its parity.
                            0 => 2 - stream_id % 2,
                            highest => highest.saturating_add(2),
                        };
                        let lowest = next.max(stream_id.saturating_sub(2 * SKIPPED_MAX as u32));
                        let mut skipped = lowest;
                        while skipped < stream_id {
                            session.skipped_peer_streams.insert(skipped);
                            let Some(after) = skipped.checked_add(2) else {
                                break;
                            };
                            skipped = after;
                        }
                        while session.skipped_peer_streams.len() > SKIPPED_MAX {
                            session.skipped_peer_streams.pop_first();
                        }
                        session.highest_peer_stream = stream_id;
                    }
                    if session.streams.len() >= streams_max {
                        let body = stream::encode_reset(stream_id, stream::RESET_REFUSED);
                        session.send_bytes(out, session::KIND_STREAM_RESET, &body);
                        return;
                    }
                    session.streams.insert(stream_id, new_stream);
                    out.events.push_back(Event::StreamOpened {
                        session: session_id,
                        stream: stream_id,
                    });
                }
                let Some(stream) = session.streams.get_mut(&stream_id) else {
                    return;
                };
                match stream.receive.on_data(offset, fin, data) {
                    Ok(arrival) => {
                        if let Some(data) = arrival.data {
                            out.events.push_back(Event::StreamData {
                                session: session_id,
                                stream: stream_id,
                                data,
                            });
                        }
                        if arrival.finished {
                            out.events.push_back(Event::StreamFinished {
                                session: session_id,
                                stream: stream_id,
                            });
                        }
                        self.send_ack(session_id, stream_id, out);
                        self.close_if_done(session_id, stream_id, out);
                    }
                    Err(_) => self.reset(
                        session_id,
                        stream_id,
                        stream::RESET_VIOLATION,
                        StreamError::Violation,
                        out,
                    ),
                }
            }
            Frame::Ack {
                stream: stream_id,
                received,
                limit,
            } => {
                let Some(stream) = session.streams.get_mut(&stream_id) else {
                    return;
                };
                match stream.send.on_ack(received, limit, now) {
                    Ok(freed) => {
                        let writable = freed && stream.writer_blocked && stream.send.free() > 0;
                        if writable {
                            stream.writer_blocked = false;
                            out.events.push_back(Event::StreamWritable {
                                session: session_id,
                                stream: stream_id,
                            });
                        }
                        self.pump(session_id, stream_id, now, out);
                        self.close_if_done(session_id, stream_id, out);
                    }
                    Err(_) => self.reset(
                        session_id,
                        stream_id,
                        stream::RESET_VIOLATION,
                        StreamError::Violation,
                        out,
                    ),
                }
            }
            Frame::Reset {
                stream: stream_id,
                code,
            } => {
                if session.streams.remove(&stream_id).is_some() {
                    let error = if code == stream::RESET_REFUSED {
                        StreamError::Refused
                    } else {
                        StreamError::Reset { code }
                    };
                    out.events.push_back(Event::StreamClosed {
                        session: session_id,
                        stream: stream_id,
                        error: Some(error),
                    });
                }
            }
        }
    }

    /// When the first stream timer runs out.
    pub(super) fn next_timer(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _, _)| *at)
    }

    /// Runs every stream timer due by `now`: retransmissions, probes and
    /// resets of stalled streams.
    pub(super) fn fire_timers(&mut self, now: Instant, out: &mut Output<'_>) {
        while let Some(&(at, session, stream)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            self.timer_fired(at, session, stream, now, out);
        }
    }

    fn timer_fired(
        &mut self,
        at: Instant,
        session_id: SessionId,
        stream_id: StreamId,
        now: Instant,
        out: &mut Output<'_>,
    ) {
        let Some(session) = self.map.get_mut(&session_id) else {
            return;
        };
        let Some(stream) = session.streams.get_mut(&stream_id) else {
            return;
        };
        if stream.timer != Some(at) {
            return;
        }
        stream.timer = None;
        if session.label.is_none() {
            // The route is being repaired; resuming restarts the stream.
            stream.send.rewind(now);
            return;
        }
        match stream.send.on_timeout(now) {
            Expiry::Nothing | Expiry::Resend => {}
            Expiry::Probe => {
                let mut probe = Vec::with_capacity(stream::DATA_HEADER_LEN);
                stream::write_data_header(&mut probe, stream_id, stream.send.next_offset(), false);
                session.send_bytes(out, session::KIND_STREAM_DATA, &probe);
            }
            Expiry::Stalled => {
                let stalled = stream.send.stall_timeout();
                self.reset(
                    session_id,
                    stream_id,
                    stream::RESET_TIMED_OUT,
                    StreamError::TimedOut(stalled),
                    out,
                );
                return;
            }
        }
        self.pump(session_id, stream_id, now, out);
        self.arm_timer(session_id, stream_id);
    }
}
