//! What the VPN reads of an IP packet from a route or its device: either
//! nothing, or addresses of the packet's own IP version and, if a port,
//! one read from within the packet.
#![no_main]

use fogwire_exit_proto::packet::ends;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if let Some(ends) = ends(input) {
        assert_eq!(ends.source.is_ipv4(), input[0] >> 4 == 4);
        assert_eq!(ends.destination.is_ipv4(), ends.source.is_ipv4());
        let header = if ends.source.is_ipv4() {
            20
        } else {
            40
        };
        if ends.port.is_some() {
            assert!(input.len() >= header + 4);
        }
    }
});
