//! The records a node reads back from its own databases, which a damaged
//! disk or another program may have changed: a store entry, a partial
//! download's record, a peer's replication counters, and a ledger log
//! entry (whose body is then decoded as a transaction, as a replay does).
//! Each either fails to decode or decodes to a value that encodes back to
//! the same bytes; nothing panics.
#![no_main]

use fogwire_identity::Signature;
use fogwire_ledger::proto::{SignedTransaction, Transaction};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if let Some(entry) = fogwire_store::Entry::decode(input) {
        assert_eq!(entry.encode().as_slice(), input);
    }
    if let Some((size, started)) = fogwire_store::partial::decode_partial(input) {
        assert_eq!(
            &fogwire_store::partial::encode_partial(size, started)[..],
            &input[..16]
        );
    }
    if let Some(values) = fogwire_replicate::persist::decode(input) {
        assert_eq!(fogwire_replicate::persist::encode(&values).as_slice(), input);
    }
    if let Some(entry) = fogwire_ledger::log::decode_entry(7, input) {
        assert_eq!(entry.index, 7);
        let signature: [u8; 64] = entry.signed.signature.as_slice().try_into().unwrap();
        let signed = SignedTransaction {
            body: entry.signed.body.clone(),
            signature: Signature(signature),
        };
        assert_eq!(fogwire_ledger::log::encode_entry(entry.time_ms, &signed), input);
        let _ = Transaction::decode(&entry.signed.body);
    }
});
