//! The wire forms of cluster.md §3–§6, byte for byte: if one of these
//! changes, the document (and every other implementation) must too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use fogwire_cluster_proto::JoinCode;
use fogwire_cluster_proto::member::{MemberRecord, Version};
use fogwire_cluster_proto::message::{Message, Update};
use fogwire_cluster_proto::placement::Resources;
use fogwire_identity::Keypair;

fn join() -> JoinCode {
    JoinCode::of(&Keypair::from_seed(&[1; 32]))
}

#[test]
fn the_cluster_of_seed_one() {
    let join = join();
    assert_eq!(
        join.cluster.to_string(),
        "fwcluster132yw8ht5p8cetl2jmvknewjawt9xwzdlrk2pyxlnwjyqrdq0dawqmxmda3"
    );
    assert_eq!(
        join.to_string(),
        "fwjoin132yw8ht5p8cetl2jmvknewjawt9xwzdlrk2pyxlnwjyqrdq0daw82els2a4ya8sk52mj7up803t7gx3pdnqzffr3s3wzy64wznk3rzcamr0m7"
    );
    assert_eq!(hex::encode(join.secret.tag()), "bec2503a832c4ad9");
    let board = Keypair::from_seed(&[2; 32]).node_id();
    assert_eq!(
        hex::encode(join.secret.proof(&join.cluster, &board).0),
        "922252cb43c4fe5e69de22f399dd75693ae889b31095ff44c1e4bb76d774e1c7"
    );
}

#[test]
fn a_membership_record() {
    let join = join();
    let board = Keypair::from_seed(&[2; 32]);
    let record = MemberRecord::sign(
        &board,
        &join,
        Version {
            boot: 3,
            incarnation: 1,
        },
        &["10.88.0.2:7100".parse().unwrap()],
        Resources {
            cores: 4,
            memory_mib: 3906,
            disk_mib: 29_000,
        },
    );
    let body = concat!(
        "01",                                                               // format
        "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c", // cluster
        "922252cb43c4fe5e69de22f399dd75693ae889b31095ff44c1e4bb76d774e1c7", // proof
        "03",                                                               // boot
        "01",                                                               // incarnation
        "01",                                                               // 1 address
        "00",                                                               // IPv4
        "0a580002",                                                         // 10.88.0.2
        "bc37",                                                             // port 7100
        "04",                                                               // cores
        "c21e",                                                             // 3906 MiB
        "c8e201",                                                           // 29000 MiB
    );
    assert_eq!(hex::encode(&record.encoded[96..]), body);
    assert_eq!(&record.encoded[..32], board.node_id().as_bytes());
    assert_eq!(MemberRecord::verify(&record.encoded, &join), Ok(record));
}

#[test]
fn messages() {
    let hex_of = |message: Message| hex::encode(message.encode());
    assert_eq!(
        hex_of(Message::Ping {
            seq: 300,
            updates: vec![]
        }),
        "01ac0200"
    );
    assert_eq!(hex_of(Message::Nack { seq: 7 }), "0407");
    assert_eq!(
        hex_of(Message::PingReq {
            seq: 9,
            target: [0xcc; 32],
            updates: vec![]
        }),
        format!("0309{}00", "cc".repeat(32))
    );
    assert_eq!(
        hex_of(Message::Ack {
            seq: 7,
            updates: vec![Update::Suspect {
                node: [0xaa; 32],
                version: Version {
                    boot: 3,
                    incarnation: 1
                },
                by: [0xbb; 32],
            }],
        }),
        format!("02070101{}0301{}", "aa".repeat(32), "bb".repeat(32))
    );
    assert_eq!(
        hex_of(Message::Hello {
            record: vec![0xee; 3],
            members: vec![Update::Alive {
                record: vec![0xdd; 2]
            }],
            reply: true,
        }),
        "0003eeeeee010002dddd01"
    );
}
