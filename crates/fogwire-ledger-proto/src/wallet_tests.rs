//! The hub wallet's life cycle, exactly as the seeds define it: every
//! transition, every forbidden call, and each time boundary to the
//! millisecond (the original contract shipped with its time check
//! inverted). Also workers' deposits and escrows' expiry.

use super::tests::{id, rules};
use super::*;

const HUB: u8 = 5;
const DAO: u8 = 9;
const WORKER: u8 = 6;
const OTHER: u8 = 7;

/// A ledger and each account's next sequence number, so that a test
/// reads as the calls it makes.
struct World {
    ledger: Ledger,
}

impl World {
    fn new() -> World {
        World {
            ledger: Ledger::new(&Genesis {
                rules: rules(),
                accounts: vec![(id(HUB), 10_000), (id(WORKER), 1000), (id(1), 1000)],
            })
            .unwrap(),
        }
    }

    /// `from` sends `op` at `time_ms`; a refusal must change nothing.
    fn call(&mut self, from: u8, op: Op, time_ms: u64) -> Result<(), LedgerError> {
        let sequence = self.ledger.account(&id(from)).sequence + 1;
        let before = self.ledger.clone();
        let result = self
            .ledger
            .apply(
                &Verified::trusted(Transaction {
                    from: id(from),
                    sequence,
                    op,
                }),
                time_ms,
            )
            .map(|_| ());
        if result.is_err() {
            assert_eq!(self.ledger, before, "a refused call changed the ledger");
        }
        self.ledger.check_supply().unwrap();
        result
    }

    fn wallet(&self) -> HubWallet {
        self.ledger.wallet(&id(HUB)).unwrap()
    }

    fn state(&self) -> WalletState {
        self.wallet().state
    }

    fn balance(&self, n: u8) -> Amount {
        self.ledger.account(&id(n)).balance
    }

    /// A hub that funded 1000 and registered at `time_ms`.
    fn registered(time_ms: u64) -> World {
        let mut world = World::new();
        world
            .call(HUB, Op::WalletFund { amount: 1000 }, time_ms)
            .unwrap();
        world.call(HUB, Op::WalletRegister, time_ms).unwrap();
        world
    }
}

fn wrong_state(state: WalletState) -> impl Fn(Result<(), LedgerError>) {
    move |result| match result {
        Err(LedgerError::WalletState { state: got, .. }) => assert_eq!(got, state),
        other => panic!("expected a refusal in state {state}, got {other:?}"),
    }
}

fn pay(amount: Amount) -> Op {
    Op::WalletPay {
        to: id(WORKER),
        amount,
    }
}

#[test]
fn funding_creates_the_wallet_and_only_registering_lets_it_pay() {
    let mut w = World::new();
    assert_eq!(
        w.call(HUB, Op::WalletRegister, 0),
        Err(LedgerError::NoWallet(id(HUB).short()))
    );
    w.call(HUB, Op::WalletFund { amount: 5 }, 0).unwrap();
    assert_eq!(w.state(), WalletState::Created);
    // Created: no payouts, no payday, no withdrawal, no suspicion.
    wrong_state(WalletState::Created)(w.call(HUB, pay(1), 0));
    wrong_state(WalletState::Created)(w.call(HUB, Op::WalletPayday, 0));
    wrong_state(WalletState::Created)(w.call(HUB, Op::WalletWithdraw { amount: 1 }, 0));
    wrong_state(WalletState::Created)(w.call(DAO, Op::Suspect { hub: id(HUB) }, 0));
    // Registering freezes the fixed deposit (10 here): 5 is not enough,
    // so a hub cannot register with dust and top up later.
    assert_eq!(
        w.call(HUB, Op::WalletRegister, 0),
        Err(LedgerError::Insufficient {
            needed: 10,
            available: 5
        })
    );
    w.call(HUB, Op::WalletFund { amount: 995 }, 0).unwrap();
    w.call(HUB, Op::WalletRegister, 7).unwrap();
    let wallet = w.wallet();
    assert_eq!(wallet.state, WalletState::Registered);
    assert_eq!(
        (wallet.balance, wallet.frozen, wallet.locked),
        (1000, 10, 0)
    );
    assert_eq!(wallet.registered_ms, 7);
    wrong_state(WalletState::Registered)(w.call(HUB, Op::WalletRegister, 8));
    wrong_state(WalletState::Registered)(w.call(HUB, Op::WalletWithdraw { amount: 1 }, 8));
}

#[test]
fn each_payout_locks_thirty_percent_and_may_not_touch_locked_funds() {
    let mut w = World::registered(0);
    w.call(HUB, pay(100), 1).unwrap();
    assert_eq!(w.balance(WORKER), 1100);
    let wallet = w.wallet();
    assert_eq!((wallet.balance, wallet.locked), (900, 30));
    // Unlocked: 900 − 10 frozen − 30 locked = 860. A payout of x needs
    // x + ⌈0.3x⌉: 661 needs 661 + 199 = 860 exactly; 662 needs 861.
    assert_eq!(
        w.call(HUB, pay(662), 2),
        Err(LedgerError::Locked {
            needed: 861,
            unlocked: 860
        })
    );
    w.call(HUB, pay(661), 2).unwrap();
    let wallet = w.wallet();
    assert_eq!(
        (wallet.balance, wallet.locked, wallet.unlocked()),
        (239, 229, 0)
    );
    // Dust cannot dodge the lock: a payout of 1 locks 1.
    assert_eq!(
        w.call(HUB, pay(1), 3),
        Err(LedgerError::Locked {
            needed: 2,
            unlocked: 0
        })
    );
}

#[test]
fn payday_waits_for_the_end_of_the_pay_period_to_the_millisecond() {
    let mut w = World::registered(500);
    w.call(HUB, pay(200), 600).unwrap();
    assert_eq!(w.wallet().locked, 60);
    // The period is 1000 ms from registering at 500: 1499 is too early.
    assert_eq!(
        w.call(HUB, Op::WalletPayday, 1499),
        Err(LedgerError::TooEarly {
            at_ms: 1500,
            now_ms: 1499
        })
    );
    // Another key's payday is its own wallet's, which it has none of.
    assert!(w.call(OTHER, Op::WalletPayday, 1500).is_err());
    let dao_before = w.balance(DAO);
    w.call(HUB, Op::WalletPayday, 1500).unwrap();
    // 0.5 % of the 60 locked, rounded down, is 0; see the next test for
    // a fee that is not.
    assert_eq!(w.balance(DAO), dao_before);
    let wallet = w.wallet();
    assert_eq!(wallet.state, WalletState::Idle);
    assert_eq!((wallet.balance, wallet.frozen, wallet.locked), (800, 0, 0));
    // Idle: no payouts, no payday, no suspicion; withdraw or register.
    wrong_state(WalletState::Idle)(w.call(HUB, pay(1), 1501));
    wrong_state(WalletState::Idle)(w.call(HUB, Op::WalletPayday, 1501));
    wrong_state(WalletState::Idle)(w.call(DAO, Op::Suspect { hub: id(HUB) }, 1501));
    let account = w.balance(HUB);
    w.call(HUB, Op::WalletWithdraw { amount: 300 }, 1502)
        .unwrap();
    assert_eq!(w.balance(HUB), account + 300);
    assert_eq!(
        w.call(HUB, Op::WalletWithdraw { amount: 501 }, 1502),
        Err(LedgerError::Insufficient {
            needed: 501,
            available: 500
        })
    );
    // Registering again starts a new period from now.
    w.call(HUB, Op::WalletRegister, 2000).unwrap();
    assert_eq!(w.wallet().registered_ms, 2000);
    assert!(matches!(
        w.call(HUB, Op::WalletPayday, 2999),
        Err(LedgerError::TooEarly { .. })
    ));
    w.call(HUB, Op::WalletPayday, 3000).unwrap();
}

#[test]
fn payday_sends_half_a_percent_of_the_locked_funds_to_the_dao() {
    let mut w = World::new();
    w.call(HUB, Op::WalletFund { amount: 10_000 }, 0).unwrap();
    w.call(HUB, Op::WalletRegister, 0).unwrap();
    w.call(HUB, pay(4000), 1).unwrap();
    assert_eq!(w.wallet().locked, 1200);
    w.call(HUB, Op::WalletPayday, 1000).unwrap();
    // 0.5 % of 1200 = 6.
    assert_eq!(w.balance(DAO), 6);
    assert_eq!(w.wallet().balance, 10_000 - 4000 - 6);
}

#[test]
fn only_the_dao_suspects_and_a_suspected_wallet_is_frozen_whole() {
    let mut w = World::registered(0);
    w.call(HUB, pay(100), 1).unwrap();
    assert_eq!(
        w.call(OTHER, Op::Suspect { hub: id(HUB) }, 2),
        Err(LedgerError::NotDao)
    );
    assert_eq!(
        w.call(HUB, Op::Suspect { hub: id(HUB) }, 2),
        Err(LedgerError::NotDao)
    );
    w.call(DAO, Op::Suspect { hub: id(HUB) }, 2).unwrap();
    let wallet = w.wallet();
    assert_eq!(wallet.state, WalletState::Suspected);
    assert_eq!((wallet.suspected_ms, wallet.unlocked()), (2, 0));
    // The owner can do nothing with it now.
    let suspected = wrong_state(WalletState::Suspected);
    suspected(w.call(HUB, pay(1), 3));
    suspected(w.call(HUB, Op::WalletPayday, 5000));
    suspected(w.call(HUB, Op::WalletWithdraw { amount: 1 }, 3));
    suspected(w.call(HUB, Op::WalletRegister, 3));
    suspected(w.call(HUB, Op::WalletFund { amount: 1 }, 3));
    suspected(w.call(DAO, Op::Suspect { hub: id(HUB) }, 3));
    // Nor may it take buyers' money.
    suspected(w.call(
        1,
        Op::Hold {
            id: Id([1; 32]),
            amount: 1,
            arbiter: id(HUB),
            expires_ms: 10,
        },
        3,
    ));
    // Only the DAO rehabilitates, at any time: the wallet unlocks → Idle.
    assert_eq!(
        w.call(HUB, Op::Rehab { hub: id(HUB) }, 3),
        Err(LedgerError::NotDao)
    );
    w.call(DAO, Op::Rehab { hub: id(HUB) }, 3).unwrap();
    let wallet = w.wallet();
    assert_eq!(wallet.state, WalletState::Idle);
    assert_eq!(
        (wallet.frozen, wallet.locked, wallet.unlocked()),
        (0, 0, 900)
    );
    wrong_state(WalletState::Idle)(w.call(DAO, Op::Rehab { hub: id(HUB) }, 4));
    wrong_state(WalletState::Idle)(w.call(DAO, Op::Ban { hub: id(HUB) }, 1_000_000));
    w.call(HUB, Op::WalletWithdraw { amount: 900 }, 4).unwrap();
}

#[test]
fn a_ban_waits_the_whole_suspicion_then_seizes_everything_and_blocks_the_hub() {
    let mut w = World::registered(0);
    // Rehab and ban need a suspected wallet.
    wrong_state(WalletState::Registered)(w.call(DAO, Op::Rehab { hub: id(HUB) }, 1));
    wrong_state(WalletState::Registered)(w.call(DAO, Op::Ban { hub: id(HUB) }, 1));
    w.call(DAO, Op::Suspect { hub: id(HUB) }, 100).unwrap();
    // Suspicion lasts 5000 ms here: a ban at 5099 is too early.
    assert_eq!(
        w.call(DAO, Op::Ban { hub: id(HUB) }, 5099),
        Err(LedgerError::TooEarly {
            at_ms: 5100,
            now_ms: 5099
        })
    );
    assert_eq!(
        w.call(OTHER, Op::Ban { hub: id(HUB) }, 5100),
        Err(LedgerError::NotDao)
    );
    w.call(DAO, Op::Ban { hub: id(HUB) }, 5100).unwrap();
    assert_eq!(w.balance(DAO), 1000);
    let wallet = w.wallet();
    assert_eq!(wallet.state, WalletState::Punished);
    assert_eq!(wallet.balance, 0);
    // Punished for good: every call on the wallet is blocked.
    let blocked = Err(LedgerError::Blocked(id(HUB).short()));
    assert_eq!(w.call(HUB, Op::WalletFund { amount: 1 }, 5200), blocked);
    assert_eq!(w.call(HUB, Op::WalletRegister, 5200), blocked);
    assert_eq!(w.call(HUB, pay(1), 5200), blocked);
    assert_eq!(w.call(HUB, Op::WalletPayday, 5200), blocked);
    assert_eq!(w.call(HUB, Op::WalletWithdraw { amount: 1 }, 5200), blocked);
    assert_eq!(w.call(DAO, Op::Rehab { hub: id(HUB) }, 5200), blocked);
    assert_eq!(w.call(DAO, Op::Suspect { hub: id(HUB) }, 5200), blocked);
    assert_eq!(
        w.call(
            1,
            Op::Hold {
                id: Id([2; 32]),
                amount: 1,
                arbiter: id(HUB),
                expires_ms: 0,
            },
            5200
        ),
        blocked
    );
}

#[test]
fn a_time_earlier_than_the_logs_last_counts_as_the_last() {
    // A payday stamped before the log's time cannot go back in time to
    // dodge (or meet) the period.
    let mut w = World::registered(0);
    w.call(
        1,
        Op::Transfer {
            to: id(2),
            amount: 1,
        },
        1000,
    )
    .unwrap();
    w.call(HUB, Op::WalletPayday, 10).unwrap();
    assert_eq!(w.ledger.time_ms(), 1000);
}

#[test]
fn a_registered_hub_slashes_a_bonded_worker_and_unbonding_takes_its_time() {
    let mut w = World::new();
    let post = |amount| Op::DepositPost {
        hub: id(HUB),
        amount,
    };
    let slash = |amount| Op::DepositSlash {
        worker: id(WORKER),
        amount,
    };
    w.call(WORKER, post(300), 0).unwrap();
    assert_eq!(w.balance(WORKER), 700);
    // An unregistered hub may not slash.
    assert_eq!(
        w.call(HUB, slash(100), 1),
        Err(LedgerError::NoWallet(id(HUB).short()))
    );
    w.call(HUB, Op::WalletFund { amount: 10 }, 1).unwrap();
    w.call(HUB, Op::WalletRegister, 1).unwrap();
    // Another hub has no deposit of this worker to take.
    assert!(w.call(OTHER, slash(1), 1).is_err());
    w.call(HUB, slash(100), 2).unwrap();
    assert_eq!(w.ledger.deposit(&id(WORKER), &id(HUB)).unwrap().amount, 200);
    // The slashed coins go to the DAO, not the hub.
    assert_eq!(w.balance(DAO), 100);
    // Reclaiming needs a request first, then the unbonding time (100 ms).
    assert_eq!(
        w.call(WORKER, Op::DepositReclaim { hub: id(HUB) }, 3),
        Err(LedgerError::NotUnbonding)
    );
    w.call(WORKER, Op::DepositUnbond { hub: id(HUB) }, 10)
        .unwrap();
    // Still slashable while unbonding.
    w.call(HUB, slash(50), 50).unwrap();
    assert_eq!(
        w.call(WORKER, Op::DepositReclaim { hub: id(HUB) }, 109),
        Err(LedgerError::TooEarly {
            at_ms: 110,
            now_ms: 109
        })
    );
    w.call(WORKER, Op::DepositReclaim { hub: id(HUB) }, 110)
        .unwrap();
    assert_eq!(w.balance(WORKER), 850);
    assert_eq!(w.ledger.deposit(&id(WORKER), &id(HUB)), None);
    // Slashing more than the deposit takes all of it and no more.
    w.call(WORKER, post(20), 111).unwrap();
    w.call(HUB, slash(1000), 112).unwrap();
    assert_eq!(w.balance(DAO), 170);
    assert_eq!(w.ledger.deposit(&id(WORKER), &id(HUB)), None);
}

#[test]
fn a_buyer_takes_an_escrow_back_only_once_it_expires() {
    let mut w = World::registered(0);
    let escrow = Id([3; 32]);
    // Only a registered hub may hold buyers' money.
    assert_eq!(
        w.call(
            1,
            Op::Hold {
                id: escrow,
                amount: 100,
                arbiter: id(OTHER),
                expires_ms: 500,
            },
            1
        ),
        Err(LedgerError::NoWallet(id(OTHER).short()))
    );
    w.call(
        1,
        Op::Hold {
            id: escrow,
            amount: 100,
            arbiter: id(HUB),
            expires_ms: 500,
        },
        1,
    )
    .unwrap();
    assert_eq!(w.ledger.escrows_of(&id(HUB)).len(), 1);
    assert_eq!(
        w.call(1, Op::Refund { id: escrow }, 499),
        Err(LedgerError::TooEarly {
            at_ms: 500,
            now_ms: 499
        })
    );
    assert_eq!(
        w.call(OTHER, Op::Refund { id: escrow }, 499),
        Err(LedgerError::NotArbiter)
    );
    w.call(1, Op::Refund { id: escrow }, 500).unwrap();
    assert_eq!(w.balance(1), 1000);
    // The arbiter may refund at any time.
    w.call(
        1,
        Op::Hold {
            id: escrow,
            amount: 100,
            arbiter: id(HUB),
            expires_ms: 10_000,
        },
        501,
    )
    .unwrap();
    w.call(HUB, Op::Refund { id: escrow }, 502).unwrap();
    assert_eq!(w.balance(1), 1000);
}

#[test]
fn a_release_is_refused_when_the_hub_cannot_lock_its_share() {
    let mut w = World::new();
    w.call(HUB, Op::WalletFund { amount: 10 }, 0).unwrap();
    w.call(HUB, Op::WalletRegister, 0).unwrap();
    let escrow = Id([4; 32]);
    w.call(
        1,
        Op::Hold {
            id: escrow,
            amount: 1000,
            arbiter: id(HUB),
            expires_ms: 0,
        },
        1,
    )
    .unwrap();
    // 900 to a worker locks 270; the wallet has nothing unlocked but the
    // 100 fee.
    let release = Op::Release {
        id: escrow,
        payouts: vec![(id(WORKER), 900), (id(HUB), 100)],
    };
    assert_eq!(
        w.call(HUB, release, 2),
        Err(LedgerError::Locked {
            needed: 270,
            unlocked: 100
        })
    );
    // With enough of its own coins in the wallet, it goes through.
    w.call(HUB, Op::WalletFund { amount: 170 }, 3).unwrap();
    w.call(
        HUB,
        Op::Release {
            id: escrow,
            payouts: vec![(id(WORKER), 900), (id(HUB), 100)],
        },
        4,
    )
    .unwrap();
    assert_eq!(w.balance(WORKER), 1900);
    assert_eq!(w.wallet().locked, 270);
}

mod receipts {
    use super::*;
    use crate::receipt::{self, ExitReceipt, ReceiptKind, ServeReceipt};
    use fogwire_identity::Keypair;
    use fogwire_route_proto::router::Counters;
    use fogwire_route_proto::router::receipt::Receipt;

    const GIB: u64 = 1 << 30;

    fn relay_receipt(source: u8, relay: u8, tag: u8, seq: u64, bytes: u64) -> Vec<u8> {
        Receipt {
            source: Keypair::from_seed(&[source; 32]).node_id(),
            relay: Keypair::from_seed(&[relay; 32]).node_id(),
            route_tag: [tag; 16],
            seq,
            issued_at_ms: seq,
            counters: Counters {
                bytes_forward: bytes / 2,
                bytes_backward: bytes - bytes / 2,
                packets_forward: 1,
                packets_backward: 1,
            },
        }
        .sign(&Keypair::from_seed(&[source; 32]))
    }

    fn redeem(kind: ReceiptKind, receipt: Vec<u8>) -> Op {
        Op::Redeem { kind, receipt }
    }

    #[test]
    fn a_relay_is_paid_once_for_each_byte_its_receipts_count() {
        let mut w = World::new();
        let price = rules().price_per_gib_forwarded;
        // Source 1 routed 2 GiB through relay 6.
        let first = relay_receipt(1, WORKER, 3, 1, 2 * GIB);
        let signed = Transaction {
            from: id(WORKER),
            sequence: 1,
            op: redeem(ReceiptKind::Forwarding, first.clone()),
        }
        .sign(&Keypair::from_seed(&[WORKER; 32]))
        .unwrap();
        // The receipt's signature is checked with the transaction's.
        signed.verify().unwrap();
        w.call(WORKER, redeem(ReceiptKind::Forwarding, first.clone()), 1)
            .unwrap();
        assert_eq!(w.balance(WORKER), 1000 + 2 * price);
        assert_eq!(w.balance(1), 1000 - 2 * price);
        // The same receipt again: refused.
        assert_eq!(
            w.call(WORKER, redeem(ReceiptKind::Forwarding, first), 2),
            Err(LedgerError::Redeemed { seq: 1, last: 1 })
        );
        // A later one pays only what it adds.
        w.call(
            WORKER,
            redeem(
                ReceiptKind::Forwarding,
                relay_receipt(1, WORKER, 3, 2, 3 * GIB),
            ),
            3,
        )
        .unwrap();
        assert_eq!(w.balance(WORKER), 1000 + 3 * price);
        // Another relay may not redeem it.
        assert_eq!(
            w.call(
                OTHER,
                redeem(
                    ReceiptKind::Forwarding,
                    relay_receipt(1, WORKER, 3, 9, 9 * GIB)
                ),
                4
            ),
            Err(LedgerError::NotPayee)
        );
        // A forged receipt fails verification.
        let mut forged = relay_receipt(1, WORKER, 3, 5, 5 * GIB);
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let tampered = Transaction {
            from: id(WORKER),
            sequence: 9,
            op: redeem(ReceiptKind::Forwarding, forged),
        }
        .sign(&Keypair::from_seed(&[WORKER; 32]))
        .unwrap();
        assert_eq!(tampered.verify(), Err(LedgerError::BadSignature));
        // A payer who cannot pay: refused, nothing recorded.
        let mut poor = World::new();
        poor.call(
            1,
            Op::Transfer {
                to: id(2),
                amount: 1000,
            },
            0,
        )
        .unwrap();
        assert!(matches!(
            poor.call(
                WORKER,
                redeem(
                    ReceiptKind::Forwarding,
                    relay_receipt(1, WORKER, 3, 1, 2 * GIB)
                ),
                1
            ),
            Err(LedgerError::Insufficient { .. })
        ));
    }

    #[test]
    fn a_server_redeems_a_fetchers_serving_receipts() {
        let mut w = World::new();
        let price = rules().price_per_gib_served;
        let fetcher = Keypair::from_seed(&[1; 32]);
        let receipt = |seq, bytes| {
            ServeReceipt {
                server: Keypair::from_seed(&[WORKER; 32]).node_id(),
                seq,
                bytes,
                issued_at_ms: seq,
            }
            .sign(&fetcher)
        };
        receipt::verify(ReceiptKind::Serving, &receipt(1, GIB)).unwrap();
        // A serving receipt is not a forwarding one.
        assert!(receipt::verify(ReceiptKind::Forwarding, &receipt(1, GIB)).is_err());
        w.call(
            WORKER,
            redeem(ReceiptKind::Serving, receipt(10, 4 * GIB)),
            1,
        )
        .unwrap();
        assert_eq!(w.balance(WORKER), 1000 + 4 * price);
        assert!(matches!(
            w.call(
                WORKER,
                redeem(ReceiptKind::Serving, receipt(10, 5 * GIB)),
                2
            ),
            Err(LedgerError::Redeemed { .. })
        ));
        assert!(matches!(
            w.call(
                WORKER,
                redeem(ReceiptKind::Serving, receipt(11, 3 * GIB)),
                2
            ),
            Err(LedgerError::Redeemed { .. })
        ));
        w.call(
            WORKER,
            redeem(ReceiptKind::Serving, receipt(11, 4 * GIB + GIB / 2)),
            3,
        )
        .unwrap();
        assert_eq!(w.balance(WORKER), 1000 + 4 * price + price / 2);
    }

    #[test]
    fn a_mailbox_is_paid_for_mail_it_held_as_serving_is_and_never_as_serving() {
        let mut w = World::new();
        let price = rules().price_per_gib_served;
        let owner = Keypair::from_seed(&[1; 32]);
        let mailbox = Keypair::from_seed(&[WORKER; 32]).node_id();
        let receipt = |seq, bytes| {
            receipt::MailboxReceipt {
                mailbox,
                seq,
                bytes,
                issued_at_ms: seq,
            }
            .sign(&owner)
        };
        // Its own domain: it is not a serving receipt, nor the reverse.
        assert!(receipt::verify(ReceiptKind::Serving, &receipt(1, GIB)).is_err());
        let serving = ServeReceipt {
            server: mailbox,
            seq: 1,
            bytes: GIB,
            issued_at_ms: 1,
        }
        .sign(&owner);
        assert!(receipt::verify(ReceiptKind::Mailbox, &serving).is_err());
        w.call(WORKER, redeem(ReceiptKind::Mailbox, receipt(5, 2 * GIB)), 1)
            .unwrap();
        assert_eq!(w.balance(WORKER), 1000 + 2 * price);
        assert!(matches!(
            w.call(WORKER, redeem(ReceiptKind::Mailbox, receipt(5, 3 * GIB)), 2),
            Err(LedgerError::Redeemed { .. })
        ));
        // Serving and holding mail are counted apart.
        w.call(WORKER, redeem(ReceiptKind::Serving, serving), 2)
            .unwrap();
        assert_eq!(w.balance(WORKER), 1000 + 3 * price);
    }

    #[test]
    fn an_exit_is_paid_at_the_price_its_client_signed() {
        let mut w = World::new();
        let client = Keypair::from_seed(&[1; 32]);
        let exit = Keypair::from_seed(&[WORKER; 32]).node_id();
        let receipt = |seq, bytes, price_per_gib| {
            ExitReceipt {
                exit,
                seq,
                bytes,
                price_per_gib,
                issued_at_ms: seq,
            }
            .sign(&client)
        };
        receipt::verify(ReceiptKind::Exit, &receipt(1, GIB, 40)).unwrap();
        assert!(receipt::verify(ReceiptKind::Serving, &receipt(1, GIB, 40)).is_err());
        // 2 GiB at 40 per GiB, whatever the rules' prices.
        w.call(
            WORKER,
            redeem(ReceiptKind::Exit, receipt(5, 2 * GIB, 40)),
            1,
        )
        .unwrap();
        assert_eq!(w.balance(WORKER), 1000 + 80);
        assert_eq!(w.balance(1), 1000 - 80);
        // Only what a later receipt adds, once.
        w.call(
            WORKER,
            redeem(ReceiptKind::Exit, receipt(6, 3 * GIB, 40)),
            2,
        )
        .unwrap();
        assert_eq!(w.balance(WORKER), 1000 + 120);
        assert!(matches!(
            w.call(
                WORKER,
                redeem(ReceiptKind::Exit, receipt(6, 3 * GIB, 40)),
                3
            ),
            Err(LedgerError::Redeemed { .. })
        ));
        // Another node cannot redeem the exit's receipt.
        assert_eq!(
            w.call(OTHER, redeem(ReceiptKind::Exit, receipt(9, 9 * GIB, 40)), 1),
            Err(LedgerError::NotPayee)
        );
    }
}
