//! Small groups (messages.md §10): what group members send each other,
//! inside the sealed messages of their pairwise conversations, and how a
//! member's MLS signature key is tied to its node id.
//!
//! The group protocol itself is MLS (RFC 9420, from `openmls`, in
//! `fogwire-msg`); what this module defines is the frame around MLS's
//! own messages ([`GroupFrame`]) and the identity a member's MLS
//! credential carries ([`MemberIdentity`]).

use fogwire_identity::{Domain, Keypair, NodeId, Signature};

use crate::wire::{Reader, VERSION, WireError, bounded};

/// What a node signs to tie its MLS signature key to its node id.
pub const MLS_KEY_DOMAIN: Domain = Domain::new("fogwire/msg/mls-key/v1");
/// Members of one group at most (its owner among them).
pub const MEMBERS_MAX: usize = 50;
/// Bytes of a group's name at most.
pub const NAME_LEN_MAX: usize = 64;
/// Bytes of a group frame at most: a welcome for 50 members carries the
/// group's whole ratchet tree (about 300 bytes a member).
pub const FRAME_LEN_MAX: usize = 48 * 1024;
/// Bytes of a key package at most (one is about 300).
pub const KEY_PACKAGE_LEN_MAX: usize = 2 * 1024;

/// A group's id: 16 random bytes its owner chose.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct GroupId(pub [u8; 16]);

crate::wire::hex_id!(GroupId, "group id");

/// One group frame, the body of a sealed message of kind group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupFrame {
    /// The owner added this node: the group's name and an MLS Welcome
    /// (which carries the ratchet tree).
    Welcome {
        group: GroupId,
        name: String,
        welcome: Vec<u8>,
    },
    /// The owner changed the membership: an MLS Commit.
    Commit { group: GroupId, commit: Vec<u8> },
    /// A member's message to the group: an MLS application message.
    Message { group: GroupId, message: Vec<u8> },
    /// A member asks the owner to remove it (no MLS: the sealed message
    /// it comes in already proves its sender).
    Leave { group: GroupId },
}

const KIND_WELCOME: u8 = 1;
const KIND_COMMIT: u8 = 2;
const KIND_MESSAGE: u8 = 3;
const KIND_LEAVE: u8 = 4;

impl GroupFrame {
    pub fn group(&self) -> GroupId {
        match self {
            GroupFrame::Welcome { group, .. }
            | GroupFrame::Commit { group, .. }
            | GroupFrame::Message { group, .. }
            | GroupFrame::Leave { group } => *group,
        }
    }

    /// `version u8 | kind u8 | group [16] | body`.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, body): (u8, Vec<u8>) = match self {
            GroupFrame::Welcome { name, welcome, .. } => {
                let mut body = Vec::with_capacity(1 + name.len() + welcome.len());
                body.push(name.len() as u8);
                body.extend_from_slice(name.as_bytes());
                body.extend_from_slice(welcome);
                (KIND_WELCOME, body)
            }
            GroupFrame::Commit { commit, .. } => (KIND_COMMIT, commit.clone()),
            GroupFrame::Message { message, .. } => (KIND_MESSAGE, message.clone()),
            GroupFrame::Leave { .. } => (KIND_LEAVE, Vec::new()),
        };
        let mut out = Vec::with_capacity(2 + 16 + body.len());
        out.push(VERSION);
        out.push(kind);
        out.extend_from_slice(&self.group().0);
        out.extend_from_slice(&body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        const WHAT: &str = "group frame";
        bounded(WHAT, bytes.len(), FRAME_LEN_MAX)?;
        let mut reader = Reader::new(WHAT, bytes);
        reader.version()?;
        let kind = reader.u8()?;
        let group = GroupId(reader.array()?);
        let frame = match kind {
            KIND_WELCOME => {
                let len = usize::from(reader.u8()?);
                bounded("group name", len, NAME_LEN_MAX)?;
                let name = std::str::from_utf8(reader.take(len)?)
                    .map_err(|_| WireError::Text)?
                    .to_owned();
                GroupFrame::Welcome {
                    group,
                    name,
                    welcome: reader.rest().to_vec(),
                }
            }
            KIND_COMMIT => GroupFrame::Commit {
                group,
                commit: reader.rest().to_vec(),
            },
            KIND_MESSAGE => GroupFrame::Message {
                group,
                message: reader.rest().to_vec(),
            },
            KIND_LEAVE => GroupFrame::Leave { group },
            other => {
                return Err(WireError::Invalid {
                    what: WHAT,
                    field: "kind (1 welcome, 2 commit, 3 message, 4 leave)",
                    value: other.into(),
                });
            }
        };
        reader.end()?;
        Ok(frame)
    }
}

/// What a member's MLS credential (a basic credential) names as its
/// identity: its node id, and the node's signature over the member's MLS
/// signature key — so a member is a node, and only that node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberIdentity {
    pub node: NodeId,
    pub signature: Signature,
}

impl MemberIdentity {
    pub const LEN: usize = 32 + 64;

    /// `key`'s node vouching for `mls_key`, an MLS signature public key.
    pub fn vouch(key: &Keypair, mls_key: &[u8]) -> Self {
        Self {
            node: key.node_id(),
            signature: key.sign(MLS_KEY_DOMAIN, mls_key),
        }
    }

    /// `node [32] | signature [64]`.
    pub fn encode(&self) -> Vec<u8> {
        [self.node.as_bytes().as_slice(), &self.signature.0].concat()
    }

    /// The node a credential's identity names, once its signature over
    /// `mls_key` (the key the credential comes with) checks out.
    pub fn verify(identity: &[u8], mls_key: &[u8]) -> Result<NodeId, WireError> {
        const WHAT: &str = "member identity";
        let mut reader = Reader::new(WHAT, identity);
        let node = reader.node_id()?;
        let signature = Signature(reader.array()?);
        reader.end()?;
        node.verify(MLS_KEY_DOMAIN, mls_key, &signature)
            .map_err(|source| WireError::Record { what: WHAT, source })?;
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_anything_else_is_refused() {
        let group = GroupId([7; 16]);
        for frame in [
            GroupFrame::Welcome {
                group,
                name: "friends".to_owned(),
                welcome: vec![1, 2, 3],
            },
            GroupFrame::Commit {
                group,
                commit: vec![4; 100],
            },
            GroupFrame::Message {
                group,
                message: vec![5; 10],
            },
            GroupFrame::Leave { group },
        ] {
            assert_eq!(GroupFrame::decode(&frame.encode()).unwrap(), frame);
        }
        let mut leave = GroupFrame::Leave { group }.encode();
        leave.push(0);
        assert!(matches!(
            GroupFrame::decode(&leave),
            Err(WireError::Trailing { .. })
        ));
        let mut unknown = GroupFrame::Leave { group }.encode();
        unknown[1] = 9;
        assert!(GroupFrame::decode(&unknown).is_err());
        let too_long = vec![0; FRAME_LEN_MAX + 1];
        assert!(matches!(
            GroupFrame::decode(&too_long),
            Err(WireError::TooLong { .. })
        ));
        let long_name = [&[VERSION, KIND_WELCOME][..], &[0; 16], &[65], &[b'a'; 65]].concat();
        assert!(GroupFrame::decode(&long_name).is_err());
        assert_eq!(group.to_string().parse::<GroupId>().unwrap(), group);
        assert!("zz".parse::<GroupId>().is_err());
    }

    #[test]
    fn an_identity_names_its_node_only_for_the_key_it_vouched_for() {
        let key = Keypair::from_seed(&[1; 32]);
        let identity = MemberIdentity::vouch(&key, b"mls key").encode();
        assert_eq!(
            MemberIdentity::verify(&identity, b"mls key").unwrap(),
            key.node_id()
        );
        assert!(MemberIdentity::verify(&identity, b"another key").is_err());
        // Another node's id with this signature: refused.
        let mut stolen = identity.clone();
        stolen[..32].copy_from_slice(Keypair::from_seed(&[2; 32]).node_id().as_bytes());
        assert!(MemberIdentity::verify(&stolen, b"mls key").is_err());
        assert!(MemberIdentity::verify(&identity[..50], b"mls key").is_err());
    }
}
