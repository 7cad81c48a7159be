//! Waiting for a condition. The patience is generous — for what normally
//! takes milliseconds on a shared, noisy machine — and is not a timing
//! assertion: a test that gives up names what it waited for.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long a test waits for something that normally takes milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(20);

/// Waits until `condition` holds; panics naming `what` after [`PATIENCE`].
pub async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    until_some(what, || condition().then_some(())).await
}

/// Waits until `probe` answers; returns the answer.
pub async fn until_some<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(started.elapsed() < PATIENCE, "gave up waiting: {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the async `probe` answers (a call to a node, a lookup).
pub async fn until_async<T, F>(what: &str, mut probe: impl FnMut() -> F) -> T
where
    F: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(started.elapsed() < PATIENCE, "gave up waiting: {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the async `probe` succeeds; returns what it gave. A test
/// that gives up names what it waited for and the last error.
pub async fn until_ok<T, E, F>(what: &str, mut probe: impl FnMut() -> F) -> T
where
    E: std::fmt::Display,
    F: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(error) => assert!(
                started.elapsed() < PATIENCE,
                "gave up waiting: {what}; last: {error}"
            ),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The same, for tests without a runtime (processes, namespaces).
pub mod blocking {
    use super::*;

    /// Waits until `condition` holds; panics naming `what`.
    pub fn until(what: &str, mut condition: impl FnMut() -> bool) {
        until_some(what, || condition().then_some(()))
    }

    /// Waits until `probe` answers; returns the answer.
    pub fn until_some<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let started = Instant::now();
        loop {
            if let Some(value) = probe() {
                return value;
            }
            assert!(started.elapsed() < PATIENCE, "gave up waiting: {what}");
            std::thread::sleep(POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_condition_that_comes_true_ends_the_wait_with_the_answer() {
        let mut polls = 0;
        let answer = until_some("the third poll", || {
            polls += 1;
            (polls == 3).then_some(polls)
        })
        .await;
        assert_eq!(answer, 3);
    }

    #[tokio::test]
    async fn an_error_is_retried_until_the_probe_succeeds() {
        let mut polls = 0;
        let answer = until_ok("the second poll", || {
            polls += 1;
            let polled = polls;
            async move {
                if polled < 2 {
                    Err(format!("poll {polled} too early"))
                } else {
                    Ok(polled)
                }
            }
        })
        .await;
        assert_eq!(answer, 2);
    }
}
