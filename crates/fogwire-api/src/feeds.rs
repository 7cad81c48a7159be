//! Feeds: signed, mutable names for trees in the store.

use serde::{Deserialize, Serialize};

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
