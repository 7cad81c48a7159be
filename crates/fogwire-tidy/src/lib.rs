//! The architecture's rules, checked by tests (`tests/tidy.rs`), so that
//! they hold because the build says so rather than because a reviewer
//! remembered (rust-analyzer's tidy tests are the model):
//!
//! - every `*-proto` crate is a sans-IO core: it has the `clippy.toml` that
//!   bans clocks, sockets, files and threads, and nothing it depends on
//!   (directly or not) is an async runtime, a database or a file-system
//!   crate;
//! - every crate under `crates/` has its entry in ARCHITECTURE.md's code
//!   map, and every entry names a crate that exists;
//! - no channel is unbounded;
//! - no public function or trait method returns `Result<_, String>`.
//!
//! The crate has no code of its own; it runs only as tests.
