//! The calls on one connection (a link channel or a route stream), both
//! ways: this node calls the peer's services and serves the peer's calls.
//!
//! Sans-IO: messages and time in ([`Session::receive`],
//! [`Session::handle_timeout`]), messages and events out
//! ([`Session::poll_transmit`], [`Session::poll_event`]).
//!
//! Channels: the side that dialed the connection opens odd channels, the
//! other even ones, so both can call at once without a clash. Each side
//! opens every call on a channel higher than any it opened before; a
//! first message on a channel at or below the peer's highest is refused.
//! A call is over when the callee sends [`ERROR`] or [`CHOKE`], or the
//! caller sends [`ERROR`] (cancellation, code [`code::CANCELLED`]).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rmpv::Value;

use crate::message::{CHOKE, CHUNK, ERROR, HEADER_DEADLINE_MS, Message, MessageError};

/// Error codes carried by [`ERROR`] messages: `[code, text]`.
pub mod code {
    /// The caller gave up on the call.
    pub const CANCELLED: u64 = 1;
    /// The call's deadline passed.
    pub const DEADLINE: u64 = 2;
    /// The callee serves as many calls as it will at once.
    pub const BUSY: u64 = 3;
    /// No such service or method.
    pub const UNKNOWN: u64 = 4;
    /// The arguments are not what the method takes.
    pub const BAD_ARGS: u64 = 5;
    /// The peer broke the protocol (a reused channel, say).
    pub const PROTOCOL: u64 = 6;
    /// The service failed.
    pub const FAILED: u64 = 7;
}

/// Which end of the connection this session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opened the connection: calls on odd channels.
    Dialer,
    /// Accepted it: calls on even channels.
    Acceptor,
}

/// Bounds of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Calls this side may have open at once.
    pub calls_max: usize,
    /// Calls the peer may have open here at once; more are answered busy.
    pub served_max: usize,
    /// Longest deadline a caller may grant (longer ones are cut to it).
    pub deadline_max: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            calls_max: 1024,
            served_max: 256,
            deadline_max: Duration::from_secs(24 * 3600),
        }
    }
}

/// Why a call could not be made or a message not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    #[error("{0} calls are open on this connection already")]
    TooMany(usize),
    #[error("no open call on channel {0}")]
    NoSuchCall(u64),
    #[error("channel {0} has ended its sending")]
    Ended(u64),
    #[error("channel numbers are used up on this connection")]
    ChannelsUsedUp,
    #[error(transparent)]
    Message(#[from] MessageError),
}

/// What happened on the connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The peer calls method `method` on `channel`; answer with
    /// [`Session::send`].
    Invoked {
        channel: u64,
        method: u64,
        args: Vec<Value>,
        /// When the call must be over, if the caller said.
        deadline: Option<Instant>,
        headers: Vec<(String, Value)>,
    },
    /// The next piece of a stream on a call (a reply on this side's call,
    /// or more arguments on the peer's).
    Chunk { channel: u64, args: Vec<Value> },
    /// The stream ended normally; on this side's call, the call is over.
    Choke { channel: u64 },
    /// The call is over with an error (from the peer, or the deadline);
    /// on the peer's call, [`code::CANCELLED`] means the caller gave up.
    Error {
        channel: u64,
        code: u64,
        message: String,
    },
}

#[derive(Debug)]
struct Call {
    deadline: Option<Instant>,
    /// This side sent CHOKE or ERROR: it sends no more on the channel.
    sent_end: bool,
}

/// The state of one connection's calls.
#[derive(Debug)]
pub struct Session {
    role: Role,
    config: Config,
    /// The last channel this side opened.
    last_opened: u64,
    /// The highest channel the peer opened.
    peer_highest: u64,
    /// Calls this side made.
    calling: BTreeMap<u64, Call>,
    /// Calls the peer made, being served here.
    serving: BTreeMap<u64, Call>,
    transmit: VecDeque<Bytes>,
    events: VecDeque<Event>,
}

impl Session {
    pub fn new(role: Role, config: Config) -> Session {
        Session {
            role,
            config,
            last_opened: 0,
            peer_highest: 0,
            calling: BTreeMap::new(),
            serving: BTreeMap::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    fn is_mine(&self, channel: u64) -> bool {
        let odd = channel % 2 == 1;
        odd == (self.role == Role::Dialer)
    }

    /// Calls method `method` with `args` and `headers`, giving it `timeout`
    /// if any. Returns the call's channel.
    pub fn call(
        &mut self,
        method: u64,
        args: Vec<Value>,
        headers: Vec<(String, Value)>,
        timeout: Option<Duration>,
        now: Instant,
    ) -> Result<u64, CallError> {
        if self.calling.len() >= self.config.calls_max {
            return Err(CallError::TooMany(self.calling.len()));
        }
        let channel = match (self.last_opened, self.role) {
            (0, Role::Dialer) => 1,
            (0, Role::Acceptor) => 2,
            (last, _) => last.checked_add(2).ok_or(CallError::ChannelsUsedUp)?,
        };
        let timeout = timeout.map(|timeout| timeout.min(self.config.deadline_max));
        let mut message = Message::new(channel, method, args);
        message.headers = headers;
        if let Some(timeout) = timeout {
            message.headers.push((
                HEADER_DEADLINE_MS.into(),
                Value::from(timeout.as_millis() as u64),
            ));
        }
        self.transmit.push_back(message.encode()?);
        self.last_opened = channel;
        self.calling.insert(
            channel,
            Call {
                deadline: timeout.map(|timeout| now + timeout),
                sent_end: false,
            },
        );
        Ok(channel)
    }

    /// Sends on an open call: more arguments on this side's call, or the
    /// reply to the peer's. [`ERROR`] or [`CHOKE`] ends this side's
    /// sending; on the peer's call they end the call.
    pub fn send(&mut self, channel: u64, message: u64, args: Vec<Value>) -> Result<(), CallError> {
        let mine = self.is_mine(channel);
        let calls = if mine {
            &mut self.calling
        } else {
            &mut self.serving
        };
        let call = calls
            .get_mut(&channel)
            .ok_or(CallError::NoSuchCall(channel))?;
        if call.sent_end {
            return Err(CallError::Ended(channel));
        }
        let encoded = Message::new(channel, message, args).encode()?;
        self.transmit.push_back(encoded);
        if message == ERROR || message == CHOKE {
            call.sent_end = true;
            if !mine || message == ERROR {
                calls.remove(&channel);
            }
        }
        Ok(())
    }

    /// Replies with an error and ends the peer's call.
    pub fn fail(&mut self, channel: u64, code: u64, text: &str) -> Result<(), CallError> {
        self.send(channel, ERROR, vec![Value::from(code), Value::from(text)])
    }

    /// Gives up on this side's call: the peer is told (it stops working
    /// on it) and anything that still arrives for it is dropped.
    pub fn cancel(&mut self, channel: u64) {
        if self.calling.remove(&channel).is_some() {
            self.push(error_message(channel, code::CANCELLED, "cancelled"));
        }
    }

    fn push(&mut self, message: Message) {
        // Messages made here are small: they always encode.
        if let Ok(bytes) = message.encode() {
            self.transmit.push_back(bytes);
        }
    }

    /// Takes in one message from the peer. A malformed one is an error
    /// (the driver counts them and closes the connection past a bound);
    /// a message that breaks the rules of channels is answered with a
    /// [`code::PROTOCOL`] error on its channel.
    pub fn receive(&mut self, bytes: &[u8], now: Instant) -> Result<(), MessageError> {
        let message = Message::decode(bytes)?;
        let channel = message.channel;
        if self.is_mine(channel) {
            // A reply to this side's call; late ones (after a cancel or
            // the end) are dropped.
            if !self.calling.contains_key(&channel) {
                return Ok(());
            }
            let ends = message.message == ERROR || message.message == CHOKE;
            self.events.push_back(reply_event(message));
            if ends {
                self.calling.remove(&channel);
            }
            return Ok(());
        }
        if self.serving.contains_key(&channel) {
            match message.message {
                CHUNK => self.events.push_back(Event::Chunk {
                    channel,
                    args: message.args,
                }),
                CHOKE => self.events.push_back(Event::Choke { channel }),
                ERROR => {
                    self.serving.remove(&channel);
                    self.events.push_back(reply_event(message));
                }
                _ => {
                    self.serving.remove(&channel);
                    self.push(error_message(
                        channel,
                        code::PROTOCOL,
                        "unknown message on an open call",
                    ));
                }
            }
            return Ok(());
        }
        if channel <= self.peer_highest {
            // A channel used before: a late message after the call ended
            // (dropped), or a reuse (refused).
            if message.message != ERROR {
                self.push(error_message(
                    channel,
                    code::PROTOCOL,
                    "channel used before",
                ));
            }
            return Ok(());
        }
        self.peer_highest = channel;
        if self.serving.len() >= self.config.served_max {
            let why = format!(
                "{} calls are being served on this connection",
                self.serving.len()
            );
            self.push(error_message(channel, code::BUSY, &why));
            return Ok(());
        }
        let deadline = message
            .header(HEADER_DEADLINE_MS)
            .and_then(Value::as_u64)
            .map(|ms| now + Duration::from_millis(ms).min(self.config.deadline_max));
        self.serving.insert(
            channel,
            Call {
                deadline,
                sent_end: false,
            },
        );
        self.events.push_back(Event::Invoked {
            channel,
            method: message.message,
            args: message.args,
            deadline,
            headers: message.headers,
        });
        Ok(())
    }

    /// The next message to send to the peer.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.calling
            .values()
            .chain(self.serving.values())
            .filter_map(|call| call.deadline)
            .min()
    }

    /// Ends the calls whose deadline passed: this side's with a
    /// [`code::DEADLINE`] error event (the peer is told to stop); the
    /// peer's with a [`code::DEADLINE`] error to the caller and an event
    /// so the service stops.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired = |calls: &BTreeMap<u64, Call>, told: u64| {
            calls
                .iter()
                .filter(|(_, call)| call.deadline.is_some_and(|deadline| deadline <= now))
                .map(move |(channel, _)| (*channel, told))
                .collect::<Vec<_>>()
        };
        // The callee of this side's call is told it was cancelled; the
        // caller of a served one that its deadline passed.
        let mut ended = expired(&self.calling, code::CANCELLED);
        ended.extend(expired(&self.serving, code::DEADLINE));
        for (channel, told) in ended {
            self.calling.remove(&channel);
            self.serving.remove(&channel);
            self.push(error_message(channel, told, "deadline passed"));
            self.events.push_back(Event::Error {
                channel,
                code: code::DEADLINE,
                message: "deadline passed".into(),
            });
        }
    }

    /// Calls this side has open, and calls being served.
    pub fn open_calls(&self) -> (usize, usize) {
        (self.calling.len(), self.serving.len())
    }
}

/// An [`ERROR`] message: `[channel, 1, [code, text]]`.
fn error_message(channel: u64, code: u64, text: &str) -> Message {
    Message::new(channel, ERROR, vec![Value::from(code), Value::from(text)])
}

fn reply_event(message: Message) -> Event {
    let channel = message.channel;
    match message.message {
        CHOKE => Event::Choke { channel },
        ERROR => {
            let (code, text) = message
                .error()
                .unwrap_or((code::PROTOCOL, "malformed error".into()));
            Event::Error {
                channel,
                code,
                message: text,
            }
        }
        _ => Event::Chunk {
            channel,
            args: message.args,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fogwire_testkit::time::{Endpoint, epoch, pump};

    impl Endpoint for Session {
        fn receive(&mut self, bytes: &[u8], now: Instant) {
            Session::receive(self, bytes, now).unwrap();
        }

        fn transmit(&mut self, _now: Instant) -> Option<Vec<u8>> {
            self.poll_transmit().map(|bytes| bytes.to_vec())
        }
    }

    fn events(session: &mut Session) -> Vec<Event> {
        std::iter::from_fn(|| session.poll_event()).collect()
    }

    fn pair() -> (Session, Session) {
        (
            Session::new(Role::Dialer, Config::default()),
            Session::new(Role::Acceptor, Config::default()),
        )
    }

    #[test]
    fn a_call_streams_chunks_then_chokes() {
        let now = epoch();
        let (mut client, mut server) = pair();
        let channel = client
            .call(3, vec![Value::from("hi")], vec![], None, now)
            .unwrap();
        assert_eq!(channel, 1);
        pump(&mut client, &mut server, now);
        let invoked = events(&mut server);
        assert_eq!(
            invoked,
            vec![Event::Invoked {
                channel: 1,
                method: 3,
                args: vec![Value::from("hi")],
                deadline: None,
                headers: vec![],
            }]
        );
        server.send(1, CHUNK, vec![Value::from(1)]).unwrap();
        server.send(1, CHUNK, vec![Value::from(2)]).unwrap();
        server.send(1, CHOKE, vec![]).unwrap();
        pump(&mut client, &mut server, now);
        assert_eq!(
            events(&mut client),
            vec![
                Event::Chunk {
                    channel: 1,
                    args: vec![Value::from(1)]
                },
                Event::Chunk {
                    channel: 1,
                    args: vec![Value::from(2)]
                },
                Event::Choke { channel: 1 },
            ]
        );
        assert_eq!(client.open_calls(), (0, 0));
        assert_eq!(server.open_calls(), (0, 0));
        // The call is over: the server cannot send on it any more.
        assert_eq!(server.send(1, CHUNK, vec![]), Err(CallError::NoSuchCall(1)));
    }

    #[test]
    fn both_ends_call_at_once_on_their_own_channels() {
        let now = epoch();
        let (mut a, mut b) = pair();
        assert_eq!(a.call(0, vec![], vec![], None, now).unwrap(), 1);
        assert_eq!(b.call(0, vec![], vec![], None, now).unwrap(), 2);
        assert_eq!(a.call(0, vec![], vec![], None, now).unwrap(), 3);
        pump(&mut a, &mut b, now);
        assert_eq!(a.open_calls(), (2, 1));
        assert_eq!(b.open_calls(), (1, 2));
    }

    #[test]
    fn a_reused_channel_is_refused() {
        let now = epoch();
        let mut server = Session::new(Role::Acceptor, Config::default());
        let invoke = |channel| Message::new(channel, 0, vec![]).encode().unwrap();
        server.receive(&invoke(5), now).unwrap();
        server.fail(5, code::FAILED, "no").unwrap();
        let _ = std::iter::from_fn(|| server.poll_transmit()).count();
        let _ = events(&mut server);
        // Again on 5, and on a lower odd channel: refused, no call.
        for channel in [5, 3] {
            server.receive(&invoke(channel), now).unwrap();
            let reply = Message::decode(&server.poll_transmit().unwrap()).unwrap();
            assert_eq!(reply.error().unwrap().0, code::PROTOCOL);
            assert!(events(&mut server).is_empty());
        }
        assert_eq!(server.open_calls(), (0, 0));
    }

    #[test]
    fn calls_beyond_the_bound_are_answered_busy() {
        let now = epoch();
        let config = Config {
            served_max: 2,
            ..Config::default()
        };
        let mut server = Session::new(Role::Acceptor, config);
        for channel in [1, 3, 5] {
            server
                .receive(&Message::new(channel, 0, vec![]).encode().unwrap(), now)
                .unwrap();
        }
        assert_eq!(events(&mut server).len(), 2);
        let busy = Message::decode(&server.poll_transmit().unwrap()).unwrap();
        assert_eq!((busy.channel, busy.error().unwrap().0), (5, code::BUSY));
        // The caller's own bound.
        let mut client = Session::new(
            Role::Dialer,
            Config {
                calls_max: 1,
                ..Config::default()
            },
        );
        client.call(0, vec![], vec![], None, now).unwrap();
        assert_eq!(
            client.call(0, vec![], vec![], None, now),
            Err(CallError::TooMany(1))
        );
    }

    #[test]
    fn a_cancelled_call_stops_the_service_and_late_replies_are_dropped() {
        let now = epoch();
        let (mut client, mut server) = pair();
        let channel = client.call(0, vec![], vec![], None, now).unwrap();
        pump(&mut client, &mut server, now);
        let _ = events(&mut server);
        client.cancel(channel);
        // The server answers before it hears of the cancel.
        server.send(channel, CHUNK, vec![Value::from(9)]).unwrap();
        pump(&mut client, &mut server, now);
        assert!(events(&mut client).is_empty());
        assert_eq!(
            events(&mut server),
            vec![Event::Error {
                channel,
                code: code::CANCELLED,
                message: "cancelled".into()
            }]
        );
        assert_eq!(server.open_calls(), (0, 0));
    }

    #[test]
    fn deadlines_end_calls_on_both_sides() {
        let now = epoch();
        let (mut client, mut server) = pair();
        let channel = client
            .call(0, vec![], vec![], Some(Duration::from_millis(100)), now)
            .unwrap();
        pump(&mut client, &mut server, now);
        let Some(Event::Invoked { deadline, .. }) = server.poll_event() else {
            panic!("no call");
        };
        assert_eq!(deadline, Some(now + Duration::from_millis(100)));
        assert_eq!(server.poll_timeout(), deadline);
        let later = now + Duration::from_millis(100);
        server.handle_timeout(later);
        client.handle_timeout(later);
        assert_eq!(
            events(&mut server),
            vec![Event::Error {
                channel,
                code: code::DEADLINE,
                message: "deadline passed".into()
            }]
        );
        assert_eq!(
            events(&mut client),
            vec![Event::Error {
                channel,
                code: code::DEADLINE,
                message: "deadline passed".into()
            }]
        );
        pump(&mut client, &mut server, later);
        assert!(events(&mut client).is_empty() && events(&mut server).is_empty());
        assert_eq!((client.open_calls(), server.open_calls()), ((0, 0), (0, 0)));
    }

    #[test]
    fn the_caller_streams_arguments_before_the_reply() {
        let now = epoch();
        let (mut client, mut server) = pair();
        let channel = client.call(1, vec![], vec![], None, now).unwrap();
        client.send(channel, CHUNK, vec![Value::from("a")]).unwrap();
        client.send(channel, CHOKE, vec![]).unwrap();
        assert_eq!(
            client.send(channel, CHUNK, vec![]),
            Err(CallError::Ended(channel))
        );
        pump(&mut client, &mut server, now);
        let got = events(&mut server);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[2], Event::Choke { channel });
        // The call stays open until the server answers.
        server.send(channel, CHOKE, vec![]).unwrap();
        pump(&mut client, &mut server, now);
        assert_eq!(events(&mut client), vec![Event::Choke { channel }]);
        assert_eq!(client.open_calls(), (0, 0));
    }
}
