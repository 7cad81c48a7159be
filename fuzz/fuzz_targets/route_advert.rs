//! Link-state adverts, as received from any peer: decoding, and taking them
//! into a topology (rate limits, replays, the graph built from them).
#![no_main]

use fogwire_identity::{Domain, Keypair, SignedRecord};
use fogwire_route_proto::topology::{Config, Topology};
use fogwire_route_proto::{Advert, path};
use libfuzzer_sys::fuzz_target;

const NOW_MS: u64 = 1_800_000_000_000;

fuzz_target!(|data: &[u8]| {
    let local = Keypair::from_seed(&[0; 32]).node_id();
    let mut topology = Topology::new(local, Config::default());
    // As raw bytes from the wire…
    let _ = Advert::decode(data);
    let _ = topology.handle_advert(data, NOW_MS);
    // …and as a validly signed body, to reach the body parser.
    let signer = Keypair::from_seed(&[1; 32]);
    let record = SignedRecord::sign(&signer, Domain::ROUTE_ADVERT, data.to_vec());
    if let Ok(advert) = Advert::decode(&record.encode()) {
        let _ = advert.check_time(NOW_MS);
        let _ = topology.handle_advert(&record.encode(), advert.issued_at_ms);
        let graph = topology.graph();
        if let (Some(first), Some(last)) = (graph.ids().first(), graph.ids().last())
            && first != last
        {
            let _ = path::find(graph, &path::Query::new(*first, *last));
        }
    }
});
