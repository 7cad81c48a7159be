//! The demo's coins: n1 keeps the ledger (as board 1 of a miner box
//! would), every node starts with 100 coins, the hub bonds a wallet and
//! the workers bond deposits with it; at the end each node's coins,
//! earnings and spending, and the ledger's supply check.

use std::time::Duration;

use fogwire_identity::NodeId;
use fogwire_ledger::format_coins;
use fogwire_ledger::proto::{COIN, Genesis, Id, Op, Rules, Transaction};
use fogwire_node::LedgerOptions;

use crate::network::Network;
use crate::routes::Narrator;

/// The node that keeps the ledger.
pub const LEDGER_NODE: usize = 1;
/// What every node starts with.
pub const START_COINS: u64 = 100;

/// Each node's ledger settings: n1 serves it (n0 if there is no n1).
pub fn ledger_options(ids: &[NodeId]) -> Vec<LedgerOptions> {
    let keeper = LEDGER_NODE.min(ids.len().saturating_sub(1));
    let id = |node: &NodeId| Id(*node.as_bytes());
    let genesis = Genesis {
        rules: Rules {
            // Dear enough that a demo's megabytes show.
            price_per_gib_forwarded: 4 * COIN,
            price_per_gib_served: 400 * COIN,
            ..Rules::new(id(&ids[keeper]), id(&ids[keeper]))
        },
        accounts: ids
            .iter()
            .map(|node| (id(node), START_COINS * COIN))
            .collect(),
    };
    (0..ids.len())
        .map(|index| LedgerOptions {
            serve: (index == keeper).then(|| genesis.clone()),
            node: Some(ids[keeper]),
        })
        .collect()
}

/// The hub registers a bonded wallet; every worker bonds a deposit with it.
pub(crate) async fn bond(
    network: &Network,
    hub: usize,
    narrate: Narrator<'_>,
) -> Result<(), String> {
    let nodes = network.nodes();
    let hub_node = &nodes[hub].node;
    let wallet = hub_node.ledger().wallet().clone();
    wallet
        .send(Op::WalletFund { amount: 10 * COIN })
        .await
        .map_err(|e| e.to_string())?;
    wallet
        .send(Op::WalletRegister)
        .await
        .map_err(|e| e.to_string())?;
    let hub_id = Id(*hub_node.node_id().as_bytes());
    let mut bonded = 0;
    for (index, worker) in nodes.iter().enumerate() {
        if index == hub || worker.node.worker().is_none() {
            continue;
        }
        let wallet = worker.node.ledger().wallet().clone();
        wallet
            .send(Op::DepositPost {
                hub: hub_id,
                amount: COIN,
            })
            .await
            .map_err(|e| e.to_string())?;
        bonded += 1;
    }
    narrate(&format!(
        "ledger: {} keeps it; every node starts with {START_COINS} coins; {} bonds a hub wallet of 10 coins (1 frozen) and {bonded} workers bond 1 coin each with it",
        nodes[LEDGER_NODE.min(nodes.len() - 1)].name,
        nodes[hub].name
    ));
    Ok(())
}

/// Each node's coins, and the supply check; whether it passed.
pub async fn report(network: &Network, narrate: Narrator<'_>) -> Option<bool> {
    let nodes = network.nodes();
    let client = nodes.first()?.node.ledger().client().clone();
    // Receipts are redeemed every few seconds: let the last ones land.
    // Receipts are handed over and redeemed every few seconds: let the
    // last ones land (at most 15 s, once the first have).
    tokio::time::sleep(fogwire_account::earn::EVERY + Duration::from_secs(1)).await;
    let waiting = std::time::Instant::now();
    loop {
        let mut any = false;
        for node in nodes {
            any |= redeemed_by(&client, &Id(*node.id().as_bytes())).await > 0;
        }
        if any || waiting.elapsed() > Duration::from_secs(15) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut receipts = 0;
    narrate("coins: node   balance    earned     spent   coins/hour  receipts (earned)");
    for node in nodes {
        let Ok(view) = client.account(&Id(*node.id().as_bytes())).await else {
            continue;
        };
        let deposits: u64 = view
            .deposits
            .iter()
            .filter(|(worker, ..)| *worker == view.id)
            .map(|(.., d)| d.amount)
            .sum();
        let wallet = view.wallet.map(|w| w.balance).unwrap_or(0);
        let redeemed = redeemed_by(&client, &view.id).await;
        let mut held = String::new();
        if wallet > 0 {
            held.push_str(&format!(" + {} in its hub wallet", format_coins(wallet)));
        }
        if deposits > 0 {
            held.push_str(&format!(" + {} bonded", format_coins(deposits)));
        }
        narrate(&format!(
            "coins:   {:<4} {:>9} {:>9} {:>9} {:>12} {:>9}{held}",
            node.name,
            format_coins(view.account.balance),
            format_coins(view.flow.earned_total),
            format_coins(view.flow.spent_total),
            format_coins(view.flow.earned_per_hour),
            redeemed,
        ));
        receipts += redeemed;
    }
    narrate(&format!(
        "ledger: {receipts} receipt(s) redeemed for forwarding and serving, each paid by whoever signed it"
    ));
    let info = client.info().await.ok()?;
    let ok = info.supply_error.is_none();
    narrate(&format!(
        "ledger: {} transactions; supply check {}: {} coins held = genesis {} + minted {}",
        info.log_len,
        if ok { "passed" } else { "FAILED" },
        format_coins(info.held),
        format_coins(info.genesis),
        format_coins(info.minted)
    ));
    Some(ok)
}

/// Receipts `id` redeemed (forwarding as a relay, serving as a seeder),
/// among its last 256 transactions.
async fn redeemed_by(client: &fogwire_ledger::client::LedgerClient, id: &Id) -> usize {
    client
        .history(id, 0, 256)
        .await
        .map(|entries| {
            entries
                .iter()
                .filter_map(|entry| Transaction::decode(&entry.signed.body).ok())
                .filter(|tx| tx.from == *id && matches!(tx.op, Op::Redeem { .. }))
                .count()
        })
        .unwrap_or(0)
}
