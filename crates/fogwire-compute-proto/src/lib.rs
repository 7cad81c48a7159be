//! Sans-IO core of fogwire's compute (`docs/protocol/compute.md`).
//!
//! - [`spec`]: jobs, tasks and outcomes, as they travel.
//! - [`commit`]: the commit–reveal that keeps replicas from copying.
//! - [`scheduler`]: the hub as a state machine — jobs split into tasks,
//!   tasks placed on workers, commitments and reveals gathered, the quorum
//!   decided, reputation kept and replication adapted; retries when a
//!   worker vanishes or times out. Events and time in, actions out; the
//!   driver (`fogwire-compute`) does the calls, the store and redb.

pub mod agent;
pub mod commit;
pub mod pay;
pub mod scheduler;
pub mod spec;

pub use commit::{Commitment, Reveal};
pub use scheduler::{Action, Scheduler};
pub use spec::{
    DecodeError, ExitStatus, JobId, JobSpec, Limits, Outcome, Replication, Runtime, SpecError,
    TaskSpec, from_value, to_value,
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// 32 bytes: a BLAKE3 hash (a blob's, a job's id, a commitment); binary
/// on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The BLAKE3 hash of `data` (a blob's hash in the store).
    pub fn of(data: &[u8]) -> Digest {
        Digest(*blake3::hash(data).as_bytes())
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&fogwire_identity::short_form(&self.to_hex()))
    }
}

impl std::str::FromStr for Digest {
    type Err = DecodeError;

    fn from_str(text: &str) -> Result<Digest, DecodeError> {
        let text = text.trim();
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out)
            .map_err(|_| DecodeError(format!("a hash is 64 hex digits, not {text:?}")))?;
        Ok(Digest(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Digest;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("32 bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Digest, E> {
                <[u8; 32]>::try_from(bytes)
                    .map(Digest)
                    .map_err(|_| E::invalid_length(bytes.len(), &self))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Digest, E> {
                self.visit_bytes(&bytes)
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trips_as_binary() {
        let digest = Digest::of(b"fogwire");
        let value = to_value(&digest).unwrap();
        assert!(matches!(value, rmpv::Value::Binary(ref b) if b.len() == 32));
        assert_eq!(from_value::<Digest>(value).unwrap(), digest);
        assert!(from_value::<Digest>(rmpv::Value::Binary(vec![0; 31])).is_err());
        assert_eq!(digest.to_hex().parse::<Digest>().unwrap(), digest);
        assert!("zz".parse::<Digest>().is_err());
    }

    fn msgpack_hex<T: Serialize>(value: &T) -> String {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &to_value(value).unwrap()).unwrap();
        hex::encode(out)
    }

    /// The examples of docs/protocol/compute.md §2, byte for byte.
    #[test]
    fn the_documented_encodings_are_what_the_encoder_writes() {
        let mut spec = JobSpec::wasm(Digest([0xab; 32]));
        spec.args = vec!["800".into()];
        spec.replication = Replication::Fixed(3);
        assert_eq!(
            msgpack_hex(&spec),
            format!(
                "99920090c420{}90 91a3383030 95cf00000002540be400ce10000000cdea60ce01000000cd03e8 920191 03 01 ce000927c0 c2",
                "ab".repeat(32)
            )
            .replace(' ', "")
        );
        let reveal = Reveal {
            outcome: Outcome {
                status: ExitStatus::Exited(0),
                stdout: Digest([1; 32]),
                stderr: Digest([2; 32]),
                fuel_used: 5,
            },
            nonce: Digest([3; 32]),
        };
        assert_eq!(
            msgpack_hex(&reveal),
            format!(
                "92 94 920091 00 c420{} c420{} 05 c420{}",
                "01".repeat(32),
                "02".repeat(32),
                "03".repeat(32)
            )
            .replace(' ', "")
        );
        assert_eq!(msgpack_hex(&Replication::Trust), "920090");
        assert_eq!(msgpack_hex(&ExitStatus::OutOfFuel), "920190");
        assert_eq!(msgpack_hex(&ExitStatus::Trapped("x".into())), "920591a178");
    }

    #[test]
    fn job_spec_round_trips_and_validates() {
        let mut spec = JobSpec::wasm(Digest::of(b"module"));
        spec.args = vec!["a".into()];
        let value = to_value(&spec).unwrap();
        assert_eq!(from_value::<JobSpec>(value).unwrap(), spec);
        assert_eq!(spec.validate(), Ok(()));
        spec.split = 0;
        assert_eq!(spec.validate(), Err(SpecError::Split(0)));
        spec.split = 1;
        spec.replication = Replication::Fixed(10);
        assert_eq!(spec.validate(), Err(SpecError::Replicas(10)));
        spec.replication = Replication::Full;
        spec.network = true;
        assert_eq!(spec.validate(), Err(SpecError::Network));
    }
}
