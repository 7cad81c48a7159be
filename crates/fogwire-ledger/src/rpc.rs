//! The `ledger` service over the service RPC (`docs/protocol/ledger.md`).

use fogwire_identity::Signature;
use fogwire_ledger_proto::{
    Account, Amount, Deposit, Escrow, HubWallet, Id, LedgerError, Rules, SignedTransaction,
};
use fogwire_rpc::{BoxFuture, Replier, Service};
use fogwire_rpc_proto::{Value, code as rpc_code};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::log::Entry;
use crate::service::{LedgerService, SubmitError};
use crate::{HISTORY_LIMIT_MAX, METHODS, code, method};

/// An account as `account` answers: its coins, its hub wallet and the
/// deposits it has bonded, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    pub id: Id,
    pub account: Account,
    pub wallet: Option<HubWallet>,
    /// Deposits this account holds with hubs, and that workers hold with
    /// it (if it is a hub).
    pub deposits: Vec<(Id, Id, Deposit)>,
    /// Escrows this account is the arbiter of.
    pub escrows: Vec<(Id, Escrow)>,
    /// The ledger's time when it answered.
    pub time_ms: u64,
    /// What it earned and spent.
    pub flow: crate::flows::Flow,
}

/// What `info` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerInfo {
    pub rules: Rules,
    pub genesis: Amount,
    pub minted: Amount,
    /// What accounts, escrows, wallets and deposits hold together
    /// (saturated at u64::MAX).
    pub held: Amount,
    /// The supply check: `None` if it holds, else why not.
    pub supply_error: Option<String>,
    pub accounts: u64,
    pub log_len: u64,
    pub time_ms: u64,
}

/// Encodes a value as one RPC argument.
pub fn to_value<T: Serialize>(value: &T) -> Result<Value, rmpv::ext::Error> {
    rmpv::ext::to_value(value)
}

pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, rmpv::ext::Error> {
    rmpv::ext::from_value(value)
}

fn arg<T: DeserializeOwned>(
    args: &[Value],
    position: usize,
    what: &str,
) -> Result<T, (u64, String)> {
    let value = args.get(position).cloned().ok_or_else(|| {
        (
            rpc_code::BAD_ARGS,
            format!("missing argument {position}: {what}"),
        )
    })?;
    from_value(value).map_err(|e| {
        (
            rpc_code::BAD_ARGS,
            format!("argument {position} ({what}): {e}"),
        )
    })
}

fn id_arg(args: &[Value], position: usize, what: &str) -> Result<Id, (u64, String)> {
    arg::<Id>(args, position, what)
}

/// The RPC error of a refused submission.
pub fn submit_error_code(error: &SubmitError) -> u64 {
    match error {
        SubmitError::Refused(LedgerError::Sequence { .. }) => code::SEQUENCE,
        SubmitError::Refused(LedgerError::NoEscrow(_)) => code::NO_ESCROW,
        SubmitError::Refused(LedgerError::Malformed(_)) => rpc_code::BAD_ARGS,
        SubmitError::Refused(_) => code::REFUSED,
        SubmitError::SenderBusy => rpc_code::BUSY,
        SubmitError::Storage(_) | SubmitError::Stopped => rpc_code::FAILED,
    }
}

impl Service for LedgerService {
    fn methods(&self) -> &[&'static str] {
        METHODS
    }

    fn call(&self, method: u64, args: Vec<Value>, mut reply: Replier) -> BoxFuture<()> {
        let service = self.clone();
        Box::pin(async move {
            match service.answer(method, args).await {
                Ok(value) => {
                    reply.chunk(vec![value]).await;
                    reply.choke().await;
                }
                Err((code, message)) => reply.error(code, &message).await,
            }
        })
    }
}

impl LedgerService {
    async fn answer(&self, method: u64, args: Vec<Value>) -> Result<Value, (u64, String)> {
        let encode = |value: Result<Value, rmpv::ext::Error>| {
            value.map_err(|e| (rpc_code::FAILED, e.to_string()))
        };
        match method {
            method::SUBMIT => {
                let body: Value = arg(&args, 0, "the transaction's body")?;
                let signature: Value = arg(&args, 1, "its signature")?;
                let (Value::Binary(body), Value::Binary(signature)) = (body, signature) else {
                    return Err((rpc_code::BAD_ARGS, "body and signature are bin".into()));
                };
                let signature: [u8; 64] = signature
                    .as_slice()
                    .try_into()
                    .map_err(|_| (rpc_code::BAD_ARGS, "a signature is 64 bytes".to_owned()))?;
                let signed = SignedTransaction {
                    body,
                    signature: Signature(signature),
                };
                match self.submit(signed).await {
                    Ok(receipt) => encode(to_value(&receipt)),
                    Err(error) => Err((submit_error_code(&error), error.to_string())),
                }
            }
            method::ACCOUNT => {
                let id = id_arg(&args, 0, "the account")?;
                encode(to_value(&self.account_view(&id)))
            }
            method::ESCROW => {
                let id = id_arg(&args, 0, "the escrow")?;
                encode(to_value(&self.ledger().escrow(&id)))
            }
            method::HISTORY => {
                let id = id_arg(&args, 0, "the account")?;
                let before: u64 = arg(&args, 1, "before this index (0: the newest)")?;
                let limit: u64 = arg(&args, 2, "how many")?;
                let limit = (limit as usize).min(HISTORY_LIMIT_MAX);
                let log = self.log();
                let entries: Vec<Entry> =
                    tokio::task::spawn_blocking(move || log.history(&id, before, limit))
                        .await
                        .map_err(|e| (rpc_code::FAILED, e.to_string()))?
                        .map_err(|e| (rpc_code::FAILED, e.to_string()))?;
                encode(to_value(&entries))
            }
            method::INFO => encode(to_value(&self.info())),
            _ => Err((rpc_code::UNKNOWN, format!("no method {method}"))),
        }
    }

    /// An account, its wallet, deposits and escrows.
    pub fn account_view(&self, id: &Id) -> AccountView {
        let ledger = self.ledger();
        let mut deposits: Vec<(Id, Id, Deposit)> = ledger
            .deposits_with(id)
            .into_iter()
            .map(|(worker, deposit)| (worker, *id, deposit))
            .collect();
        deposits.extend(
            ledger
                .deposits_of(id)
                .into_iter()
                .map(|(hub, deposit)| (*id, hub, deposit)),
        );
        let flow = self.flow(id, ledger.time_ms().max(crate::service::unix_ms()));
        AccountView {
            flow,
            id: *id,
            account: ledger.account(id),
            wallet: ledger.wallet(id),
            deposits,
            escrows: ledger.escrows_of(id),
            time_ms: ledger.time_ms(),
        }
    }

    pub fn info(&self) -> LedgerInfo {
        let log_len = self.log().len().unwrap_or(0);
        let ledger = self.ledger();
        LedgerInfo {
            rules: ledger.rules().clone(),
            genesis: ledger.genesis(),
            minted: ledger.minted(),
            held: u64::try_from(ledger.held()).unwrap_or(u64::MAX),
            supply_error: ledger.check_supply().err().map(|e| e.to_string()),
            accounts: ledger.accounts_len() as u64,
            log_len,
            time_ms: ledger.time_ms(),
        }
    }
}

/// The ledger's own node calls it directly.
impl crate::client::Transport for LedgerService {
    fn call(
        &self,
        method: u64,
        args: Vec<Value>,
    ) -> BoxFuture<Result<Vec<Vec<Value>>, fogwire_rpc::RpcError>> {
        let service = self.clone();
        Box::pin(async move {
            service
                .answer(method, args)
                .await
                .map(|value| vec![vec![value]])
                .map_err(|(code, message)| fogwire_rpc::RpcError::Remote { code, message })
        })
    }
}
