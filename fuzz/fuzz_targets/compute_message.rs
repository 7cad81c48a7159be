//! The compute decoders on MessagePack from a peer: a job, a task, a
//! reveal, a commitment, a job record (what a hub persists) and a worker's
//! resources either fail to decode with an error or decode to values that
//! re-encode and decode to themselves; a decoded job spec is validated
//! without panicking.
#![no_main]

use fogwire_compute_proto::scheduler::Job;
use fogwire_compute_proto::{Commitment, JobSpec, Reveal, TaskSpec, from_value, to_value};
use libfuzzer_sys::fuzz_target;

fn round_trip<T>(value: &rmpv::Value)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(decoded) = from_value::<T>(value.clone()) {
        let encoded = to_value(&decoded).expect("a decoded value encodes");
        let again: T = from_value(encoded).expect("and decodes");
        assert_eq!(again, decoded);
    }
}

fuzz_target!(|input: &[u8]| {
    let mut bytes = input;
    let Ok(value) = rmpv::decode::read_value_with_max_depth(&mut bytes, 32) else {
        return;
    };
    if let Ok(spec) = from_value::<JobSpec>(value.clone()) {
        let _ = spec.validate();
    }
    round_trip::<JobSpec>(&value);
    round_trip::<TaskSpec>(&value);
    round_trip::<Reveal>(&value);
    round_trip::<Commitment>(&value);
    round_trip::<Job>(&value);
});
