//! An established link fed arbitrary bytes from its peer.
#![no_main]

#[path = "common.rs"]
mod common;

use fogwire_link_proto::{Handshake, Link, handshake_in_memory};
use libfuzzer_sys::fuzz_target;

fn established() -> Link {
    let (alice, bob) = (common::identity(1), common::identity(2));
    let now = common::now();
    let initiator = Handshake::initiator(&alice, common::config(), bob.node_id(), now).unwrap();
    let responder = Handshake::responder(&bob, common::config(), now).unwrap();
    let (_, link) = handshake_in_memory(initiator, responder, now).unwrap();
    link
}

fuzz_target!(|data: &[u8]| {
    let mut link = established();
    let now = common::now();
    link.handle_input(now, data);
    while link.poll_event().is_some() {}
    let mut out = vec![0u8; 4 * 65_537];
    let _ = link.poll_transmit(now, &mut out);
});
