//! Relay receipts: the signed-record decoder, and opening a sealed one.
#![no_main]

use fogwire_route_proto::router::receipt::{Receipt, open};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(receipt) = Receipt::decode(data) {
        // Only a correctly signed receipt decodes; it must say who signed.
        assert_eq!(&data[..32], receipt.source.as_bytes());
    }
    let _ = open(&[7; 32], 1, data);
});
