//! The ledger across real nodes over real links: one node runs it, the
//! others find it through its advert (two hops away, so they link to it on
//! demand) and pay, register hub wallets and read histories through it.
//! A ledger node restarted between payments keeps every coin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use fogwire_identity::Keypair;
use fogwire_ledger::client::ClientError;
use fogwire_ledger::proto::{COIN, Genesis, Id, Op, Rules, WalletState};
use fogwire_node::{LedgerOptions, Node, NodeOptions};
use fogwire_testkit::{nodes, wait};

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
    let ledger_key = nodes::keypair();
    let buyer_key = nodes::keypair();
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
    let middle = node(nodes::keypair(), LedgerOptions::default(), None).await;
    let buyer = node(buyer_key.clone(), LedgerOptions::default(), None).await;
    // A line: buyer – middle – ledger.
    buyer.connect(middle.peer_addr()).await.unwrap();
    middle.connect(ledger.peer_addr()).await.unwrap();
    wait::until_async("the ledger advertised", || async {
        (buyer.ledger().node().await == Some(ledger.node_id())).then_some(())
    })
    .await;

    let wallet = buyer.ledger().wallet();
    let receipt = wallet
        .send(Op::Transfer {
            to: id(&middle),
            amount: 5 * COIN,
        })
        .await
        .unwrap();
    assert_eq!(receipt.index, 1);
    let hub = middle.ledger().wallet();
    hub.send(Op::WalletFund { amount: 3 * COIN }).await.unwrap();
    hub.send(Op::WalletRegister).await.unwrap();
    let view = middle
        .ledger()
        .client()
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
    let receipt = wait::until_ok("the ledger back", || {
        wallet.send(Op::Transfer {
            to: id(&middle),
            amount: COIN,
        })
    })
    .await;
    assert_eq!(receipt.index, 4);
    let client = buyer.ledger().client();
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

mod paid_jobs {
    use super::*;
    use fogwire_compute::hub::HubConfig;
    use fogwire_compute::worker::WorkerConfig;
    use fogwire_compute::{client, guests};
    use fogwire_compute_proto::pay::Terms;
    use fogwire_compute_proto::scheduler::JobState;
    use fogwire_compute_proto::{Digest, JobSpec, Replication};
    use fogwire_node::ComputeOptions;

    async fn start(
        key: Arc<Keypair>,
        compute: ComputeOptions,
        ledger: LedgerOptions,
        path: Option<&std::path::Path>,
    ) -> Node {
        let mut options = NodeOptions::local(key);
        options.compute = compute;
        options.ledger = ledger;
        options.ledger_path = path.map(|p| p.to_owned());
        Node::start(options).await.unwrap()
    }

    fn key() -> Arc<Keypair> {
        nodes::keypair()
    }

    fn kid(key: &Keypair) -> Id {
        Id(*key.node_id().as_bytes())
    }

    const TERMS: Terms = Terms {
        price_per_task: 10_000,
        price_per_gfuel: 0,
        fee_percent: 10,
        slash: COIN / 2,
    };

    /// A buyer pays for a job through a charging hub: the escrow is held
    /// at submission; the ledger node is down when the job ends, so the
    /// hub settles once it is back; the agreeing workers are paid, the hub
    /// takes its fee, the cheat loses half its deposit to the DAO, the
    /// rest returns to the buyer, and every coin is accounted for.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_paid_job_pays_the_agreeing_workers_and_slashes_the_cheat() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.redb");
        let (ledger_key, hub_key, buyer_key, poor_key) = (key(), key(), key(), key());
        let worker_keys: Vec<Arc<Keypair>> = (0..4).map(|_| key()).collect();
        let mut accounts = vec![
            (kid(&hub_key), 10 * COIN),
            (kid(&buyer_key), 5 * COIN),
            (kid(&poor_key), COIN / 100),
        ];
        accounts.extend(worker_keys.iter().map(|k| (kid(k), COIN)));
        let dao = kid(&ledger_key);
        let genesis = Genesis {
            rules: Rules::new(dao, dao),
            accounts,
        };
        let serve = LedgerOptions {
            serve: Some(genesis),
            node: None,
        };
        let ledger = start(
            ledger_key.clone(),
            ComputeOptions::default(),
            serve.clone(),
            Some(&path),
        )
        .await;
        let located = LedgerOptions {
            serve: None,
            node: Some(ledger.node_id()),
        };
        let hub = start(
            hub_key.clone(),
            ComputeOptions {
                worker: None,
                hub: Some(HubConfig {
                    terms: TERMS,
                    ..HubConfig::default()
                }),
                docker: false,
                charge: true,
                agent: None,
            },
            located.clone(),
            None,
        )
        .await;
        let mut workers = Vec::new();
        for (n, key) in worker_keys.iter().enumerate() {
            let worker = start(
                key.clone(),
                ComputeOptions {
                    worker: Some(WorkerConfig {
                        slots: 2,
                        cheat: n == 3,
                        ..WorkerConfig::default()
                    }),
                    hub: None,
                    docker: false,
                    charge: false,
                    agent: None,
                },
                located.clone(),
                None,
            )
            .await;
            hub.connect(worker.peer_addr()).await.unwrap();
            workers.push(worker);
        }
        let buyer = start(
            buyer_key.clone(),
            ComputeOptions::default(),
            located.clone(),
            None,
        )
        .await;
        let poor = start(poor_key, ComputeOptions::default(), located.clone(), None).await;
        for node in [&hub, &buyer, &poor] {
            node.connect(ledger.peer_addr()).await.unwrap();
        }
        buyer.connect(hub.peer_addr()).await.unwrap();
        poor.connect(hub.peer_addr()).await.unwrap();
        for worker in &workers {
            worker.connect(ledger.peer_addr()).await.unwrap();
        }
        // The hub registers its wallet; every worker bonds 1 coin with it.
        let hub_wallet = hub.ledger().wallet();
        hub_wallet
            .send(Op::WalletFund { amount: 5 * COIN })
            .await
            .unwrap();
        hub_wallet.send(Op::WalletRegister).await.unwrap();
        for worker in &workers {
            worker
                .ledger()
                .wallet()
                .send(Op::DepositPost {
                    hub: kid(&hub_key),
                    amount: COIN,
                })
                .await
                .unwrap();
        }
        let service = hub.hub().unwrap();
        wait::until("4 workers found", || service.workers().len() >= 4).await;

        let module = guests::compile(guests::HELLO).unwrap();
        let mut specs = Vec::new();
        for node in [&buyer, &poor] {
            let program = node.store().import_bytes(&module, None).unwrap();
            let mut spec = JobSpec::wasm(Digest(*program.as_bytes()));
            spec.split = 4;
            spec.replication = Replication::Fixed(4);
            specs.push(spec);
        }
        // Unpaid, to a hub that charges: refused, saying how to pay.
        let fabric = buyer.fabric();
        let refused = client::submit(fabric.as_ref(), hub.node_id(), &specs[0])
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("--max-price"), "{refused}");
        // A bid the buyer cannot pay: the ledger refuses the escrow.
        let poor_hold = poor
            .ledger()
            .wallet()
            .send(Op::Hold {
                id: Id([7; 32]),
                amount: COIN,
                arbiter: kid(&hub_key),
                expires_ms: u64::MAX,
            })
            .await
            .unwrap_err();
        assert!(poor_hold.to_string().contains("available"), "{poor_hold}");

        let escrow = Id([9; 32]);
        buyer
            .ledger()
            .wallet()
            .send(Op::Hold {
                id: escrow,
                amount: COIN,
                arbiter: kid(&hub_key),
                expires_ms: u64::MAX,
            })
            .await
            .unwrap();
        let job = client::submit_paid(
            fabric.as_ref(),
            hub.node_id(),
            &specs[0],
            Some(Digest(escrow.0)),
        )
        .await
        .unwrap();
        // The same escrow cannot pay for a second job.
        let again = client::submit_paid(
            fabric.as_ref(),
            hub.node_id(),
            &specs[0],
            Some(Digest(escrow.0)),
        )
        .await
        .unwrap_err();
        assert!(again.to_string().contains("another job"), "{again}");
        // The ledger goes down before the job can be paid for.
        ledger.shutdown().await;
        drop(ledger);
        let status = service.wait(&job, Duration::from_secs(120)).await.unwrap();
        assert_eq!(status.state, JobState::Done);
        // The hub tried to settle, could not, and says it will try again.
        wait::until("the hub to find the ledger gone", || {
            let (lines, _) = service.logs(&job, 0).unwrap();
            lines
                .iter()
                .any(|line| line.starts_with("payment: waiting for the ledger"))
        })
        .await;
        assert_eq!(service.status(&job).unwrap().payment.unwrap().settled, None);
        // Back, at the same place: the hub settles on its next try.
        let ledger = start(ledger_key, ComputeOptions::default(), serve, Some(&path)).await;
        hub.connect(ledger.peer_addr()).await.unwrap();
        buyer.connect(ledger.peer_addr()).await.unwrap();
        let payment = wait::until_some("the payment settled", || {
            let payment = service.status(&job).unwrap().payment?;
            payment.settled.is_some().then_some(payment)
        })
        .await;
        // 4 tasks × 3 honest workers × 10 000, plus 10 %.
        assert_eq!((payment.paid_workers, payment.fee), (120_000, 12_000));
        assert_eq!(payment.refunded, COIN - 132_000);
        let client = buyer.ledger().client();
        let view = |key: &Keypair| {
            let id = kid(key);
            async move { client.account(&id).await.unwrap() }
        };
        assert_eq!(view(&buyer_key).await.account.balance, 5 * COIN - 132_000);
        for (n, key) in worker_keys.iter().enumerate() {
            let account = view(key).await;
            if n == 3 {
                // The cheat: unpaid, and half its deposit gone.
                assert_eq!(account.account.balance, 0);
                assert_eq!(account.deposits[0].2.amount, COIN / 2);
            } else {
                assert_eq!(account.account.balance, 40_000);
            }
        }
        let hub_view = view(&hub_key).await;
        let wallet = hub_view.wallet.unwrap();
        assert_eq!(wallet.balance, 5 * COIN + 12_000);
        // 30 % of the 120 000 paid to workers locks until payday.
        assert_eq!(wallet.locked, 36_000);
        assert_eq!(
            client.account(&dao).await.unwrap().account.balance,
            COIN / 2
        );
        let logs = service.logs(&job, 0).unwrap().0;
        assert!(logs.iter().any(|l| l.contains("slashed")), "{logs:?}");
        assert_eq!(client.info().await.unwrap().supply_error, None);
    }
}

mod refused_payout {
    use super::*;
    use fogwire_compute::hub::HubConfig;
    use fogwire_compute::worker::WorkerConfig;
    use fogwire_compute::{client, guests};
    use fogwire_compute_proto::pay::Terms;
    use fogwire_compute_proto::{Digest, JobSpec, Replication};
    use fogwire_node::ComputeOptions;

    /// A hub whose wallet cannot lock its share of a payout (it bonded
    /// only the deposit) has the payout refused by the ledger: the buyer's
    /// escrow goes back whole at once, rather than waiting on retries
    /// that cannot succeed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_payout_the_hub_cannot_back_returns_the_escrow() {
        let key = || nodes::keypair();
        let (ledger_key, hub_key, buyer_key) = (key(), key(), key());
        let id = |k: &Keypair| Id(*k.node_id().as_bytes());
        let genesis = Genesis {
            rules: Rules::new(id(&ledger_key), id(&ledger_key)),
            accounts: vec![(id(&hub_key), COIN), (id(&buyer_key), 10 * COIN)],
        };
        let ledger = node(
            ledger_key,
            LedgerOptions {
                serve: Some(genesis),
                node: None,
            },
            None,
        )
        .await;
        let located = LedgerOptions {
            serve: None,
            node: Some(ledger.node_id()),
        };
        let start = |key: Arc<Keypair>, compute: ComputeOptions| {
            let located = located.clone();
            async move {
                let mut options = NodeOptions::local(key);
                options.compute = compute;
                options.ledger = located;
                Node::start(options).await.unwrap()
            }
        };
        let hub = start(
            hub_key,
            ComputeOptions {
                hub: Some(HubConfig {
                    terms: Terms {
                        price_per_task: COIN,
                        ..Terms::default()
                    },
                    ..HubConfig::default()
                }),
                charge: true,
                ..ComputeOptions::default()
            },
        )
        .await;
        let buyer = start(buyer_key.clone(), ComputeOptions::default()).await;
        let mut workers = Vec::new();
        for _ in 0..3 {
            let worker = start(
                key(),
                ComputeOptions {
                    worker: Some(WorkerConfig::default()),
                    ..ComputeOptions::default()
                },
            )
            .await;
            hub.connect(worker.peer_addr()).await.unwrap();
            workers.push(worker);
        }
        for node in [&hub, &buyer] {
            node.connect(ledger.peer_addr()).await.unwrap();
        }
        buyer.connect(hub.peer_addr()).await.unwrap();
        let wallet = hub.ledger().wallet();
        wallet.send(Op::WalletFund { amount: COIN }).await.unwrap();
        wallet.send(Op::WalletRegister).await.unwrap();
        let service = hub.hub().unwrap();
        wait::until("3 workers found", || service.workers().len() >= 3).await;
        let module = guests::compile(guests::HELLO).unwrap();
        let program = buyer.store().import_bytes(&module, None).unwrap();
        let mut spec = JobSpec::wasm(Digest(*program.as_bytes()));
        spec.replication = Replication::Fixed(3);
        let escrow = Id([5; 32]);
        buyer
            .ledger()
            .wallet()
            .send(Op::Hold {
                id: escrow,
                amount: 10 * COIN,
                arbiter: Id(*hub.node_id().as_bytes()),
                expires_ms: u64::MAX,
            })
            .await
            .unwrap();
        let job = client::submit_paid(
            buyer.fabric().as_ref(),
            hub.node_id(),
            &spec,
            Some(Digest(escrow.0)),
        )
        .await
        .unwrap();
        let payment = wait::until_some("the payment settled", || {
            let payment = service.status(&job)?.payment?;
            payment.settled.is_some().then_some(payment)
        })
        .await;
        let text = payment.settled.unwrap();
        assert!(text.contains("refused the payout"), "{text}");
        assert_eq!((payment.paid_workers, payment.refunded), (0, 10 * COIN));
        let client = ledger.ledger().client();
        assert_eq!(
            client
                .account(&id(&buyer_key))
                .await
                .unwrap()
                .account
                .balance,
            10 * COIN
        );
        assert_eq!(client.info().await.unwrap().supply_error, None);
    }
}

mod agent {
    use super::*;
    use fogwire_compute::hub::HubConfig;
    use fogwire_compute::market::{BidRequest, MARKET, Posted, method};
    use fogwire_compute::worker::WorkerConfig;
    use fogwire_compute_proto::agent::Policy;
    use fogwire_compute_proto::to_value;
    use fogwire_market_proto::{RUNTIME_WASM, Resources};
    use fogwire_node::ComputeOptions;

    fn key() -> Arc<Keypair> {
        nodes::keypair()
    }

    async fn start(key: Arc<Keypair>, compute: ComputeOptions, ledger: LedgerOptions) -> Node {
        let mut options = NodeOptions::local(key);
        options.compute = compute;
        options.ledger = ledger;
        Node::start(options).await.unwrap()
    }

    fn hub() -> ComputeOptions {
        ComputeOptions {
            hub: Some(HubConfig::default()),
            charge: true,
            ..ComputeOptions::default()
        }
    }

    async fn bid(buyer: &Node, hub: &Node, max_price: u64) -> Posted {
        let request = BidRequest {
            need: Resources {
                cores: 1,
                memory_mib: 1,
                gpus: 0,
                runtimes: RUNTIME_WASM,
            },
            max_price,
            replicas: 1,
            ttl_ms: 60_000,
            unit: Default::default(),
        };
        let chunks = buyer
            .fabric()
            .call(
                hub.node_id(),
                MARKET,
                method::BID,
                vec![to_value(&request).unwrap()],
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        fogwire_compute::market::decode_answer(chunks[0][0].clone()).unwrap()
    }

    /// A worker's agent takes a bid from the hub with a bonded wallet and
    /// not from the one without; once the bonded hub pays it, it rates
    /// that hub reliable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_agent_takes_bids_from_verified_hubs_and_rates_them_by_their_payments() {
        let (ledger_key, bonded_key, unbonded_key) = (key(), key(), key());
        let id = |k: &Keypair| Id(*k.node_id().as_bytes());
        let genesis = Genesis {
            rules: Rules::new(id(&ledger_key), id(&ledger_key)),
            accounts: vec![(id(&bonded_key), 10 * COIN)],
        };
        let ledger = start(
            ledger_key,
            ComputeOptions::default(),
            LedgerOptions {
                serve: Some(genesis),
                node: None,
            },
        )
        .await;
        let located = LedgerOptions {
            serve: None,
            node: Some(ledger.node_id()),
        };
        let bonded = start(bonded_key, hub(), located.clone()).await;
        let unbonded = start(unbonded_key, hub(), located.clone()).await;
        let worker = start(
            key(),
            ComputeOptions {
                worker: Some(WorkerConfig::default()),
                agent: Some(Policy::default()),
                ..ComputeOptions::default()
            },
            located.clone(),
        )
        .await;
        let buyer = start(key(), ComputeOptions::default(), located).await;
        for node in [&bonded, &unbonded, &worker, &buyer] {
            node.connect(ledger.peer_addr()).await.unwrap();
        }
        for hub in [&bonded, &unbonded] {
            worker.connect(hub.peer_addr()).await.unwrap();
            buyer.connect(hub.peer_addr()).await.unwrap();
        }
        let wallet = bonded.ledger().wallet();
        wallet
            .send(Op::WalletFund { amount: 5 * COIN })
            .await
            .unwrap();
        wallet.send(Op::WalletRegister).await.unwrap();
        // Both books hold a bid this worker can serve.
        assert!(bid(&buyer, &bonded, 5000).await.deals.is_empty());
        assert!(bid(&buyer, &unbonded, 9000).await.deals.is_empty());

        let deals = wait::until_some("the agent to take a bid", || {
            let deals = bonded.market().unwrap().deals(10);
            (!deals.is_empty()).then_some(deals)
        })
        .await;
        assert_eq!(deals[0].fills[0].worker, *worker.node_id().as_bytes());
        assert_eq!(deals[0].fills[0].price, 5000);
        // The unbonded hub's better-paying bid is left alone.
        assert!(unbonded.market().unwrap().deals(10).is_empty());
        let views = worker.hubs();
        let rated = |hub: &Node| {
            views
                .iter()
                .find(|v| v.hub == hub.node_id())
                .map(|v| v.trust)
        };
        use fogwire_compute_proto::agent::Trust;
        assert_eq!(rated(&bonded), Some(Trust::Verified));
        assert_eq!(rated(&unbonded), Some(Trust::Unverified));
        assert_eq!(
            views
                .iter()
                .find(|v| v.trust == Trust::Verified)
                .unwrap()
                .terms,
            Some((1000, 10_000, 10))
        );

        // The hub pays the worker: reliable.
        wallet
            .send(Op::WalletPay {
                to: Id(*worker.node_id().as_bytes()),
                amount: 5000,
            })
            .await
            .unwrap();
        wait::until("a hub rated reliable", || {
            worker.hubs().iter().any(|v| v.trust == Trust::Reliable)
        })
        .await;
    }
}

/// A relay earns for the bytes it forwards and a server for the bytes it
/// serves: their receipts (signed by the route's source, and by the
/// fetcher) are redeemed in the ledger, paid by whoever signed them, at
/// the ledger's published prices; every coin is accounted for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_and_servers_earn_from_their_receipts() {
    let key = || nodes::keypair();
    let (ledger_key, source_key, fetcher_key) = (key(), key(), key());
    let id = |k: &Keypair| Id(*k.node_id().as_bytes());
    let genesis = Genesis {
        rules: Rules {
            // A coin per MiB, so that a few MiB show.
            price_per_gib_forwarded: 1024 * COIN,
            price_per_gib_served: 1024 * COIN,
            ..Rules::new(id(&ledger_key), id(&ledger_key))
        },
        accounts: vec![
            (id(&source_key), 100 * COIN),
            (id(&fetcher_key), 100 * COIN),
        ],
    };
    let ledger = node(
        ledger_key,
        LedgerOptions {
            serve: Some(genesis),
            node: None,
        },
        None,
    )
    .await;
    let located = LedgerOptions {
        serve: None,
        node: Some(ledger.node_id()),
    };
    let source = node(source_key, located.clone(), None).await;
    let relay = node(key(), located.clone(), None).await;
    let sink = node(key(), located.clone(), None).await;
    let server = node(key(), located.clone(), None).await;
    let fetcher = node(fetcher_key, located.clone(), None).await;
    // source – relay – sink; fetcher – server; the ledger beside the relay.
    source.connect(relay.peer_addr()).await.unwrap();
    relay.connect(sink.peer_addr()).await.unwrap();
    relay.connect(ledger.peer_addr()).await.unwrap();
    fetcher.connect(server.peer_addr()).await.unwrap();
    server.connect(ledger.peer_addr()).await.unwrap();
    fetcher.connect(ledger.peer_addr()).await.unwrap();
    source.connect(ledger.peer_addr()).await.unwrap();

    // 4 MiB through the relay.
    // Through the relay, not the ledger's node (the source links to it
    // too): two hops, the ledger avoided.
    let constraints = fogwire_route::Constraints {
        avoid: vec![ledger.node_id()],
        ..fogwire_route::Constraints::hops(2)
    };
    let opened = wait::until_ok("a route through the relay", || {
        source.routing().open(sink.node_id(), constraints.clone())
    })
    .await;
    assert_eq!(opened.path, vec![relay.node_id(), sink.node_id()]);
    let stream = source
        .routing()
        .connect(opened.route, "sink")
        .await
        .unwrap();
    fogwire_route::services::send_to_sink(stream, 4 << 20, |_| {})
        .await
        .unwrap();
    // 4 MiB served.
    let blob = vec![7u8; 4 << 20];
    let hash = server.store().import_bytes(&blob, None).unwrap();
    fetcher.replication().fetch(hash, None, None).await.unwrap();

    let client = ledger.ledger().client();
    // At least the 4 MiB each (the relay also carried the control
    // traffic; the server the encoding's hash pairs).
    let (relay_view, server_view) = wait::until_async("the relay and server paid", || async {
        let relay_view = client
            .account(&Id(*relay.node_id().as_bytes()))
            .await
            .unwrap();
        let server_view = client
            .account(&Id(*server.node_id().as_bytes()))
            .await
            .unwrap();
        (relay_view.account.balance >= 4 * COIN && server_view.account.balance >= 4 * COIN)
            .then_some((relay_view, server_view))
    })
    .await;
    let source_view = client
        .account(&Id(*source.node_id().as_bytes()))
        .await
        .unwrap();
    let fetcher_view = client
        .account(&Id(*fetcher.node_id().as_bytes()))
        .await
        .unwrap();
    assert_eq!(
        source_view.account.balance,
        100 * COIN - relay_view.account.balance
    );
    assert_eq!(
        fetcher_view.account.balance,
        100 * COIN - server_view.account.balance
    );
    assert!(relay_view.flow.earned_total >= 4 * COIN);
    assert!(relay_view.flow.earned_per_hour > 0);
    assert_eq!(source_view.flow.spent_total, relay_view.account.balance);
    assert_eq!(client.info().await.unwrap().supply_error, None);
    // Who paid is told apart: a payer's link keeps its slot before others'
    // (fogwire_link::slots), and `fogwire peers` shows it.
    let pays = |node: &Node, peer: &Node| {
        let id = peer.node_id().to_string();
        node.peers().into_iter().any(|p| p.node_id == id && p.pays)
    };
    // (Marked once each earner has heard back from the ledger.)
    wait::until(
        "the server's fetcher and the relay's source count as paying",
        || pays(&server, &fetcher) && pays(&relay, &source),
    )
    .await;
    assert!(
        !pays(&fetcher, &server),
        "the fetcher was never paid by the server"
    );
    assert!(!pays(&relay, &sink), "the sink paid nothing");
}
