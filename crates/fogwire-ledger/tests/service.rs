//! The ledger service on a real redb file: durable before answered,
//! replayed at start, resubmissions idempotent, bad transactions refused,
//! and a restart in the middle of a stream of payments loses nothing and
//! pays nothing twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use fogwire_identity::{Keypair, Signature};
use fogwire_ledger::client::{ClientError, LedgerClient, Wallet};
use fogwire_ledger::proto::{COIN, Genesis, Id, Op, Rules, SignedTransaction, Transaction};
use fogwire_ledger::{LedgerService, SubmitError};

fn key(n: u8) -> Keypair {
    Keypair::from_seed(&[n; 32])
}

fn id(n: u8) -> Id {
    Id(*key(n).node_id().as_bytes())
}

fn genesis() -> Genesis {
    Genesis {
        rules: Rules::new(id(0), id(9)),
        accounts: (1..=8).map(|n| (id(n), 100 * COIN)).collect(),
    }
}

fn transfer(from: u8, sequence: u64, to: u8, amount: u64) -> SignedTransaction {
    Transaction {
        from: id(from),
        sequence,
        op: Op::Transfer { to: id(to), amount },
    }
    .sign(&key(from))
    .unwrap()
}

#[tokio::test]
async fn a_transfer_is_durable_replayed_and_in_both_histories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    {
        let service = LedgerService::open(&path, &genesis()).unwrap();
        let receipt = service.submit(transfer(1, 1, 2, COIN)).await.unwrap();
        assert_eq!((receipt.index, receipt.replayed), (1, false));
        let receipt = service.submit(transfer(2, 1, 3, 2 * COIN)).await.unwrap();
        assert_eq!(receipt.index, 2);
        assert_eq!(service.ledger().account(&id(2)).balance, 99 * COIN);
    }
    // A new genesis given at restart does not replace the first.
    let other = Genesis {
        rules: Rules::new(id(5), id(5)),
        accounts: vec![],
    };
    let service = LedgerService::open(&path, &other).unwrap();
    let ledger = service.ledger().clone();
    assert_eq!(ledger.account(&id(1)).balance, 99 * COIN);
    assert_eq!(ledger.account(&id(3)).balance, 102 * COIN);
    assert_eq!(ledger.account(&id(2)).sequence, 1);
    assert_eq!(ledger.rules().minter, id(0));
    ledger.check_supply().unwrap();
    let client = LedgerClient::new(Arc::new(service.clone()));
    let history = client.history(&id(2), 0, 10).await.unwrap();
    assert_eq!(
        history.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![2, 1]
    );
    assert_eq!(client.history(&id(2), 2, 10).await.unwrap().len(), 1);
    assert_eq!(client.history(&id(4), 0, 10).await.unwrap().len(), 0);
    let info = client.info().await.unwrap();
    assert_eq!((info.log_len, info.supply_error), (2, None));
}

#[tokio::test]
async fn a_resubmission_gets_its_first_receipt_and_a_replay_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let service = LedgerService::open(&dir.path().join("l.redb"), &genesis()).unwrap();
    let signed = transfer(1, 1, 2, COIN);
    let first = service.submit(signed.clone()).await.unwrap();
    let again = service.submit(signed).await.unwrap();
    assert_eq!((again.index, again.replayed), (first.index, true));
    assert_eq!(service.ledger().account(&id(2)).balance, 101 * COIN);
    // Another transaction with the spent sequence number: a replay.
    let err = service.submit(transfer(1, 1, 3, COIN)).await.unwrap_err();
    assert!(
        matches!(err, SubmitError::Refused(ref e) if e.to_string().contains("replay")),
        "{err}"
    );
    // Forged: signed by another key.
    let forged = Transaction {
        from: id(1),
        sequence: 2,
        op: Op::Transfer {
            to: id(3),
            amount: 1,
        },
    }
    .sign(&key(3))
    .unwrap();
    assert!(matches!(
        service.submit(forged).await,
        Err(SubmitError::Refused(_))
    ));
    // Garbage.
    let garbage = SignedTransaction {
        body: vec![0xc1; 10],
        signature: Signature([0; 64]),
    };
    assert!(service.submit(garbage).await.is_err());
    service.ledger().check_supply().unwrap();
    assert_eq!(service.log().len().unwrap(), 1);
}

#[tokio::test]
async fn a_wallet_keeps_its_sequence_and_explains_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let service = LedgerService::open(&dir.path().join("l.redb"), &genesis()).unwrap();
    let client = LedgerClient::new(Arc::new(service.clone()));
    let wallet = Wallet::new(client.clone(), Arc::new(key(1)));
    for _ in 0..5 {
        wallet
            .send(Op::Transfer {
                to: id(2),
                amount: COIN,
            })
            .await
            .unwrap();
    }
    // Someone else used the key meanwhile: the wallet looks it up again.
    service.submit(transfer(1, 6, 3, COIN)).await.unwrap();
    wallet
        .send(Op::Transfer {
            to: id(2),
            amount: COIN,
        })
        .await
        .unwrap();
    assert_eq!(client.account(&id(1)).await.unwrap().account.sequence, 7);
    let err = wallet
        .send(Op::Transfer {
            to: id(2),
            amount: 1000 * COIN,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(m) if m.contains("available")),
        "{err}"
    );
    // A payout from a hub over its unlocked balance.
    let hub = Wallet::new(client.clone(), Arc::new(key(5)));
    hub.send(Op::WalletFund { amount: 2 * COIN }).await.unwrap();
    hub.send(Op::WalletRegister).await.unwrap();
    let err = hub
        .send(Op::WalletPay {
            to: id(6),
            amount: COIN,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(m) if m.contains("unlocked")),
        "{err}"
    );
    // Payday before the period ends; suspect by a key that is not the DAO's.
    let err = hub.send(Op::WalletPayday).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(m) if m.contains("not before")),
        "{err}"
    );
    let err = wallet.send(Op::Suspect { hub: id(5) }).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(m) if m.contains("DAO")),
        "{err}"
    );
    let dao = Wallet::new(client.clone(), Arc::new(key(9)));
    dao.send(Op::Suspect { hub: id(5) }).await.unwrap();
    let view = client.account(&id(5)).await.unwrap();
    assert_eq!(
        view.wallet.unwrap().state,
        fogwire_ledger::proto::WalletState::Suspected
    );
    assert_eq!(client.info().await.unwrap().supply_error, None);
}

const PER_SENDER: u64 = 400;

fn stream() -> Vec<SignedTransaction> {
    (1..=4u8)
        .flat_map(|from| (1..=PER_SENDER).map(move |seq| transfer(from, seq, from + 4, 1000 + seq)))
        .collect()
}

/// The ledger process of the test below: it streams every payment of
/// [`stream`] from four senders and prints each receipt as it hears it.
/// Does nothing unless that test started it.
#[tokio::test]
async fn ledger_child_process() {
    let Ok(path) = std::env::var("FOGWIRE_LEDGER_CHILD") else {
        return;
    };
    let service = LedgerService::open(std::path::Path::new(&path), &genesis()).unwrap();
    let all = stream();
    let mut senders = Vec::new();
    for mine in all.chunks(PER_SENDER as usize) {
        let service = service.clone();
        let mine = mine.to_vec();
        senders.push(tokio::spawn(async move {
            for (offset, signed) in mine.into_iter().enumerate() {
                let receipt = service.submit(signed).await.unwrap();
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                writeln!(out, "heard {} {}", receipt.index, offset).unwrap();
                out.flush().unwrap();
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
}

/// The ledger runs in its own process, four senders streaming payments
/// into it, and is killed (SIGKILL) in the middle; it restarts and every
/// transaction is sent again. Every receipt heard before the kill is in
/// the log; after the resubmissions each transaction applied exactly
/// once; the supply adds up.
#[test]
fn a_ledger_killed_mid_stream_loses_nothing_and_pays_nothing_twice() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "ledger_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FOGWIRE_LEDGER_CHILD", &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut heard = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("heard ") {
            heard.push(rest.split(' ').next().unwrap().parse::<u64>().unwrap());
            if heard.len() == 300 {
                child.kill().unwrap();
                break;
            }
        }
    }
    child.wait().unwrap();
    assert_eq!(heard.len(), 300, "the child ledger stopped early");
    let all = stream();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let service = LedgerService::open(&path, &genesis()).unwrap();
        let log = service.log();
        let logged = log.len().unwrap();
        assert!(logged < 4 * PER_SENDER, "the kill came after the end");
        for index in &heard {
            assert!(
                log.entry(*index).unwrap().is_some(),
                "a heard receipt is in the log"
            );
        }
        let mut replayed = 0;
        for signed in &all {
            if service.submit(signed.clone()).await.unwrap().replayed {
                replayed += 1;
            }
        }
        assert_eq!(replayed, logged);
        let ledger = service.ledger().clone();
        ledger.check_supply().unwrap();
        let paid: u64 = (1..=PER_SENDER).map(|seq| 1000 + seq).sum();
        for from in 1..=4u8 {
            assert_eq!(ledger.account(&id(from)).sequence, PER_SENDER);
            assert_eq!(ledger.account(&id(from)).balance, 100 * COIN - paid);
            assert_eq!(ledger.account(&id(from + 4)).balance, 100 * COIN + paid);
        }
        assert_eq!(log.len().unwrap(), 4 * PER_SENDER);
    });
}

#[tokio::test]
async fn one_account_flooding_transactions_grows_the_log_by_its_rate_and_no_more() {
    // Bound proven: one sender gets SENDER_BURST transactions taken at
    // once, then SENDER_PER_SEC a second; the rest are refused busy before
    // they are queued, and another sender is served meanwhile.
    use fogwire_ledger::service::{SENDER_BURST, SENDER_PER_SEC};
    let dir = tempfile::tempdir().unwrap();
    let service = LedgerService::open(&dir.path().join("l.redb"), &genesis()).unwrap();
    let flood = u64::from(SENDER_BURST) * 3;
    let signed: Vec<SignedTransaction> = (1..=flood).map(|seq| transfer(1, seq, 2, 1)).collect();
    let started = tokio::time::Instant::now();
    let mut busy = 0u64;
    let mut applied = 0u64;
    for tx in signed {
        match service.submit(tx).await {
            Ok(_) => applied += 1,
            Err(SubmitError::SenderBusy) => busy += 1,
            // Sequence gaps after a busy refusal.
            Err(SubmitError::Refused(_)) => {}
            Err(other) => panic!("{other}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let bound = u64::from(SENDER_BURST) + (elapsed * f64::from(SENDER_PER_SEC)) as u64 + 1;
    println!(
        "{flood} transfers from one account in {elapsed:.2} s: {applied} applied, {busy} busy (bound {bound})"
    );
    assert!(
        applied >= u64::from(SENDER_BURST) / 2,
        "the flood did not reach the ledger"
    );
    assert!(applied <= bound, "{applied} applied, bound {bound}");
    assert!(busy > 0);
    assert_eq!(service.log().len().unwrap(), applied);
    // Another account is not held back.
    service.submit(transfer(3, 1, 4, COIN)).await.unwrap();
}
