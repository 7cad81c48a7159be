//! Route data packets and end-to-end session packets.
#![no_main]

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use fogwire_env::NoiseResolver;
use fogwire_identity::Keypair;
use fogwire_link_proto::LinkIdentity;
use fogwire_route_proto::router::message::DataHeader;
use fogwire_route_proto::router::session::{Hello, Initiator, SessionCipher, respond};
use fogwire_route_proto::router::{Config, Now, Router};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = DataHeader::decode(data) {
        assert_eq!(header.encode()[..], data[..7]);
    }
    let source = LinkIdentity::generate(Arc::new(Keypair::from_seed(&[1; 32]))).unwrap();
    let destination = LinkIdentity::generate(Arc::new(Keypair::from_seed(&[2; 32]))).unwrap();
    let key: [u8; 32] = destination.noise_static_key().try_into().unwrap();
    let hello = Hello {
        resume: false,
        token: [9; 16],
    };
    let (initiator, first) = Initiator::start(&source, &key, hello, NoiseResolver::os()).unwrap();
    // Message 1 as the fuzzer alters it, then a session fed its packets.
    let _ = respond(&destination, data, NoiseResolver::os());
    let response = respond(&destination, &first, NoiseResolver::os()).unwrap();
    let _ = initiator.finish(&response.reply).unwrap();
    let mut cipher = SessionCipher::new(response.keys);
    let _ = cipher.open(data);
    let mut router = Router::new(Arc::new(destination), Config::default());
    let neighbour = Keypair::from_seed(&[3; 32]).node_id();
    router.link_up(neighbour);
    let now = Now {
        instant: Instant::now(),
        unix_ms: 0,
    };
    router.handle_data(neighbour, Bytes::copy_from_slice(data), now);
    while router.poll_transmit().is_some() {}
});
