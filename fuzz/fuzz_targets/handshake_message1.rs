//! The listener's side of the handshake, fed an arbitrary first message (and
//! whatever follows it). The input's first byte picks whether the listener
//! is under load (asks a puzzle of 1 bit, which fuzzed solutions can meet).
#![no_main]

#[path = "common.rs"]
mod common;

use fogwire_link_proto::Handshake;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let identity = common::identity(2);
    let mut responder = Handshake::responder(&identity, common::config(), common::now()).unwrap();
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    if mode & 1 == 1 {
        responder.demand_puzzle(fogwire_link_proto::puzzle::Puzzle {
            challenge: [mode; 16],
            bits: 1,
        });
    }
    let _ = responder.handle_input(data);
    let mut out = Vec::new();
    responder.take_transmit(&mut out);
    assert!(!responder.is_finished());
});
