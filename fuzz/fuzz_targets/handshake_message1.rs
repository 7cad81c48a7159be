//! The listener's side of the handshake, fed an arbitrary first message (and
//! whatever follows it).
#![no_main]

#[path = "common.rs"]
mod common;

use fogwire_link_proto::Handshake;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let identity = common::identity(2);
    let mut responder = Handshake::responder(&identity, common::config(), common::now()).unwrap();
    let _ = responder.handle_input(data);
    let mut out = Vec::new();
    responder.take_transmit(&mut out);
    assert!(!responder.is_finished());
});
