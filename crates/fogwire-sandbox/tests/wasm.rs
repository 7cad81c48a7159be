//! Real modules under the real wasmtime: what a task is given, what it is
//! not, and every way one can end badly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use fogwire_sandbox::{Limits, Status, Task, WasmError, WasmRuntime};

/// A WASI command whose `_start` is `body`, with `fd_write`, `proc_exit`,
/// `random_get`, `clock_time_get`, `path_open` and `fd_read` imported,
/// one page of memory (more if `pages`), and "hello\n" at offset 1024.
fn module(body: &str) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "random_get"
    (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "hello\n")
  (data (i32.const 2048) "/etc/passwd")
  ;; write len bytes at ptr to stdout
  (func $print (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start") {body}))"#
    )
}

fn run(runtime: &WasmRuntime, body: &str, task: &Task) -> fogwire_sandbox::Outcome {
    runtime.run(module(body).as_bytes(), task).unwrap()
}

fn task() -> Task {
    Task {
        args: vec!["task".into()],
        limits: Limits {
            fuel: 50_000_000,
            memory_bytes: 4 * 1024 * 1024,
            wall_time: Duration::from_secs(20),
            output_bytes: 64 * 1024,
        },
        ..Task::default()
    }
}

#[test]
fn a_task_writes_its_output_and_exits() {
    let runtime = WasmRuntime::new().unwrap();
    let outcome = run(
        &runtime,
        "(call $print (i32.const 1024) (i32.const 6)) (call $proc_exit (i32.const 3))",
        &task(),
    );
    assert_eq!(outcome.status, Status::Exited(3));
    assert_eq!(&outcome.stdout[..], b"hello\n");
    assert!(outcome.fuel_used > 0 && outcome.fuel_used < 1000);
    assert!(!outcome.cached);
    // Returning from _start is exit 0; the second run of a module is
    // served from the cache.
    let again = run(
        &runtime,
        "(call $print (i32.const 1024) (i32.const 6)) (call $proc_exit (i32.const 3))",
        &task(),
    );
    assert!(again.cached);
    assert_eq!(run(&runtime, "", &task()).status, Status::Exited(0));
}

#[test]
fn stdin_comes_in_and_goes_out() {
    let runtime = WasmRuntime::new().unwrap();
    // Read up to 100 bytes at 4096, write them back.
    let body = "
      (i32.store (i32.const 16) (i32.const 4096))
      (i32.store (i32.const 20) (i32.const 100))
      (drop (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
      (call $print (i32.const 4096) (i32.load (i32.const 24)))";
    let mut task = task();
    task.stdin = Bytes::from_static(b"piped in");
    assert_eq!(&run(&runtime, body, &task).stdout[..], b"piped in");
}

#[test]
fn a_task_that_loops_forever_runs_out_of_fuel_or_time() {
    let runtime = WasmRuntime::new().unwrap();
    let forever = "(loop $l (br $l))";
    let outcome = run(&runtime, forever, &task());
    assert_eq!(outcome.status, Status::OutOfFuel);
    assert_eq!(outcome.fuel_used, task().limits.fuel);
    // With fuel to spare, the wall clock stops it.
    let mut long = task();
    long.limits.fuel = u64::MAX / 2;
    long.limits.wall_time = Duration::from_millis(200);
    let outcome = run(&runtime, forever, &long);
    assert_eq!(outcome.status, Status::TimedOut);
}

#[test]
fn a_task_that_allocates_without_bound_hits_its_memory_limit() {
    let runtime = WasmRuntime::new().unwrap();
    // Grow a page at a time; on refusal (-1), trap.
    let body = "(loop $l
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
        (br $l))";
    assert_eq!(run(&runtime, body, &task()).status, Status::OutOfMemory);
}

#[test]
fn a_task_that_traps_says_why() {
    let runtime = WasmRuntime::new().unwrap();
    let Status::Trapped(why) = run(&runtime, "unreachable", &task()).status else {
        panic!("expected a trap");
    };
    assert!(why.contains("unreachable"), "{why}");
    let Status::Trapped(why) = run(
        &runtime,
        "(drop (i32.load (i32.const 0x7fffffff)))",
        &task(),
    )
    .status
    else {
        panic!("expected a trap");
    };
    assert!(why.contains("out of bounds"), "{why}");
}

#[test]
fn a_task_cannot_open_files() {
    let runtime = WasmRuntime::new().unwrap();
    // path_open on fd 3 (the first preopen, were there one): exit with
    // the errno it gets.
    let body = "(call $proc_exit (call $path_open (i32.const 3) (i32.const 0)
        (i32.const 2048) (i32.const 11) (i32.const 0) (i64.const 2) (i64.const 0)
        (i32.const 0) (i32.const 64)))";
    let Status::Exited(errno) = run(&runtime, body, &task()).status else {
        panic!("expected an exit");
    };
    // 8 = EBADF: there is no such directory to open from.
    assert_eq!(errno, 8);
}

#[test]
fn replicas_of_a_task_produce_the_same_bytes() {
    // Random bytes and the clocks, printed: the same every run with the
    // same seed, on any runtime.
    let body = "
      (drop (call $random_get (i32.const 4096) (i32.const 16)))
      (drop (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 4112)))
      (drop (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 4120)))
      (call $print (i32.const 4096) (i32.const 32))";
    let outputs: Vec<Bytes> = (0..3)
        .map(|_| run(&WasmRuntime::new().unwrap(), body, &task()).stdout)
        .collect();
    assert_eq!(outputs[0].len(), 32);
    assert!(outputs.iter().all(|out| *out == outputs[0]));
    // The clocks read zero.
    assert!(outputs[0][16..].iter().all(|b| *b == 0));
    // Another seed, other random bytes.
    let mut other = task();
    other.seed = 7;
    assert_ne!(
        run(&WasmRuntime::new().unwrap(), body, &other).stdout[..16],
        outputs[0][..16]
    );
}

#[test]
fn too_much_output_fails_the_task() {
    let runtime = WasmRuntime::new().unwrap();
    let body = "(loop $l (call $print (i32.const 1024) (i32.const 6)) (br $l))";
    let mut task = task();
    task.limits.output_bytes = 1000;
    assert_eq!(run(&runtime, body, &task).status, Status::OutputTooLarge);
}

#[test]
fn bad_modules_are_refused_with_a_reason() {
    let runtime = WasmRuntime::new().unwrap();
    assert!(matches!(
        runtime.run(b"\0asm\x01\0\0\0garbage", &task()),
        Err(WasmError::Invalid(_))
    ));
    // Imports a task is not given.
    let sockets = r#"(module (import "env" "connect" (func)) (func (export "_start")))"#;
    assert!(matches!(
        runtime.run(sockets.as_bytes(), &task()),
        Err(WasmError::Link(_))
    ));
    assert!(matches!(
        runtime.run(
            &vec![0; fogwire_sandbox::wasm::MODULE_BYTES_MAX + 1],
            &task()
        ),
        Err(WasmError::TooLarge(_))
    ));
}

#[test]
fn a_cancelled_task_stops_long_before_its_wall_time() {
    let runtime = WasmRuntime::new().unwrap();
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut looping = task();
    // Nothing but the cancel can end it: endless fuel, a day of wall time.
    looping.limits.fuel = u64::MAX / 2;
    looping.limits.wall_time = Duration::from_secs(24 * 3600);
    looping.cancel = Some(cancel.clone());
    // Cancelled whenever the other thread gets to it, before the run or
    // during it: either way the run ends, as timed out.
    let stopper = {
        let cancel = cancel.clone();
        std::thread::spawn(move || cancel.store(true, std::sync::atomic::Ordering::Relaxed))
    };
    let outcome = run(&runtime, "(loop $forever (br $forever))", &looping);
    stopper.join().unwrap();
    assert_eq!(outcome.status, Status::TimedOut);
}
