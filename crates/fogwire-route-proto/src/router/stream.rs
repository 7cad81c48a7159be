//! Reliable, ordered byte streams inside an end-to-end session.
//!
//! Three session packet kinds carry them (after the session's `kind` byte,
//! big-endian):
//!
//! ```text
//! STREAM_DATA   0x10 | stream u32 | offset u64 | flags u8 (bit 0: FIN) | data
//! STREAM_ACK    0x11 | stream u32 | received u64 | limit u64
//! STREAM_RESET  0x12 | stream u32 | code u8
//! ```
//!
//! A stream's bytes are numbered from 0; the FIN takes the number after the
//! last byte. `received` acknowledges every number below it (so
//! `len + 1` acknowledges the FIN); `limit` is the first byte offset the
//! sender may not send yet: the receiver's credit, which moves only when
//! its application consumes data. So a slow reader slows its sender down
//! and no relay ever holds more than the window.
//!
//! Links are reliable, so a segment is lost only when a relay's queue
//! overflows or a route breaks. Recovery is go-back-N: the receiver takes
//! only the segment that starts where it is, and acknowledges every
//! segment; the sender goes back to the first unacknowledged byte after
//! three duplicate acknowledgements, after a retransmission timeout
//! (RFC 6298 estimator), or when its session moves to a new route.
//! A loss halves the sender's congestion window, which then grows by one
//! segment per window (AIMD), so streams sharing a congested relay back
//! off instead of overflowing it again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::wire::Reader;

/// Bytes after the kind byte and before the data of a STREAM_DATA.
pub const DATA_HEADER_LEN: usize = 4 + 8 + 1;
const FLAG_FIN: u8 = 0x01;

/// Reset codes.
pub const RESET_CANCELLED: u8 = 0;
pub const RESET_REFUSED: u8 = 1;
pub const RESET_TIMED_OUT: u8 = 2;
pub const RESET_VIOLATION: u8 = 3;

/// Settings of the streams of a router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Credit a receiver grants beyond what its application consumed.
    pub window: u64,
    /// Bytes a sender keeps (unacknowledged and unsent) per stream.
    pub send_buffer: usize,
    /// Largest data segment.
    pub segment_len_max: usize,
    /// Streams open at once per session.
    pub streams_max: usize,
    pub rto_initial: Duration,
    pub rto_min: Duration,
    pub rto_max: Duration,
    /// A stream whose sender makes no progress this long is reset.
    pub stall_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            window: 1024 * 1024,
            send_buffer: 1024 * 1024,
            segment_len_max: super::DATAGRAM_LEN_MAX - DATA_HEADER_LEN,
            streams_max: 64,
            rto_initial: Duration::from_millis(500),
            rto_min: Duration::from_millis(200),
            rto_max: Duration::from_secs(4),
            stall_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a stream ended without both sides finishing it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    #[error("the peer reset the stream (code {code})")]
    Reset { code: u8 },
    #[error("the peer refused the stream (too many open)")]
    Refused,
    #[error("no progress for {} s", .0.as_secs())]
    TimedOut(Duration),
    #[error("the peer broke the stream protocol")]
    Violation,
    #[error("the route is gone: {0}")]
    RouteLost(String),
    #[error("the session was closed")]
    SessionClosed,
    #[error("closed by this node")]
    Cancelled,
}

/// A decoded stream packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        offset: u64,
        fin: bool,
        data: Bytes,
    },
    Ack {
        stream: u32,
        received: u64,
        limit: u64,
    },
    Reset {
        stream: u32,
        code: u8,
    },
}

/// A stream packet that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed stream packet")]
pub struct Malformed;

impl Frame {
    /// Decodes the body of a session packet of `kind`.
    pub fn decode(kind: u8, body: Bytes) -> Result<Frame, Malformed> {
        let mut reader = Reader::new(&body);
        let stream = reader.u32().map_err(|_| Malformed)?;
        let frame = match kind {
            super::session::KIND_STREAM_DATA => {
                let offset = reader.u64().map_err(|_| Malformed)?;
                let flags = reader.u8().map_err(|_| Malformed)?;
                if flags & !FLAG_FIN != 0 {
                    return Err(Malformed);
                }
                let data = body.slice(DATA_HEADER_LEN..);
                offset.checked_add(data.len() as u64 + 1).ok_or(Malformed)?;
                return Ok(Frame::Data {
                    stream,
                    offset,
                    fin: flags & FLAG_FIN != 0,
                    data,
                });
            }
            super::session::KIND_STREAM_ACK => Frame::Ack {
                stream,
                received: reader.u64().map_err(|_| Malformed)?,
                limit: reader.u64().map_err(|_| Malformed)?,
            },
            super::session::KIND_STREAM_RESET => Frame::Reset {
                stream,
                code: reader.u8().map_err(|_| Malformed)?,
            },
            _ => return Err(Malformed),
        };
        if !reader.is_empty() {
            return Err(Malformed);
        }
        Ok(frame)
    }
}

pub(crate) fn write_data_header(out: &mut Vec<u8>, stream: u32, offset: u64, fin: bool) {
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out.push(if fin { FLAG_FIN } else { 0 });
}

pub(crate) fn encode_ack(stream: u32, received: u64, limit: u64) -> [u8; 20] {
    let mut out = [0u8; 20];
    out[..4].copy_from_slice(&stream.to_be_bytes());
    out[4..12].copy_from_slice(&received.to_be_bytes());
    out[12..].copy_from_slice(&limit.to_be_bytes());
    out
}

pub(crate) fn encode_reset(stream: u32, code: u8) -> [u8; 5] {
    let mut out = [0u8; 5];
    out[..4].copy_from_slice(&stream.to_be_bytes());
    out[4] = code;
    out
}

/// A segment to send: `len` bytes from `offset`, then maybe the FIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub offset: u64,
    pub len: usize,
    pub fin: bool,
}

/// What a retransmission timeout asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    Nothing,
    /// Segments from the first unacknowledged byte go out again.
    Resend,
    /// The receiver's credit is exhausted: send an empty segment so that
    /// it answers with its current limit (its update may have been lost).
    Probe,
    /// No progress for the stall timeout.
    Stalled,
}

/// The sending half of a stream.
#[derive(Debug)]
pub(crate) struct SendHalf {
    /// Unacknowledged and unsent data, starting at byte `acked`.
    chunks: VecDeque<Bytes>,
    acked: u64,
    next: u64,
    end: u64,
    capacity: u64,
    segment_len_max: u64,
    finished: bool,
    fin_sent: bool,
    /// A FIN went out at some point (a rewind may have taken `fin_sent`
    /// back, but its acknowledgement can still arrive).
    fin_ever_sent: bool,
    fin_acked: bool,
    limit: u64,
    cwnd: u64,
    dupacks: u32,
    /// Set during a fast retransmit: no other until `acked` passes it.
    recovery_until: Option<u64>,
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    rto_min: Duration,
    rto_max: Duration,
    /// (end of the timed segment, when it was sent); none after a resend
    /// (Karn's rule).
    probe: Option<(u64, Instant)>,
    pub rto_at: Option<Instant>,
    last_progress: Instant,
    stall_timeout: Duration,
}

impl SendHalf {
    pub fn new(config: &Config, peer_window: u64, now: Instant) -> Self {
        let segment_len_max = config.segment_len_max.max(1) as u64;
        Self {
            chunks: VecDeque::new(),
            acked: 0,
            next: 0,
            end: 0,
            capacity: config.send_buffer as u64,
            segment_len_max,
            finished: false,
            fin_sent: false,
            fin_ever_sent: false,
            fin_acked: false,
            // Until the first acknowledgement, assume the peer grants what
            // this node would: both ends run the same defaults.
            limit: peer_window,
            cwnd: (config.send_buffer as u64).max(2 * segment_len_max),
            dupacks: 0,
            recovery_until: None,
            srtt: None,
            rttvar: Duration::ZERO,
            rto: config.rto_initial,
            rto_min: config.rto_min,
            rto_max: config.rto_max,
            probe: None,
            rto_at: None,
            last_progress: now,
            stall_timeout: config.stall_timeout,
        }
    }

    /// Room for more data, in bytes.
    pub fn free(&self) -> usize {
        self.capacity.saturating_sub(self.end - self.acked) as usize
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Takes as much of `data` as there is room for; returns how much.
    pub fn write(&mut self, data: &Bytes) -> usize {
        if self.finished {
            return 0;
        }
        let taken = data.len().min(self.free());
        if taken > 0 {
            self.chunks.push_back(data.slice(..taken));
            self.end += taken as u64;
        }
        taken
    }

    pub fn finish(&mut self) {
        self.finished = true;
    }

    fn outstanding(&self) -> bool {
        self.next > self.acked || (self.fin_sent && !self.fin_acked)
    }

    /// All data and the FIN are acknowledged.
    pub fn is_done(&self) -> bool {
        self.fin_acked
    }

    /// Has data the receiver's credit does not let it send.
    pub fn blocked_by_limit(&self) -> bool {
        self.next < self.end && self.next >= self.limit && !self.outstanding()
    }

    /// The next segment the windows allow, if any; marks it sent.
    pub fn next_segment(&mut self, now: Instant) -> Option<Segment> {
        let segment = if self.next < self.end {
            if self.next >= self.limit || self.next - self.acked >= self.cwnd {
                return None;
            }
            let len = (self.end - self.next)
                .min(self.limit - self.next)
                .min(self.segment_len_max);
            let fin = self.finished && self.next + len == self.end;
            Segment {
                offset: self.next,
                len: len as usize,
                fin,
            }
        } else if self.finished && !self.fin_sent {
            Segment {
                offset: self.end,
                len: 0,
                fin: true,
            }
        } else {
            return None;
        };
        self.next = segment.offset + segment.len as u64;
        if segment.fin {
            self.fin_sent = true;
            self.fin_ever_sent = true;
        }
        let sequence_end = self.next + u64::from(segment.fin);
        if self.probe.is_none() {
            self.probe = Some((sequence_end, now));
        }
        if self.rto_at.is_none() {
            self.rto_at = Some(now + self.rto);
        }
        Some(segment)
    }

    /// Copies `len` bytes from stream offset `offset` (which must be held)
    /// onto `out`.
    pub fn copy_range(&self, offset: u64, len: usize, out: &mut Vec<u8>) {
        let mut remaining = len;
        let mut skip = offset.saturating_sub(self.acked);
        for chunk in &self.chunks {
            if remaining == 0 {
                break;
            }
            let chunk_len = chunk.len() as u64;
            if skip >= chunk_len {
                skip -= chunk_len;
                continue;
            }
            let start = skip as usize;
            let take = (chunk.len() - start).min(remaining);
            out.extend_from_slice(&chunk[start..start + take]);
            remaining -= take;
            skip = 0;
        }
    }

    /// Takes in an acknowledgement. Returns whether buffer room was freed.
    pub fn on_ack(&mut self, received: u64, limit: u64, now: Instant) -> Result<bool, Malformed> {
        let fin_number = self.end + 1;
        if received > fin_number || (received == fin_number && !self.fin_ever_sent) {
            // Acknowledges what was never sent.
            return Err(Malformed);
        }
        let data_acked = received.min(self.end);
        let fin_now = received == fin_number && !self.fin_acked;
        let limit_grew = limit > self.limit;
        if limit_grew {
            self.limit = limit;
        }
        let progressed = data_acked > self.acked || fin_now;
        if !progressed {
            if !limit_grew && self.outstanding() && received == self.acked {
                self.dupacks += 1;
                if self.dupacks == 3 && self.recovery_until.is_none() {
                    self.recovery_until = Some(self.next);
                    self.go_back();
                }
            }
            return Ok(false);
        }
        let freed = data_acked - self.acked;
        let mut drop = freed;
        while drop > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let front_len = front.len() as u64;
            if front_len <= drop {
                drop -= front_len;
                self.chunks.pop_front();
            } else {
                *front = front.slice(drop as usize..);
                drop = 0;
            }
        }
        self.acked = data_acked;
        self.next = self.next.max(self.acked);
        if fin_now {
            self.fin_acked = true;
        }
        self.dupacks = 0;
        if self.recovery_until.is_some_and(|until| self.acked >= until) {
            self.recovery_until = None;
        }
        if let Some((probe_end, sent)) = self.probe
            && received >= probe_end
        {
            self.sample(now.saturating_duration_since(sent));
            self.probe = None;
        }
        // Additive increase: one segment per window's worth acknowledged.
        let increase = (self.segment_len_max * freed.max(1) / self.cwnd.max(1)).max(1);
        self.cwnd = (self.cwnd + increase).min(self.capacity.max(2 * self.segment_len_max));
        self.last_progress = now;
        self.rto_at = self.outstanding().then(|| now + self.rto);
        Ok(freed > 0)
    }

    fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(rtt);
        self.rto = (srtt + (self.rttvar * 4).max(Duration::from_millis(1)))
            .clamp(self.rto_min, self.rto_max);
    }

    /// Sends everything unacknowledged again, from the first byte.
    fn go_back(&mut self) {
        self.next = self.acked;
        if !self.fin_acked {
            self.fin_sent = false;
        }
        self.probe = None;
        self.cwnd = (self.cwnd / 2).max(2 * self.segment_len_max);
    }

    /// The session moved to a new route: whatever was in flight on the
    /// old one is lost, so start again from the first unacknowledged byte.
    pub fn rewind(&mut self, now: Instant) {
        self.next = self.acked;
        if !self.fin_acked {
            self.fin_sent = false;
        }
        self.probe = None;
        self.dupacks = 0;
        self.recovery_until = None;
        self.rto_at = None;
        self.last_progress = now;
    }

    /// The retransmission timer fired at `now`.
    pub fn on_timeout(&mut self, now: Instant) -> Expiry {
        if self.rto_at.is_none_or(|at| at > now) {
            return Expiry::Nothing;
        }
        if self.is_done() {
            self.rto_at = None;
            return Expiry::Nothing;
        }
        if now.saturating_duration_since(self.last_progress) >= self.stall_timeout {
            self.rto_at = None;
            return Expiry::Stalled;
        }
        self.rto = (self.rto * 2).min(self.rto_max);
        self.rto_at = Some(now + self.rto);
        if self.outstanding() {
            self.go_back();
            Expiry::Resend
        } else if self.next < self.end {
            Expiry::Probe
        } else {
            self.rto_at = None;
            Expiry::Nothing
        }
    }

    /// Arms the timer that probes a receiver whose credit is exhausted.
    pub fn arm_probe(&mut self, now: Instant) {
        if self.blocked_by_limit() && self.rto_at.is_none() {
            self.rto_at = Some(now + self.rto);
        }
    }

    pub fn next_offset(&self) -> u64 {
        self.next
    }

    pub fn stall_timeout(&self) -> Duration {
        self.stall_timeout
    }
}

/// What arrived in a data segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Arrival {
    /// New in-order bytes for the application.
    pub data: Option<Bytes>,
    /// The peer's FIN arrived, after all its data.
    pub finished: bool,
}

/// The receiving half of a stream.
#[derive(Debug)]
pub(crate) struct ReceiveHalf {
    received: u64,
    fin: bool,
    consumed: u64,
    window: u64,
    announced: u64,
}

impl ReceiveHalf {
    pub fn new(window: u64) -> Self {
        Self {
            received: 0,
            fin: false,
            consumed: 0,
            window,
            announced: window,
        }
    }

    pub fn limit(&self) -> u64 {
        self.consumed + self.window
    }

    /// What an acknowledgement says now: (received, limit).
    pub fn ack(&mut self) -> (u64, u64) {
        self.announced = self.limit();
        (self.received + u64::from(self.fin), self.announced)
    }

    pub fn is_finished(&self) -> bool {
        self.fin
    }

    pub fn on_data(&mut self, offset: u64, fin: bool, data: Bytes) -> Result<Arrival, Malformed> {
        let end = offset + data.len() as u64;
        if !data.is_empty() && end > self.limit() {
            return Err(Malformed);
        }
        if self.fin && end > self.received {
            // Data past the FIN.
            return Err(Malformed);
        }
        let mut arrival = Arrival {
            data: None,
            finished: false,
        };
        if offset <= self.received && end > self.received {
            arrival.data = Some(data.slice((self.received - offset) as usize..));
            self.received = end;
        }
        if fin && !self.fin && end == self.received {
            self.fin = true;
            arrival.finished = true;
        }
        Ok(arrival)
    }

    /// The application took `bytes`; returns whether the new credit is
    /// worth announcing now (a quarter window, as links do).
    pub fn consume(&mut self, bytes: u64) -> bool {
        self.consumed = (self.consumed + bytes).min(self.received);
        self.limit() - self.announced >= self.window / 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            window: 100,
            send_buffer: 100,
            segment_len_max: 10,
            ..Config::default()
        }
    }

    use fogwire_testkit::time::epoch;

    #[test]
    fn frames_round_trip_and_reject_garbage() {
        let mut data = Vec::new();
        write_data_header(&mut data, 7, 99, true);
        data.extend_from_slice(b"abc");
        assert_eq!(
            Frame::decode(super::super::session::KIND_STREAM_DATA, Bytes::from(data)),
            Ok(Frame::Data {
                stream: 7,
                offset: 99,
                fin: true,
                data: Bytes::from_static(b"abc")
            })
        );
        let ack = encode_ack(1, 2, 3);
        assert_eq!(
            Frame::decode(
                super::super::session::KIND_STREAM_ACK,
                Bytes::copy_from_slice(&ack)
            ),
            Ok(Frame::Ack {
                stream: 1,
                received: 2,
                limit: 3
            })
        );
        let mut long_ack = ack.to_vec();
        long_ack.push(0);
        assert!(Frame::decode(super::super::session::KIND_STREAM_ACK, long_ack.into()).is_err());
        let mut offset_overflow = Vec::new();
        write_data_header(&mut offset_overflow, 1, u64::MAX, false);
        offset_overflow.push(1);
        assert!(
            Frame::decode(
                super::super::session::KIND_STREAM_DATA,
                offset_overflow.into()
            )
            .is_err()
        );
    }

    #[test]
    fn segments_respect_credit_and_window_and_carry_the_fin() {
        let now = epoch();
        let mut send = SendHalf::new(&config(), 25, now);
        assert_eq!(send.write(&Bytes::from(vec![1u8; 150])), 100);
        send.finish();
        let mut segments = Vec::new();
        while let Some(segment) = send.next_segment(now) {
            segments.push(segment);
        }
        // Credit 25: 10 + 10 + 5.
        assert_eq!(
            segments.iter().map(|s| s.len).collect::<Vec<_>>(),
            vec![10, 10, 5]
        );
        assert!(send.on_ack(25, 200, now).unwrap());
        let mut rest = Vec::new();
        while let Some(segment) = send.next_segment(now) {
            rest.push(segment);
        }
        assert_eq!(rest.iter().map(|s| s.len).sum::<usize>(), 75);
        assert!(rest.last().unwrap().fin);
        assert!(!send.is_done());
        assert!(send.on_ack(101, 200, now).unwrap());
        assert!(send.is_done());
        // Acknowledging past the FIN is refused.
        assert!(send.on_ack(102, 200, now).is_err());
    }

    #[test]
    fn three_duplicate_acks_go_back_once() {
        let now = epoch();
        let mut send = SendHalf::new(&config(), 100, now);
        send.write(&Bytes::from(vec![0u8; 60]));
        while send.next_segment(now).is_some() {}
        assert_eq!(send.next_offset(), 60);
        // The first segment was lost: every later one is acknowledged at 0.
        for _ in 0..2 {
            send.on_ack(0, 100, now).unwrap();
        }
        assert_eq!(send.next_offset(), 60);
        send.on_ack(0, 100, now).unwrap();
        assert_eq!(send.next_offset(), 0);
        while send.next_segment(now).is_some() {}
        // More duplicates from the old flight do not go back again.
        send.on_ack(0, 100, now).unwrap();
        send.on_ack(0, 100, now).unwrap();
        send.on_ack(0, 100, now).unwrap();
        assert!(send.next_offset() > 0);
    }

    #[test]
    fn timeouts_resend_probe_and_finally_give_up() {
        let start = epoch();
        let mut send = SendHalf::new(&config(), 10, start);
        send.write(&Bytes::from(vec![0u8; 20]));
        while send.next_segment(start).is_some() {}
        let at = send.rto_at.unwrap();
        assert_eq!(send.on_timeout(at), Expiry::Resend);
        assert_eq!(send.next_offset(), 0);
        assert!(send.next_segment(at).is_some());
        // Acknowledged, but no credit for the rest: probe.
        send.on_ack(10, 10, at).unwrap();
        assert!(send.blocked_by_limit());
        send.arm_probe(at);
        let probe_at = send.rto_at.unwrap();
        assert_eq!(send.on_timeout(probe_at), Expiry::Probe);
        let much_later = probe_at + Duration::from_secs(31);
        assert_eq!(send.on_timeout(much_later), Expiry::Stalled);
    }

    #[test]
    fn receivers_take_only_in_order_data_and_respect_credit() {
        let mut receive = ReceiveHalf::new(20);
        let bytes = |n: usize| Bytes::from(vec![7u8; n]);
        assert_eq!(receive.on_data(10, false, bytes(5)).unwrap().data, None);
        let arrival = receive.on_data(0, false, bytes(10)).unwrap();
        assert_eq!(arrival.data.unwrap().len(), 10);
        // A resend overlapping what arrived delivers only the new part.
        let arrival = receive.on_data(5, false, bytes(10)).unwrap();
        assert_eq!(arrival.data.unwrap().len(), 5);
        assert!(receive.on_data(15, false, bytes(10)).is_err());
        let arrival = receive.on_data(15, true, bytes(5)).unwrap();
        assert!(arrival.finished);
        assert_eq!(receive.ack(), (21, 20));
        assert!(receive.consume(20));
        assert_eq!(receive.ack(), (21, 40));
    }
}
