//! Bytes read from a `punch` route stream (relay.md §3): a frame at a
//! time, as the node reads them. Nothing may panic, whatever decodes
//! encodes back to the same bytes, and no message names more addresses
//! than the bound.
#![no_main]

use fogwire_relay_proto::punch::{ADDRESSES_MAX, PunchMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((message, used))) = PunchMessage::decode_framed(rest) {
        let (PunchMessage::Punch { addresses, .. } | PunchMessage::Answer { addresses, .. }) =
            &message;
        assert!(addresses.len() <= ADDRESSES_MAX);
        assert_eq!(message.encode(), &rest[..used]);
        rest = &rest[used..];
    }
});
