//! A board's membership record, as it arrives in a Hello or in gossip:
//! checked against a cluster's join code. Nothing may panic, and a record
//! that verifies keeps exactly the bytes it came in.
#![no_main]

use fogwire_cluster_proto::JoinCode;
use fogwire_cluster_proto::member::MemberRecord;
use fogwire_identity::Keypair;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let join = JoinCode::of(&Keypair::from_seed(&[1; 32]));
    if let Ok(record) = MemberRecord::verify(data, &join) {
        assert_eq!(record.encoded, data);
        assert!(record.addrs.len() <= fogwire_cluster_proto::member::ADDRS_MAX);
    }
});
