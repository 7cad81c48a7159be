//! The ledger across real nodes over real links: one node runs it, the
//! others find it through its advert (two hops away, so they link to it on
//! demand) and pay, register hub wallets and read histories through it.
//! A ledger node restarted between payments keeps every coin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use fogwire_identity::Keypair;
use fogwire_ledger::client::ClientError;
use fogwire_ledger::proto::{COIN, Genesis, Id, Op, Rules, WalletState};
use fogwire_node::{LedgerOptions, Node, NodeOptions};

fn id(node: &Node) -> Id {
    Id(*node.node_id().as_bytes())
}

async fn node(
    keypair: Arc<Keypair>,
    ledger: LedgerOptions,
    path: Option<&std::path::Path>,
) -> Node {
    let mut options = NodeOptions::local(keypair);
    options.ledger = ledger;
    options.ledger_path = path.map(|p| p.to_owned());
    Node::start(options).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_pay_through_a_ledger_two_hops_away_and_a_restart_keeps_every_coin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    let ledger_key = Arc::new(Keypair::generate().unwrap());
    let buyer_key = Arc::new(Keypair::generate().unwrap());
    let buyer_id = Id(*buyer_key.node_id().as_bytes());
    let genesis = Genesis {
        rules: Rules::new(
            Id(*ledger_key.node_id().as_bytes()),
            Id(*ledger_key.node_id().as_bytes()),
        ),
        accounts: vec![(buyer_id, 50 * COIN)],
    };
    let serve = LedgerOptions {
        serve: Some(genesis.clone()),
        node: None,
    };
    let ledger = node(ledger_key.clone(), serve.clone(), Some(&path)).await;
    let middle = node(
        Arc::new(Keypair::generate().unwrap()),
        LedgerOptions::default(),
        None,
    )
    .await;
    let buyer = node(buyer_key.clone(), LedgerOptions::default(), None).await;
    // A line: buyer – middle – ledger.
    buyer.connect(middle.peer_addr()).await.unwrap();
    middle.connect(ledger.peer_addr()).await.unwrap();
    let started = Instant::now();
    while buyer.find_ledger().await != Some(ledger.node_id()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the ledger was never advertised"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let wallet = buyer.wallet().unwrap();
    let receipt = wallet
        .send(Op::Transfer {
            to: id(&middle),
            amount: 5 * COIN,
        })
        .await
        .unwrap();
    assert_eq!(receipt.index, 1);
    let hub = middle.wallet().unwrap();
    hub.send(Op::WalletFund { amount: 3 * COIN }).await.unwrap();
    hub.send(Op::WalletRegister).await.unwrap();
    let view = middle
        .ledger()
        .unwrap()
        .account(&id(&middle))
        .await
        .unwrap();
    assert_eq!(view.account.balance, 2 * COIN);
    assert_eq!(view.wallet.unwrap().state, WalletState::Registered);
    // A bid the buyer cannot pay: refused, with the amounts.
    let err = wallet
        .send(Op::Transfer {
            to: id(&middle),
            amount: 500 * COIN,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(m) if m.contains("available")),
        "{err}"
    );

    // The ledger node restarts between payments.
    ledger.shutdown().await;
    drop(ledger);
    let ledger = node(ledger_key, serve, Some(&path)).await;
    middle.connect(ledger.peer_addr()).await.unwrap();
    let started = Instant::now();
    loop {
        match wallet
            .send(Op::Transfer {
                to: id(&middle),
                amount: COIN,
            })
            .await
        {
            Ok(receipt) => {
                assert_eq!(receipt.index, 4);
                break;
            }
            Err(error) => {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "the ledger never came back: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let client = buyer.ledger().unwrap();
    let info = client.info().await.unwrap();
    assert_eq!((info.log_len, info.supply_error.clone()), (4, None));
    assert_eq!(info.genesis, 50 * COIN);
    let history = client.history(&buyer_id, 0, 10).await.unwrap();
    assert_eq!(
        history.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![4, 1]
    );
    let buyer_view = client.account(&buyer_id).await.unwrap();
    assert_eq!(buyer_view.account.balance, 44 * COIN);
    assert_eq!(buyer_view.account.sequence, 2);
}
