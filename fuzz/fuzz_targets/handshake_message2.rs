//! The dialer's side of the handshake, after its first message, fed an
//! arbitrary second message (or RETRY, whose puzzle it then solves and
//! answers if it is small). The input's first byte picks whether it is
//! prefixed with a genuine record length.
#![no_main]

#[path = "common.rs"]
mod common;

use fogwire_link_proto::Handshake;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let identity = common::identity(1);
    let expected = common::identity(2).node_id();
    let mut initiator =
        Handshake::initiator(&identity, common::config(), expected, common::now()).unwrap();
    let mut first = Vec::new();
    initiator.take_transmit(&mut first);
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let input = if mode & 1 == 0 && body.len() <= u16::MAX as usize {
        let mut framed = (body.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(body);
        framed
    } else {
        body.to_vec()
    };
    let _ = initiator.handle_input(&input);
    if let Some(puzzle) = initiator.puzzle().filter(|puzzle| puzzle.bits <= 8) {
        let nonce = puzzle.solve().unwrap();
        let resolver = fogwire_env::NoiseResolver::os();
        let _ = initiator.answer_puzzle(nonce, resolver);
    }
    assert!(!initiator.is_finished());
});
