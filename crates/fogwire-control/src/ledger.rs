//! The control API's ledger endpoints: the ledger's state and rules, an
//! account (its hub wallet, deposits and escrows) and its history, and
//! operations this node signs — or that were signed elsewhere (the DAO's
//! key file) — sent to the ledger wherever it runs.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use bytes::Bytes;
use fogwire_identity::{NodeId, Signature};
use fogwire_ledger::client::ClientError;
use fogwire_ledger::proto::{Id, Op, SignedTransaction, Transaction, WalletState};
use fogwire_ledger::rpc::AccountView;
use fogwire_ledger::{Receipt, describe, name_of};

use crate::jobs::query_number;
use crate::server::{ApiState, Refusal};
use fogwire_api::{
    DepositInfo, EscrowInfo, HubWalletInfo, LedgerAccount, LedgerHistoryLine, LedgerInfo,
    LedgerOpRequest, LedgerReceipt, LedgerSubmitRequest,
};

impl From<ClientError> for Refusal {
    fn from(error: ClientError) -> Self {
        let status = match &error {
            ClientError::Refused(_) | ClientError::NoEscrow(_) | ClientError::Local(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ClientError::Unreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        };
        Refusal(status, error.to_string())
    }
}

fn no_ledger() -> Refusal {
    Refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        "the ledger is not started".into(),
    )
}

fn id_of(node: &NodeId) -> Id {
    Id(*node.as_bytes())
}

/// `me`, a node id, or the unique start of a known node's id.
async fn account_named(state: &ApiState, name: &str) -> Result<NodeId, Refusal> {
    if name == "me" || name.is_empty() {
        return Ok(state.node.node_id());
    }
    let nodes = state.node.routing().nodes().await?;
    crate::routes::resolve(&state.names, &nodes, name)
}

pub(crate) async fn info(State(state): State<Arc<ApiState>>) -> Result<Json<LedgerInfo>, Refusal> {
    let node = state.node.as_ref();
    let client = node.ledger().ok_or_else(no_ledger)?;
    let info = client.info().await?;
    let ledger_node = node
        .ledger_node()
        .await
        .map(|id| id.to_string())
        .unwrap_or_default();
    Ok(Json(LedgerInfo {
        node: ledger_node,
        minter: name_of(&info.rules.minter),
        dao: name_of(&info.rules.dao),
        hub_deposit: info.rules.hub_deposit,
        lock_percent: info.rules.lock_percent,
        dao_fee_per_mille: info.rules.dao_fee_per_mille,
        pay_period_ms: info.rules.pay_period_ms,
        suspect_ms: info.rules.suspect_ms,
        unbond_ms: info.rules.unbond_ms,
        genesis: info.genesis,
        minted: info.minted,
        held: info.held,
        supply_ok: info.supply_error.is_none(),
        supply_error: info.supply_error,
        accounts: info.accounts,
        log_len: info.log_len,
        time_ms: info.time_ms,
    }))
}

/// An account as the API shows it, with the rules' dates worked out.
pub(crate) fn account_json(
    view: AccountView,
    rules: &fogwire_ledger::proto::Rules,
) -> LedgerAccount {
    LedgerAccount {
        id: name_of(&view.id),
        balance: view.account.balance,
        sequence: view.account.sequence,
        wallet: view.wallet.map(|wallet| HubWalletInfo {
            state: wallet.state.to_string(),
            balance: wallet.balance,
            frozen: wallet.frozen,
            locked: wallet.locked,
            unlocked: wallet.unlocked(),
            registered_ms: wallet.registered_ms,
            suspected_ms: wallet.suspected_ms,
            payday_from_ms: (wallet.state == WalletState::Registered)
                .then(|| wallet.registered_ms.saturating_add(rules.pay_period_ms)),
            ban_from_ms: (wallet.state == WalletState::Suspected)
                .then(|| wallet.suspected_ms.saturating_add(rules.suspect_ms)),
        }),
        deposits: view
            .deposits
            .into_iter()
            .map(|(worker, hub, deposit)| DepositInfo {
                worker: name_of(&worker),
                hub: name_of(&hub),
                amount: deposit.amount,
                reclaim_from_ms: deposit
                    .unbond_ms
                    .map(|at| at.saturating_add(rules.unbond_ms)),
            })
            .collect(),
        escrows: view
            .escrows
            .into_iter()
            .map(|(id, escrow)| EscrowInfo {
                id: id.to_hex(),
                owner: name_of(&escrow.owner),
                arbiter: name_of(&escrow.arbiter),
                amount: escrow.amount,
                expires_ms: escrow.expires_ms,
            })
            .collect(),
        time_ms: view.time_ms,
        earned_total: view.flow.earned_total,
        spent_total: view.flow.spent_total,
        earned_last_hour: view.flow.earned_last_hour,
        spent_last_hour: view.flow.spent_last_hour,
        earned_per_hour: view.flow.earned_per_hour,
        earned_per_hour_by_source: fogwire_api::EarnedBySource {
            forwarding: view.flow.per_hour_by_source.forwarding,
            serving: view.flow.per_hour_by_source.serving,
            computing: view.flow.per_hour_by_source.computing,
        },
    }
}

pub(crate) async fn account(
    State(state): State<Arc<ApiState>>,
    Path(who): Path<String>,
) -> Result<Json<LedgerAccount>, Refusal> {
    let node = state.node.as_ref();
    let client = node.ledger().ok_or_else(no_ledger)?;
    let id = account_named(&state, &who).await?;
    let view = client.account(&id_of(&id)).await?;
    let info = client.info().await?;
    Ok(Json(account_json(view, &info.rules)))
}

pub(crate) async fn history(
    State(state): State<Arc<ApiState>>,
    Path(who): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<LedgerHistoryLine>>, Refusal> {
    let node = state.node.as_ref();
    let client = node.ledger().ok_or_else(no_ledger)?;
    let id = account_named(&state, &who).await?;
    let before = query_number(&raw, "before", 0u64)?;
    let limit = query_number(&raw, "limit", 20u64)?;
    let entries = client.history(&id_of(&id), before, limit).await?;
    Ok(Json(
        entries
            .into_iter()
            .map(|entry| {
                let tx = Transaction::decode(&entry.signed.body).ok();
                LedgerHistoryLine {
                    index: entry.index,
                    time_ms: entry.time_ms,
                    from: tx.as_ref().map(|tx| name_of(&tx.from)).unwrap_or_default(),
                    sequence: tx.as_ref().map(|tx| tx.sequence).unwrap_or_default(),
                    op: tx
                        .as_ref()
                        .map(|tx| tx.op.name().to_owned())
                        .unwrap_or_default(),
                    text: tx.map(|tx| describe(&tx.op)).unwrap_or_default(),
                }
            })
            .collect(),
    ))
}

fn receipt_json(receipt: Receipt, op: &Op) -> LedgerReceipt {
    LedgerReceipt {
        index: receipt.index,
        time_ms: receipt.time_ms,
        replayed: receipt.replayed,
        text: describe(op),
    }
}

fn bad(message: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, message.into())
}

pub(crate) async fn op(
    State(state): State<Arc<ApiState>>,
    body: Bytes,
) -> Result<Json<LedgerReceipt>, Refusal> {
    let node = state.node.as_ref();
    let request: LedgerOpRequest =
        serde_json::from_slice(&body).map_err(|e| bad(format!("not a ledger operation: {e}")))?;
    let named = |name: String| {
        let state = &state;
        async move { account_named(state, &name).await.map(|id| id_of(&id)) }
    };
    let op = match request {
        LedgerOpRequest::Transfer { to, amount } => Op::Transfer {
            to: named(to).await?,
            amount,
        },
        LedgerOpRequest::Mint { to, amount, reason } => Op::Mint {
            to: named(to).await?,
            amount,
            reason,
        },
        LedgerOpRequest::WalletFund { amount } => Op::WalletFund { amount },
        LedgerOpRequest::WalletRegister => Op::WalletRegister,
        LedgerOpRequest::WalletPay { to, amount } => Op::WalletPay {
            to: named(to).await?,
            amount,
        },
        LedgerOpRequest::WalletPayday => Op::WalletPayday,
        LedgerOpRequest::WalletWithdraw { amount } => Op::WalletWithdraw { amount },
        LedgerOpRequest::Suspect { hub } => Op::Suspect {
            hub: named(hub).await?,
        },
        LedgerOpRequest::Rehab { hub } => Op::Rehab {
            hub: named(hub).await?,
        },
        LedgerOpRequest::Ban { hub } => Op::Ban {
            hub: named(hub).await?,
        },
        LedgerOpRequest::DepositPost { hub, amount } => Op::DepositPost {
            hub: named(hub).await?,
            amount,
        },
        LedgerOpRequest::DepositUnbond { hub } => Op::DepositUnbond {
            hub: named(hub).await?,
        },
        LedgerOpRequest::DepositReclaim { hub } => Op::DepositReclaim {
            hub: named(hub).await?,
        },
        LedgerOpRequest::Refund { escrow } => Op::Refund {
            id: Id::from_hex(&escrow).ok_or_else(|| {
                bad("an escrow's id is 64 hex digits (`fogwire job status` shows it)")
            })?,
        },
    };
    let wallet = node.wallet().ok_or_else(no_ledger)?;
    let receipt = wallet.send(op.clone()).await?;
    tracing::info!(index = receipt.index, "ledger: {}", describe(&op));
    Ok(Json(receipt_json(receipt, &op)))
}

fn unhex(text: &str, what: &str) -> Result<Vec<u8>, Refusal> {
    crate::rpc::from_hex(text.trim()).ok_or_else(|| bad(format!("{what} is not hex")))
}

pub(crate) async fn submit(
    State(state): State<Arc<ApiState>>,
    body: Bytes,
) -> Result<Json<LedgerReceipt>, Refusal> {
    let request: LedgerSubmitRequest = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "expected {{\"body\": hex, \"signature\": hex}}: {e}"
        ))
    })?;
    let signature: [u8; 64] = unhex(&request.signature, "signature")?
        .try_into()
        .map_err(|_| bad("a signature is 64 bytes"))?;
    let signed = SignedTransaction {
        body: unhex(&request.body, "body")?,
        signature: Signature(signature),
    };
    // Checked here too, so that a bad one is refused before it travels.
    let tx = signed
        .verify()
        .map_err(|e| Refusal(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let client = state.node.ledger().ok_or_else(no_ledger)?;
    let receipt = client.submit(&signed).await?;
    Ok(Json(receipt_json(receipt, &tx.transaction().op)))
}
