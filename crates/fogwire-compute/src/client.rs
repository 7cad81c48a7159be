//! What a buyer's node does: find a hub, submit, ask about a job.

use std::time::Duration;

use fogwire_compute_proto::{JobId, JobSpec, from_value, to_value};
use fogwire_identity::NodeId;
use fogwire_rpc_proto::Value;
use serde::de::DeserializeOwned;

use crate::hub::{JobResult, JobStatus, WorkerStatus};
use crate::{Fabric, HUB, method};

/// How long a hub may take to take a job (it fetches the program and
/// inputs first).
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(300);
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request to a hub failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error(
        "no hub found: no node advertises the `hub` service (start one with `[compute] hub = true` in fogwire.toml, or name one with --hub)"
    )]
    NoHub,
    #[error("the hub {hub} said: {message}")]
    Hub {
        hub: String,
        code: Option<u64>,
        message: String,
    },
    #[error("the hub {hub} answered something unexpected: {message}")]
    Malformed { hub: String, message: String },
}

impl ClientError {
    /// The RPC error code the hub answered, if any.
    pub fn code(&self) -> Option<u64> {
        match self {
            ClientError::Hub { code, .. } => *code,
            _ => None,
        }
    }
}

/// The hub to use: `named`, else the first node that advertises one
/// (this node first, if it is a hub).
pub async fn choose_hub(fabric: &dyn Fabric, named: Option<NodeId>) -> Result<NodeId, ClientError> {
    if let Some(hub) = named {
        return Ok(hub);
    }
    fabric
        .locate(HUB)
        .await
        .into_iter()
        .next()
        .ok_or(ClientError::NoHub)
}

async fn ask(
    fabric: &dyn Fabric,
    hub: NodeId,
    method: u64,
    args: Vec<Value>,
    timeout: Duration,
) -> Result<Vec<Value>, ClientError> {
    let chunks = fabric
        .call(hub, HUB, method, args, timeout)
        .await
        .map_err(|error| ClientError::Hub {
            hub: hub.short(),
            code: error.code(),
            message: match error {
                fogwire_rpc::RpcError::Remote { message, .. } => message,
                other => other.to_string(),
            },
        })?;
    Ok(chunks.into_iter().next().unwrap_or_default())
}

fn first<T: DeserializeOwned>(hub: NodeId, values: Vec<Value>) -> Result<T, ClientError> {
    let value = values.into_iter().next().unwrap_or(Value::Nil);
    from_value(value).map_err(|e| ClientError::Malformed {
        hub: hub.short(),
        message: e.to_string(),
    })
}

pub async fn submit(
    fabric: &dyn Fabric,
    hub: NodeId,
    spec: &JobSpec,
) -> Result<JobId, ClientError> {
    submit_paid(fabric, hub, spec, None).await
}

/// Submits a job paid for by `escrow` (held for `hub` in the ledger).
pub async fn submit_paid(
    fabric: &dyn Fabric,
    hub: NodeId,
    spec: &JobSpec,
    escrow: Option<fogwire_compute_proto::Digest>,
) -> Result<JobId, ClientError> {
    let malformed = |e: fogwire_compute_proto::DecodeError| ClientError::Malformed {
        hub: hub.short(),
        message: e.to_string(),
    };
    let mut args = vec![to_value(spec).map_err(malformed)?];
    if let Some(escrow) = escrow {
        args.push(to_value(&escrow).map_err(malformed)?);
    }
    let values = ask(fabric, hub, method::SUBMIT, args, SUBMIT_TIMEOUT).await?;
    first(hub, values)
}

pub async fn status(fabric: &dyn Fabric, hub: NodeId, job: &str) -> Result<JobStatus, ClientError> {
    let values = ask(
        fabric,
        hub,
        method::STATUS,
        vec![Value::from(job)],
        ASK_TIMEOUT,
    )
    .await?;
    first(hub, values)
}

pub async fn result(fabric: &dyn Fabric, hub: NodeId, job: &str) -> Result<JobResult, ClientError> {
    let values = ask(
        fabric,
        hub,
        method::RESULT,
        vec![Value::from(job)],
        ASK_TIMEOUT,
    )
    .await?;
    first(hub, values)
}

/// Log lines from `from` on, and the number of the next.
pub async fn logs(
    fabric: &dyn Fabric,
    hub: NodeId,
    job: &str,
    from: u64,
) -> Result<(Vec<String>, u64), ClientError> {
    let values = ask(
        fabric,
        hub,
        method::LOGS,
        vec![Value::from(job), Value::from(from)],
        ASK_TIMEOUT,
    )
    .await?;
    let mut values = values.into_iter();
    let lines = match values.next() {
        Some(Value::Array(lines)) => lines
            .into_iter()
            .filter_map(|line| line.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let next = values.next().and_then(|v| v.as_u64()).unwrap_or(from);
    Ok((lines, next))
}

pub async fn cancel(fabric: &dyn Fabric, hub: NodeId, job: &str) -> Result<bool, ClientError> {
    let values = ask(
        fabric,
        hub,
        method::CANCEL,
        vec![Value::from(job)],
        ASK_TIMEOUT,
    )
    .await?;
    Ok(values.first().and_then(Value::as_bool).unwrap_or(false))
}

pub async fn workers(fabric: &dyn Fabric, hub: NodeId) -> Result<Vec<WorkerStatus>, ClientError> {
    let values = ask(fabric, hub, method::WORKERS, Vec::new(), ASK_TIMEOUT).await?;
    first(hub, values)
}

pub async fn jobs(fabric: &dyn Fabric, hub: NodeId) -> Result<Vec<JobStatus>, ClientError> {
    let values = ask(fabric, hub, method::JOBS, Vec::new(), ASK_TIMEOUT).await?;
    first(hub, values)
}
