//! Printed node ids and signed records.
#![no_main]

use fogwire_identity::{Domain, NodeId, SignedRecord};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(id) = text.parse::<NodeId>()
    {
        assert_eq!(id.to_string(), text);
    }
    if let Ok(record) = SignedRecord::decode(data) {
        assert_eq!(record.encode(), data);
        let _ = record.verify(Domain::ROUTE_ADVERT);
    }
});
