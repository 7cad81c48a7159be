//! A membership message from a linked board (link channel 0x0400):
//! decoded, and fed to a board's membership after the sender proved
//! membership, then time runs on. Nothing may panic, and whatever decodes
//! encodes back to the same bytes.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use fogwire_cluster_proto::JoinCode;
use fogwire_cluster_proto::member::{MemberRecord, Version};
use fogwire_cluster_proto::message::Message;
use fogwire_cluster_proto::placement::Resources;
use fogwire_cluster_proto::swim::{Board, Config, Membership};
use fogwire_identity::Keypair;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::decode(data) {
        assert_eq!(Message::decode(&message.encode()), Ok(message));
    }
    let join = JoinCode::of(&Keypair::from_seed(&[1; 32]));
    let resources = Resources {
        cores: 1,
        memory_mib: 512,
        disk_mib: 1024,
    };
    let start = Instant::now();
    let board = Board {
        key: Arc::new(Keypair::from_seed(&[2; 32])),
        join: join.clone(),
        boot: 1,
        addrs: vec![],
        resources,
    };
    let mut membership = Membership::new(Config::default(), board, 7, start);
    let peer = Keypair::from_seed(&[3; 32]);
    let record = MemberRecord::sign(&peer, &join, Version::default(), &[], resources);
    let hello = Message::Hello {
        record: record.encoded,
        members: vec![],
        reply: false,
    };
    membership.link_up(peer.node_id());
    membership.receive(peer.node_id(), &hello.encode(), start);
    membership.receive(peer.node_id(), data, start);
    for step in 1..20 {
        membership.tick(start + Duration::from_millis(500 * step));
        while membership.poll_output().is_some() {}
    }
});
