//! The arguments a peer sends to the node's RPC services, decoded as each
//! service decodes them: the hub (a job spec and an escrow, a job id), the
//! worker (a task, a job id and task index), the market (an ask, a bid, an
//! order id) and the ledger (an account or escrow id, a history window, a
//! transaction's body and signature, whose body is then decoded as the
//! ledger would). Each decodes or fails with an error, never a panic; a
//! value that decodes encodes back to one that decodes to itself.
#![no_main]

use fogwire_compute::market::{AskRequest, BidRequest};
use fogwire_compute_proto::{Digest, JobId, JobSpec, TaskSpec, from_value, to_value};
use fogwire_ledger::proto::{Id, Transaction};
use libfuzzer_sys::fuzz_target;
use rmpv::Value;

fn decodes<T>(args: &[Value], position: usize) -> Option<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let decoded: T = from_value(args.get(position)?.clone()).ok()?;
    let again: T = from_value(to_value(&decoded).expect("a decoded value encodes"))
        .expect("and decodes again");
    assert_eq!(again, decoded);
    Some(decoded)
}

fuzz_target!(|input: &[u8]| {
    let mut bytes = input;
    let Ok(Value::Array(args)) = rmpv::decode::read_value_with_max_depth(&mut bytes, 32) else {
        return;
    };
    // Hub: submit, status/logs/result/cancel.
    if let Some(spec) = decodes::<JobSpec>(&args, 0) {
        let _ = spec.validate();
    }
    let _ = decodes::<Option<Digest>>(&args, 1);
    let _ = decodes::<JobId>(&args, 0);
    // Worker: run, reveal, cancel.
    let _ = decodes::<TaskSpec>(&args, 0);
    let _ = decodes::<u32>(&args, 1);
    // Market: ask, bid, cancel.
    let _ = decodes::<AskRequest>(&args, 0);
    let _ = decodes::<BidRequest>(&args, 0);
    let _ = decodes::<u64>(&args, 0);
    // Ledger: account, escrow, history, submit.
    let _ = decodes::<Id>(&args, 0);
    let _ = decodes::<u64>(&args, 1);
    let _ = decodes::<u64>(&args, 2);
    if let (Some(Value::Binary(body)), Some(Value::Binary(signature))) = (args.first(), args.get(1))
        && signature.len() == 64
    {
        let _ = Transaction::decode(body);
    }
});
