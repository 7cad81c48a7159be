//! The router's stream operations: opening, writing, reading credit,
//! resets, and the stream packets of a session.

use std::time::Instant;

use bytes::Bytes;

use super::stream::{self, Expiry, Frame, ReceiveHalf, SendHalf, StreamError};
use super::{
    Event, Now, Router, SendError, SessionId, Stream, StreamId, arm_stream_timer, session,
    transmit_sealed,
};

impl Router {
    pub(super) fn new_stream(&self, now: Instant) -> Stream {
        let config = &self.config.stream;
        Stream {
            send: SendHalf::new(config, config.window, now),
            receive: ReceiveHalf::new(config.window),
            writer_blocked: false,
            timer: None,
        }
    }

    /// Opens a stream on a session (even one whose route is being
    /// repaired: its data waits).
    pub fn open_stream(&mut self, session_id: SessionId, now: Now) -> Result<StreamId, SendError> {
        let stream = self.new_stream(now.instant);
        let streams_max = self.config.stream.streams_max;
        let session = self
            .sessions
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
    /// the windows allow; returns how many bytes were taken. Fewer than
    /// offered means full: [`Event::StreamWritable`] says when to go on.
    pub fn stream_write(
        &mut self,
        session_id: SessionId,
        stream_id: StreamId,
        data: &Bytes,
        now: Now,
    ) -> Result<usize, SendError> {
        let stream = self.stream_mut(session_id, stream_id)?;
        if stream.send.is_finished() {
            return Err(SendError::Finished);
        }
        let taken = stream.send.write(data);
        if taken < data.len() {
            stream.writer_blocked = true;
        }
        self.pump(session_id, stream_id, now.instant);
        Ok(taken)
    }

    /// Ends this side of a stream: a FIN follows the data written.
    pub fn stream_finish(
        &mut self,
        session_id: SessionId,
        stream_id: StreamId,
        now: Now,
    ) -> Result<(), SendError> {
        self.stream_mut(session_id, stream_id)?.send.finish();
        self.pump(session_id, stream_id, now.instant);
        Ok(())
    }

    /// The application took `bytes` of a stream's data: the other end may
    /// send that much more.
    pub fn stream_consumed(&mut self, session_id: SessionId, stream_id: StreamId, bytes: u64) {
        let Ok(stream) = self.stream_mut(session_id, stream_id) else {
            return;
        };
        if stream.receive.consume(bytes) {
            self.send_ack(session_id, stream_id);
        }
    }

    /// Abandons a stream: the other end hears RESET with `code`.
    pub fn stream_reset(&mut self, session_id: SessionId, stream_id: StreamId, code: u8) {
        self.reset_stream(session_id, stream_id, code, StreamError::Cancelled);
    }

    pub(super) fn stream_mut(
        &mut self,
        session_id: SessionId,
        stream_id: StreamId,
    ) -> Result<&mut Stream, SendError> {
        self.sessions
            .get_mut(&session_id)
            .ok_or(SendError::UnknownSession)?
            .streams
            .get_mut(&stream_id)
            .ok_or(SendError::UnknownStream)
    }

    pub(super) fn reset_stream(
        &mut self,
        session_id: SessionId,
        stream_id: StreamId,
        code: u8,
        error: StreamError,
    ) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        if session.streams.remove(&stream_id).is_none() {
            return;
        }
        let body = stream::encode_reset(stream_id, code);
        let _ = self.send_packet(session_id, session::KIND_STREAM_RESET, &body);
        self.events.push_back(Event::StreamClosed {
            session: session_id,
            stream: stream_id,
            error: Some(error),
        });
    }

    /// Sends the segments a stream's windows allow.
    pub(super) fn pump(&mut self, session_id: SessionId, stream_id: StreamId, now: Instant) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        if session.label.is_none() {
            return;
        }
        let Some(stream) = session.streams.get_mut(&stream_id) else {
            return;
        };
        while let Some(segment) = stream.send.next_segment(now) {
            let send = &stream.send;
            let sent = transmit_sealed(
                &mut self.rules,
                &mut self.transmits,
                session.label,
                session.cipher.as_mut(),
                session::KIND_STREAM_DATA,
                stream::DATA_HEADER_LEN + segment.len,
                |out| {
                    stream::write_data_header(out, stream_id, segment.offset, segment.fin);
                    send.copy_range(segment.offset, segment.len, out);
                },
            );
            if sent.is_err() {
                break;
            }
        }
        stream.send.arm_probe(now);
        arm_stream_timer(&mut self.stream_timers, session_id, stream_id, stream);
    }

    pub(super) fn send_ack(&mut self, session_id: SessionId, stream_id: StreamId) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        let Some(stream) = session.streams.get_mut(&stream_id) else {
            return;
        };
        let (received, limit) = stream.receive.ack();
        let body = stream::encode_ack(stream_id, received, limit);
        let _ = self.send_packet(session_id, session::KIND_STREAM_ACK, &body);
    }

    /// Removes a stream both of whose sides are finished.
    pub(super) fn close_if_done(&mut self, session_id: SessionId, stream_id: StreamId) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        if session
            .streams
            .get(&stream_id)
            .is_some_and(|s| s.send.is_done() && s.receive.is_finished())
        {
            session.streams.remove(&stream_id);
            self.events.push_back(Event::StreamClosed {
                session: session_id,
                stream: stream_id,
                error: None,
            });
        }
    }

    pub(super) fn on_stream_frame(&mut self, session_id: SessionId, frame: Frame, now: Instant) {
        let new_stream = self.new_stream(now);
        let streams_max = self.config.stream.streams_max;
        let Some(session) = self.sessions.get_mut(&session_id) else {
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
                        && stream_id > session.highest_peer_stream;
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
                            let window = self.config.stream.window;
                            let body = stream::encode_ack(stream_id, received, received + window);
                            let _ = self.send_packet(session_id, session::KIND_STREAM_ACK, &body);
                        }
                        return;
                    }
                    session.highest_peer_stream = stream_id;
                    if session.streams.len() >= streams_max {
                        let body = stream::encode_reset(stream_id, stream::RESET_REFUSED);
                        let _ = self.send_packet(session_id, session::KIND_STREAM_RESET, &body);
                        return;
                    }
                    session.streams.insert(stream_id, new_stream);
                    self.events.push_back(Event::StreamOpened {
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
                            self.events.push_back(Event::StreamData {
                                session: session_id,
                                stream: stream_id,
                                data,
                            });
                        }
                        if arrival.finished {
                            self.events.push_back(Event::StreamFinished {
                                session: session_id,
                                stream: stream_id,
                            });
                        }
                        self.send_ack(session_id, stream_id);
                        self.close_if_done(session_id, stream_id);
                    }
                    Err(_) => self.reset_stream(
                        session_id,
                        stream_id,
                        stream::RESET_VIOLATION,
                        StreamError::Violation,
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
                            self.events.push_back(Event::StreamWritable {
                                session: session_id,
                                stream: stream_id,
                            });
                        }
                        self.pump(session_id, stream_id, now);
                        self.close_if_done(session_id, stream_id);
                    }
                    Err(_) => self.reset_stream(
                        session_id,
                        stream_id,
                        stream::RESET_VIOLATION,
                        StreamError::Violation,
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
                    self.events.push_back(Event::StreamClosed {
                        session: session_id,
                        stream: stream_id,
                        error: Some(error),
                    });
                }
            }
        }
    }

    pub(super) fn stream_timer_fired(
        &mut self,
        at: Instant,
        session_id: SessionId,
        stream_id: StreamId,
        now: Instant,
    ) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
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
                let _ = self.send_packet(session_id, session::KIND_STREAM_DATA, &probe);
            }
            Expiry::Stalled => {
                let stalled = stream.send.stall_timeout();
                self.reset_stream(
                    session_id,
                    stream_id,
                    stream::RESET_TIMED_OUT,
                    StreamError::TimedOut(stalled),
                );
                return;
            }
        }
        self.pump(session_id, stream_id, now);
        if let Some(stream) = self
            .sessions
            .get_mut(&session_id)
            .and_then(|s| s.streams.get_mut(&stream_id))
        {
            arm_stream_timer(&mut self.stream_timers, session_id, stream_id, stream);
        }
    }
}
