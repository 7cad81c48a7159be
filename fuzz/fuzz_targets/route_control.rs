//! Route control messages (SETUP, CONFIRM, FAIL, TEARDOWN, KEEPALIVE):
//! the decoder, then a router handling them from a linked neighbour.
#![no_main]

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use fogwire_identity::Keypair;
use fogwire_link_proto::LinkIdentity;
use fogwire_route_proto::router::message::Control;
use fogwire_route_proto::router::{Config, Now, Router};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Control::decode(Bytes::copy_from_slice(data)) {
        assert_eq!(&message.encode()[..], data);
    }
    let identity = Arc::new(LinkIdentity::generate(Arc::new(Keypair::from_seed(&[1; 32]))).unwrap());
    let neighbour = Keypair::from_seed(&[2; 32]).node_id();
    let mut router = Router::new(identity, Config::default());
    router.link_up(neighbour);
    let now = Now {
        instant: Instant::now(),
        unix_ms: 1_800_000_000_000,
    };
    router.handle_control(neighbour, Bytes::copy_from_slice(data), now);
    while router.poll_transmit().is_some() {}
    router.handle_timeout(now);
    while router.poll_event().is_some() {}
});
