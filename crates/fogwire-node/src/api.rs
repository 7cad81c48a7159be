//! The JSON bodies of the control API (`docs/control-api.md`). Shared by the
//! daemon that serves them and the CLI that reads them.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `GET /v1/status`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub node_id: String,
    pub version: String,
    /// Address peers dial.
    pub link_listen: SocketAddr,
    pub uptime_secs: u64,
    /// Links up now.
    pub links: usize,
    /// Peers the node keeps linked (configured or connected by an operator).
    pub peers_wanted: usize,
    pub pending_handshakes: usize,
    pub data_dir: Option<String>,
}

/// Where a wanted or linked peer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    /// A link is up.
    Linked,
    /// Dialing now.
    Connecting,
    /// The last attempt failed; the next is scheduled.
    Waiting,
}

/// One entry of `GET /v1/peers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    pub node_id: String,
    pub state: PeerState,
    /// The remote socket address of the link, or the configured address.
    pub address: Option<String>,
    /// "outbound" (we dialed) or "inbound", when linked.
    pub direction: Option<String>,
    /// Whether the node redials this peer when the link drops.
    pub wanted: bool,
    pub linked_since_unix: Option<u64>,
    pub rtt_ms: Option<f64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub last_error: Option<String>,
    pub retry_in_ms: Option<u64>,
}

/// `POST /v1/peers`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectRequest {
    /// `<node id>@<host>:<port>`
    pub peer: String,
}

/// `DELETE /v1/peers/{node_id}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisconnectResponse {
    pub node_id: String,
    pub was_linked: bool,
}

/// Body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// One node of `GET /v1/nodes`: what its latest advert says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphNode {
    pub node_id: String,
    /// This is the node answering.
    pub this_node: bool,
    /// Linked to the node answering.
    pub neighbour: bool,
    pub seq: u64,
    pub issued_at_unix_ms: u64,
    pub expires_at_unix_ms: u64,
    pub addresses: Vec<String>,
    pub services: Vec<String>,
    pub links: Vec<GraphLink>,
}

/// A link a node advertises.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphLink {
    pub node_id: String,
    /// One-way estimate: half the link's round-trip time.
    pub latency_ms: f64,
    pub capacity_kbps: u32,
}

/// What a path must respect; the body of `POST /v1/routes/find`,
/// `POST /v1/routes`, `POST /v1/ping` and `POST /v1/routes/send`, each
/// taking the fields it needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteRequest {
    /// The destination: a node id, or a prefix of one that names a single
    /// known node.
    pub node: String,
    /// Exactly this many links (sets both bounds).
    pub hops: Option<usize>,
    pub min_hops: Option<usize>,
    pub max_hops: Option<usize>,
    /// Nodes (ids or unique prefixes) the path must not pass through.
    pub avoid: Vec<String>,
    /// The node the path must reach the destination from.
    pub exit: Option<String>,
    /// `find`: how many node-disjoint paths (default 1, at most 8).
    pub alternatives: Option<usize>,
    /// `ping`: how many pings (default 4, at most 100).
    pub count: Option<u32>,
    /// `ping`: pause between pings (default 200 ms).
    pub interval_ms: Option<u64>,
    /// `send`: bytes to send (default 64 MiB).
    pub bytes: Option<u64>,
}

/// A path of `POST /v1/routes/find`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoundPath {
    /// From this node to the destination.
    pub nodes: Vec<String>,
    pub hops: usize,
    /// Sum of the advertised one-way latencies.
    pub latency_ms: f64,
}

/// `POST /v1/routes`: a route that is up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenedRoute {
    pub id: u64,
    /// Hops after this node; the last is the destination.
    pub path: Vec<String>,
    pub setup_ms: f64,
    pub latency_ms: f64,
}

/// Where a route this node opened stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteStatus {
    SettingUp,
    Up,
    Repairing,
}

/// Bytes and packets, each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteCounters {
    pub bytes_forward: u64,
    pub bytes_backward: u64,
    pub packets_forward: u64,
    pub packets_backward: u64,
}

/// A route of `GET /v1/routes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteEntry {
    pub id: u64,
    pub path: Vec<String>,
    pub status: RouteStatus,
    /// Everything it carried, across repairs.
    pub counters: RouteCounters,
    pub repairs: u32,
    pub setup_ms: Option<f64>,
    pub streams: usize,
}

/// A route this node relays for others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransitEntry {
    pub label: u32,
    /// The neighbour towards the route's source.
    pub prev: Option<String>,
    /// The neighbour towards its destination.
    pub next: Option<String>,
    pub counters: RouteCounters,
}

/// Counters of a node's routing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingStats {
    pub adverts_sent: u64,
    pub adverts_accepted: u64,
    pub adverts_refused: u64,
    pub adverts_dropped: u64,
    pub data_dropped: u64,
    pub control_dropped: u64,
    pub routes_broken: u64,
    pub routes_repaired: u64,
    pub receipts_received: u64,
    pub receipts_stored: u64,
}

/// `GET /v1/routes`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Routes {
    pub routes: Vec<RouteEntry>,
    pub transit: Vec<TransitEntry>,
    pub stats: RoutingStats,
}

/// `DELETE /v1/routes/{id}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedRoute {
    pub id: u64,
}

/// `POST /v1/ping`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingReport {
    pub path: Vec<String>,
    pub setup_ms: f64,
    /// One per ping; none for a ping that got no answer in time.
    pub rtts_ms: Vec<Option<f64>>,
}

/// A line of `POST /v1/routes/send`'s answer, which streams one JSON
/// object per line: progress, then the result (or an error).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendLine {
    /// The route is up.
    Route(OpenedRoute),
    /// Bytes written so far.
    Progress(u64),
    Result(SendReport),
    Error(String),
}

/// What a transfer to the destination's `sink` showed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendReport {
    pub path: Vec<String>,
    pub bytes: u64,
    pub secs: f64,
    pub mbit_per_sec: f64,
    /// The sink received exactly what was sent (count and BLAKE3).
    pub intact: bool,
    pub sent_blake3: String,
    pub received_blake3: String,
    pub received_bytes: u64,
    /// Times the route moved to a new path during the transfer.
    pub repairs: u32,
}

/// `POST /v1/store/add`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreAddRequest {
    /// An absolute path on the node's machine.
    pub path: String,
    /// A tag (pin) to set in the same step.
    pub tag: Option<String>,
    /// Keep only the outboard and read the file in place.
    pub reference: bool,
}

/// `POST /v1/store/get`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreGetRequest {
    pub hash: String,
    /// An absolute path on the node's machine to write the blob to.
    pub path: String,
    /// A node to fetch from over a route, besides the neighbours (its id,
    /// or the start of one that names a single known node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// A line of the answers of `POST /v1/store/add` and `POST /v1/store/get`,
/// which stream one JSON object per line: progress, then the result (or
/// an error).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreLine {
    Progress {
        done: u64,
        total: u64,
    },
    /// Bytes fetched from peers so far (before writing, when the node did
    /// not hold everything).
    Fetching {
        done: u64,
        total: u64,
    },
    /// What fetching from peers did.
    Fetched(FetchInfo),
    /// A route opened to fetch from a node that is not a neighbour.
    Route(StoreRouteInfo),
    /// A file added or written.
    Done(BlobInfo),
    /// A directory added or restored.
    Directory(DirectoryInfo),
    Error(String),
}

/// A route a fetch goes over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreRouteInfo {
    pub node: String,
    /// Hops after this node; the last is `node`.
    pub path: Vec<String>,
    pub setup_ms: f64,
}

/// What a fetch from peers did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchInfo {
    pub hash: String,
    /// Blobs of the graph (the root included) and their bytes.
    pub blobs: u64,
    pub bytes: u64,
    /// Of those, fetched now (the rest were held).
    pub fetched_blobs: u64,
    pub fetched_bytes: u64,
    /// Bytes fetched from each peer, most first.
    pub from: Vec<PeerBytes>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerBytes {
    pub peer: String,
    pub bytes: u64,
}

/// A peer of `GET /v1/store/peers`: what replication moved to and from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorePeer {
    pub peer: String,
    pub linked: bool,
    /// Encoded bytes (chunk groups and hash pairs) served to it.
    pub served_bytes: u64,
    pub served_requests: u64,
    /// Encoded bytes fetched from it.
    pub fetched_bytes: u64,
    /// Times it sent data that failed verification.
    pub corrupt: u64,
}

/// A directory added or restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryInfo {
    /// The root hash that names the whole tree.
    pub root: String,
    pub files: u64,
    /// Subdirectories, the top one not counted.
    pub directories: u64,
    pub bytes: u64,
    /// Symbolic links and special files left out.
    pub skipped: Vec<String>,
}

/// A blob of `GET /v1/store/blobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    pub hash: String,
    pub size: u64,
    /// `inline`, `file` or `reference`.
    pub location: String,
    /// Tags naming it; none: it is cache.
    pub tags: Vec<String>,
    pub last_used_unix_ms: u64,
}

/// `GET /v1/store/stat`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStat {
    pub blobs: u64,
    pub bytes: u64,
    pub pinned_blobs: u64,
    pub pinned_bytes: u64,
    pub tags: u64,
    pub cache_bytes_max: u64,
    pub path: String,
}

/// `POST /v1/store/pin`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinRequest {
    pub hash: String,
    /// The tag's name; default: the hash itself.
    pub tag: Option<String>,
}

/// `POST /v1/store/unpin`: a tag name, or a hash (every tag naming it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnpinRequest {
    pub name: String,
}

/// The tags a pin or unpin touched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagChange {
    pub tags: Vec<String>,
    pub hash: String,
}

/// `POST /v1/store/gc`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GcRequest {
    /// Remove every unpinned blob, not only what exceeds the cache.
    pub all: bool,
}

/// What a collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcResult {
    pub removed_blobs: u64,
    pub removed_bytes: u64,
    pub kept_blobs: u64,
    pub kept_bytes: u64,
}

/// A feed as `GET /v1/feeds` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedInfo {
    pub feed: String,
    /// This node holds the feed's key and can publish.
    pub owned: bool,
    pub following: bool,
    pub root: Option<FeedRootInfo>,
}

/// A feed's latest root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedRootInfo {
    pub seq: u64,
    pub content: String,
    /// `blob` or `directory`.
    pub kind: String,
    pub size: u64,
    pub published_at_unix_ms: u64,
    pub previous: Option<String>,
    /// Whether the content is in this node's store.
    pub held: bool,
}

/// `POST /v1/feeds/publish`: a path to add (file or directory), or a hash
/// already in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PublishRequest {
    pub feed: String,
    pub path: Option<String>,
    pub hash: Option<String>,
}

/// `POST /v1/feeds/follow`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FollowRequest {
    pub feed: String,
    /// Stop following instead.
    pub stop: bool,
}

/// `POST /v1/rpc/call`: a call to a service of a linked node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcCallRequest {
    /// The node (its id, or the start of one).
    pub node: String,
    pub service: String,
    /// The method: its name (looked up with the node's locator) or index.
    pub method: serde_json::Value,
    /// The arguments, as JSON (`{"bin": "<hex>"}` for binary).
    #[serde(default)]
    pub args: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// A line of the answer of `POST /v1/rpc/call`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RpcLine {
    /// One chunk of the answer: its values.
    Chunk(Vec<serde_json::Value>),
    /// The end of the answer.
    Choke,
    /// The call failed (`code` from the peer, as in docs/protocol/rpc.md).
    Error { code: Option<u64>, message: String },
}

/// `POST /v1/jobs`: a job to submit through a hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSubmitRequest {
    /// The most the buyer pays (units): held in escrow for the hub when
    /// the job is submitted, paid out when its result is accepted, the
    /// rest (or all, if it fails) returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price: Option<u64>,
    /// The program: an absolute path (a `.wasm` or `.wat` module, or an
    /// image `.tar`), or the hash of a blob in this node's store.
    pub program: String,
    /// `wasm` or `docker`; by default from the program's name (`.tar`:
    /// docker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Inputs: absolute paths or hashes; the task reads them on stdin.
    #[serde(default)]
    pub inputs: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// Workers per task.
    #[serde(default = "default_replicas")]
    pub replicas: u8,
    /// `adaptive` (default), `fixed`, `trust` (one worker) or `full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<String>,
    #[serde(default = "default_split")]
    pub split: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_time_ms: Option<u64>,
    /// Containers only: ask for the network.
    #[serde(default)]
    pub network: bool,
    /// The hub (its id or the start of one); by default the first known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
}

fn default_replicas() -> u8 {
    3
}

fn default_split() -> u32 {
    1
}

/// The answer to `POST /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSubmitted {
    /// The job's id (64 hex digits; any unique start of it will do).
    pub job: String,
    /// The escrow paying for it, if it is paid for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escrow: Option<String>,
    pub hub: String,
    pub program: String,
    pub inputs: Vec<String>,
}

/// A job, as `GET /v1/jobs/<id>` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    pub job: String,
    pub hub: String,
    /// `running`, `done`, `failed` or `cancelled`.
    pub state: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub runtime: String,
    pub replication: String,
    pub tasks: u32,
    pub tasks_done: u32,
    pub submitted_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    /// The directory of outputs (`task-<index>.out`, `.err`), once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    pub replicas_run: u32,
    pub dissents: u32,
    pub silences: u32,
    pub fuel_used: u64,
    pub log_lines: u64,
    /// Paid jobs: what the buyer's escrow held (units).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escrow_held: Option<u64>,
    /// Paid jobs, once settled: what was paid and refunded, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<String>,
}

/// One task's accepted outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOutcome {
    pub index: u32,
    /// How the program ended, e.g. `exited with 0`, `ran out of fuel`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub fuel_used: u64,
}

/// `GET /v1/jobs/<id>/result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResultInfo {
    pub job: JobInfo,
    /// Accepted outcomes, by task (tasks without one are left out).
    pub outcomes: Vec<TaskOutcome>,
}

/// `POST /v1/jobs/<id>/fetch`: get a finished job's outputs here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobFetchRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    /// An absolute path: a directory of `task-<index>.out`/`.err` files,
    /// or with `join`, one file of every task's stdout in order.
    pub out: String,
    #[serde(default)]
    pub join: bool,
}

/// The answer to `POST /v1/jobs/<id>/fetch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFetched {
    pub output: String,
    pub path: String,
    pub files: u64,
    pub bytes: u64,
}

/// `GET /v1/jobs/<id>/logs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLogs {
    pub lines: Vec<String>,
    /// The number of the next line (ask `?from=` it to follow).
    pub next: u64,
}

/// `POST /v1/jobs/<id>/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCancelled {
    pub job: String,
    /// False if it had ended already.
    pub cancelled: bool,
}

/// A worker, as `GET /v1/workers` reports it (through a hub).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub node_id: String,
    pub slots: u32,
    pub running: u32,
    pub agreed: u64,
    pub dissented: u64,
    pub silent: u64,
    pub streak: u32,
    pub cores: u32,
    pub memory_bytes: u64,
    pub disk_free_bytes: u64,
    pub gpus: u32,
    pub runtimes: Vec<String>,
}

/// `GET /v1/ledger`: the ledger, its rules and its supply check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerInfo {
    /// The node that runs the ledger.
    pub node: String,
    pub minter: String,
    pub dao: String,
    /// Amounts are in units (1 coin = 1 000 000 units).
    pub hub_deposit: u64,
    pub lock_percent: u8,
    pub dao_fee_per_mille: u16,
    pub pay_period_ms: u64,
    pub suspect_ms: u64,
    pub unbond_ms: u64,
    pub genesis: u64,
    pub minted: u64,
    /// What accounts, escrows, hub wallets and deposits hold together.
    pub held: u64,
    /// Whether `held` is exactly genesis plus minted.
    pub supply_ok: bool,
    pub supply_error: Option<String>,
    pub accounts: u64,
    pub log_len: u64,
    /// The ledger's time: its last transaction's.
    pub time_ms: u64,
}

/// `GET /v1/ledger/accounts/{who}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerAccount {
    pub id: String,
    pub balance: u64,
    /// The last sequence number the account used.
    pub sequence: u64,
    pub wallet: Option<HubWalletInfo>,
    pub deposits: Vec<DepositInfo>,
    /// Escrows this account arbitrates (as a hub).
    pub escrows: Vec<EscrowInfo>,
    pub time_ms: u64,
    /// Coins that came to it for work and payments (units), and that it
    /// spent, in all and over the last hour; and its earnings per hour.
    pub earned_total: u64,
    pub spent_total: u64,
    pub earned_last_hour: u64,
    pub spent_last_hour: u64,
    pub earned_per_hour: u64,
}

/// A hub wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubWalletInfo {
    /// created, registered, idle, suspected or punished.
    pub state: String,
    pub balance: u64,
    pub frozen: u64,
    pub locked: u64,
    /// What the hub may pay out now.
    pub unlocked: u64,
    pub registered_ms: u64,
    pub suspected_ms: u64,
    /// When payday may be called (registered wallets).
    pub payday_from_ms: Option<u64>,
    /// When the DAO may ban it (suspected wallets).
    pub ban_from_ms: Option<u64>,
}

/// A worker's deposit with a hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositInfo {
    pub worker: String,
    pub hub: String,
    pub amount: u64,
    /// When the worker may take it back, if it asked.
    pub reclaim_from_ms: Option<u64>,
}

/// An open escrow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowInfo {
    pub id: String,
    pub owner: String,
    pub arbiter: String,
    pub amount: u64,
    pub expires_ms: u64,
}

/// One transaction of an account's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerHistoryLine {
    pub index: u64,
    pub time_ms: u64,
    pub from: String,
    pub sequence: u64,
    /// The operation's name (transfer, hold, wallet_pay, …).
    pub op: String,
    /// What it did, in words.
    pub text: String,
}

/// `POST /v1/ledger/ops`: an operation for this node to sign and send.
/// Accounts are node ids (or a unique start of one); amounts are units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LedgerOpRequest {
    Transfer {
        to: String,
        amount: u64,
    },
    Mint {
        to: String,
        amount: u64,
        reason: String,
    },
    WalletFund {
        amount: u64,
    },
    WalletRegister,
    WalletPay {
        to: String,
        amount: u64,
    },
    WalletPayday,
    WalletWithdraw {
        amount: u64,
    },
    Suspect {
        hub: String,
    },
    Rehab {
        hub: String,
    },
    Ban {
        hub: String,
    },
    DepositPost {
        hub: String,
        amount: u64,
    },
    DepositUnbond {
        hub: String,
    },
    DepositReclaim {
        hub: String,
    },
    /// Take back an escrow this node holds (from its expiry on), or, as
    /// its arbiter, return it: `escrow` is its id in hex.
    Refund {
        escrow: String,
    },
}

/// `POST /v1/ledger/submit`: a transaction signed elsewhere (by the DAO's
/// key file, say), in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerSubmitRequest {
    pub body: String,
    pub signature: String,
}

/// Where a transaction landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerReceipt {
    pub index: u64,
    pub time_ms: u64,
    /// It had applied before (a resubmission): this is its first receipt.
    pub replayed: bool,
    /// What it did, in words.
    pub text: String,
}

/// What an order offers or needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketResources {
    #[serde(default)]
    pub cores: u32,
    #[serde(default)]
    pub memory_mib: u64,
    #[serde(default)]
    pub gpus: u32,
    /// `wasm`, `docker`.
    #[serde(default)]
    pub runtimes: Vec<String>,
}

/// `POST /v1/market/ask`: this node offers work at a hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketAskRequest {
    /// The hub (id or start of one); default: the first known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    pub offer: MarketResources,
    /// Tasks taken at once.
    pub slots: u32,
    /// Ledger units per `unit`.
    pub price: u64,
    pub ttl_secs: u64,
    /// `task` (default), `gfuel`, `cpu_second`, `gb_stored` or
    /// `gb_served`: orders in different units never match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// `POST /v1/market/bid`: this node asks for work at a hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketBidRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    pub need: MarketResources,
    /// The most paid per `unit` and worker, in ledger units.
    pub max_price: u64,
    pub replicas: u8,
    pub ttl_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// `POST /v1/market/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketCancelRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    pub id: u64,
}

/// A resting order of a hub's book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketOrder {
    pub hub: String,
    pub id: u64,
    /// `ask` or `bid`.
    pub side: String,
    /// The worker (asks) or buyer (bids).
    pub party: String,
    pub resources: MarketResources,
    /// The ask's price, or the bid's maximum, per `unit` (ledger units).
    pub price: u64,
    /// What the price is per: task, gfuel, cpu_second, gb_stored, gb_served.
    pub unit: String,
    /// Asks: slots offered; bids: replicas wanted.
    pub size: u32,
    /// Asks: slots left; bids: replicas filled so far.
    pub filled_or_left: u32,
    pub expires_ms: u64,
}

/// One worker's slot taken for a bid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketFill {
    pub bid: u64,
    pub ask: u64,
    pub worker: String,
    pub price: u64,
}

/// A bid filled with all its replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketDeal {
    pub hub: String,
    pub bid: u64,
    pub buyer: String,
    pub fills: Vec<MarketFill>,
    /// Per task, all replicas (units).
    pub price: u64,
    pub time_ms: u64,
}

/// What posting an order did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketPosted {
    pub hub: String,
    pub id: u64,
    pub fills: Vec<MarketFill>,
    pub deals: Vec<MarketDeal>,
}

/// Something that happened in a hub's book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketEvent {
    pub time_ms: u64,
    /// `posted`, `filled`, `dealt`, `cancelled` or `expired`.
    pub kind: String,
    /// The order it concerns (a fill's or deal's bid).
    pub order: u64,
    /// In words.
    pub text: String,
}
