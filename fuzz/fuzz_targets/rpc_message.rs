//! The RPC decoders on bytes from a peer: a message either fails to
//! decode or re-encodes to bytes that decode and encode to themselves;
//! and a session fed a sequence of such messages never panics and never
//! holds more calls than its bounds.
#![no_main]

use std::time::{Duration, Instant};

use fogwire_rpc_proto::message::Message;
use fogwire_rpc_proto::session::{Config, Role, Session};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if let Ok(message) = Message::decode(input)
        && let Ok(encoded) = message.encode()
    {
        // Bytes, not values: a NaN is not equal to itself.
        let again = Message::decode(&encoded).expect("a message made here decodes");
        assert_eq!(again.encode().expect("and encodes"), encoded);
    }
    // Pieces of the input, split at 0xff bytes, as messages in a row.
    let config = Config {
        calls_max: 4,
        served_max: 4,
        deadline_max: Duration::from_secs(10),
    };
    let mut session = Session::new(Role::Acceptor, config);
    let start = Instant::now();
    for (index, piece) in input.split(|byte| *byte == 0xff).enumerate() {
        let now = start + Duration::from_millis(index as u64 * 7);
        let _ = session.receive(piece, now);
        session.handle_timeout(now);
        let (calling, serving) = session.open_calls();
        assert!(calling <= 4 && serving <= 4);
        while session.poll_transmit().is_some() {}
        while session.poll_event().is_some() {}
    }
});
