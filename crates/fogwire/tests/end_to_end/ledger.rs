//! The ledger from the command line, with hand-started nodes: one node
//! runs the ledger (short pay periods and suspicions, so the test sees
//! them end), a hub drives its wallet's whole life cycle — register, pay,
//! a refused payout over its unlocked funds, a payday refused before the
//! period ends and accepted after, withdraw, register again — and the DAO
//! (a key file, not a node) suspects, rehabilitates, suspects again and
//! bans it. Each refusal says why; the supply check holds throughout.

use std::time::Duration;

use fogwire_api::{LedgerAccount, LedgerHistoryLine, LedgerInfo};

use crate::harness::{TestNode, fogwire, init_home, stderr, stdout};

fn json<T: serde::de::DeserializeOwned>(node: &TestNode, args: &[&str]) -> T {
    let out = node.cli(args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ok(node: &TestNode, args: &[&str]) -> String {
    let out = node.cli(args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

/// Runs a command that must fail, and returns its error.
fn refused(node: &TestNode, args: &[&str]) -> String {
    let out = node.cli(args);
    assert!(
        !out.status.success(),
        "{args:?} should fail: {}",
        stdout(&out)
    );
    stderr(&out)
}

fn id_of(home: &std::path::Path) -> String {
    let out = fogwire(home, &["id"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_owned()
}

/// Stops a node (SIGTERM) and starts it again in the same home.
fn restart(mut node: TestNode) -> TestNode {
    assert!(node.stop("TERM").success());
    node.start_again()
}

fn state(node: &TestNode) -> String {
    let account: LedgerAccount = json(node, &["hub", "status", "--json"]);
    account.wallet.map(|w| w.state).unwrap_or_default()
}

#[test]
fn the_hub_wallet_life_cycle_from_the_command_line() {
    // The hub's and the DAO's keys exist before the ledger's genesis names
    // them; the DAO is only a key file.
    let hub_home = init_home("127.0.0.1:0");
    let dao_home = init_home("127.0.0.1:0");
    let hub_id = id_of(hub_home.path());
    let dao_id = id_of(dao_home.path());
    let dao_key = dao_home.path().join("data/node.key");
    let dao_key = dao_key.to_str().unwrap();
    let ledger = TestNode::start_with(
        "ledger",
        &format!(
            "serve = true\ndao = \"{dao_id}\"\ngenesis = [{{ account = \"{hub_id}\", coins = \"100\" }}]\n\
             pay_period_ms = 3000\nsuspect_ms = 3000\n"
        ),
    );
    let hub = TestNode::start_in(hub_home);
    let worker = TestNode::start("");
    ok(&hub, &["connect", &ledger.peer_addr()]);
    ok(&worker, &["connect", &hub.peer_addr()]);
    let worker_id = worker.node_id().to_string();

    let info: LedgerInfo = json(&hub, &["ledger", "--json"]);
    assert_eq!(info.node, ledger.node_id().to_string());
    assert_eq!((info.genesis, info.supply_ok), (100_000_000, true));
    assert_eq!(info.dao, dao_id);

    // Created → Registered, with a deposit of 1 coin frozen.
    let out = ok(&hub, &["hub", "register", "--fund", "10"]);
    assert!(out.contains("registered its hub wallet"), "{out}");
    assert_eq!(state(&hub), "registered");
    let out = ok(&hub, &["wallet", "send", &worker_id, "2.5"]);
    assert!(out.contains("sent 2.5"), "{out}");
    // Paying 3 locks 0.9: 10 − 1 frozen − 3 − 0.9 = 5.1 left unlocked.
    ok(&hub, &["hub", "pay", &worker_id, "3"]);
    let account: LedgerAccount = json(&hub, &["hub", "status", "--json"]);
    let wallet = account.wallet.unwrap();
    assert_eq!(
        (wallet.balance, wallet.locked, wallet.unlocked),
        (7_000_000, 900_000, 5_100_000)
    );
    let error = refused(&hub, &["hub", "pay", &worker_id, "4"]);
    assert!(error.contains("unlocked"), "{error}");
    // Payday before the period ends: refused, saying when.
    let error = refused(&hub, &["hub", "payday"]);
    assert!(error.contains("not before"), "{error}");
    let error = refused(&hub, &["hub", "withdraw", "1"]);
    assert!(error.contains("needs it idle"), "{error}");
    std::thread::sleep(Duration::from_millis(3100));
    ok(&hub, &["hub", "payday"]);
    assert_eq!(state(&hub), "idle");
    // 0.5 % of the 0.9 locked went to the DAO.
    let dao: LedgerAccount = json(&hub, &["wallet", "balance", &dao_id, "--json"]);
    assert_eq!(dao.balance, 4500);
    ok(&hub, &["hub", "withdraw", "1"]);
    ok(&hub, &["hub", "register"]);
    assert_eq!(state(&hub), "registered");

    // Only the DAO's key may suspect.
    let error = refused(&worker, &["dao", "suspect", &hub_id]);
    assert!(error.contains("DAO"), "{error}");
    ok(&worker, &["dao", "suspect", &hub_id, "--key", dao_key]);
    assert_eq!(state(&hub), "suspected");
    let error = refused(&hub, &["hub", "pay", &worker_id, "0.1"]);
    assert!(error.contains("suspected"), "{error}");
    let error = refused(&worker, &["dao", "ban", &hub_id, "--key", dao_key]);
    assert!(error.contains("not before"), "{error}");
    ok(&worker, &["dao", "rehab", &hub_id, "--key", dao_key]);
    assert_eq!(state(&hub), "idle");
    ok(&hub, &["hub", "register"]);
    ok(&worker, &["dao", "suspect", &hub_id, "--key", dao_key]);
    std::thread::sleep(Duration::from_millis(3100));
    let out = ok(&worker, &["dao", "ban", &hub_id, "--key", dao_key]);
    assert!(out.contains("banned hub"), "{out}");
    assert_eq!(state(&hub), "punished");
    let error = refused(&hub, &["hub", "fund", "1"]);
    assert!(error.contains("banned"), "{error}");
    // The DAO holds what the hub's wallet held: 10 − 3 paid − 0.0045 fee
    // − 1 withdrawn, plus the fee.
    let dao: LedgerAccount = json(&hub, &["wallet", "balance", &dao_id, "--json"]);
    assert_eq!(dao.balance, 6_000_000);

    // A refund names an escrow by its id; one that does not exist is
    // refused by the ledger.
    let error = refused(&worker, &["wallet", "refund", "zz"]);
    assert!(error.contains("64 hex digits"), "{error}");
    let error = refused(&worker, &["wallet", "refund", &"00".repeat(32)]);
    assert!(error.contains("does not exist"), "{error}");

    let history: Vec<LedgerHistoryLine> = json(&hub, &["wallet", "history", "--json"]);
    assert_eq!(history.first().unwrap().op, "ban");
    assert!(history.iter().any(|line| line.op == "wallet_payday"));
    let out = ok(&hub, &["wallet", "balance"]);
    assert!(out.contains("punished"), "{out}");
    let info: LedgerInfo = json(&worker, &["ledger", "--json"]);
    assert!(info.supply_ok, "{info:?}");
    assert_eq!(info.held, 100_000_000);
}

/// The market from the command line: two workers ask at a hub, a buyer's
/// bid takes the cheaper offers from two different workers at once, a
/// bid the buyer could not pay is refused, orders are cancelled by their
/// owner only, and the hub's book (deals included) survives its restart.
#[test]
fn the_market_from_the_command_line() {
    use fogwire_api::{MarketDeal, MarketOrder, MarketPosted};
    let buyer_home = init_home("127.0.0.1:0");
    let buyer_id = id_of(buyer_home.path());
    let hub = TestNode::start_with(
        "ledger",
        &format!("serve = true\ngenesis = [{{ account = \"{buyer_id}\", coins = \"1\" }}]\n"),
    );
    let text = std::fs::read_to_string(hub.home().join("fogwire.toml")).unwrap();
    std::fs::write(
        hub.home().join("fogwire.toml"),
        text.replace("[compute]\n", "[compute]\nhub = true\n"),
    )
    .unwrap();
    let hub = restart(hub);
    let buyer = TestNode::start_in(buyer_home);
    let workers = [TestNode::start(""), TestNode::start("")];
    for node in workers.iter().chain([&buyer]) {
        ok(node, &["connect", &hub.peer_addr()]);
    }
    crate::harness::wait_until("the hub to be known", || {
        buyer.cli(&["market", "asks", "--json"]).status.success()
    });
    let posted: MarketPosted = json(
        &workers[0],
        &[
            "market", "ask", "--price", "0.002", "--slots", "2", "--cores", "2", "--json",
        ],
    );
    assert!(posted.fills.is_empty());
    json::<MarketPosted>(
        &workers[1],
        &[
            "market", "ask", "--price", "0.001", "--slots", "1", "--cores", "4", "--json",
        ],
    );
    // A third offer by the first worker, cheaper: still one replica.
    let own: MarketPosted = json(
        &workers[0],
        &[
            "market", "ask", "--price", "0.0005", "--slots", "1", "--json",
        ],
    );
    let asks: Vec<MarketOrder> = json(&buyer, &["market", "asks", "--json"]);
    assert_eq!(
        asks.iter().map(|a| a.price).collect::<Vec<_>>(),
        vec![500, 1000, 2000]
    );
    // Too dear for the buyer's 1 coin: 0.6 × 2 replicas.
    let error = refused(
        &buyer,
        &["market", "bid", "--max-price", "0.6", "--replicas", "2"],
    );
    assert!(error.contains("you hold 1"), "{error}");
    let posted: MarketPosted = json(
        &buyer,
        &[
            "market",
            "bid",
            "--max-price",
            "0.003",
            "--replicas",
            "2",
            "--cores",
            "2",
            "--json",
        ],
    );
    // Needs 2 cores: worker 0's 1-core ask cannot serve; worker 1's at
    // 0.001, then worker 0's at 0.002.
    let deal = &posted.deals[0];
    assert_eq!(
        deal.fills.iter().map(|f| f.price).collect::<Vec<_>>(),
        vec![1000, 2000]
    );
    assert_eq!(deal.price, 3000);
    // Only its owner cancels an order.
    let error = refused(&buyer, &["market", "cancel", &own.id.to_string()]);
    assert!(error.contains("only whoever posted"), "{error}");
    ok(&workers[0], &["market", "cancel", &own.id.to_string()]);
    let resting = json::<MarketPosted>(
        &buyer,
        &[
            "market",
            "bid",
            "--max-price",
            "0.0001",
            "--replicas",
            "1",
            "--json",
        ],
    );
    assert!(resting.deals.is_empty());
    let bids: Vec<MarketOrder> = json(&buyer, &["market", "bids", "--json"]);
    assert_eq!(bids.len(), 1);
    assert_eq!(bids[0].unit, "task");
    // Priced per 10⁹ fuel, a cheap ask does not fill a bid per task.
    let fuel: MarketPosted = json(
        &workers[1],
        &[
            "market", "ask", "--price", "0.00001", "--unit", "gfuel", "--json",
        ],
    );
    assert!(fuel.fills.is_empty());
    let error = refused(
        &workers[1],
        &["market", "ask", "--price", "1", "--unit", "litre"],
    );
    assert!(error.contains("gb_served"), "{error}");
    ok(&workers[1], &["market", "cancel", &fuel.id.to_string()]);
    let events: Vec<fogwire_api::MarketEvent> = json(&buyer, &["market", "events", "--json"]);
    assert!(
        events
            .iter()
            .any(|e| e.kind == "cancelled" && e.order == own.id)
    );
    assert!(events.iter().any(|e| e.kind == "dealt"));
    let out = ok(&buyer, &["market", "asks"]);
    assert!(out.contains("1/2 left"), "{out}");

    // The hub restarts: the book and the deals come back from its log.
    let hub = restart(hub);
    for node in workers.iter().chain([&buyer]) {
        ok(node, &["connect", &hub.peer_addr()]);
    }
    let deals: Vec<MarketDeal> = json(&hub, &["market", "deals", "--json"]);
    assert_eq!(deals.len(), 1);
    assert_eq!(deals[0].buyer, buyer_id);
    let asks: Vec<MarketOrder> = json(&hub, &["market", "asks", "--json"]);
    assert_eq!(asks.len(), 1);
    let bids: Vec<MarketOrder> = json(&hub, &["market", "bids", "--json"]);
    assert_eq!(bids.len(), 1);
    // Its metrics say the same, beside its ledger's and its coins.
    let metrics = ok(&hub, &["metrics"]);
    for line in [
        "fogwire_market_asks 1",
        "fogwire_market_bids 1",
        "fogwire_market_deals 1",
        "fogwire_ledger_supply_ok 1",
        "fogwire_ledger_earned_per_hour_units{source=\"computing\"}",
        "fogwire_hub_workers ",
        "fogwire_ledger_log_entries ",
        "fogwire_ledger_balance_units ",
    ] {
        assert!(metrics.contains(line), "no {line} in:\n{metrics}");
    }
}

/// A paid job from the command line: a buyer who cannot pay is refused
/// before anything runs, an unpaid job is refused by a charging hub with
/// how to pay, and a paid one shows its escrow settled: workers and hub
/// paid, the rest back.
#[test]
fn a_paid_job_from_the_command_line() {
    let buyer_home = init_home("127.0.0.1:0");
    let poor_home = init_home("127.0.0.1:0");
    let hub_home = init_home("127.0.0.1:0");
    let (buyer_id, poor_id, hub_id) = (
        id_of(buyer_home.path()),
        id_of(poor_home.path()),
        id_of(hub_home.path()),
    );
    let text = std::fs::read_to_string(hub_home.path().join("fogwire.toml")).unwrap();
    std::fs::write(
        hub_home.path().join("fogwire.toml"),
        text.replace("[compute]\n", "[compute]\nhub = true\ncharge = true\n")
            .replace(
                "[ledger]\n",
                &format!(
                    "[ledger]\nserve = true\ngenesis = [{{ account = \"{buyer_id}\", coins = \"2\" }}, \
                     {{ account = \"{poor_id}\", coins = \"0.001\" }}, {{ account = \"{hub_id}\", coins = \"20\" }}]\n"
                ),
            ),
    )
    .unwrap();
    let hub = TestNode::start_in(hub_home);
    let worker = TestNode::start_with("compute", "worker = true\nslots = 2");
    let buyer = TestNode::start_in(buyer_home);
    let poor = TestNode::start_in(poor_home);
    for node in [&worker, &buyer, &poor] {
        ok(node, &["connect", &hub.peer_addr()]);
    }
    ok(&hub, &["hub", "register", "--fund", "10"]);
    crate::harness::wait_until("the hub to know its worker", || {
        let out = hub.cli(&["workers", "--json"]);
        out.status.success()
            && serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
                .is_ok_and(|w| w.len() == 1)
    });
    let scratch = tempfile::tempdir().unwrap();
    let program = scratch.path().join("hello.wat");
    std::fs::write(&program, fogwire_compute::guests::HELLO).unwrap();
    let program = program.to_str().unwrap();
    let job = [
        "job",
        "submit",
        program,
        "--replicas",
        "1",
        "--replication",
        "trust",
    ];

    let error = refused(&buyer, &job);
    assert!(error.contains("--max-price"), "{error}");
    // Amounts in coins, never raw ledger units.
    assert!(error.contains(" coins per task run"), "{error}");
    assert!(!error.contains("units"), "{error}");
    let mut poor_job = job.to_vec();
    poor_job.extend(["--max-price", "0.5"]);
    let error = refused(&poor, &poor_job);
    assert!(error.contains("cannot pay up to 0.5 coins"), "{error}");
    let mut paid = job.to_vec();
    paid.extend(["--max-price", "0.5"]);
    let out = ok(&buyer, &paid);
    assert!(out.contains("escrow   0.5 coins — "), "{out}");
    assert!(out.contains("to the hub"), "{out}");
    // 0.001 and a little for its fuel to the worker, 10 % of that to the
    // hub: just under 1.9989 left of 2.
    let account: LedgerAccount = json(&buyer, &["wallet", "balance", "--json"]);
    assert!(
        (1_998_800..1_998_900).contains(&account.balance),
        "{}",
        account.balance
    );
    let info: LedgerInfo = json(&buyer, &["ledger", "--json"]);
    assert!(info.supply_ok, "{info:?}");
    // The worker's metrics count the task; the hub's, the job.
    let metrics = ok(&worker, &["metrics"]);
    assert!(
        metrics.contains("fogwire_worker_tasks{state=\"done\"} 1"),
        "{metrics}"
    );
    let metrics = ok(&hub, &["metrics"]);
    assert!(
        metrics.contains("fogwire_hub_jobs{state=\"done\"} 1"),
        "{metrics}"
    );
}
