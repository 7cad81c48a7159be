//! Small groups (messages.md §10): MLS (RFC 9420, from `openmls`) for
//! the group's keys, and the pairwise conversations for delivery.
//!
//! - A group has one **owner**, the node that made it, and only the
//!   owner changes its membership (adds, removes, and removes those that
//!   ask to leave). One committer means members never see two commits
//!   for one epoch, without a server to order them.
//! - Every group frame travels as a sealed message of kind group in the
//!   pairwise conversation with each member: the outbox, retries,
//!   mailboxes, order and duplicate checks of direct messages carry it.
//!   A member's messages reach each other member in the order it sent
//!   them; a message from an epoch a member has not reached yet (its
//!   commit, from the owner, is still on its way) waits for it.
//! - A member's MLS signature key is derived from its node's key, and its
//!   credential names its node id with the node's signature over that
//!   key ([`MemberIdentity`]): every member checks every credential, so
//!   nobody joins a group as a node it is not.
//! - openmls keeps its state in its in-memory store; every change is
//!   written to the `mls` table in the same transaction as what caused
//!   it, so a restart resumes every group where it was.

use std::collections::{BTreeSet, HashMap};

use fogwire_identity::{Keypair, NodeId};
use fogwire_msg_proto::MessageId;
use fogwire_msg_proto::group::{GroupFrame, GroupId, MEMBERS_MAX, MemberIdentity, NAME_LEN_MAX};
use fogwire_msg_proto::wire::TEXT_LEN_MAX;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use redb::{ReadableDatabase, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{Outgoing, State, enqueue};
use crate::db::{self, DbError, Status};

const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
/// Past epochs whose keys a member keeps, to open messages sent just
/// before a membership change reached it.
const PAST_EPOCHS: usize = 8;
/// Groups one node is in at most (welcomes past it are dropped).
pub const GROUPS_MAX: usize = 256;
/// Groups of one owner a node is in at most: one node cannot fill all.
pub const GROUPS_PER_OWNER_MAX: usize = 16;
/// Groups kept in all, those left or removed from too (their history);
/// past it, the longest quiet of those goes.
const GROUPS_KEPT_MAX: usize = 1_024;
/// Messages from epochs not reached yet, kept per group at most.
const PENDING_MAX: u64 = 1_024;
/// How long this node's key package is handed out before a new one.
const KEY_PACKAGE_RENEW_MS: u64 = 30 * 24 * 3600 * 1000;
const META_KEY_PACKAGE: &str = "mls_key_package";

/// Where this node stands in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Standing {
    Member,
    /// It asked the owner to remove it.
    Left,
    /// The owner removed it.
    Removed,
}

/// A group as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub id: GroupId,
    pub name: String,
    pub owner: [u8; 32],
    /// Its members, the owner among them, in MLS leaf order.
    pub members: Vec<[u8; 32]>,
    pub standing: Standing,
    pub created_ms: u64,
    pub last_ms: u64,
    /// Entries in its history.
    pub entries: u64,
}

/// What a group's history records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupEvent {
    /// The owner made the group (or this node joined it).
    Joined,
    /// A member's message.
    Text(String),
    /// The owner added these nodes.
    Added(Vec<[u8; 32]>),
    /// These nodes are members no more.
    Removed(Vec<[u8; 32]>),
}

/// One entry of a group's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEntry {
    pub position: u64,
    /// Who sent it (for membership changes, the owner).
    pub from: [u8; 32],
    pub sent_ms: u64,
    pub at_ms: u64,
    pub event: GroupEvent,
    /// For what this node sent: the pairwise messages that carry it, one
    /// per other member.
    pub carried_by: Vec<MessageId>,
}

/// Why a group operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("no group {0} here: `fogwire msg groups` lists them")]
    NotFound(String),
    #[error("only the group's owner ({0}) changes who is in it")]
    NotOwner(String),
    #[error("this node is no longer in the group ({0:?})")]
    NotIn(Standing),
    #[error("a group has at most {MEMBERS_MAX} members")]
    Full,
    #[error("{0} is already in the group")]
    AlreadyIn(String),
    #[error("{0} is not in the group")]
    NotMember(String),
    #[error("the owner cannot leave the group it made while others are in it: remove them first")]
    OwnerLeaving,
    #[error("a group's name is 1 to {NAME_LEN_MAX} bytes")]
    BadName,
    #[error("a message needs some text, at most {TEXT_LEN_MAX} bytes")]
    BadText,
    #[error(
        "this node is in {GROUPS_MAX} groups already, or {GROUPS_PER_OWNER_MAX} of this owner's"
    )]
    TooMany,
    #[error("the node's key package is not usable: {0}")]
    BadKeyPackage(String),
    #[error("MLS: {0}")]
    Mls(String),
}

macro_rules! from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for GroupError {
            fn from(error: $error) -> Self {
                GroupError::Db(error.into())
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

fn mls<E: std::fmt::Display>(error: E) -> GroupError {
    GroupError::Mls(error.to_string())
}

/// openmls with this node's MLS identity, and its store mirrored to disk.
pub(crate) struct Mls {
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    /// What the `mls` table holds, as of the last write.
    disk: HashMap<Vec<u8>, Vec<u8>>,
}

impl Mls {
    /// This node's MLS identity (derived from its key), and the store as
    /// the database holds it.
    pub(crate) fn load(key: &Keypair, db: &redb::Database) -> Result<Self, DbError> {
        let seed = key.derive_secret("fogwire msg v1 mls signature key");
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes()
            .to_vec();
        let identity = MemberIdentity::vouch(key, &public).encode();
        let credential = CredentialWithKey {
            credential: BasicCredential::new(identity).into(),
            signature_key: public.clone().into(),
        };
        let signer = SignatureKeyPair::from_raw(SignatureScheme::ED25519, seed.to_vec(), public);
        let mut disk = HashMap::new();
        let read = db.begin_read()?;
        for row in read.open_table(db::MLS)?.iter()? {
            let (key, value) = row?;
            disk.insert(key.value().to_vec(), value.value().to_vec());
        }
        let provider = OpenMlsRustCrypto::default();
        *provider
            .storage()
            .values
            .write()
            .map_err(|_| DbError::Corrupt("MLS store lock".to_owned()))? = disk.clone();
        Ok(Self {
            provider,
            signer,
            credential,
            disk,
        })
    }

    /// Writes what openmls changed since the last write into `write`.
    fn persist(&mut self, write: &WriteTransaction) -> Result<(), DbError> {
        let values = self
            .provider
            .storage()
            .values
            .read()
            .map_err(|_| DbError::Corrupt("MLS store lock".to_owned()))?
            .clone();
        let mut table = write.open_table(db::MLS)?;
        for (key, value) in &values {
            if self.disk.get(key) != Some(value) {
                table.insert(key.as_slice(), value.as_slice())?;
            }
        }
        for key in self.disk.keys() {
            if !values.contains_key(key) {
                table.remove(key.as_slice())?;
            }
        }
        self.disk = values;
        Ok(())
    }

    /// Forgets what openmls changed since the last write (an operation
    /// that failed half way).
    fn restore(&mut self) {
        if let Ok(mut values) = self.provider.storage().values.write() {
            *values = self.disk.clone();
        }
    }

    fn group(&self, id: &GroupId) -> Result<MlsGroup, GroupError> {
        MlsGroup::load(
            self.provider.storage(),
            &openmls::group::GroupId::from_slice(&id.0),
        )
        .map_err(mls)?
        .ok_or_else(|| GroupError::NotFound(id.to_string()))
    }
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .max_past_epochs(PAST_EPOCHS)
        .build()
}

/// The node a member's credential names, once it checks out.
fn member_node(credential: &Credential, signature_key: &[u8]) -> Option<NodeId> {
    let basic = BasicCredential::try_from(credential.clone()).ok()?;
    MemberIdentity::verify(basic.identity(), signature_key).ok()
}

/// A group's members as nodes, in leaf order; none if a credential does
/// not check out.
fn members_of(group: &MlsGroup) -> Option<Vec<[u8; 32]>> {
    group
        .members()
        .map(|member| {
            member_node(&member.credential, &member.signature_key).map(|node| *node.as_bytes())
        })
        .collect()
}

fn nodes(members: &[[u8; 32]], except: &NodeId) -> Vec<NodeId> {
    members
        .iter()
        .filter_map(|member| NodeId::from_bytes(member).ok())
        .filter(|node| node != except)
        .collect()
}

/// Whether this node may be in one more group of `owner`'s: under
/// [`GROUPS_MAX`] groups in all and `per_owner` of `owner`'s
/// ([`GROUPS_PER_OWNER_MAX`] for another's; its own are bounded only in
/// all). To keep at most [`GROUPS_KEPT_MAX`], the group left longest
/// ago goes, history and all.
fn room(write: &WriteTransaction, owner: &NodeId, per_owner: usize) -> Result<bool, GroupError> {
    let mut table = write.open_table(db::GROUPS)?;
    let (mut member_of, mut of_owner) = (0, 0);
    let mut quietest: Option<(u64, GroupId)> = None;
    let mut kept = 0;
    for row in table.iter()? {
        let group: Group = db::decode(row?.1.value())?;
        kept += 1;
        if group.standing == Standing::Member {
            member_of += 1;
            of_owner += usize::from(group.owner == *owner.as_bytes());
        } else if quietest.is_none_or(|(last, _)| group.last_ms < last) {
            quietest = Some((group.last_ms, group.id));
        }
    }
    if member_of >= GROUPS_MAX || of_owner >= per_owner {
        return Ok(false);
    }
    if kept >= GROUPS_KEPT_MAX
        && let Some((_, id)) = quietest
    {
        table.remove(id.0.as_slice())?;
        drop(table);
        let mut log = write.open_table(db::GROUP_LOG)?;
        let range = (id.0.as_slice(), 0)..=(id.0.as_slice(), u64::MAX);
        log.retain_in(range, |_, _| false)?;
    }
    Ok(true)
}

fn get_group(write: &WriteTransaction, id: &GroupId) -> Result<Option<Group>, DbError> {
    db::get(&write.open_table(db::GROUPS)?, &id.0)
}

fn put_group(write: &WriteTransaction, group: &Group) -> Result<(), DbError> {
    write
        .open_table(db::GROUPS)?
        .insert(group.id.0.as_slice(), db::encode(group)?.as_slice())?;
    Ok(())
}

/// Adds an entry to `group`'s history.
fn log(
    write: &WriteTransaction,
    group: &mut Group,
    from: [u8; 32],
    sent_ms: u64,
    at_ms: u64,
    event: GroupEvent,
    carried_by: Vec<MessageId>,
) -> Result<GroupEntry, DbError> {
    group.entries += 1;
    group.last_ms = at_ms;
    let entry = GroupEntry {
        position: group.entries,
        from,
        sent_ms,
        at_ms,
        event,
        carried_by,
    };
    write.open_table(db::GROUP_LOG)?.insert(
        (group.id.0.as_slice(), entry.position),
        db::encode(&entry)?.as_slice(),
    )?;
    Ok(entry)
}

/// Adds a membership change, made or seen now, to `group`'s history.
fn note(
    write: &WriteTransaction,
    group: &mut Group,
    by: [u8; 32],
    event: GroupEvent,
    now_ms: u64,
) -> Result<GroupEntry, DbError> {
    log(write, group, by, now_ms, now_ms, event, Vec::new())
}

fn serialize(message: &MlsMessageOut) -> Result<Vec<u8>, GroupError> {
    message.tls_serialize_detached().map_err(mls)
}

/// What an MLS application message carries: `sent_ms u64 | text`.
fn app_payload(sent_ms: u64, text: &str) -> Vec<u8> {
    [sent_ms.to_be_bytes().as_slice(), text.as_bytes()].concat()
}

fn read_app_payload(bytes: &[u8]) -> Option<(u64, String)> {
    let (sent, text) = bytes.split_first_chunk::<8>()?;
    if text.is_empty() || text.len() > TEXT_LEN_MAX {
        return None;
    }
    Some((
        u64::from_be_bytes(*sent),
        std::str::from_utf8(text).ok()?.to_owned(),
    ))
}

impl State {
    /// Runs `work` in one transaction with openmls: what it changed is on
    /// disk with what `work` wrote, or (if it fails) forgotten.
    fn with_mls<T>(
        &mut self,
        work: impl FnOnce(&mut Self, &WriteTransaction) -> Result<T, GroupError>,
    ) -> Result<T, GroupError> {
        let write = self.db.begin_write()?;
        match work(self, &write) {
            Ok(value) => {
                self.mls.persist(&write)?;
                write.commit()?;
                Ok(value)
            }
            Err(error) => {
                self.mls.restore();
                Err(error)
            }
        }
    }

    /// Sends `frame` to each of `peers` in its pairwise conversation:
    /// the messages that carry it.
    fn send_frame(
        &mut self,
        write: &WriteTransaction,
        peers: &[NodeId],
        frame: &GroupFrame,
        now_ms: u64,
    ) -> Result<Vec<MessageId>, DbError> {
        let bytes = frame.encode();
        let mut ids = Vec::with_capacity(peers.len());
        for peer in peers {
            let records = enqueue(write, peer, vec![Outgoing::Group(bytes.clone())], now_ms)?;
            ids.extend(records.iter().map(|record| record.id));
            self.wakes.push(*peer);
        }
        Ok(ids)
    }

    /// Makes a group owned by this node, with it as the only member.
    pub fn group_create(&mut self, name: &str, now_ms: u64) -> Result<Group, GroupError> {
        if name.is_empty() || name.len() > NAME_LEN_MAX {
            return Err(GroupError::BadName);
        }
        self.with_mls(|state, write| {
            if !room(write, &state.me, GROUPS_MAX)? {
                return Err(GroupError::TooMany);
            }
            let id = GroupId(super::random());
            let config = MlsGroupCreateConfig::builder()
                .ciphersuite(CIPHERSUITE)
                .use_ratchet_tree_extension(true)
                .max_past_epochs(PAST_EPOCHS)
                .build();
            MlsGroup::new_with_group_id(
                &state.mls.provider,
                &state.mls.signer,
                &config,
                openmls::group::GroupId::from_slice(&id.0),
                state.mls.credential.clone(),
            )
            .map_err(mls)?;
            let me = *state.me.as_bytes();
            let mut group = Group {
                id,
                name: name.to_owned(),
                owner: me,
                members: vec![me],
                standing: Standing::Member,
                created_ms: now_ms,
                last_ms: now_ms,
                entries: 0,
            };
            note(write, &mut group, me, GroupEvent::Joined, now_ms)?;
            put_group(write, &group)?;
            Ok(group)
        })
    }

    /// This node's key package, for an owner adding it to a group: one
    /// kept for everyone who asks (a "last resort" package, usable more
    /// than once), made anew every 30 days.
    pub fn key_package(&mut self, now_ms: u64) -> Result<Vec<u8>, GroupError> {
        {
            let read = self.db.begin_read()?;
            let meta = read.open_table(db::META)?;
            if let Some(stored) = meta.get(META_KEY_PACKAGE)? {
                let (made_ms, bytes): (u64, Vec<u8>) = db::decode(stored.value())?;
                if now_ms.saturating_sub(made_ms) < KEY_PACKAGE_RENEW_MS {
                    return Ok(bytes);
                }
            }
        }
        self.with_mls(|state, write| {
            let bundle = KeyPackage::builder()
                .mark_as_last_resort()
                .leaf_node_capabilities(
                    Capabilities::builder()
                        .extensions(vec![ExtensionType::LastResort])
                        .build(),
                )
                .build(
                    CIPHERSUITE,
                    &state.mls.provider,
                    &state.mls.signer,
                    state.mls.credential.clone(),
                )
                .map_err(mls)?;
            let bytes = serialize(&MlsMessageOut::from(bundle.key_package().clone()))?;
            write.open_table(db::META)?.insert(
                META_KEY_PACKAGE,
                db::encode(&(now_ms, bytes.clone()))?.as_slice(),
            )?;
            Ok(bytes)
        })
    }

    /// The group this node owns and is in, or why not.
    fn owned(&self, write: &WriteTransaction, id: &GroupId) -> Result<Group, GroupError> {
        let group = get_group(write, id)?.ok_or_else(|| GroupError::NotFound(id.to_string()))?;
        self.owns(group)
    }

    /// Whether this node owns the group and is in it, as it stands now:
    /// checked before the work of adding a member (a route to it).
    pub fn group_owned(&self, id: GroupId) -> Result<Group, GroupError> {
        let read = self.db.begin_read()?;
        let group: Group = db::get(&read.open_table(db::GROUPS)?, &id.0)?
            .ok_or_else(|| GroupError::NotFound(id.to_string()))?;
        self.owns(group)
    }

    fn owns(&self, group: Group) -> Result<Group, GroupError> {
        if group.standing != Standing::Member {
            return Err(GroupError::NotIn(group.standing));
        }
        if group.owner != *self.me.as_bytes() {
            let owner = NodeId::from_bytes(&group.owner).map(|owner| owner.to_string());
            return Err(GroupError::NotOwner(owner.unwrap_or_default()));
        }
        Ok(group)
    }

    /// Adds `node` (whose key package this is) to a group this node owns:
    /// the members get the commit, `node` the welcome.
    pub fn group_add(
        &mut self,
        id: GroupId,
        node: NodeId,
        key_package: &[u8],
        now_ms: u64,
    ) -> Result<Group, GroupError> {
        let bad = |why: String| GroupError::BadKeyPackage(why);
        let message = MlsMessageIn::tls_deserialize_exact(key_package)
            .map_err(|error| bad(error.to_string()))?;
        let MlsMessageBodyIn::KeyPackage(package) = message.extract() else {
            return Err(bad("not a key package".to_owned()));
        };
        let package = package
            .validate(self.mls.provider.crypto(), ProtocolVersion::Mls10)
            .map_err(|error| bad(error.to_string()))?;
        let leaf = package.leaf_node();
        if member_node(leaf.credential(), leaf.signature_key().as_slice()) != Some(node) {
            return Err(bad(format!("its credential is not {node}'s")));
        }
        self.with_mls(|state, write| {
            let mut group = state.owned(write, &id)?;
            if group.members.contains(node.as_bytes()) {
                return Err(GroupError::AlreadyIn(node.to_string()));
            }
            if group.members.len() >= MEMBERS_MAX {
                return Err(GroupError::Full);
            }
            let mut mls_group = state.mls.group(&id)?;
            let (commit, welcome, _) = mls_group
                .add_members(&state.mls.provider, &state.mls.signer, &[package])
                .map_err(mls)?;
            mls_group
                .merge_pending_commit(&state.mls.provider)
                .map_err(mls)?;
            let welcome = GroupFrame::Welcome {
                group: id,
                name: group.name.clone(),
                welcome: serialize(&welcome)?,
            };
            state.send_frame(write, &[node], &welcome, now_ms)?;
            let added = GroupEvent::Added(vec![*node.as_bytes()]);
            state.committed(write, &mut group, &mls_group, &commit, added, now_ms)?;
            Ok(group)
        })
    }

    /// Removes `node` from a group this node owns: the commit goes to
    /// everyone who was in it, `node` too (so it knows).
    pub fn group_remove(
        &mut self,
        id: GroupId,
        node: NodeId,
        now_ms: u64,
    ) -> Result<Group, GroupError> {
        self.with_mls(|state, write| state.remove_in(write, id, node, now_ms))
    }

    fn remove_in(
        &mut self,
        write: &WriteTransaction,
        id: GroupId,
        node: NodeId,
        now_ms: u64,
    ) -> Result<Group, GroupError> {
        let mut group = self.owned(write, &id)?;
        let Some(leaf) = group
            .members
            .iter()
            .position(|member| member == node.as_bytes())
        else {
            return Err(GroupError::NotMember(node.to_string()));
        };
        if node == self.me {
            return Err(GroupError::OwnerLeaving);
        }
        let mut mls_group = self.mls.group(&id)?;
        let index = mls_group
            .members()
            .nth(leaf)
            .map(|member| member.index)
            .ok_or_else(|| GroupError::NotMember(node.to_string()))?;
        let (commit, _, _) = mls_group
            .remove_members(&self.mls.provider, &self.mls.signer, &[index])
            .map_err(mls)?;
        mls_group
            .merge_pending_commit(&self.mls.provider)
            .map_err(mls)?;
        let removed = GroupEvent::Removed(vec![*node.as_bytes()]);
        self.committed(write, &mut group, &mls_group, &commit, removed, now_ms)?;
        Ok(group)
    }

    /// After the owner's commit (merged): it goes to everyone who was in
    /// the group before it (a removed member too, so it knows), and the
    /// group's members and history follow.
    fn committed(
        &mut self,
        write: &WriteTransaction,
        group: &mut Group,
        mls_group: &MlsGroup,
        commit: &MlsMessageOut,
        event: GroupEvent,
        now_ms: u64,
    ) -> Result<(), GroupError> {
        let commit = GroupFrame::Commit {
            group: group.id,
            commit: serialize(commit)?,
        };
        let before = nodes(&group.members, &self.me);
        self.send_frame(write, &before, &commit, now_ms)?;
        group.members = members_of(mls_group)
            .ok_or_else(|| GroupError::Mls("a member's credential".to_owned()))?;
        let me = *self.me.as_bytes();
        note(write, group, me, event, now_ms)?;
        put_group(write, group)?;
        Ok(())
    }

    /// Leaves a group: asks its owner to remove this node, and forgets
    /// the group's keys at once (its history stays).
    pub fn group_leave(&mut self, id: GroupId, now_ms: u64) -> Result<Group, GroupError> {
        self.with_mls(|state, write| {
            let mut group =
                get_group(write, &id)?.ok_or_else(|| GroupError::NotFound(id.to_string()))?;
            if group.standing != Standing::Member {
                return Err(GroupError::NotIn(group.standing));
            }
            if group.owner == *state.me.as_bytes() {
                if group.members.len() > 1 {
                    return Err(GroupError::OwnerLeaving);
                }
            } else if let Ok(owner) = NodeId::from_bytes(&group.owner) {
                state.send_frame(write, &[owner], &GroupFrame::Leave { group: id }, now_ms)?;
            }
            if let Ok(mut mls_group) = state.mls.group(&id) {
                mls_group
                    .delete(state.mls.provider.storage())
                    .map_err(mls)?;
            }
            group.standing = Standing::Left;
            put_group(write, &group)?;
            Ok(group)
        })
    }

    /// Sends `text` to a group this node is in.
    pub fn group_send(
        &mut self,
        id: GroupId,
        text: &str,
        now_ms: u64,
    ) -> Result<GroupEntry, GroupError> {
        if text.is_empty() || text.len() > TEXT_LEN_MAX {
            return Err(GroupError::BadText);
        }
        self.with_mls(|state, write| {
            let mut group =
                get_group(write, &id)?.ok_or_else(|| GroupError::NotFound(id.to_string()))?;
            if group.standing != Standing::Member {
                return Err(GroupError::NotIn(group.standing));
            }
            let mut mls_group = state.mls.group(&id)?;
            let message = mls_group
                .create_message(
                    &state.mls.provider,
                    &state.mls.signer,
                    &app_payload(now_ms, text),
                )
                .map_err(mls)?;
            let frame = GroupFrame::Message {
                group: id,
                message: serialize(&message)?,
            };
            let others = nodes(&group.members, &state.me);
            let carried_by = state.send_frame(write, &others, &frame, now_ms)?;
            let me = *state.me.as_bytes();
            let text = GroupEvent::Text(text.to_owned());
            let entry = log(write, &mut group, me, now_ms, now_ms, text, carried_by)?;
            put_group(write, &group)?;
            Ok(entry)
        })
    }

    /// Every group this node knows.
    pub fn groups(&self) -> Result<Vec<Group>, DbError> {
        let read = self.db.begin_read()?;
        let mut groups = Vec::new();
        for row in read.open_table(db::GROUPS)?.iter()? {
            groups.push(db::decode(row?.1.value())?);
        }
        Ok(groups)
    }

    /// The last `limit` entries of a group's history, oldest first, each
    /// with how many of the pairwise messages that carry it (for what
    /// this node sent) were delivered.
    pub fn group_history(
        &self,
        id: GroupId,
        limit: usize,
    ) -> Result<Vec<(GroupEntry, usize)>, DbError> {
        let read = self.db.begin_read()?;
        let log = read.open_table(db::GROUP_LOG)?;
        let messages = read.open_table(db::MESSAGES)?;
        let mut entries = Vec::new();
        let range = (id.0.as_slice(), 0)..=(id.0.as_slice(), u64::MAX);
        for row in log.range(range)?.rev().take(limit) {
            let entry: GroupEntry = db::decode(row?.1.value())?;
            let mut delivered = 0;
            for carrier in &entry.carried_by {
                if let Some(record) = db::get::<crate::Record>(&messages, &carrier.0)?
                    && matches!(record.status, Status::Delivered | Status::Read)
                {
                    delivered += 1;
                }
            }
            entries.push((entry, delivered));
        }
        entries.reverse();
        Ok(entries)
    }

    /// A group frame `from` sent, its turn come in their conversation (in
    /// `write`, with what else that transaction takes). What cannot be
    /// used is dropped (and logged): the pairwise message that carried it
    /// is taken either way.
    pub(super) fn group_receive(
        &mut self,
        write: &WriteTransaction,
        from: &NodeId,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<(), DbError> {
        let frame = match GroupFrame::decode(bytes) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::debug!(from = %from.short(), %error, "group frame dropped");
                return Ok(());
            }
        };
        let id = frame.group();
        let outcome = self.group_frame(write, from, frame, now_ms);
        match outcome {
            Ok(()) => self.mls.persist(write)?,
            Err(GroupError::Db(error)) => {
                self.mls.restore();
                return Err(error);
            }
            Err(error) => {
                self.mls.restore();
                tracing::info!(from = %from.short(), group = %id, %error, "group frame dropped");
            }
        }
        Ok(())
    }

    fn group_frame(
        &mut self,
        write: &WriteTransaction,
        from: &NodeId,
        frame: GroupFrame,
        now_ms: u64,
    ) -> Result<(), GroupError> {
        match frame {
            GroupFrame::Welcome {
                group: id,
                name,
                welcome,
            } => self.welcomed(write, from, id, name, &welcome, now_ms),
            GroupFrame::Commit { group: id, commit } => {
                let mut group =
                    get_group(write, &id)?.ok_or_else(|| GroupError::NotFound(id.to_string()))?;
                if group.owner != *from.as_bytes() {
                    return Err(GroupError::NotOwner(from.to_string()));
                }
                if group.standing != Standing::Member {
                    return Err(GroupError::NotIn(group.standing));
                }
                self.commit(write, &mut group, &commit, now_ms)?;
                put_group(write, &group)?;
                if group.standing == Standing::Member {
                    self.release_pending(write, &mut group, now_ms)?;
                    put_group(write, &group)?;
                }
                Ok(())
            }
            GroupFrame::Message { group: id, message } => {
                let mut group =
                    get_group(write, &id)?.ok_or_else(|| GroupError::NotFound(id.to_string()))?;
                if group.standing != Standing::Member {
                    return Err(GroupError::NotIn(group.standing));
                }
                self.message(write, &mut group, from, &message, now_ms)?;
                put_group(write, &group).map_err(GroupError::from)
            }
            GroupFrame::Leave { group: id } => {
                let group = self.owned(write, &id)?;
                if !group.members.contains(from.as_bytes()) {
                    return Err(GroupError::NotMember(from.to_string()));
                }
                self.remove_in(write, id, *from, now_ms).map(|_| ())
            }
        }
    }

    fn welcomed(
        &mut self,
        write: &WriteTransaction,
        from: &NodeId,
        id: GroupId,
        name: String,
        welcome: &[u8],
        now_ms: u64,
    ) -> Result<(), GroupError> {
        // Added again after leaving: its history goes on where it was.
        let before = get_group(write, &id)?;
        if before
            .as_ref()
            .is_some_and(|group| group.standing == Standing::Member)
        {
            return Err(GroupError::AlreadyIn(self.me.to_string()));
        }
        if !room(write, from, GROUPS_PER_OWNER_MAX)? {
            return Err(GroupError::TooMany);
        }
        let message = MlsMessageIn::tls_deserialize_exact(welcome).map_err(mls)?;
        let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
            return Err(GroupError::Mls("not a welcome".to_owned()));
        };
        let staged =
            StagedWelcome::new_from_welcome(&self.mls.provider, &join_config(), welcome, None)
                .map_err(mls)?;
        let mls_group = staged.into_group(&self.mls.provider).map_err(mls)?;
        if mls_group.group_id().as_slice() != id.0 {
            return Err(GroupError::Mls(
                "the welcome is for another group".to_owned(),
            ));
        }
        let members = members_of(&mls_group).ok_or_else(|| {
            GroupError::Mls("a member's credential does not check out".to_owned())
        })?;
        // The owner made the group: the first leaf, and the sender.
        if members.first() != Some(from.as_bytes()) || members.len() > MEMBERS_MAX {
            return Err(GroupError::NotOwner(from.to_string()));
        }
        let mut group = Group {
            id,
            name,
            owner: *from.as_bytes(),
            members,
            standing: Standing::Member,
            created_ms: before.as_ref().map_or(now_ms, |group| group.created_ms),
            last_ms: now_ms,
            entries: before.map_or(0, |group| group.entries),
        };
        note(
            write,
            &mut group,
            *from.as_bytes(),
            GroupEvent::Joined,
            now_ms,
        )?;
        put_group(write, &group)?;
        Ok(())
    }

    /// Applies the owner's commit: who joined and who left go in the
    /// history; a commit removing this node ends its membership.
    fn commit(
        &mut self,
        write: &WriteTransaction,
        group: &mut Group,
        commit: &[u8],
        now_ms: u64,
    ) -> Result<(), GroupError> {
        let message = MlsMessageIn::tls_deserialize_exact(commit).map_err(mls)?;
        let protocol = message.try_into_protocol_message().map_err(mls)?;
        let mut mls_group = self.mls.group(&group.id)?;
        let processed = mls_group
            .process_message(&self.mls.provider, protocol)
            .map_err(mls)?;
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            return Err(GroupError::Mls("not a commit".to_owned()));
        };
        for add in staged.add_proposals() {
            let leaf = add.add_proposal().key_package().leaf_node();
            member_node(leaf.credential(), leaf.signature_key().as_slice())
                .ok_or_else(|| GroupError::Mls("an added member's credential".to_owned()))?;
        }
        if let Some(leaf) = staged.update_path_leaf_node()
            && member_node(leaf.credential(), leaf.signature_key().as_slice())
                != NodeId::from_bytes(&group.owner).ok()
        {
            return Err(GroupError::Mls("the owner's new credential".to_owned()));
        }
        let removed_me = staged.self_removed();
        mls_group
            .merge_staged_commit(&self.mls.provider, *staged)
            .map_err(mls)?;
        let before: BTreeSet<[u8; 32]> = group.members.iter().copied().collect();
        let owner = group.owner;
        if removed_me {
            mls_group.delete(self.mls.provider.storage()).map_err(mls)?;
            group.standing = Standing::Removed;
            group.members.retain(|member| *member == owner);
            let removed = GroupEvent::Removed(vec![*self.me.as_bytes()]);
            note(write, group, owner, removed, now_ms)?;
            return Ok(());
        }
        group.members = members_of(&mls_group)
            .ok_or_else(|| GroupError::Mls("a member's credential".to_owned()))?;
        let after: BTreeSet<[u8; 32]> = group.members.iter().copied().collect();
        let added: Vec<[u8; 32]> = after.difference(&before).copied().collect();
        let removed: Vec<[u8; 32]> = before.difference(&after).copied().collect();
        if !added.is_empty() {
            note(write, group, owner, GroupEvent::Added(added), now_ms)?;
        }
        if !removed.is_empty() {
            note(write, group, owner, GroupEvent::Removed(removed), now_ms)?;
        }
        Ok(())
    }

    /// A member's message: in the history, or (from an epoch this node
    /// has not reached) kept until the commit that reaches it.
    fn message(
        &mut self,
        write: &WriteTransaction,
        group: &mut Group,
        from: &NodeId,
        message: &[u8],
        now_ms: u64,
    ) -> Result<(), GroupError> {
        let parsed = MlsMessageIn::tls_deserialize_exact(message).map_err(mls)?;
        let protocol = parsed.try_into_protocol_message().map_err(mls)?;
        let mut mls_group = self.mls.group(&group.id)?;
        // From a later epoch: the owner's commit is still on its way.
        if protocol.epoch() > mls_group.epoch() {
            let mut pending = write.open_table(db::GROUP_PENDING)?;
            let range = (group.id.0.as_slice(), 0)..=(group.id.0.as_slice(), u64::MAX);
            let (count, last) = pending
                .range(range)?
                .try_fold((0u64, None), |(count, _), row| {
                    row.map(|(key, _)| (count + 1, Some(key.value().1)))
                })?;
            let next = last.map_or(0, |seq| seq + 1);
            if count >= PENDING_MAX {
                return Err(GroupError::Mls(
                    "too many messages from later epochs".to_owned(),
                ));
            }
            let kept = [from.as_bytes().as_slice(), message].concat();
            pending.insert((group.id.0.as_slice(), next), kept.as_slice())?;
            return Ok(());
        }
        let processed = mls_group
            .process_message(&self.mls.provider, protocol)
            .map_err(mls)?;
        let Sender::Member(index) = processed.sender() else {
            return Err(GroupError::Mls("not from a member".to_owned()));
        };
        let sender = mls_group
            .member_at(*index)
            .and_then(|member| member_node(&member.credential, &member.signature_key));
        // Only the member itself sends its messages (nobody relays them).
        if sender != Some(*from) {
            return Err(GroupError::NotMember(from.to_string()));
        }
        let ProcessedMessageContent::ApplicationMessage(application) = processed.into_content()
        else {
            return Err(GroupError::Mls("not an application message".to_owned()));
        };
        let (sent_ms, text) = read_app_payload(&application.into_bytes())
            .ok_or_else(|| GroupError::Mls("the message's text".to_owned()))?;
        log(
            write,
            group,
            *from.as_bytes(),
            sent_ms,
            now_ms,
            GroupEvent::Text(text),
            Vec::new(),
        )?;
        Ok(())
    }

    /// After a commit: the messages that waited for its epoch.
    fn release_pending(
        &mut self,
        write: &WriteTransaction,
        group: &mut Group,
        now_ms: u64,
    ) -> Result<(), GroupError> {
        let waiting: Vec<(u64, Vec<u8>)> = {
            let pending = write.open_table(db::GROUP_PENDING)?;
            let range = (group.id.0.as_slice(), 0)..=(group.id.0.as_slice(), u64::MAX);
            pending
                .range(range)?
                .map(|row| row.map(|(key, value)| (key.value().1, value.value().to_vec())))
                .collect::<Result<_, _>>()?
        };
        for (seq, kept) in waiting {
            write
                .open_table(db::GROUP_PENDING)?
                .remove((group.id.0.as_slice(), seq))?;
            let Some((sender, message)) = kept.split_first_chunk::<32>() else {
                continue;
            };
            let Ok(sender) = NodeId::from_bytes(sender) else {
                continue;
            };
            // Still ahead: back in the table (under a new number).
            if let Err(error) = self.message(write, group, &sender, message, now_ms) {
                tracing::info!(group = %group.id, %error, "a message that waited for its epoch dropped");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
