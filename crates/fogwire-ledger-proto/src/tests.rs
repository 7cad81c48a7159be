//! The ledger under hand-written cases and 100 000 random operations,
//! invalid ones included: the supply always adds up, and a refused
//! operation changes nothing.

use proptest::prelude::*;

use super::*;
use fogwire_identity::Keypair;

fn key(n: u8) -> Keypair {
    Keypair::from_seed(&[n; 32])
}

pub(crate) fn id(n: u8) -> Id {
    Id(*key(n).node_id().as_bytes())
}

/// Minting key 0, DAO 9; a hub deposit of 10 units; short periods.
pub(crate) fn rules() -> Rules {
    Rules {
        hub_deposit: 10,
        pay_period_ms: 1000,
        suspect_ms: 5000,
        unbond_ms: 100,
        price_per_gib_forwarded: 100,
        price_per_gib_served: 100,
        ..Rules::new(id(0), id(9))
    }
}

/// Accounts 1 and 2 hold 1000 and 500; hub 5 has a registered wallet of
/// 100 (and 100 more in its account).
fn ledger() -> Ledger {
    let mut ledger = Ledger::new(&Genesis {
        rules: rules(),
        accounts: vec![(id(1), 1000), (id(2), 500), (id(5), 200)],
    })
    .unwrap();
    ledger
        .apply(
            &Verified::trusted(tx(5, 1, Op::WalletFund { amount: 100 })),
            0,
        )
        .unwrap();
    ledger
        .apply(&Verified::trusted(tx(5, 2, Op::WalletRegister)), 0)
        .unwrap();
    ledger
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
        id: Id([9; 32]),
        amount: 400,
        arbiter: id(hub),
        expires_ms: 1000,
    };
    ledger.apply(&Verified::trusted(tx(1, 1, hold)), 1).unwrap();
    assert_eq!(ledger.account(&id(1)).balance, 600);
    // Only the arbiter releases.
    let release = Op::Release {
        id: Id([9; 32]),
        payouts: vec![(id(6), 100), (id(7), 100), (id(hub), 20)],
    };
    assert_eq!(
        ledger.apply(&Verified::trusted(tx(2, 1, release.clone())), 2),
        Err(LedgerError::NotArbiter)
    );
    ledger
        .apply(&Verified::trusted(tx(hub, 3, release.clone())), 3)
        .unwrap();
    assert_eq!(ledger.account(&id(6)).balance, 100);
    // The hub's fee goes into its wallet, and 30 % of the 200 paid to
    // workers locks there until payday.
    let wallet = ledger.wallet(&id(hub)).unwrap();
    assert_eq!((wallet.balance, wallet.locked), (120, 60));
    assert_eq!(ledger.account(&id(1)).balance, 780);
    // Paid once: the escrow is closed.
    assert_eq!(
        ledger.apply(&Verified::trusted(tx(hub, 4, release)), 4),
        Err(LedgerError::NoEscrow(Id([9; 32]).short()))
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
                    id: Id([1; 32]),
                    amount: 10,
                    arbiter: id(5),
                    expires_ms: 10,
                },
            )),
            2,
        )
        .unwrap();
    let before = ledger.clone();
    let release = Op::Release {
        id: Id([1; 32]),
        payouts: vec![(id(6), 6), (id(7), 6)],
    };
    assert!(matches!(
        ledger.apply(&Verified::trusted(tx(5, 3, release)), 3),
        Err(LedgerError::Overpaid { paid: 12, held: 10 })
    ));
    assert_eq!(ledger, before);
}

/// One random operation and who sends it: anyone sends coin and deposit
/// operations; hubs (1 to 3) mostly send wallet operations and releases;
/// the DAO (9) mostly sends its own.
fn op(accounts: u8) -> impl Strategy<Value = (u8, Op)> {
    let who = 0..accounts;
    let hub = 1u8..4;
    let amount = prop_oneof![0u64..5, 0u64..2000, Just(u64::MAX)];
    let escrow = (0u8..4).prop_map(|n| Id([n; 32]));
    let coins = prop_oneof![
        (who.clone(), amount.clone()).prop_map(|(to, amount)| Op::Transfer { to: id(to), amount }),
        (who.clone(), amount.clone()).prop_map(|(to, amount)| Op::Mint {
            to: id(to),
            amount,
            reason: "reward".into()
        }),
        (escrow.clone(), amount.clone(), hub.clone(), 0u64..2000).prop_map(
            |(id_, amount, arbiter, expires_ms)| Op::Hold {
                id: id_,
                amount,
                arbiter: id(arbiter),
                expires_ms,
            }
        ),
        escrow.clone().prop_map(|id_| Op::Refund { id: id_ }),
        (hub.clone(), amount.clone()).prop_map(|(hub, amount)| Op::DepositPost {
            hub: id(hub),
            amount
        }),
        hub.clone()
            .prop_map(|hub| Op::DepositUnbond { hub: id(hub) }),
        hub.clone()
            .prop_map(|hub| Op::DepositReclaim { hub: id(hub) }),
    ];
    let hub_ops = prop_oneof![
        (
            escrow,
            proptest::collection::vec((who.clone(), amount.clone()), 0..4)
        )
            .prop_map(|(id_, payouts)| Op::Release {
                id: id_,
                payouts: payouts.into_iter().map(|(to, a)| (id(to), a)).collect()
            }),
        amount.clone().prop_map(|amount| Op::WalletFund { amount }),
        Just(Op::WalletRegister),
        (who.clone(), amount.clone()).prop_map(|(to, amount)| Op::WalletPay { to: id(to), amount }),
        Just(Op::WalletPayday),
        amount
            .clone()
            .prop_map(|amount| Op::WalletWithdraw { amount }),
        (who.clone(), amount).prop_map(|(worker, amount)| Op::DepositSlash {
            worker: id(worker),
            amount
        }),
    ];
    let dao_ops = prop_oneof![
        hub.clone().prop_map(|hub| Op::Suspect { hub: id(hub) }),
        hub.clone().prop_map(|hub| Op::Rehab { hub: id(hub) }),
        hub.clone().prop_map(|hub| Op::Ban { hub: id(hub) }),
    ];
    // Serving receipts among accounts 0..4, built once (signing is slow).
    static RECEIPTS: std::sync::OnceLock<Vec<(u8, Vec<u8>)>> = std::sync::OnceLock::new();
    let receipts = RECEIPTS.get_or_init(|| {
        let mut out = Vec::new();
        for payer in 0..4u8 {
            for payee in 0..4u8 {
                for seq in 1..4u64 {
                    let receipt = receipt::ServeReceipt {
                        server: key(payee).node_id(),
                        seq,
                        bytes: seq << 31,
                        issued_at_ms: seq,
                    }
                    .sign(&key(payer));
                    out.push((payee, receipt));
                }
            }
        }
        out
    });
    let redeem = proptest::sample::select(receipts.clone()).prop_map(|(payee, receipt)| {
        (
            payee,
            Op::Redeem {
                kind: receipt::ReceiptKind::Serving,
                receipt,
            },
        )
    });
    prop_oneof![
        1 => redeem,
        3 => (who.clone(), coins),
        3 => (prop_oneof![3 => hub, 1 => who.clone()], hub_ops),
        1 => (prop_oneof![3 => Just(9u8), 1 => who], dao_ops),
    ]
}

/// 100 runs of 1000 operations (100 000 in all), valid and invalid,
/// some with stale or future sequence numbers, from every kind of
/// operation, the DAO's (account 9) included, over time that passes pay
/// periods, suspicions and unbondings. After each: the supply adds up; a
/// refused one leaves the ledger as it was; a wrong sequence number is
/// refused and only then; a transfer is accepted exactly when the sender
/// holds the (non-zero) amount and the recipient's balance can take it,
/// and moves exactly that amount between the two balances and no other. Over the whole run every kind of operation
/// must have been accepted sometimes: a ledger that refused everything
/// would fail.
#[test]
fn the_supply_always_adds_up_and_transfers_follow_a_model() {
    use proptest::test_runner::{Config, TestRunner};
    let accepted: std::cell::RefCell<std::collections::BTreeMap<&'static str, u64>> =
        Default::default();
    let mut runner = TestRunner::new(Config::with_cases(100));
    let strategy = proptest::collection::vec((op(10), 0u8..10, 0u64..40), 1000);
    runner
        .run(&strategy, |ops| {
            let mut ledger = Ledger::new(&Genesis {
                rules: Rules {
                    suspect_ms: 2000,
                    ..rules()
                },
                accounts: vec![(id(1), 5000), (id(2), 3000), (id(3), 10), (id(9), 100)],
            })
            .unwrap();
            let mut time = 0;
            for ((from, op), skew, step) in ops {
                time += step;
                let next = ledger.account(&id(from)).sequence + 1;
                // Mostly the right sequence; sometimes a replay or a gap.
                let sequence = match skew {
                    0 => next.saturating_sub(1),
                    1 => next + 1,
                    _ => next,
                };
                let before = ledger.clone();
                let name = op.name();
                let transfer = match &op {
                    Op::Transfer { to, amount } => Some((*to, *amount)),
                    _ => None,
                };
                let result = ledger.apply(&Verified::trusted(tx(from, sequence, op)), time);
                let sequence_refused = matches!(result, Err(LedgerError::Sequence { .. }));
                prop_assert_eq!(sequence_refused, sequence != next, "{:?}", result);
                match &result {
                    Err(_) => prop_assert_eq!(&ledger, &before),
                    Ok(_) => *accepted.borrow_mut().entry(name).or_default() += 1,
                }
                if let Some((to, amount)) = transfer.filter(|_| sequence == next) {
                    let held = before.account(&id(from)).balance;
                    let room = if to == id(from) {
                        u64::MAX
                    } else {
                        u64::MAX - before.account(&to).balance
                    };
                    let fits = amount > 0 && amount <= held && amount <= room;
                    prop_assert_eq!(result.is_ok(), fits, "{:?}", result);
                    if result.is_ok() {
                        for n in 0..10 {
                            let was = before.account(&id(n)).balance;
                            let mut expected = was;
                            if id(n) == id(from) {
                                expected -= amount;
                            }
                            if id(n) == to {
                                expected += amount;
                            }
                            prop_assert_eq!(ledger.account(&id(n)).balance, expected);
                        }
                    }
                }
                prop_assert_eq!(ledger.check_supply(), Ok(()));
            }
            Ok(())
        })
        .unwrap();
    let accepted = accepted.into_inner();
    eprintln!("accepted, by kind: {accepted:?}");
    for kind in [
        "transfer",
        "mint",
        "hold",
        "release",
        "refund",
        "wallet_fund",
        "wallet_register",
        "wallet_pay",
        "wallet_payday",
        "wallet_withdraw",
        "deposit_post",
        "deposit_unbond",
        "deposit_reclaim",
        "deposit_slash",
        "suspect",
        "rehab",
        "ban",
        "redeem",
    ] {
        assert!(
            accepted.get(kind).copied().unwrap_or(0) > 0,
            "no `{kind}` was ever accepted: {accepted:?}"
        );
    }
}

/// The examples of docs/protocol/ledger.md §2, byte for byte.
#[test]
fn the_documented_encodings_are_what_the_encoder_writes() {
    let hex = |tx: &Transaction| -> String {
        tx.encode()
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let doc = |text: &str| {
        text.replace("aa×32", &"aa".repeat(32))
            .replace("bb×32", &"bb".repeat(32))
            .replace("cc×32", &"cc".repeat(32))
            .replace("11×32", &"11".repeat(32))
            .replace(' ', "")
    };
    let from = Id([0xaa; 32]);
    let transfer = Transaction {
        from,
        sequence: 7,
        op: Op::Transfer {
            to: Id([0xbb; 32]),
            amount: 1_500_000,
        },
    };
    assert_eq!(
        hex(&transfer),
        doc("93 c420 aa×32 07 92 00 92 c420 bb×32 ce0016e360")
    );
    let register = Transaction {
        from,
        sequence: 1,
        op: Op::WalletRegister,
    };
    assert_eq!(hex(&register), doc("93 c420 aa×32 01 92 06 90"));
    let hold = Transaction {
        from,
        sequence: 2,
        op: Op::Hold {
            id: Id([0x11; 32]),
            amount: 1_000_000,
            arbiter: Id([0xcc; 32]),
            expires_ms: 1_700_000_000_000,
        },
    };
    assert_eq!(
        hex(&hold),
        doc("93 c420 aa×32 02 92 02 94 c420 11×32 ce000f4240 c420 cc×32 cf0000018bcfe56800")
    );
    let text = include_str!("../../../docs/protocol/ledger.md");
    for line in [
        "93 c420 aa×32 07 92 00 92 c420 bb×32 ce0016e360",
        "93 c420 aa×32 01 92 06 90",
        "93 c420 aa×32 02 92 02 94 c420 11×32 ce000f4240 c420 cc×32 cf0000018bcfe56800",
    ] {
        assert!(text.contains(line), "the doc lost {line}");
    }
}
