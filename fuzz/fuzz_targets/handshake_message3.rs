//! The listener's side after a genuine first message and its reply, fed an
//! arbitrary third message.
#![no_main]

#[path = "common.rs"]
mod common;

use fogwire_link_proto::Handshake;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (alice, bob) = (common::identity(1), common::identity(2));
    let now = common::now();
    let mut initiator = Handshake::initiator(&alice, common::config(), bob.node_id(), now).unwrap();
    let mut responder = Handshake::responder(&bob, common::config(), now).unwrap();
    let mut wire = Vec::new();
    initiator.take_transmit(&mut wire);
    responder.handle_input(&wire).unwrap();
    let mut reply = Vec::new();
    responder.take_transmit(&mut reply);
    let framed = if data.len() <= u16::MAX as usize {
        let mut framed = (data.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(data);
        framed
    } else {
        data.to_vec()
    };
    if responder.handle_input(&framed).is_ok() {
        // Only a message made with the dialer's keys can finish it.
        assert!(!responder.is_finished());
    }
});
