//! A board's signed membership record (`docs/protocol/cluster.md` §4).
//!
//! The record says who the board is (its signer), which cluster it belongs
//! to and the proof of it, where it listens for links, what it can run,
//! and its [`Version`]: the pair (boot, incarnation) that orders
//! everything said about it. The board signs it with its node key, so a
//! record gossiped by others can be checked by anyone who knows the join
//! secret, and never be altered on the way.

use std::net::SocketAddr;

use fogwire_identity::{Domain, Keypair, NodeId, SignedRecord};
use serde::{Deserialize, Serialize};

use crate::key::{ClusterId, JoinCode, MemberProof};
use crate::placement::Resources;

/// The domain of a membership record's signature.
pub const MEMBER_RECORD: Domain = Domain::new("fogwire/cluster/member/v1");
/// The first byte of a record's body.
pub const RECORD_VERSION: u8 = 1;
/// Most link addresses a record names.
pub const ADDRS_MAX: usize = 4;
/// Longest encoded record: 96 bytes of header, and a body with four IPv6
/// addresses is under 200.
pub const RECORD_LEN_MAX: usize = 320;

/// What orders the news about one board: a restart raises `boot` (the
/// board counts its starts on disk, so a clock that went back changes
/// nothing), and within a boot the board raises `incarnation` each time it
/// refutes a suspicion. A larger version wins.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Version {
    pub boot: u64,
    pub incarnation: u32,
}

impl Version {
    pub fn next(self) -> Self {
        Self {
            boot: self.boot,
            incarnation: self.incarnation.saturating_add(1),
        }
    }
}

/// A membership record, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub node: NodeId,
    pub cluster: ClusterId,
    pub version: Version,
    pub addrs: Vec<SocketAddr>,
    pub resources: Resources,
    /// The signed bytes, as they are passed on.
    pub encoded: Vec<u8>,
}

/// The body as it is signed (postcard; cluster.md §4 has it byte by byte).
#[derive(Serialize, Deserialize)]
struct Body {
    format: u8,
    cluster: [u8; 32],
    proof: [u8; 32],
    version: Version,
    addrs: Vec<SocketAddr>,
    cores: u32,
    memory_mib: u64,
    disk_mib: u64,
}

/// Why a membership record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    #[error("membership record of {len} bytes is longer than {RECORD_LEN_MAX}")]
    TooLong { len: usize },
    #[error("membership record: {0}")]
    Signature(#[from] fogwire_identity::RecordError),
    #[error("membership record body is malformed")]
    Malformed,
    #[error("membership record of format {0}, this node reads format {RECORD_VERSION}")]
    Format(u8),
    #[error("membership record names more than {ADDRS_MAX} addresses")]
    TooManyAddrs,
    #[error("membership record is for another cluster")]
    OtherCluster,
    #[error("membership record's proof is wrong: the board does not hold this cluster's secret")]
    BadProof,
}

impl MemberRecord {
    /// Signs the record of `key`'s board as a member of `join`'s cluster.
    pub fn sign(
        key: &Keypair,
        join: &JoinCode,
        version: Version,
        addrs: &[SocketAddr],
        resources: Resources,
    ) -> Self {
        let addrs: Vec<SocketAddr> = addrs.iter().take(ADDRS_MAX).copied().collect();
        let body = Body {
            format: RECORD_VERSION,
            cluster: *join.cluster.as_bytes(),
            proof: join.secret.proof(&join.cluster, &key.node_id()).0,
            version,
            addrs: addrs.clone(),
            cores: resources.cores,
            memory_mib: resources.memory_mib,
            disk_mib: resources.disk_mib,
        };
        // Serializing plain integers, arrays and addresses into a Vec
        // cannot fail.
        let body = postcard::to_stdvec(&body).unwrap_or_default();
        let encoded = SignedRecord::sign(key, MEMBER_RECORD, body).encode();
        Self {
            node: key.node_id(),
            cluster: join.cluster,
            version,
            addrs,
            resources,
            encoded,
        }
    }

    /// Decodes and checks a record: its signature, its cluster and its
    /// proof under `join`'s secret.
    pub fn verify(bytes: &[u8], join: &JoinCode) -> Result<Self, RecordError> {
        if bytes.len() > RECORD_LEN_MAX {
            return Err(RecordError::TooLong { len: bytes.len() });
        }
        let record = SignedRecord::decode(bytes)?;
        let body: Body = match postcard::from_bytes(&record.body) {
            Ok(body) => body,
            Err(_) => return Err(RecordError::Malformed),
        };
        if body.format != RECORD_VERSION {
            return Err(RecordError::Format(body.format));
        }
        if body.addrs.len() > ADDRS_MAX {
            return Err(RecordError::TooManyAddrs);
        }
        if body.cluster != *join.cluster.as_bytes() {
            return Err(RecordError::OtherCluster);
        }
        // The cheap checks first; the signature last.
        if MemberProof(body.proof) != join.secret.proof(&join.cluster, &record.signer) {
            return Err(RecordError::BadProof);
        }
        record.verify(MEMBER_RECORD)?;
        Ok(Self {
            node: record.signer,
            cluster: join.cluster,
            version: body.version,
            addrs: body.addrs,
            resources: Resources {
                cores: body.cores,
                memory_mib: body.memory_mib,
                disk_mib: body.disk_mib,
            },
            encoded: bytes.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(seed: u8) -> JoinCode {
        JoinCode::of(&Keypair::from_seed(&[seed; 32]))
    }

    fn resources() -> Resources {
        Resources {
            cores: 4,
            memory_mib: 4096,
            disk_mib: 32_000,
        }
    }

    #[test]
    fn a_record_verifies_only_in_its_cluster() {
        let board = Keypair::from_seed(&[9; 32]);
        let addrs = ["10.0.0.1:4040".parse().unwrap()];
        let version = Version {
            boot: 3,
            incarnation: 1,
        };
        let record = MemberRecord::sign(&board, &join(1), version, &addrs, resources());
        assert!(record.encoded.len() <= RECORD_LEN_MAX);
        let checked = MemberRecord::verify(&record.encoded, &join(1)).unwrap();
        assert_eq!(checked, record);
        assert_eq!(
            MemberRecord::verify(&record.encoded, &join(2)),
            Err(RecordError::OtherCluster)
        );
    }

    #[test]
    fn a_record_without_the_secret_or_altered_is_refused() {
        let board = Keypair::from_seed(&[9; 32]);
        let real = join(1);
        // A stranger who knows the cluster id but not its secret.
        let guessed = JoinCode {
            cluster: real.cluster,
            secret: join(5).secret,
        };
        let forged = MemberRecord::sign(&board, &guessed, Version::default(), &[], resources());
        assert_eq!(
            MemberRecord::verify(&forged.encoded, &real),
            Err(RecordError::BadProof)
        );
        let record = MemberRecord::sign(&board, &real, Version::default(), &[], resources());
        let mut altered = record.encoded.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(MemberRecord::verify(&altered, &real).is_err());
        assert!(MemberRecord::verify(&record.encoded[..100], &real).is_err());
    }

    #[test]
    fn versions_order_by_boot_then_incarnation() {
        let old = Version {
            boot: 1,
            incarnation: 9,
        };
        let restarted = Version {
            boot: 2,
            incarnation: 0,
        };
        assert!(restarted > old);
        assert!(old.next() > old);
    }
}
