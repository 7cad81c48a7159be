//! Messages on the reachability channel (link channel 0x0500) from a few
//! linked peers, fed to a node's reachability in turn with connections
//! arriving and time running on. Nothing may panic, whatever decodes
//! encodes back to the same bytes, and the node's bounds hold.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fogwire_identity::Keypair;
use fogwire_relay_proto::reach::{CANDIDATES_MAX, Reach, Settings};
use fogwire_relay_proto::wire::{DialOutcome, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::decode(data) {
        assert_eq!(Message::decode(&message.encode()), Ok(message));
    }
    let peers: Vec<_> = (1..=4u8)
        .map(|seed| Keypair::from_seed(&[seed; 32]).node_id())
        .collect();
    let mut now = Instant::now();
    let mut reach = Reach::new(Settings::new(7100), 7);
    for (index, peer) in peers.iter().enumerate() {
        let remote = SocketAddr::from(([198, 51, 100, index as u8], 7100));
        reach.link_up(*peer, remote, now);
    }
    // Each record: peer (1 byte), length (1 byte), message; a zero length
    // is a connection arriving from that peer's address, then a second.
    let mut rest = data;
    while let [who, len, tail @ ..] = rest {
        let peer = peers[usize::from(*who) % peers.len()];
        let len = usize::from(*len).min(tail.len());
        let (message, after) = tail.split_at(len);
        if message.is_empty() {
            reach.accepted(SocketAddr::from(([198, 51, 100, who % 4], 40000)));
            now += Duration::from_secs(1);
            reach.handle_timeout(now);
        } else if let Ok(message) = Message::decode(message) {
            reach.handle_message(peer, message, now);
        }
        while let Some(action) = reach.poll_action() {
            let fogwire_relay_proto::Action::Probe { peer, nonce, .. } = action;
            reach.probe_done(peer, nonce, DialOutcome::Unreachable);
        }
        while reach.poll_transmit().is_some() {}
        rest = after;
    }
    let report = reach.report();
    assert!(report.addresses.len() <= CANDIDATES_MAX);
    assert!(reach.advertised().len() <= fogwire_relay_proto::reach::ADVERTISED_MAX);
});
