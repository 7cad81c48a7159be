//! Calls to services of other nodes.

use serde::{Deserialize, Serialize};

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
