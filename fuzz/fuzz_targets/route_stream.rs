//! Stream packets inside a real end-to-end session: a destination router
//! accepts a route from this target, which then seals the fuzzer's bytes
//! as stream frames (DATA, ACK, RESET) with the session's key, so the
//! stream state machines, not only the decryption, see them.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fogwire_env::NoiseResolver;
use fogwire_identity::Keypair;
use fogwire_link_proto::LinkIdentity;
use fogwire_route_proto::router::message::{Control, DATA_KIND_SESSION, DataHeader};
use fogwire_route_proto::router::session::{Hello, Initiator, SessionCipher};
use fogwire_route_proto::router::stream::Frame;
use fogwire_route_proto::router::{Config, Now, Router, Transmit, onion};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for kind in [0x10, 0x11, 0x12] {
        let _ = Frame::decode(kind, Bytes::copy_from_slice(data));
    }
    let source = LinkIdentity::generate(Arc::new(Keypair::from_seed(&[1; 32]))).unwrap();
    let destination = Arc::new(LinkIdentity::generate(Arc::new(Keypair::from_seed(&[2; 32]))).unwrap());
    let key: [u8; 32] = destination.noise_static_key().try_into().unwrap();
    let (initiator, first) = Initiator::start(&source, &key, Hello { resume: false, token: [3; 16] }, NoiseResolver::os()).unwrap();
    let now = Now { instant: Instant::now(), unix_ms: 1_800_000_000_000 };
    let onion = onion::build(&[(destination.node_id(), key)], &[(now.unix_ms, [4; 32], [5; 16])], &first, &mut fogwire_env::os_random()).unwrap();
    let mut router = Router::new(destination, Config::default());
    let neighbour = source.node_id();
    router.link_up(neighbour);
    router.handle_control(neighbour, Control::Setup { prev_label: 7, onion: Bytes::from(onion) }.encode(), now);
    let Some(Transmit::Control { message, .. }) = router.poll_transmit() else { panic!("no confirm") };
    let Ok(Control::Confirm { from_label, blob, .. }) = Control::decode(message) else { panic!("not a confirm") };
    let mut cipher = SessionCipher::new(initiator.finish(&blob).unwrap());
    // Each chunk: kind selector byte, then a frame body.
    for chunk in data.split(|&b| b == 0xff) {
        let Some((&selector, body)) = chunk.split_first() else { continue };
        let kind = 0x10 + selector % 3;
        let packet = cipher.seal(kind, body).unwrap();
        let mut wire = DataHeader { label: from_label, kind: DATA_KIND_SESSION, len: packet.len() as u16 }.encode().to_vec();
        wire.extend_from_slice(&packet);
        router.handle_data(neighbour, Bytes::from(wire), now);
        while router.poll_transmit().is_some() {}
        while router.poll_event().is_some() {}
    }
    let later = Now { instant: now.instant + Duration::from_secs(60), unix_ms: now.unix_ms + 60_000 };
    router.handle_timeout(later);
    while router.poll_transmit().is_some() {}
    while router.poll_event().is_some() {}
});
