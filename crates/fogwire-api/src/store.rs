//! The store: adding, getting, listing, pinning, collecting, peers.

use serde::{Deserialize, Serialize};

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
    /// Overwrite `path` if it exists (otherwise an existing path is
    /// refused with 409).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// A directory: the most files and directories it may write (each
    /// counted every time the tree names it); default 100 000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_files: Option<u64>,
    /// A directory: the most file bytes it may write; default 16 GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
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

/// `GET /v1/store/providers/{hash}`: who holds a blob in the network, as
/// the keepers of its provider records say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvidersReport {
    pub hash: String,
    /// The nodes that keep its provider records, as this node sees the
    /// network, in the order they were asked.
    pub keepers: Vec<String>,
    /// Keepers that could not be reached or did not answer.
    pub silent: Vec<SilentKeeper>,
    /// The holders named, freshest first (this node left out).
    pub holders: Vec<String>,
}

/// A keeper that did not answer, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilentKeeper {
    pub node: String,
    pub why: String,
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
