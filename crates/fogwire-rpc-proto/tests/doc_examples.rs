//! `docs/protocol/rpc.md` checked against the code: its byte-by-byte
//! examples are what the code encodes and decodes, and the channel rules
//! of its §2 and §3 are what a session does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use fogwire_testkit::time::epoch;

use fogwire_rpc_proto::message::{HEADER_DEADLINE_MS, HEADER_SERVICE};
use fogwire_rpc_proto::{CHOKE, CHUNK, Config, ERROR, Event, Message, Role, Session, Value, code};

const DOC: &str = include_str!("../../../docs/protocol/rpc.md");

/// The bytes of the `n`th ```text block after `marker` in the document: on
/// each line, the leading two-digit hex tokens (the rest is commentary).
fn example(marker: &str, n: usize) -> Vec<u8> {
    let from = DOC.find(marker).expect("the example is in rpc.md");
    let block = DOC[from..]
        .split("```text\n")
        .nth(n + 1)
        .and_then(|rest| rest.split("```").next())
        .expect("the example's block");
    block
        .lines()
        .flat_map(|line| {
            line.split_whitespace()
                .take_while(|token| {
                    token.len() == 2 && token.chars().all(|c| c.is_ascii_hexdigit())
                })
                .map(|token| u8::from_str_radix(token, 16).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn resolve_echo() -> Message {
    let mut message = Message::new(1, 0, vec![Value::from("echo")]);
    message.headers = vec![(HEADER_SERVICE.into(), Value::from("locator"))];
    message
}

#[test]
fn the_documented_call_is_what_the_code_encodes() {
    let documented = example("Example, byte by byte", 0);
    assert_eq!(documented.len(), 26, "the example was read whole");
    assert_eq!(resolve_echo().encode().unwrap().as_ref(), &documented[..]);
    assert_eq!(Message::decode(&documented).unwrap(), resolve_echo());
}

#[test]
fn the_documented_call_with_a_deadline_is_what_the_code_encodes() {
    let documented = example("Example, byte by byte", 1);
    let mut expected = resolve_echo();
    expected
        .headers
        .push((HEADER_DEADLINE_MS.into(), Value::from(250u64)));
    assert_eq!(expected.encode().unwrap().as_ref(), &documented[..]);

    // A session takes it as a call with its service and deadline.
    let mut callee = Session::new(Role::Acceptor, Config::default());
    let now = epoch();
    callee.receive(&documented, now).unwrap();
    match callee.poll_event() {
        Some(Event::Invoked {
            channel: 1,
            method: 0,
            deadline: Some(deadline),
            headers,
            ..
        }) => {
            assert_eq!(deadline - now, std::time::Duration::from_millis(250));
            assert!(headers.contains(&(HEADER_SERVICE.into(), Value::from("locator"))));
        }
        other => panic!("not the documented call: {other:?}"),
    }
}

/// A callee with the documented call open on channel 1.
fn callee_serving_channel_1() -> Session {
    let mut callee = Session::new(Role::Acceptor, Config::default());
    callee
        .receive(&resolve_echo().encode().unwrap(), epoch())
        .unwrap();
    assert!(matches!(
        callee.poll_event(),
        Some(Event::Invoked { channel: 1, .. })
    ));
    callee
}

fn answers(session: &mut Session) -> Vec<Message> {
    std::iter::from_fn(|| session.poll_transmit())
        .map(|bytes| Message::decode(&bytes).unwrap())
        .collect()
}

#[test]
fn an_even_channel_from_the_dialer_is_dropped_without_a_reply() {
    let mut acceptor = Session::new(Role::Acceptor, Config::default());
    let mut message = Message::new(2, 0, vec![]);
    message.headers = vec![(HEADER_SERVICE.into(), Value::from("locator"))];
    acceptor
        .receive(&message.encode().unwrap(), epoch())
        .unwrap();
    assert_eq!(acceptor.poll_event(), None);
    assert!(answers(&mut acceptor).is_empty());
    assert_eq!(acceptor.open_calls(), (0, 0));
}

#[test]
fn a_late_chunk_on_a_finished_call_is_answered_with_error_6() {
    let mut callee = callee_serving_channel_1();
    callee.send(1, CHOKE, vec![]).unwrap();
    assert_eq!(answers(&mut callee).len(), 1);

    let late = Message::new(1, CHUNK, vec![Value::from("more")]);
    callee.receive(&late.encode().unwrap(), epoch()).unwrap();
    let sent = answers(&mut callee);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message, ERROR);
    assert_eq!(sent[0].error().unwrap().0, code::PROTOCOL);
    assert_eq!(callee.poll_event(), None);

    // A late cancel is dropped.
    let cancel = Message::new(
        1,
        ERROR,
        vec![Value::from(code::CANCELLED), Value::from("cancelled")],
    );
    callee.receive(&cancel.encode().unwrap(), epoch()).unwrap();
    assert!(answers(&mut callee).is_empty());
}

#[test]
fn a_late_reply_to_a_finished_call_is_dropped() {
    let mut caller = Session::new(Role::Dialer, Config::default());
    let channel = caller.call(0, vec![], vec![], None, epoch()).unwrap();
    answers(&mut caller);
    let choke = Message::new(channel, CHOKE, vec![]).encode().unwrap();
    caller.receive(&choke, epoch()).unwrap();
    assert_eq!(caller.poll_event(), Some(Event::Choke { channel }));
    caller.receive(&choke, epoch()).unwrap();
    assert_eq!(caller.poll_event(), None);
    assert!(answers(&mut caller).is_empty());
}

#[test]
fn a_malformed_message_gets_no_reply() {
    let mut callee = callee_serving_channel_1();
    // An array of 2: malformed.
    assert!(callee.receive(&[0x92, 0x01, 0x00], epoch()).is_err());
    assert!(answers(&mut callee).is_empty());
    assert_eq!(callee.poll_event(), None);
    assert_eq!(callee.open_calls(), (0, 1), "the open call goes on");
}
