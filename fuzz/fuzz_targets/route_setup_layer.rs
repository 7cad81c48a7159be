//! A setup onion layer addressed to this node, with arbitrary plaintext
//! (so the layer parser, not only the decryption, is reached), and an
//! arbitrary onion that is not.
#![no_main]

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use fogwire_identity::Keypair;
use fogwire_link_proto::LinkIdentity;
use fogwire_route_proto::router::message::Control;
use fogwire_route_proto::router::{Config, Now, Router, onion};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let identity = Arc::new(LinkIdentity::generate(Arc::new(Keypair::from_seed(&[1; 32]))).unwrap());
    let _ = onion::peel(identity.noise_static_private_key(), data);
    // Seal the fuzzer's bytes to this node, as a well-formed layer would be.
    let params: snow::params::NoiseParams = "Noise_N_25519_ChaChaPoly_SHA256".parse().unwrap();
    let mut noise = snow::Builder::new(params)
        .remote_public_key(identity.noise_static_key())
        .unwrap()
        .prologue(b"fogwire-route-setup")
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut sealed = vec![0u8; data.len() + 48];
    let Ok(len) = noise.write_message(data, &mut sealed) else {
        return;
    };
    sealed.truncate(len);
    let _ = onion::peel(identity.noise_static_private_key(), &sealed);
    let neighbour = Keypair::from_seed(&[2; 32]).node_id();
    let mut router = Router::new(identity, Config::default());
    router.link_up(neighbour);
    let now = Now {
        instant: Instant::now(),
        unix_ms: u64::from_be_bytes(data.get(2..10).and_then(|b| b.try_into().ok()).unwrap_or([0; 8])),
    };
    let setup = Control::Setup {
        prev_label: 7,
        onion: Bytes::from(sealed),
    };
    router.handle_control(neighbour, setup.encode(), now);
    while router.poll_transmit().is_some() {}
    while router.poll_event().is_some() {}
});
