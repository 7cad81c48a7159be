//! The messenger: end-to-end encrypted messages between nodes.

use serde::{Deserialize, Serialize};

/// `POST /v1/msg/send`: a text for a node (a name, an id or its prefix).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MsgSendRequest {
    pub to: String,
    pub text: String,
}

/// One message, either way, as it now stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    /// 32 hex digits.
    pub id: String,
    /// The other node of the conversation.
    pub peer: String,
    /// `out` (sent by this node) or `in`.
    pub direction: String,
    pub text: String,
    /// Outgoing: `queued`, `delivered`, `read` or `failed`; incoming:
    /// `held` (behind a gap in its conversation), `unread` or `read`.
    pub status: String,
    /// When its sender wrote it (the sender's clock).
    pub sent_unix_ms: u64,
    pub received_unix_ms: Option<u64>,
    pub delivered_unix_ms: Option<u64>,
    pub read_unix_ms: Option<u64>,
    /// The sender's numbering of its messages to the recipient.
    pub seq: u64,
    /// Why the last attempt to send it failed, or why it was given up on.
    pub error: Option<String>,
}

/// A node this one exchanged messages with (`GET /v1/msg/contacts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactView {
    pub peer: String,
    pub messages: u64,
    pub unread: u64,
    /// Messages from it held behind a gap.
    pub held: u64,
    pub last_unix_ms: u64,
    pub last_text: String,
    /// Whether this node has written to it (else it is a stranger, held to
    /// a smaller quota).
    pub written_to: bool,
}

/// `POST /v1/msg/groups`: a new group, owned by this node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupCreateRequest {
    pub name: String,
}

/// `POST /v1/msg/groups/{group}/add` and `…/remove`: a node (a name, an
/// id or its prefix).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupMemberRequest {
    pub node: String,
}

/// `POST /v1/msg/groups/{group}/send`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupSendRequest {
    pub text: String,
}

/// A group as this node knows it (`GET /v1/msg/groups`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    /// 32 hex digits.
    pub id: String,
    pub name: String,
    /// The node that made it, the only one that changes its membership.
    pub owner: String,
    /// Its members (the owner among them).
    pub members: Vec<String>,
    /// `member`, `left` or `removed`.
    pub standing: String,
    pub created_unix_ms: u64,
    pub last_unix_ms: u64,
    /// Entries in its history.
    pub entries: u64,
}

/// One entry of a group's history (`GET /v1/msg/groups/{group}/history`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEntryView {
    pub position: u64,
    /// Who sent it (for a membership change, the owner).
    pub from: String,
    /// `joined`, `text`, `added` or `removed`.
    pub kind: String,
    /// For `text`.
    pub text: Option<String>,
    /// For `added` and `removed`: the nodes.
    pub members: Vec<String>,
    /// When its sender wrote it (the sender's clock).
    pub sent_unix_ms: u64,
    /// When this node wrote or received it.
    pub at_unix_ms: u64,
    /// For a text this node sent: the members it was sealed for, and how
    /// many of them signed for it so far.
    pub sent_to: u64,
    pub delivered_to: u64,
}
