//! The ledger: signed transactions applied and persisted per second, in
//! the ledger's own process and from another node over a real link —
//! beside, in the same run, the signature check alone, the state machine
//! alone, and one durable redb commit per transaction (what batching
//! saves) — and one payment's time from submission to durable receipt
//! beside a read of the same ledger over the same link.

use std::sync::Arc;
use std::time::Instant;

use fogwire_identity::Keypair;
use fogwire_ledger::LedgerService;
use fogwire_ledger::proto::{COIN, Genesis, Id, Ledger, Op, Rules, SignedTransaction, Transaction};
use fogwire_node::{LedgerOptions, Node, NodeOptions};
use serde::Serialize;

use crate::link::{BenchError, median};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Accounts sending at once.
    pub senders: usize,
    /// Transactions per round.
    pub transactions: usize,
    /// Payments timed one after another for the latency.
    pub payments: usize,
    pub rounds: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            senders: 64,
            transactions: 20_000,
            payments: 200,
            rounds: 3,
        }
    }
}

/// Medians over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rounds: usize,
    pub senders: usize,
    pub transactions: usize,
    /// Baseline: signature checks per second on one thread.
    pub verify_per_sec: f64,
    /// Baseline: the state machine alone (already verified), one thread.
    pub apply_per_sec: f64,
    /// Baseline: redb commits per second with one transaction's bytes in
    /// each (durable, as a ledger without batching would do).
    pub durable_commits_per_sec: f64,
    /// Verified, applied and durable, submitted in the ledger's process.
    pub service_tx_per_sec: f64,
    /// The same from another node over an encrypted link (RPC).
    pub rpc_tx_per_sec: f64,
    /// One payment from another node, submitted to durable receipt.
    pub payment_ms: f64,
    /// Baseline: a read (`info`) of the ledger over the same link.
    pub read_ms: f64,
}

/// Which step is being measured, for progress output.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    Signing,
    Baselines { round: usize },
    Service { round: usize },
    Rpc { round: usize },
    Payments { round: usize },
}

fn failed(error: impl std::fmt::Display) -> BenchError {
    BenchError::Link(error.to_string())
}

fn id(key: &Keypair) -> Id {
    Id(*key.node_id().as_bytes())
}

/// Keys, a genesis funding them, and `count` transfers among them signed
/// in the order each sender must send them.
struct Workload {
    genesis: Genesis,
    /// Per sender, its transactions in sequence order.
    per_sender: Vec<Vec<SignedTransaction>>,
}

fn workload(senders: usize, count: usize) -> Result<Workload, BenchError> {
    let keys: Vec<Keypair> = (0..senders)
        .map(|_| Keypair::generate().map_err(failed))
        .collect::<Result<_, _>>()?;
    let minter = Keypair::generate().map_err(failed)?;
    let genesis = Genesis {
        rules: Rules::new(id(&minter), id(&minter)),
        accounts: keys.iter().map(|key| (id(key), 1_000_000 * COIN)).collect(),
    };
    let mut per_sender = vec![Vec::new(); senders];
    for n in 0..count {
        let from = n % senders;
        let to = (n * 7 + 1) % senders;
        let sequence = per_sender[from].len() as u64 + 1;
        let signed = Transaction {
            from: id(&keys[from]),
            sequence,
            op: Op::Transfer {
                to: id(&keys[to]),
                amount: 1 + n as u64 % 1000,
            },
        }
        .sign(&keys[from])
        .map_err(failed)?;
        per_sender[from].push(signed);
    }
    Ok(Workload {
        genesis,
        per_sender,
    })
}

fn baselines(work: &Workload, dir: &std::path::Path) -> Result<(f64, f64, f64), BenchError> {
    let all: Vec<&SignedTransaction> = work.per_sender.iter().flatten().collect();
    let started = Instant::now();
    let mut verified = Vec::with_capacity(all.len());
    for signed in &all {
        verified.push(signed.verify().map_err(failed)?);
    }
    let verify_per_sec = all.len() as f64 / started.elapsed().as_secs_f64();
    let mut ledger = Ledger::new(&work.genesis).map_err(failed)?;
    // In an order the sequence numbers allow: round robin over senders.
    let mut order = Vec::with_capacity(verified.len());
    let longest = work.per_sender.iter().map(Vec::len).max().unwrap_or(0);
    let mut offsets = Vec::new();
    let mut offset = 0;
    for txs in &work.per_sender {
        offsets.push(offset);
        offset += txs.len();
    }
    for step in 0..longest {
        for (sender, txs) in work.per_sender.iter().enumerate() {
            if step < txs.len() {
                order.push(offsets[sender] + step);
            }
        }
    }
    let started = Instant::now();
    for index in &order {
        ledger.apply(&verified[*index], 1).map_err(failed)?;
    }
    let apply_per_sec = order.len() as f64 / started.elapsed().as_secs_f64();
    // One durable commit per transaction, for 2 % of them (fsyncs are slow).
    const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("t");
    let db = redb::Database::create(dir.join("baseline.redb")).map_err(failed)?;
    let commits = (all.len() / 50).max(50);
    let started = Instant::now();
    for (n, signed) in all.iter().take(commits).enumerate() {
        let write = db.begin_write().map_err(failed)?;
        {
            let mut table = write.open_table(TABLE).map_err(failed)?;
            table
                .insert(n as u64, signed.body.as_slice())
                .map_err(failed)?;
        }
        write.commit().map_err(failed)?;
    }
    let durable_commits_per_sec = commits.min(all.len()) as f64 / started.elapsed().as_secs_f64();
    Ok((verify_per_sec, apply_per_sec, durable_commits_per_sec))
}

/// Every sender sends its transactions one after another, all senders at
/// once, through `submit`; transactions per second.
async fn stream<F, Fut>(work: &Workload, submit: F) -> Result<f64, BenchError>
where
    F: Fn(SignedTransaction) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let started = Instant::now();
    let mut senders = Vec::new();
    for txs in &work.per_sender {
        let txs = txs.clone();
        let submit = submit.clone();
        senders.push(tokio::spawn(async move {
            for signed in txs {
                submit(signed).await?;
            }
            Ok::<(), String>(())
        }));
    }
    for sender in senders {
        sender.await.map_err(failed)?.map_err(failed)?;
    }
    let count: usize = work.per_sender.iter().map(Vec::len).sum();
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Runs the benchmark, telling `progress` each step.
pub fn run(options: &Options, progress: &mut dyn FnMut(Step)) -> Result<Report, BenchError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(failed)?;
    let mut verify = Vec::new();
    let mut apply = Vec::new();
    let mut commits = Vec::new();
    let mut service_rates = Vec::new();
    let mut rpc_rates = Vec::new();
    let mut payments = Vec::new();
    let mut reads = Vec::new();
    for round in 0..options.rounds {
        progress(Step::Signing);
        let work = workload(options.senders, options.transactions)?;
        let dir = tempfile::tempdir().map_err(failed)?;
        progress(Step::Baselines { round });
        let (v, a, c) = baselines(&work, dir.path())?;
        verify.push(v);
        apply.push(a);
        commits.push(c);

        progress(Step::Service { round });
        let rate = runtime.block_on(async {
            let service = LedgerService::open(&dir.path().join("service.redb"), &work.genesis)
                .map_err(failed)?;
            stream(&work, move |signed| {
                let service = service.clone();
                async move {
                    service
                        .submit(signed)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            })
            .await
        })?;
        service_rates.push(rate);

        progress(Step::Rpc { round });
        let work = workload(options.senders, options.transactions)?;
        let (rate, payment, read) = runtime.block_on(async {
            let client_key = Arc::new(Keypair::generate().map_err(failed)?);
            let mut genesis = work.genesis.clone();
            genesis.accounts.push((id(&client_key), 1000 * COIN));
            let ledger_key = Arc::new(Keypair::generate().map_err(failed)?);
            let mut ledger_options = NodeOptions::local(ledger_key);
            ledger_options.ledger = LedgerOptions {
                serve: Some(genesis),
                node: None,
            };
            ledger_options.ledger_path = Some(dir.path().join("node.redb"));
            let ledger = Node::start(ledger_options).await.map_err(failed)?;
            let mut client_options = NodeOptions::local(client_key);
            client_options.ledger = LedgerOptions {
                serve: None,
                node: Some(ledger.node_id()),
            };
            let client = Node::start(client_options).await.map_err(failed)?;
            client.connect(ledger.peer_addr()).await.map_err(failed)?;
            let ledger_client = client.ledger().client().clone();
            ledger_client.info().await.map_err(failed)?;
            let submitting = ledger_client.clone();
            let rate = stream(&work, move |signed| {
                let client = submitting.clone();
                async move {
                    client
                        .submit(&signed)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            })
            .await?;
            progress(Step::Payments { round });
            // One payment at a time from the client node's wallet, beside
            // a read over the same link.
            let wallet = client.ledger().wallet().clone();
            let to = Id(*ledger.node_id().as_bytes());
            let mut payment_times = Vec::new();
            let mut read_times = Vec::new();
            for _ in 0..options.payments {
                let started = Instant::now();
                ledger_client.info().await.map_err(failed)?;
                read_times.push(started.elapsed().as_secs_f64() * 1e3);
                let started = Instant::now();
                wallet
                    .send(Op::Transfer { to, amount: 1 })
                    .await
                    .map_err(failed)?;
                payment_times.push(started.elapsed().as_secs_f64() * 1e3);
            }
            client.shutdown().await;
            ledger.shutdown().await;
            Ok::<_, BenchError>((rate, median(&payment_times), median(&read_times)))
        })?;
        rpc_rates.push(rate);
        payments.push(payment);
        reads.push(read);
    }
    Ok(Report {
        rounds: options.rounds,
        senders: options.senders,
        transactions: options.transactions,
        verify_per_sec: median(&verify),
        apply_per_sec: median(&apply),
        durable_commits_per_sec: median(&commits),
        service_tx_per_sec: median(&service_rates),
        rpc_tx_per_sec: median(&rpc_rates),
        payment_ms: median(&payments),
        read_ms: median(&reads),
    })
}
