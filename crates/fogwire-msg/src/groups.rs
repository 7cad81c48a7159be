//! The messenger's small groups (messages.md §10), as the node's API
//! sees them: the state's work (`state/group.rs`) on a blocking thread,
//! the delivery of what it queued woken, and a new member's key package
//! fetched over a route.

use std::sync::Arc;
use std::time::Duration;

use fogwire_identity::NodeId;
use fogwire_msg_proto::Frame;

use crate::frames::{FrameReader, encode_all};
use crate::{Group, GroupEntry, GroupError, GroupId, Messenger, MsgError, SERVICE, Shared};

/// How long a node has to hand over its key package.
const KEY_PACKAGE_TIMEOUT: Duration = Duration::from_secs(10);

impl Messenger {
    /// Runs a group operation on the state, then wakes the delivery of
    /// what it queued.
    async fn group_work<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut crate::State, u64) -> Result<T, GroupError> + Send + 'static,
    ) -> Result<T, MsgError> {
        let now = fogwire_env::unix_ms();
        let (result, wakes) = self
            .shared
            .with_state(move |state| (work(state, now), state.take_wakes()))
            .await?;
        for peer in wakes {
            crate::deliver::wake(&self.shared, peer);
        }
        Ok(result?)
    }

    /// Makes a group owned by this node, with it as the only member.
    pub async fn group_create(&self, name: String) -> Result<Group, MsgError> {
        self.group_work(move |state, now| state.group_create(&name, now))
            .await
    }

    /// Adds `node` to a group this node owns: fetches its key package
    /// over a route (so it must be reachable now), then sends the members
    /// the commit and `node` its welcome, through the outbox.
    pub async fn group_add(&self, group: GroupId, node: NodeId) -> Result<Group, MsgError> {
        if node == self.shared.me {
            return Err(MsgError::ToSelf);
        }
        self.shared
            .with_state(move |state| state.group_owned(group))
            .await??;
        let package =
            key_package(&self.shared, node)
                .await
                .map_err(|why| MsgError::NoKeyPackage {
                    node: node.to_string(),
                    why,
                })?;
        self.group_work(move |state, now| state.group_add(group, node, &package, now))
            .await
    }

    /// Removes `node` from a group this node owns.
    pub async fn group_remove(&self, group: GroupId, node: NodeId) -> Result<Group, MsgError> {
        self.group_work(move |state, now| state.group_remove(group, node, now))
            .await
    }

    /// Leaves a group (its owner is asked to remove this node).
    pub async fn group_leave(&self, group: GroupId) -> Result<Group, MsgError> {
        self.group_work(move |state, now| state.group_leave(group, now))
            .await
    }

    /// Sends `text` to every other member of a group.
    pub async fn group_send(&self, group: GroupId, text: String) -> Result<GroupEntry, MsgError> {
        self.group_work(move |state, now| state.group_send(group, &text, now))
            .await
    }

    /// The groups this node knows (those it left or was removed from too).
    pub async fn groups(&self) -> Result<Vec<Group>, MsgError> {
        Ok(self.shared.with_state(|state| state.groups()).await??)
    }

    /// The last `limit` entries of a group's history, each with how many
    /// members its pairwise messages reached (for what this node sent).
    pub async fn group_history(
        &self,
        group: GroupId,
        limit: usize,
    ) -> Result<Vec<(GroupEntry, usize)>, MsgError> {
        Ok(self
            .shared
            .with_state(move |state| state.group_history(group, limit))
            .await??)
    }
}

/// Asks `node` for its key package over a route.
async fn key_package(shared: &Arc<Shared>, node: NodeId) -> Result<Vec<u8>, String> {
    shared
        .over_route(node, SERVICE, |mut stream| async move {
            stream
                .write_all(encode_all(&[Frame::KeyPackageRequest]))
                .await
                .map_err(|error| error.to_string())?;
            let mut reader = FrameReader::default();
            loop {
                let frames = reader
                    .next_batch(&mut stream, KEY_PACKAGE_TIMEOUT)
                    .await
                    .map_err(|error| error.to_string())?;
                for frame in frames {
                    if let Frame::KeyPackage(package) = frame {
                        return Ok(package);
                    }
                }
            }
        })
        .await
}
