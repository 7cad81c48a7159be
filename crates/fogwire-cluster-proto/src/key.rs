//! What names a cluster and what proves a board belongs to it
//! (`docs/protocol/cluster.md` §3).
//!
//! A cluster is made by `fogwire cluster init`: an Ed25519 **cluster key**
//! (its owner signs the manifest with it) and a 32-byte **join secret**
//! derived from it. Its public half is the [`ClusterId`] (`fwcluster1…`),
//! which is also the id of the feed the manifest is published on. A board
//! joins with the [`JoinCode`] (`fwjoin1…`: the id and the secret), the one
//! thing it is given.
//!
//! The secret is what keeps strangers out: a board proves membership with
//! a [`MemberProof`], a keyed BLAKE3 hash of its node id under the secret,
//! inside a record its own node key signs. Knowing the cluster id (which
//! is public: it names the manifest's feed) is not enough to join, and a
//! proof copied from another board is useless, since it is bound to that
//! board's node id and a link authenticates the node id.

use std::fmt;
use std::str::FromStr;

use bech32::primitives::decode::CheckedHrpstring;
use bech32::{Bech32m, Hrp};
use fogwire_identity::{Keypair, NodeId};

const ID_HRP: Hrp = Hrp::parse_unchecked("fwcluster");
const JOIN_HRP: Hrp = Hrp::parse_unchecked("fwjoin");
const SECRET_CONTEXT: &str = "fogwire cluster join secret v1";
const PROOF_CONTEXT: &[u8] = b"fogwire cluster member v1";
const TAG_CONTEXT: &[u8] = b"fogwire cluster discovery tag v1";

/// A cluster's public name: its key's public half, printed `fwcluster1…`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterId(NodeId);

impl ClusterId {
    pub fn from_key(key: NodeId) -> Self {
        Self(key)
    }

    /// The public key the manifest is signed with (and its feed's key).
    pub fn key(&self) -> NodeId {
        self.0
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// The short form for tables and logs.
    pub fn short(&self) -> String {
        fogwire_identity::short_form(&self.to_string())
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        bech32::encode_lower_to_fmt::<Bech32m, _>(f, ID_HRP, self.0.as_bytes())
            .map_err(|_| fmt::Error)
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterId({})", self.short())
    }
}

/// Why a text is not a cluster id or join code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseClusterError {
    #[error(
        "`{text}` is not a cluster id: expected fwcluster1… (`fogwire cluster status` prints it)"
    )]
    Id { text: String },
    #[error(
        "`{text}` is not a join code: expected fwjoin1… (`fogwire cluster init` printed it on \
         the board that made the cluster; `fogwire cluster join-code` on any board of the \
         cluster prints it again)"
    )]
    JoinCode { text: String },
}

fn decode(text: &str, hrp: Hrp) -> Option<Vec<u8>> {
    let checked = CheckedHrpstring::new::<Bech32m>(text.trim()).ok()?;
    (checked.hrp() == hrp).then(|| checked.byte_iter().collect())
}

fn shown(text: &str) -> String {
    text.chars().take(80).collect()
}

impl FromStr for ClusterId {
    type Err = ParseClusterError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        decode(text, ID_HRP)
            .and_then(|bytes| NodeId::from_slice(&bytes).ok())
            .map(Self)
            .ok_or_else(|| ParseClusterError::Id { text: shown(text) })
    }
}

/// The 32-byte secret that admits boards to a cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinSecret([u8; 32]);

impl JoinSecret {
    /// The secret of the cluster whose key is `key`: derived, so the owner
    /// can always print the join code again from the key file.
    pub fn of(key: &Keypair) -> Self {
        Self(key.derive_secret(SECRET_CONTEXT))
    }

    /// What `node` shows to prove it is a member of `cluster`.
    pub fn proof(&self, cluster: &ClusterId, node: &NodeId) -> MemberProof {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(PROOF_CONTEXT);
        hasher.update(cluster.as_bytes());
        hasher.update(node.as_bytes());
        MemberProof(*hasher.finalize().as_bytes())
    }

    /// The discovery tag: announced on the local network so that boards
    /// of other clusters pass over an announcement without any work, while
    /// the cluster id itself is not announced. 8 bytes, hex in the record.
    pub fn tag(&self) -> [u8; 8] {
        let hash = blake3::keyed_hash(&self.0, TAG_CONTEXT);
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&hash.as_bytes()[..8]);
        tag
    }
}

impl fmt::Debug for JoinSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinSecret(…)")
    }
}

/// A board's proof of membership: `BLAKE3-keyed(secret, context ‖ cluster
/// id ‖ node id)`. Compared in constant time.
#[derive(Clone, Copy)]
pub struct MemberProof(pub [u8; 32]);

impl PartialEq for MemberProof {
    fn eq(&self, other: &Self) -> bool {
        // blake3::Hash compares in constant time.
        blake3::Hash::from_bytes(self.0) == blake3::Hash::from_bytes(other.0)
    }
}

impl Eq for MemberProof {}

impl fmt::Debug for MemberProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemberProof(…)")
    }
}

/// What a board is given to join: the cluster id and its secret, printed
/// `fwjoin1…`. Shared like a password: whoever holds it can join.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinCode {
    pub cluster: ClusterId,
    pub secret: JoinSecret,
}

impl JoinCode {
    /// The join code of the cluster whose key is `key`.
    pub fn of(key: &Keypair) -> Self {
        Self {
            cluster: ClusterId(key.node_id()),
            secret: JoinSecret::of(key),
        }
    }
}

impl fmt::Display for JoinCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(self.cluster.as_bytes());
        bytes[32..].copy_from_slice(&self.secret.0);
        bech32::encode_lower_to_fmt::<Bech32m, _>(f, JOIN_HRP, &bytes).map_err(|_| fmt::Error)
    }
}

impl fmt::Debug for JoinCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinCode({:?}, …)", self.cluster)
    }
}

impl FromStr for JoinCode {
    type Err = ParseClusterError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || ParseClusterError::JoinCode { text: shown(text) };
        let bytes = decode(text, JOIN_HRP).ok_or_else(error)?;
        if bytes.len() != 64 {
            return Err(error());
        }
        let cluster = NodeId::from_slice(&bytes[..32]).map_err(|_| error())?;
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&bytes[32..]);
        Ok(Self {
            cluster: ClusterId(cluster),
            secret: JoinSecret(secret),
        })
    }
}

/// Written as its text form; read back from it (the `[cluster] join`
/// line of a configuration file).
impl serde::Serialize for JoinCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for JoinCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_codes_and_ids_print_and_parse_back() {
        let key = Keypair::from_seed(&[7; 32]);
        let code = JoinCode::of(&key);
        let text = code.to_string();
        assert!(text.starts_with("fwjoin1"), "{text}");
        assert_eq!(text.parse::<JoinCode>(), Ok(code.clone()));
        let id = code.cluster.to_string();
        assert!(id.starts_with("fwcluster1"), "{id}");
        assert_eq!(id.parse::<ClusterId>(), Ok(code.cluster));
        // Neither is taken for the other, nor a node id for either.
        assert!(id.parse::<JoinCode>().is_err());
        assert!(text.parse::<ClusterId>().is_err());
        assert!(key.node_id().to_string().parse::<ClusterId>().is_err());
        assert!(code.cluster.short().starts_with("fwcluster1"));
    }

    #[test]
    fn a_proof_belongs_to_one_node_of_one_cluster() {
        let code = JoinCode::of(&Keypair::from_seed(&[1; 32]));
        let other = JoinCode::of(&Keypair::from_seed(&[2; 32]));
        let board = Keypair::from_seed(&[3; 32]).node_id();
        let thief = Keypair::from_seed(&[4; 32]).node_id();
        let proof = code.secret.proof(&code.cluster, &board);
        assert_eq!(proof, code.secret.proof(&code.cluster, &board));
        assert_ne!(proof, code.secret.proof(&code.cluster, &thief));
        assert_ne!(proof, other.secret.proof(&other.cluster, &board));
        assert_ne!(code.secret.tag(), other.secret.tag());
    }
}
