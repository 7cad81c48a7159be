//! A cluster manifest's text, as a board receives it from the cluster's
//! feed; whatever decodes is placed on a few boards.
#![no_main]

use fogwire_cluster_proto::{Manifest, Member, Resources, place};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(manifest) = Manifest::from_toml(text) else {
        return;
    };
    let members: Vec<Member> = (1..=4u8)
        .map(|seed| Member {
            id: fogwire_identity::Keypair::from_seed(&[seed; 32]).node_id(),
            resources: Resources {
                cores: 4,
                memory_mib: 4096,
                disk_mib: 65_536,
            },
        })
        .collect();
    let placement = place(&manifest.specs(), &members);
    let instances: usize = manifest.services.iter().map(|s| s.spec.count as usize).sum();
    assert_eq!(placement.assigned.len() + placement.unplaced.len(), instances);
});
