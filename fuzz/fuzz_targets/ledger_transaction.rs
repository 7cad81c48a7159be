//! Ledger transactions from the network: bytes either fail to decode (and
//! to verify) with an error, or decode to a transaction that re-encodes
//! and decodes to itself (signatures cover the bytes as sent, so a
//! non-minimal encoding is no harm: the sequence number still lets it
//! apply once); it applies to a ledger without breaking its supply.
#![no_main]

use fogwire_identity::Signature;
use fogwire_ledger_proto::{Ledger, SignedTransaction, Transaction, Verified};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if input.len() < 64 {
        return;
    }
    let (signature, body) = input.split_at(64);
    let mut bytes = [0u8; 64];
    bytes.copy_from_slice(signature);
    let signed = SignedTransaction {
        body: body.to_vec(),
        signature: Signature(bytes),
    };
    let _ = signed.verify();
    if let Ok(tx) = Transaction::decode(body) {
        let again = Transaction::decode(&tx.encode().expect("a decoded transaction encodes"));
        assert_eq!(again.as_ref(), Ok(&tx));
        let mut ledger = Ledger::new(tx.from, &[(tx.from, 1_000_000)]).expect("a ledger");
        let _ = ledger.apply(&Verified::trusted(tx), 1);
        assert_eq!(ledger.check_supply(), Ok(()));
    }
});
