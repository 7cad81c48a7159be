//! Receipts redeemed in the ledger, from arbitrary bytes: reading and
//! verifying any kind fails with an error or yields a claim, and a
//! redemption of it never breaks the ledger's supply.
#![no_main]

use fogwire_ledger_proto::receipt::{self, ReceiptKind};
use fogwire_ledger_proto::{Genesis, Ledger, Op, Rules, Transaction, Verified};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    for kind in [
        ReceiptKind::Forwarding,
        ReceiptKind::Serving,
        ReceiptKind::Exit,
        ReceiptKind::Mailbox,
    ] {
        let _ = receipt::verify(kind, input);
        let Ok(claim) = receipt::read(kind, input) else {
            continue;
        };
        let mut ledger = Ledger::new(&Genesis {
            rules: Rules::new(claim.payee, claim.payee),
            accounts: vec![(claim.payer, 1 << 40)],
        })
        .expect("a ledger");
        let tx = Transaction {
            from: claim.payee,
            sequence: 1,
            op: Op::Redeem {
                kind,
                receipt: input.to_vec(),
            },
        };
        let _ = ledger.apply(&Verified::trusted(tx), 1);
        assert_eq!(ledger.check_supply(), Ok(()));
    }
});
