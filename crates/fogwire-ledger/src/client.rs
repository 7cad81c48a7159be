//! Reaching the ledger from any node.

use std::sync::Arc;
use std::time::Duration;

use fogwire_identity::Keypair;
use fogwire_ledger_proto::{Escrow, Id, LedgerError, Op, SignedTransaction, Transaction};
use fogwire_rpc::{BoxFuture, RpcError};
use fogwire_rpc_proto::Value;
use serde::de::DeserializeOwned;

use crate::log::Entry;
use crate::rpc::{AccountView, LedgerInfo, from_value, to_value};
use crate::{Receipt, code, method};

/// How a node calls the ledger service (wherever it runs).
pub trait Transport: Send + Sync + 'static {
    fn call(&self, method: u64, args: Vec<Value>) -> BoxFuture<Result<Vec<Vec<Value>>, RpcError>>;
}

/// Why a ledger call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("the ledger refused the transaction: {0}")]
    Refused(String),
    /// Refused because the escrow it names does not exist or was closed.
    #[error("the ledger refused the transaction: {0}")]
    NoEscrow(String),
    #[error("the ledger cannot be reached: {0}")]
    Unreachable(String),
    #[error("the ledger's answer does not decode: {0}")]
    BadAnswer(String),
    #[error(transparent)]
    Local(#[from] LedgerError),
}

impl ClientError {
    fn is_sequence(error: &RpcError) -> bool {
        error.code() == Some(code::SEQUENCE)
    }
}

fn rpc_error(error: RpcError) -> ClientError {
    match &error {
        RpcError::Remote { code: c, message } if *c == code::NO_ESCROW => {
            ClientError::NoEscrow(message.clone())
        }
        RpcError::Remote { code: c, message } if *c == code::REFUSED || *c == code::SEQUENCE => {
            ClientError::Refused(message.clone())
        }
        RpcError::Remote { code: c, message } if *c == fogwire_rpc_proto::code::BAD_ARGS => {
            ClientError::Refused(message.clone())
        }
        _ => ClientError::Unreachable(error.to_string()),
    }
}

/// Reads and raw submissions.
#[derive(Clone)]
pub struct LedgerClient {
    transport: Arc<dyn Transport>,
}

impl std::fmt::Debug for LedgerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerClient").finish_non_exhaustive()
    }
}

impl LedgerClient {
    pub fn new(transport: Arc<dyn Transport>) -> LedgerClient {
        LedgerClient { transport }
    }

    async fn ask<T: DeserializeOwned>(
        &self,
        method: u64,
        args: Vec<Value>,
    ) -> Result<T, ClientError> {
        let chunks = self.transport.call(method, args).await.map_err(rpc_error)?;
        let value = chunks
            .into_iter()
            .next()
            .and_then(|chunk| chunk.into_iter().next())
            .ok_or_else(|| ClientError::BadAnswer("an empty answer".into()))?;
        from_value(value).map_err(|e| ClientError::BadAnswer(e.to_string()))
    }

    fn submit_args(signed: &SignedTransaction) -> Vec<Value> {
        vec![
            Value::Binary(signed.body.clone()),
            Value::Binary(signed.signature.0.to_vec()),
        ]
    }

    /// Submits a signed transaction; answered once it is in the log.
    pub async fn submit(&self, signed: &SignedTransaction) -> Result<Receipt, ClientError> {
        self.ask(method::SUBMIT, Self::submit_args(signed)).await
    }

    pub async fn account(&self, id: &Id) -> Result<AccountView, ClientError> {
        self.ask(method::ACCOUNT, vec![id_value(id)]).await
    }

    pub async fn escrow(&self, id: &Id) -> Result<Option<Escrow>, ClientError> {
        self.ask(method::ESCROW, vec![id_value(id)]).await
    }

    /// Up to `limit` entries that moved `id`'s coins, newest first, before
    /// index `before` (0: the newest).
    pub async fn history(
        &self,
        id: &Id,
        before: u64,
        limit: u64,
    ) -> Result<Vec<Entry>, ClientError> {
        self.ask(
            method::HISTORY,
            vec![id_value(id), Value::from(before), Value::from(limit)],
        )
        .await
    }

    pub async fn info(&self) -> Result<LedgerInfo, ClientError> {
        self.ask(method::INFO, vec![]).await
    }
}

fn id_value(id: &Id) -> Value {
    to_value(id).unwrap_or(Value::Nil)
}

/// Times a transaction is resubmitted (the same signed bytes, so it
/// applies at most once) when the ledger cannot be reached.
const RESUBMIT_MAX: u32 = 3;
const RESUBMIT_PAUSE: Duration = Duration::from_millis(200);

/// Signs and sends transactions with one key, one at a time, keeping its
/// sequence numbers.
pub struct Wallet {
    client: LedgerClient,
    key: Arc<Keypair>,
    next: tokio::sync::Mutex<Option<u64>>,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet").finish_non_exhaustive()
    }
}

impl Wallet {
    pub fn new(client: LedgerClient, key: Arc<Keypair>) -> Wallet {
        Wallet {
            client,
            key,
            next: tokio::sync::Mutex::new(None),
        }
    }

    pub fn id(&self) -> Id {
        Id(*self.key.node_id().as_bytes())
    }

    pub fn client(&self) -> &LedgerClient {
        &self.client
    }

    /// Signs `op` with the next sequence number and submits it. If the
    /// ledger cannot be reached, the same signed transaction is sent
    /// again (it applies at most once); if another sender used this key's
    /// next number meanwhile, the number is looked up and the op signed
    /// again, once.
    pub async fn send(&self, op: Op) -> Result<Receipt, ClientError> {
        let mut next = self.next.lock().await;
        let mut resequenced = false;
        loop {
            let sequence = match *next {
                Some(sequence) => sequence,
                None => self.client.account(&self.id()).await?.account.sequence + 1,
            };
            let signed = Transaction {
                from: self.id(),
                sequence,
                op: op.clone(),
            }
            .sign(&self.key)?;
            let mut attempt = 0;
            let result = loop {
                match self
                    .client
                    .transport
                    .call(method::SUBMIT, LedgerClient::submit_args(&signed))
                    .await
                {
                    Ok(chunks) => break Ok(chunks),
                    Err(error) if error.code().is_some() => break Err(error),
                    Err(error) if attempt + 1 >= RESUBMIT_MAX => break Err(error),
                    Err(error) => {
                        tracing::debug!(%error, attempt, "ledger unreachable; sending the same transaction again");
                        attempt += 1;
                        tokio::time::sleep(RESUBMIT_PAUSE * attempt).await;
                    }
                }
            };
            match result {
                Ok(chunks) => {
                    let value = chunks
                        .into_iter()
                        .next()
                        .and_then(|chunk| chunk.into_iter().next())
                        .ok_or_else(|| ClientError::BadAnswer("an empty answer".into()))?;
                    let receipt: Receipt =
                        from_value(value).map_err(|e| ClientError::BadAnswer(e.to_string()))?;
                    *next = Some(sequence + 1);
                    return Ok(receipt);
                }
                Err(error) if ClientError::is_sequence(&error) && !resequenced => {
                    resequenced = true;
                    *next = None;
                }
                Err(error) => {
                    // Whether it applied is unknown: ask next time.
                    *next = None;
                    return Err(rpc_error(error));
                }
            }
        }
    }
}
