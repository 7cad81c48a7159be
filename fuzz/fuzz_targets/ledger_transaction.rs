//! Ledger transactions from the network: bytes either fail to decode (and
//! to verify) with an error, or decode to a transaction that re-encodes
//! and decodes to itself (signatures cover the bytes as sent, so a
//! non-minimal encoding is no harm: the sequence number still lets it
//! apply once); it applies to a ledger without breaking its supply.
#![no_main]

use fogwire_identity::Signature;
use fogwire_ledger_proto::{Genesis, Ledger, Op, Rules, SignedTransaction, Transaction, Verified};
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
        // The spender mints, is the DAO and has a registered hub wallet,
        // so that every kind of operation can get past its checks.
        let mut ledger = Ledger::new(&Genesis {
            rules: Rules::new(tx.from, tx.from),
            accounts: vec![(tx.from, 1 << 40)],
        })
        .expect("a ledger");
        for (sequence, op) in [(1, Op::WalletFund { amount: 1 << 30 }), (2, Op::WalletRegister)] {
            let setup = Transaction { from: tx.from, sequence, op };
            ledger.apply(&Verified::trusted(setup), 0).expect("setup");
        }
        let tx = Transaction { sequence: 3, ..tx };
        let _ = ledger.apply(&Verified::trusted(tx), 1);
        assert_eq!(ledger.check_supply(), Ok(()));
    }
});
