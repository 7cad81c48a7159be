//! One RPC message: a MessagePack array
//!
//! ```text
//! [channel, message, args]            or
//! [channel, message, args, headers]
//! ```
//!
//! `channel` (uint ≥ 1) names the call; `message` (uint) is the method's
//! index on the first message of a channel, and afterwards one of
//! [`CHUNK`], [`ERROR`], [`CHOKE`]; `args` is an array; `headers`, if
//! present, a map of string keys. Byte by byte in `docs/protocol/rpc.md`.

use bytes::Bytes;
use rmpv::Value;

/// Largest message: what one link message carries.
pub const MESSAGE_LEN_MAX: usize = 65_516;
/// Deepest nesting of arrays and maps in a message.
pub const DEPTH_MAX: usize = 32;

/// The next piece of a stream (either direction).
pub const CHUNK: u64 = 0;
/// The stream fails: `args = [code, message]`; the call is over.
pub const ERROR: u64 = 1;
/// The stream ends normally; in the callee's direction, the call is over.
pub const CHOKE: u64 = 2;

/// Header: the time the caller grants the call, in milliseconds (on the
/// first message of a channel).
pub const HEADER_DEADLINE_MS: &str = "deadline_ms";
/// Header: the name of the service called (on the first message of a
/// channel; a connection carries calls to every service of its peer).
pub const HEADER_SERVICE: &str = "service";

/// One message, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub channel: u64,
    pub message: u64,
    pub args: Vec<Value>,
    /// String keys; kept in the order they came.
    pub headers: Vec<(String, Value)>,
}

/// A message that does not parse or breaks a bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    #[error("message of {0} bytes exceeds the limit of {MESSAGE_LEN_MAX}")]
    TooLong(usize),
    #[error("not MessagePack: {0}")]
    NotMessagePack(String),
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

impl Message {
    pub fn new(channel: u64, message: u64, args: Vec<Value>) -> Message {
        Message {
            channel,
            message,
            args,
            headers: Vec::new(),
        }
    }

    /// `[code, message]` of an [`ERROR`], if this is one that parses.
    pub fn error(&self) -> Option<(u64, String)> {
        if self.message != ERROR {
            return None;
        }
        let code = self.args.first()?.as_u64()?;
        let text = self
            .args
            .get(1)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        Some((code, text))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&Value> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, MessageError> {
        if bytes.len() > MESSAGE_LEN_MAX {
            return Err(MessageError::TooLong(bytes.len()));
        }
        let mut reader = bytes;
        let value = rmpv::decode::read_value_with_max_depth(&mut reader, DEPTH_MAX)
            .map_err(|error| MessageError::NotMessagePack(error.to_string()))?;
        if !reader.is_empty() {
            return Err(MessageError::Malformed("bytes after the message"));
        }
        if !utf8_throughout(&value) {
            return Err(MessageError::Malformed("strings are UTF-8"));
        }
        let Value::Array(mut parts) = value else {
            return Err(MessageError::Malformed("a message is an array"));
        };
        if !(3..=4).contains(&parts.len()) {
            return Err(MessageError::Malformed("a message has 3 or 4 elements"));
        }
        let headers = if parts.len() == 4 {
            let Some(Value::Map(entries)) = parts.pop() else {
                return Err(MessageError::Malformed("headers are a map"));
            };
            entries
                .into_iter()
                .map(|(key, value)| match key {
                    Value::String(key) => key
                        .into_str()
                        .map(|key| (key, value))
                        .ok_or(MessageError::Malformed("header names are UTF-8")),
                    _ => Err(MessageError::Malformed("header names are strings")),
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        let Some(Value::Array(args)) = parts.pop() else {
            return Err(MessageError::Malformed("args are an array"));
        };
        let message =
            parts
                .pop()
                .and_then(|value| value.as_u64())
                .ok_or(MessageError::Malformed(
                    "the message id is an unsigned integer",
                ))?;
        let channel = parts
            .pop()
            .and_then(|value| value.as_u64())
            .filter(|channel| *channel >= 1)
            .ok_or(MessageError::Malformed(
                "the channel is an integer of at least 1",
            ))?;
        Ok(Message {
            channel,
            message,
            args,
            headers,
        })
    }

    /// The wire form; fails if it would exceed [`MESSAGE_LEN_MAX`].
    pub fn encode(&self) -> Result<Bytes, MessageError> {
        let mut parts = vec![
            Value::from(self.channel),
            Value::from(self.message),
            Value::Array(self.args.clone()),
        ];
        if !self.headers.is_empty() {
            parts.push(Value::Map(
                self.headers
                    .iter()
                    .map(|(key, value)| (Value::from(key.as_str()), value.clone()))
                    .collect(),
            ));
        }
        let mut out = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = rmpv::encode::write_value(&mut out, &Value::Array(parts));
        if out.len() > MESSAGE_LEN_MAX {
            return Err(MessageError::TooLong(out.len()));
        }
        Ok(Bytes::from(out))
    }
}

/// Whether every string in `value` is UTF-8, as MessagePack requires (a
/// string that is not would come back as binary when re-encoded).
fn utf8_throughout(value: &Value) -> bool {
    match value {
        Value::String(string) => string.is_str(),
        Value::Array(items) => items.iter().all(utf8_throughout),
        Value::Map(entries) => entries
            .iter()
            .all(|(key, value)| utf8_throughout(key) && utf8_throughout(value)),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_documented_example_is_byte_exact() {
        // [1, 0, ["echo"]]: invoke method 0 on channel 1.
        let message = Message::new(1, 0, vec![Value::from("echo")]);
        let bytes = message.encode().unwrap();
        assert_eq!(
            &bytes[..],
            &[0x93, 0x01, 0x00, 0x91, 0xa4, b'e', b'c', b'h', b'o']
        );
        assert_eq!(Message::decode(&bytes).unwrap(), message);
        // With a deadline header: [1, 0, [], {"deadline_ms": 250}].
        let mut message = Message::new(1, 0, vec![]);
        message
            .headers
            .push((HEADER_DEADLINE_MS.into(), Value::from(250u64)));
        let bytes = message.encode().unwrap();
        let mut expected = vec![0x94, 0x01, 0x00, 0x90, 0x81, 0xab];
        expected.extend_from_slice(b"deadline_ms");
        expected.extend_from_slice(&[0xcc, 0xfa]);
        assert_eq!(&bytes[..], &expected[..]);
        assert_eq!(Message::decode(&bytes).unwrap(), message);
    }

    #[test]
    fn malformed_messages_are_refused_with_a_reason() {
        let cases: Vec<Vec<u8>> = vec![
            vec![],                                               // nothing
            vec![0xc1],                                           // never-used marker
            vec![0x92, 0x01, 0x00],                               // two elements
            vec![0x93, 0x00, 0x00, 0x90],                         // channel 0
            vec![0x93, 0xff, 0x00, 0x90],                         // negative channel
            vec![0x93, 0x01, 0x00, 0x01],                         // args not an array
            vec![0x94, 0x01, 0x00, 0x90, 0x90],                   // headers not a map
            vec![0x94, 0x01, 0x00, 0x90, 0x81, 0x01, 0x01],       // header key not a string
            vec![0x93, 0x01, 0x00, 0x90, 0x00],                   // trailing byte
            vec![0x93, 0x01, 0x00, 0x91, 0xa1, 0xdb],             // a string not UTF-8
            vec![0x93, 0x01, 0x00, 0xdd, 0xff, 0xff, 0xff, 0xff], // 4G-element array, absent
        ];
        for bytes in cases {
            assert!(Message::decode(&bytes).is_err(), "{bytes:02x?}");
        }
        // Deeper than the bound.
        let mut deep = vec![0x93, 0x01, 0x00];
        deep.extend(std::iter::repeat_n(0x91, 100));
        deep.push(0x90);
        assert!(Message::decode(&deep).is_err());
        // Longer than the bound.
        let long = Message::new(1, 0, vec![Value::Binary(vec![0; MESSAGE_LEN_MAX])]);
        assert!(matches!(long.encode(), Err(MessageError::TooLong(_))));
        assert!(matches!(
            Message::decode(&vec![0; MESSAGE_LEN_MAX + 1]),
            Err(MessageError::TooLong(_))
        ));
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            ".{0,20}".prop_map(|s: String| Value::from(s)),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Binary),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec((".{0,8}".prop_map(Value::from), inner), 0..4)
                    .prop_map(Value::Map),
            ]
        })
    }

    proptest! {
        #[test]
        fn messages_round_trip(
            channel in 1u64..,
            message in any::<u64>(),
            args in proptest::collection::vec(value(), 0..5),
            headers in proptest::collection::vec(("[a-z_]{1,12}", value()), 0..3),
        ) {
            let message = Message { channel, message, args, headers };
            let bytes = message.encode().unwrap();
            prop_assert_eq!(Message::decode(&bytes).unwrap(), message);
        }
    }
}
