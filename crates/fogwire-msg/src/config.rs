//! The `[msg]` section of a node's configuration file.

use fogwire_identity::NodeId;
use serde::{Deserialize, Deserializer, Serialize};

use crate::Mailboxes;

/// `[msg]`: the messenger's mailboxes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MsgSection {
    /// Node ids of this node's own always-on nodes that hold its mail
    /// while it is away (at most four; each must list this node in its
    /// `mailbox_for`). Empty in a cluster: two boards of the cluster,
    /// chosen by rendezvous hashing.
    #[serde(deserialize_with = "at_most_four")]
    pub mailboxes: Vec<NodeId>,
    /// Node ids of the nodes this one holds mail for (the boards of its
    /// cluster are held for without being named).
    pub mailbox_for: Vec<NodeId>,
}

impl MsgSection {
    /// The settings as the messenger takes them.
    pub fn mailboxes(&self) -> Mailboxes {
        Mailboxes {
            mine: self.mailboxes.clone(),
            serve_for: self.mailbox_for.clone(),
        }
    }
}

/// A card names at most four mailboxes: more is an error, not a silent cut.
fn at_most_four<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<NodeId>, D::Error> {
    let mailboxes = Vec::<NodeId>::deserialize(deserializer)?;
    let max = fogwire_msg_proto::wire::MAILBOXES_MAX;
    if mailboxes.len() > max {
        return Err(serde::de::Error::custom(format!(
            "{} mailboxes named; a node's card names at most {max}: keep the {max} most available",
            mailboxes.len()
        )));
    }
    Ok(mailboxes)
}
