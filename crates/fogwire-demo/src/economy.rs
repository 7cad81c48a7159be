//! The demo's coins: the cluster's manifest pins the ledger to n1 (as
//! board 1 of a miner box would), every node starts with 100 coins, the
//! hub bonds a wallet and the workers bond deposits with it; at the end
//! each node's coins, earnings and spending, and the ledger's supply
//! check.

use std::time::Duration;

use fogwire_ledger::format_coins;
use fogwire_ledger::proto::{COIN, Id, Op, Transaction};

use crate::cluster::BoxRoles;
use crate::network::Network;
use crate::routes::Narrator;

/// The node the manifest pins the ledger to.
pub const LEDGER_NODE: usize = 1;
/// What every node starts with.
pub const START_COINS: u64 = 100;

/// The hub registers a bonded wallet; every worker bonds a deposit with it.
pub(crate) async fn bond(
    network: &Network,
    roles: &BoxRoles,
    narrate: Narrator<'_>,
) -> Result<(), String> {
    let hub = roles.hub;
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
        if index == hub || !roles.workers.contains(&index) {
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
        nodes[roles.ledger].name, nodes[hub].name
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
