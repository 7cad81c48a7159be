//! The control API's compute endpoints: submit a job through a hub, ask
//! about it, fetch its outputs, cancel it, list the workers.
//!
//! A hub is named by `?hub=<id or start of one>` (or `"hub"` in a body);
//! without one, submissions go to the first hub known (this node first if
//! it is one) and questions about a job go to each known hub in turn until
//! one knows it.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use bytes::Bytes;
use fogwire_compute::client::{self, ClientError};
use fogwire_compute::hub::JobStatus;
use fogwire_compute::{HUB, digest_of, store_hash};
use fogwire_compute_proto::scheduler::JobState;
use fogwire_compute_proto::{Digest, ExitStatus, JobSpec, Limits, Replication, Runtime};
use fogwire_identity::NodeId;
use fogwire_rpc_proto::code;

use crate::NodeApi;
use crate::server::{ApiState, Refusal};
use fogwire_api::{
    JobCancelled, JobFetchRequest, JobFetched, JobInfo, JobLogs, JobResultInfo, JobSubmitRequest,
    JobSubmitted, TaskOutcome, WorkerInfo,
};

fn bad(message: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, message.into())
}

impl From<ClientError> for Refusal {
    fn from(error: ClientError) -> Self {
        let status = match &error {
            ClientError::NoHub => StatusCode::NOT_FOUND,
            ClientError::Hub { code, .. } => match *code {
                Some(code::UNKNOWN) => StatusCode::NOT_FOUND,
                Some(code::BAD_ARGS) => StatusCode::BAD_REQUEST,
                Some(code::BUSY) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            },
            _ => StatusCode::BAD_GATEWAY,
        };
        Refusal(status, error.to_string())
    }
}

/// `key=value` pairs of a query (ids and numbers need no decoding).
pub(crate) fn query(raw: &Option<String>, key: &str) -> Option<String> {
    raw.as_deref()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_owned())
}

/// A number in a query, `default` if absent; refused if not a number.
pub(crate) fn query_number<T: std::str::FromStr>(
    raw: &Option<String>,
    key: &str,
    default: T,
) -> Result<T, Refusal> {
    match query(raw, key) {
        None => Ok(default),
        Some(text) => text.parse().map_err(|_| {
            Refusal(
                StatusCode::BAD_REQUEST,
                format!("{key}={text} is not a number"),
            )
        }),
    }
}

pub(crate) async fn hub_named(
    state: &ApiState,
    name: Option<&str>,
) -> Result<Option<NodeId>, Refusal> {
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    let nodes = state.node.routing().nodes().await?;
    crate::routes::resolve(&state.names, &nodes, name).map(Some)
}

/// The hubs to ask about a job: the one named, else every known hub.
async fn hubs(state: &ApiState, name: Option<&str>) -> Result<Vec<NodeId>, Refusal> {
    if let Some(hub) = hub_named(state, name).await? {
        return Ok(vec![hub]);
    }
    let found = state.node.fabric().locate(HUB).await;
    if found.is_empty() {
        return Err(ClientError::NoHub.into());
    }
    Ok(found)
}

/// The hub that knows `job` (the one named, else the first known hub
/// that does), with the job's status.
async fn find_job(
    state: &ApiState,
    name: Option<&str>,
    job: &str,
) -> Result<(NodeId, JobStatus), Refusal> {
    let fabric = state.node.fabric();
    let mut last = None;
    for hub in hubs(state, name).await? {
        match client::status(fabric.as_ref(), hub, job).await {
            Ok(status) => return Ok((hub, status)),
            Err(error) => last = Some(error),
        }
    }
    Err(last.map_or_else(|| ClientError::NoHub.into(), Refusal::from))
}

fn state_name(state: &JobState) -> (&'static str, Option<String>) {
    match state {
        JobState::Running => ("running", None),
        JobState::Done => ("done", None),
        JobState::Failed(why) => ("failed", Some(why.clone())),
        JobState::Cancelled => ("cancelled", None),
    }
}

fn replication_name(replication: Replication) -> String {
    match replication {
        Replication::Trust => "trust".to_owned(),
        Replication::Fixed(n) => format!("fixed {n}"),
        Replication::Adaptive(n) => format!("adaptive {n}"),
        Replication::Full => "full".to_owned(),
    }
}

pub(crate) fn job_info(hub: NodeId, status: &JobStatus) -> JobInfo {
    let (state, error) = state_name(&status.state);
    JobInfo {
        job: status.id.0.to_hex(),
        hub: hub.to_string(),
        state: state.to_owned(),
        error,
        runtime: status.runtime.name().to_owned(),
        replication: replication_name(status.replication),
        tasks: status.tasks,
        tasks_done: status.tasks_done,
        submitted_ms: status.submitted_ms,
        ended_ms: status.ended_ms,
        output: status.output.map(|d| d.to_hex()),
        replicas_run: status.replicas_run,
        dissents: status.dissents,
        silences: status.silences,
        fuel_used: status.fuel_used,
        log_lines: status.log_lines,
        escrow_held: status.payment.as_ref().map(|p| p.held),
        payment: status.payment.as_ref().and_then(|p| p.settled.clone()),
        fewer_replicas: status.fewer_replicas,
    }
}

fn absolute(path: &str) -> Result<PathBuf, Refusal> {
    let path = PathBuf::from(path);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(bad(format!(
            "`{}` is not an absolute path: the node may run in another directory",
            path.display()
        )))
    }
}

/// A program or input named by path or hash, in this node's store.
async fn import(node: &dyn NodeApi, name: &str, what: &str) -> Result<Digest, Refusal> {
    if let Ok(digest) = name.parse::<Digest>() {
        return Ok(digest);
    }
    let path = absolute(name)?;
    let store = node.store().clone();
    let what = what.to_owned();
    tokio::task::spawn_blocking(move || -> Result<Digest, Refusal> {
        if path.extension().is_some_and(|e| e == "wat") {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| bad(format!("{what} {}: {e}", path.display())))?;
            let module = fogwire_compute::guests::compile(&text)
                .map_err(|e| bad(format!("{what} {}: {e}", path.display())))?;
            return Ok(digest_of(&store.import_bytes(&module, None)?));
        }
        let hash = store
            .import_file(&path, None, &mut |_| {})
            .map_err(|e| bad(format!("{what}: {e}")))?;
        Ok(digest_of(&hash))
    })
    .await
    .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

fn spec_of(
    request: &JobSubmitRequest,
    program: Digest,
    inputs: Vec<Digest>,
) -> Result<JobSpec, Refusal> {
    let runtime = match request.runtime.as_deref() {
        Some("wasm") => Runtime::Wasm,
        Some("docker") => Runtime::Docker,
        Some(other) => return Err(bad(format!("runtime `{other}`: wasm or docker"))),
        None if request.program.ends_with(".tar") => Runtime::Docker,
        None => Runtime::Wasm,
    };
    let n = request.replicas;
    let replication = match request.replication.as_deref().unwrap_or("fixed") {
        "adaptive" => Replication::Adaptive(n),
        "fixed" => Replication::Fixed(n),
        "trust" => Replication::Trust,
        "full" => Replication::Full,
        other => {
            return Err(bad(format!(
                "replication `{other}`: adaptive, fixed, trust or full"
            )));
        }
    };
    let defaults = Limits::default();
    let spec = JobSpec {
        runtime,
        program,
        inputs,
        args: request.args.clone(),
        limits: Limits {
            fuel: request.fuel.unwrap_or(defaults.fuel),
            memory_bytes: request.memory_bytes.unwrap_or(defaults.memory_bytes),
            wall_time_ms: request.wall_time_ms.unwrap_or(defaults.wall_time_ms),
            ..defaults
        },
        replication,
        split: request.split,
        deadline_ms: request.deadline_ms.unwrap_or(600_000),
        network: request.network,
    };
    spec.validate().map_err(|e| bad(e.to_string()))?;
    Ok(spec)
}

pub(crate) async fn submit(
    State(state): State<Arc<ApiState>>,
    body: Bytes,
) -> Result<Json<JobSubmitted>, Refusal> {
    let request: JobSubmitRequest = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "expected {{\"program\": \"/path/to/module.wasm\", …}}: {e}"
        ))
    })?;
    let node = state.node.as_ref();
    let program = import(node, &request.program, "the program").await?;
    let mut inputs = Vec::new();
    for input in &request.inputs {
        inputs.push(import(node, input, "an input").await?);
    }
    for digest in std::iter::once(&program).chain(&inputs) {
        if node.store().entry(&store_hash(digest))?.is_none() {
            return Err(bad(format!(
                "{} is not in this node's store (`fogwire store get` it first, or give a path)",
                digest.to_hex()
            )));
        }
    }
    let spec = spec_of(&request, program, inputs.clone())?;
    let fabric = node.fabric();
    let hub = client::choose_hub(
        fabric.as_ref(),
        hub_named(&state, request.hub.as_deref()).await?,
    )
    .await?;
    let escrow = match request.max_price {
        Some(max_price) => Some(hold_escrow(node, hub, max_price, spec.deadline_ms).await?),
        None => None,
    };
    let job = client::submit_paid(fabric.as_ref(), hub, &spec, escrow).await?;
    Ok(Json(JobSubmitted {
        escrow: escrow.map(|e| e.to_hex()),
        job: job.0.to_hex(),
        hub: hub.to_string(),
        program: program.to_hex(),
        inputs: inputs.iter().map(Digest::to_hex).collect(),
    }))
}

/// Holds `max_price` of this node's coins in a new escrow for `hub`,
/// returned to this node if the hub has not paid it out by the job's
/// deadline (and ten minutes more).
async fn hold_escrow(
    node: &dyn NodeApi,
    hub: NodeId,
    max_price: u64,
    deadline_ms: u64,
) -> Result<Digest, Refusal> {
    let wallet = node.wallet().ok_or_else(|| {
        Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "the ledger is not started".into(),
        )
    })?;
    let mut id = [0u8; 32];
    getrandom::fill(&mut id)
        .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let expires_ms = fogwire_compute::unix_ms()
        .saturating_add(deadline_ms)
        .saturating_add(600_000);
    let op = fogwire_ledger::proto::Op::Hold {
        id: fogwire_ledger::proto::Id(id),
        amount: max_price,
        arbiter: fogwire_ledger::proto::Id(*hub.as_bytes()),
        expires_ms,
    };
    wallet.send(op).await.map_err(|error| match error {
        fogwire_ledger::client::ClientError::Refused(why) => Refusal(
            StatusCode::PAYMENT_REQUIRED,
            format!(
                "cannot pay up to {} coins for the job: {why}",
                fogwire_ledger::format_coins(max_price)
            ),
        ),
        other => Refusal(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
    })?;
    Ok(Digest(id))
}

pub(crate) async fn status(
    State(state): State<Arc<ApiState>>,
    Path(job): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<JobInfo>, Refusal> {
    let (hub, status) = find_job(&state, query(&raw, "hub").as_deref(), &job).await?;
    Ok(Json(job_info(hub, &status)))
}

pub(crate) async fn list(
    State(state): State<Arc<ApiState>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<JobInfo>>, Refusal> {
    let fabric = state.node.fabric();
    let mut out = Vec::new();
    for hub in hubs(&state, query(&raw, "hub").as_deref()).await? {
        if let Ok(jobs) = client::jobs(fabric.as_ref(), hub).await {
            out.extend(jobs.iter().map(|status| job_info(hub, status)));
        }
    }
    out.sort_by_key(|job| job.submitted_ms);
    Ok(Json(out))
}

pub(crate) async fn logs(
    State(state): State<Arc<ApiState>>,
    Path(job): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<JobLogs>, Refusal> {
    let from = query(&raw, "from")
        .and_then(|f| f.parse().ok())
        .unwrap_or(0);
    let (hub, status) = find_job(&state, query(&raw, "hub").as_deref(), &job).await?;
    let fabric = state.node.fabric();
    let (lines, next) = client::logs(fabric.as_ref(), hub, &status.id.0.to_hex(), from).await?;
    Ok(Json(JobLogs { lines, next }))
}

pub(crate) async fn result(
    State(state): State<Arc<ApiState>>,
    Path(job): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<JobResultInfo>, Refusal> {
    let (hub, status) = find_job(&state, query(&raw, "hub").as_deref(), &job).await?;
    let fabric = state.node.fabric();
    let result = client::result(fabric.as_ref(), hub, &status.id.0.to_hex()).await?;
    let outcomes = result
        .outcomes
        .iter()
        .enumerate()
        .filter_map(|(index, outcome)| {
            let outcome = outcome.as_ref()?;
            Some(TaskOutcome {
                index: index as u32,
                status: outcome.status.to_string(),
                exit_code: match outcome.status {
                    ExitStatus::Exited(code) => Some(code),
                    _ => None,
                },
                stdout: outcome.stdout.to_hex(),
                stderr: outcome.stderr.to_hex(),
                fuel_used: outcome.fuel_used,
            })
        })
        .collect();
    Ok(Json(JobResultInfo {
        job: job_info(hub, &status),
        outcomes,
    }))
}

pub(crate) async fn cancel(
    State(state): State<Arc<ApiState>>,
    Path(job): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<JobCancelled>, Refusal> {
    let (hub, status) = find_job(&state, query(&raw, "hub").as_deref(), &job).await?;
    let fabric = state.node.fabric();
    let cancelled = client::cancel(fabric.as_ref(), hub, &status.id.0.to_hex()).await?;
    Ok(Json(JobCancelled {
        job: status.id.0.to_hex(),
        cancelled,
    }))
}

pub(crate) async fn fetch(
    State(state): State<Arc<ApiState>>,
    Path(job): Path<String>,
    body: Bytes,
) -> Result<Json<JobFetched>, Refusal> {
    let request: JobFetchRequest = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("expected {{\"out\": \"/absolute/path\"}}: {e}")))?;
    let out = absolute(&request.out)?;
    let node = state.node.as_ref();
    let (hub, status) = find_job(&state, request.hub.as_deref(), &job).await?;
    let fabric = node.fabric();
    let result = client::result(fabric.as_ref(), hub, &status.id.0.to_hex()).await?;
    let Some(output) = status.output else {
        let (state, error) = state_name(&status.state);
        return Err(Refusal(
            StatusCode::CONFLICT,
            match error {
                Some(why) => format!("job {} {state}: {why}; it has no outputs", status.id),
                None => format!("job {} is {state}: its outputs are not ready", status.id),
            },
        ));
    };
    node.fabric().fetch(output, vec![hub]).await.map_err(|e| {
        Refusal(
            StatusCode::BAD_GATEWAY,
            format!("cannot fetch the outputs: {e}"),
        )
    })?;
    let store = node.store().clone();
    let join = request.join;
    let stdouts: Vec<Digest> = result.outcomes.iter().flatten().map(|o| o.stdout).collect();
    let path = out.clone();
    let (files, bytes) =
        tokio::task::spawn_blocking(move || write_out(&store, output, &stdouts, &path, join))
            .await
            .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(JobFetched {
        output: output.to_hex(),
        path: out.display().to_string(),
        files,
        bytes,
    }))
}

/// Writes the outputs: the directory, or every stdout joined.
fn write_out(
    store: &fogwire_store::Store,
    output: Digest,
    stdouts: &[Digest],
    path: &FsPath,
    join: bool,
) -> Result<(u64, u64), Refusal> {
    if !join {
        let report = store.export_dir(&store_hash(&output), path, &mut |_| {})?;
        return Ok((report.files, report.bytes));
    }
    use std::io::Write;
    let file = std::fs::File::create(path)
        .map_err(|e| bad(format!("cannot write {}: {e}", path.display())))?;
    let mut file = std::io::BufWriter::new(file);
    let mut bytes = 0u64;
    let mut failed = None;
    for stdout in stdouts {
        let hash = store_hash(stdout);
        let size = store.entry(&hash)?.map_or(0, |e| e.size);
        store.read_range(&hash, 0, size, &mut |chunk| {
            if failed.is_none()
                && let Err(error) = file.write_all(chunk)
            {
                failed = Some(error);
            }
            Ok(())
        })?;
        bytes += size;
    }
    if let Some(error) = failed {
        return Err(bad(format!("cannot write {}: {error}", path.display())));
    }
    file.flush()
        .map_err(|e| bad(format!("cannot write {}: {e}", path.display())))?;
    Ok((1, bytes))
}

pub(crate) async fn workers(
    State(state): State<Arc<ApiState>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<WorkerInfo>>, Refusal> {
    let fabric = state.node.fabric();
    let mut answer = Err(Refusal::from(ClientError::NoHub));
    for hub in hubs(&state, query(&raw, "hub").as_deref()).await? {
        answer = client::workers(fabric.as_ref(), hub)
            .await
            .map_err(Refusal::from);
        if answer.is_ok() {
            break;
        }
    }
    let workers = answer?;
    let mut out: Vec<WorkerInfo> = workers
        .into_iter()
        .map(|worker| {
            let resources =
                worker
                    .resources
                    .unwrap_or_else(|| fogwire_compute::resources::Resources {
                        cores: 0,
                        memory_bytes: 0,
                        memory_available_bytes: 0,
                        disk_free_bytes: 0,
                        gpus: 0,
                        slots: worker.slots,
                        runtimes: Vec::new(),
                        network_allowed: false,
                        limits_max: Limits::default(),
                    });
            WorkerInfo {
                node_id: NodeId::from_bytes(worker.id.as_bytes())
                    .map(|id| id.to_string())
                    .unwrap_or_else(|_| worker.id.to_hex()),
                slots: worker.slots,
                running: worker.running,
                agreed: worker.reputation.agreed,
                dissented: worker.reputation.dissented,
                silent: worker.reputation.silent,
                streak: worker.reputation.streak,
                cores: resources.cores,
                memory_bytes: resources.memory_bytes,
                disk_free_bytes: resources.disk_free_bytes,
                gpus: resources.gpus,
                runtimes: resources
                    .runtimes
                    .iter()
                    .map(|r| r.name().to_owned())
                    .collect(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    Ok(Json(out))
}
