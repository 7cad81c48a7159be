//! The ledger under hand-written cases and 100 000 random operations,
//! invalid ones included: the supply always adds up, and a refused
//! operation changes nothing.

use proptest::prelude::*;

use super::*;

fn key(n: u8) -> Keypair {
    Keypair::from_seed(&[n; 32])
}

fn id(n: u8) -> [u8; 32] {
    *key(n).node_id().as_bytes()
}

fn ledger() -> Ledger {
    Ledger::new(id(0), &[(id(1), 1000), (id(2), 500)]).unwrap()
}

fn tx(from: u8, sequence: u64, op: Op) -> Transaction {
    Transaction {
        from: id(from),
        sequence,
        op,
    }
}

#[test]
fn a_signed_transfer_applies_once() {
    let mut ledger = ledger();
    let signed = tx(
        1,
        1,
        Op::Transfer {
            to: id(3),
            amount: 300,
        },
    )
    .sign(&key(1))
    .unwrap();
    let verified = signed.verify().unwrap();
    ledger.apply(&verified, 10).unwrap();
    assert_eq!(ledger.account(&id(1)).balance, 700);
    assert_eq!(ledger.account(&id(3)).balance, 300);
    // The same transaction again: a replay.
    assert_eq!(
        ledger.apply(&verified, 11),
        Err(LedgerError::Sequence {
            expected: 2,
            got: 1
        })
    );
    assert_eq!(ledger.account(&id(1)).balance, 700);
    ledger.check_supply().unwrap();
}

#[test]
fn forged_and_tampered_transactions_are_refused() {
    // Signed by another key than the spender's.
    let forged = tx(
        1,
        1,
        Op::Transfer {
            to: id(3),
            amount: 1,
        },
    )
    .sign(&key(3))
    .unwrap();
    assert_eq!(forged.verify(), Err(LedgerError::BadSignature));
    // The body changed after signing.
    let mut tampered = tx(
        1,
        1,
        Op::Transfer {
            to: id(3),
            amount: 1,
        },
    )
    .sign(&key(1))
    .unwrap();
    let last = tampered.body.len() - 1;
    tampered.body[last] ^= 1;
    assert!(tampered.verify().is_err());
    assert!(matches!(
        Transaction::decode(b"\\x93garbage"),
        Err(LedgerError::Malformed(_))
    ));
}

#[test]
fn an_escrow_pays_workers_and_returns_the_rest() {
    let mut ledger = ledger();
    let hub = 5;
    let hold = Op::Hold {
        id: [9; 32],
        amount: 400,
        arbiter: id(hub),
    };
    ledger.apply(&Verified::trusted(tx(1, 1, hold)), 1).unwrap();
    assert_eq!(ledger.account(&id(1)).balance, 600);
    // Only the arbiter releases.
    let release = Op::Release {
        id: [9; 32],
        payouts: vec![(id(6), 100), (id(7), 100), (id(hub), 20)],
    };
    assert_eq!(
        ledger.apply(&Verified::trusted(tx(2, 1, release.clone())), 2),
        Err(LedgerError::NotArbiter)
    );
    ledger
        .apply(&Verified::trusted(tx(hub, 1, release.clone())), 3)
        .unwrap();
    assert_eq!(ledger.account(&id(6)).balance, 100);
    assert_eq!(ledger.account(&id(hub)).balance, 20);
    assert_eq!(ledger.account(&id(1)).balance, 780);
    // Paid once: the escrow is closed.
    assert_eq!(
        ledger.apply(&Verified::trusted(tx(hub, 2, release)), 4),
        Err(LedgerError::NoEscrow(hex8(&[9; 32])))
    );
    ledger.check_supply().unwrap();
}

#[test]
fn only_the_minting_key_mints_and_the_supply_counts_it() {
    let mut ledger = ledger();
    let mint = |from| {
        tx(
            from,
            1,
            Op::Mint {
                to: id(4),
                amount: 50,
                reason: "relay receipts".into(),
            },
        )
    };
    assert_eq!(
        ledger.apply(&Verified::trusted(mint(1)), 1),
        Err(LedgerError::NotMinter)
    );
    ledger.apply(&Verified::trusted(mint(0)), 1).unwrap();
    assert_eq!(ledger.minted(), 50);
    ledger.check_supply().unwrap();
}

#[test]
fn overspending_changes_nothing() {
    let mut ledger = ledger();
    let before = ledger.clone();
    let err = ledger
        .apply(
            &Verified::trusted(tx(
                2,
                1,
                Op::Transfer {
                    to: id(1),
                    amount: 501,
                },
            )),
            1,
        )
        .unwrap_err();
    assert_eq!(
        err,
        LedgerError::Insufficient {
            needed: 501,
            available: 500
        }
    );
    assert_eq!(ledger, before);
    // Nor does an overpaid release, half way through its payouts.
    ledger
        .apply(
            &Verified::trusted(tx(
                1,
                1,
                Op::Hold {
                    id: [1; 32],
                    amount: 10,
                    arbiter: id(5),
                },
            )),
            2,
        )
        .unwrap();
    let before = ledger.clone();
    let release = Op::Release {
        id: [1; 32],
        payouts: vec![(id(6), 6), (id(7), 6)],
    };
    assert!(matches!(
        ledger.apply(&Verified::trusted(tx(5, 1, release)), 3),
        Err(LedgerError::Overpaid { paid: 12, held: 10 })
    ));
    assert_eq!(ledger, before);
}

fn op(accounts: u8) -> impl Strategy<Value = (u8, Op)> {
    let who = 0..accounts;
    let amount = prop_oneof![0u64..5, 0u64..2000, Just(u64::MAX)];
    let escrow = (0u8..6).prop_map(|n| [n; 32]);
    prop_oneof![
        (who.clone(), who.clone(), amount.clone())
            .prop_map(|(from, to, amount)| (from, Op::Transfer { to: id(to), amount })),
        (who.clone(), who.clone(), amount.clone()).prop_map(|(from, to, amount)| (
            from,
            Op::Mint {
                to: id(to),
                amount,
                reason: "reward".into()
            }
        )),
        (who.clone(), escrow.clone(), amount.clone(), who.clone()).prop_map(
            |(from, id_, amount, arbiter)| (
                from,
                Op::Hold {
                    id: id_,
                    amount,
                    arbiter: id(arbiter)
                }
            )
        ),
        (
            who.clone(),
            escrow.clone(),
            proptest::collection::vec((who.clone(), amount), 0..4)
        )
            .prop_map(|(from, id_, payouts)| (
                from,
                Op::Release {
                    id: id_,
                    payouts: payouts.into_iter().map(|(to, a)| (id(to), a)).collect()
                }
            )),
        (who, escrow).prop_map(|(from, id_)| (from, Op::Refund { id: id_ })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// 100 runs of 1000 operations (100 000 in all), valid and invalid,
    /// some with stale or future sequence numbers: after each, the supply
    /// adds up; a refused one leaves the ledger as it was.
    #[test]
    fn the_supply_always_adds_up(
        ops in proptest::collection::vec((op(6), 0u8..10), 1000)
    ) {
        let mut ledger = Ledger::new(id(0), &[(id(1), 5000), (id(2), 3000), (id(3), 10)]).unwrap();
        for (time, ((from, op), skew)) in ops.into_iter().enumerate() {
            let next = ledger.account(&id(from)).sequence + 1;
            // Mostly the right sequence; sometimes a replay or a gap.
            let sequence = match skew {
                0 => next.saturating_sub(1),
                1 => next + 1,
                _ => next,
            };
            let before = ledger.clone();
            let result = ledger.apply(&Verified::trusted(tx(from, sequence, op)), time as u64);
            if result.is_err() {
                prop_assert_eq!(&ledger, &before);
            }
            prop_assert_eq!(ledger.check_supply(), Ok(()));
        }
    }
}
