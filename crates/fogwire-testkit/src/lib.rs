//! What fogwire's tests share, so that no test file carries its own copy.
//!
//! - [`wait`]: wait for a condition with one stated patience, async or
//!   blocking; a test that gives up says what it was waiting for.
//! - [`data`]: reproducible test data from a seed.
//! - [`time`]: virtual time for the sans-IO cores (one reading of the
//!   clock, every later instant computed) and [`time::Pair`], two
//!   endpoints joined in memory.
//! - [`nodes`] (feature `nodes`): real nodes on loopback, linked, in lines.
//! - [`prerequisite`]: a test whose prerequisite is missing is skipped on a
//!   developer's machine and fails under CI, never passes silently.
//!
//! A dev-dependency only: nothing here is fit for production (it panics).

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod data;
#[cfg(feature = "nodes")]
pub mod nodes;
pub mod time;
pub mod wait;

/// Whether a test may run: `true` when `available`; otherwise it prints why
/// it is skipped and returns `false` — or panics when `CI` is set, because
/// a test skipped under CI is a test that passes without running.
pub fn prerequisite(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "prerequisite missing under CI: {what}"
    );
    eprintln!("skipped: {what}");
    false
}
