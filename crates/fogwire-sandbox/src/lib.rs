//! Where fogwire runs other people's programs: the task runtimes of a
//! worker. Each runs one program under limits, with nothing it was not
//! given, and reports how it ended; it knows nothing of jobs, hubs or the
//! network.
//!
//! - [`wasm`]: WebAssembly (WASI preview 1) under wasmtime — the default.

pub mod wasm;

pub use wasm::{Limits, Outcome, Status, Task, WasmError, WasmRuntime};
