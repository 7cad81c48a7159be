//! The exit's stream header from a client (a request) and from an exit (a
//! reply): either a clear error, or a value that takes no more bytes than
//! given and encodes back to the bytes it took (a hostname lowercased:
//! the same length, and decoding again gives the same request); and a
//! UDP datagram's association, peer and payload.
#![no_main]

use fogwire_exit_proto::wire::{Datagram, DecodeError, Destination, Reply, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    match Request::decode(input) {
        Ok((request, len)) => {
            assert!(len <= input.len());
            let again = request.encode().expect("a decoded request encodes");
            assert_eq!(again.len(), len);
            assert_eq!(Request::decode(&again), Ok((request.clone(), len)));
            if let Destination::Address(_) = request.destination {
                assert_eq!(again, input[..len]);
            }
        }
        Err(DecodeError::Incomplete(more)) => assert!(more > 0),
        Err(_) => {}
    }
    // A UDP datagram through an exit: its parts encode back to a
    // datagram that decodes to the same parts.
    if let Ok(datagram) = Datagram::decode(input) {
        let again = datagram.encode().expect("a decoded datagram encodes");
        assert_eq!(Datagram::decode(&again), Ok(datagram));
    }
    match Reply::decode(input) {
        Ok((reply, len)) => {
            assert!(len <= input.len());
            assert_eq!(reply.encode(), input[..len]);
        }
        Err(DecodeError::Incomplete(more)) => assert!(more > 0),
        Err(_) => {}
    }
});
