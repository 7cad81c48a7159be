//! Log lines about refused and failed inbound connections that cannot be
//! turned into a flood of their own: in each window the first few are
//! logged one by one, the rest only counted per address and summarised
//! when the window ends ("refused or failed 15230 inbound connections from
//! 127.0.0.1 in the last 10 s").

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a window lasts.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Lines logged one by one per window.
pub const LINES_PER_WINDOW: u32 = 32;
/// Addresses counted one by one per window; the rest are counted together.
const ADDRESSES_MAX: usize = 64;

/// One address's count in a window (`None`: all addresses beyond the first
/// [`ADDRESSES_MAX`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub address: Option<IpAddr>,
    pub count: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            Some(address) => write!(
                f,
                "refused or failed {} inbound connections from {address} in the last {} s",
                self.count,
                WINDOW.as_secs()
            ),
            None => write!(
                f,
                "refused or failed {} inbound connections from other addresses in the last {} s",
                self.count,
                WINDOW.as_secs()
            ),
        }
    }
}

/// The counts of one window. Sans-IO: the time is handed in.
#[derive(Debug)]
pub struct Window {
    started: Instant,
    lines: u32,
    counts: HashMap<IpAddr, u64>,
    others: u64,
}

impl Window {
    pub fn new(now: Instant) -> Self {
        Self {
            started: now,
            lines: 0,
            counts: HashMap::new(),
            others: 0,
        }
    }

    /// Notes one refusal from `address`: true if it is to be logged in
    /// full, false if only counted.
    pub fn note(&mut self, address: IpAddr) -> bool {
        if self.lines < LINES_PER_WINDOW {
            self.lines += 1;
            return true;
        }
        let room = self.counts.len() < ADDRESSES_MAX;
        match self.counts.get_mut(&address) {
            Some(count) => *count += 1,
            None if room => {
                self.counts.insert(address, 1);
            }
            None => self.others += 1,
        }
        false
    }

    /// If the window has ended by `now`: what was only counted in it,
    /// most first, and a new window begins.
    pub fn flush(&mut self, now: Instant) -> Vec<Summary> {
        if now.saturating_duration_since(self.started) < WINDOW {
            return Vec::new();
        }
        let mut summaries: Vec<Summary> = self
            .counts
            .drain()
            .map(|(address, count)| Summary {
                address: Some(address),
                count,
            })
            .collect();
        summaries.sort_by_key(|summary| std::cmp::Reverse(summary.count));
        if self.others > 0 {
            summaries.push(Summary {
                address: None,
                count: self.others,
            });
        }
        *self = Window::new(now);
        summaries
    }
}

/// A [`Window`] shared by a listener's tasks, logging through `tracing`.
#[derive(Debug, Clone)]
pub struct RefusalLog {
    window: Arc<Mutex<Window>>,
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self {
            window: Arc::new(Mutex::new(Window::new(Instant::now()))),
        }
    }
}

impl RefusalLog {
    fn lock(&self) -> MutexGuard<'_, Window> {
        self.window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Logs `message` (or only counts it) about the connection from
    /// `remote`, refused or failed for `reason`.
    pub fn refused(&self, remote: SocketAddr, reason: &'static str, message: fmt::Arguments<'_>) {
        if reason == crate::establish::HUNG_UP {
            // Peers check that this node can be dialed: not a refusal.
            tracing::debug!(remote = %remote, "{message} (a reachability check, or a dialer that wanted another node)");
            return;
        }
        self.flush();
        if self.lock().note(remote.ip()) {
            tracing::info!(remote = %remote, reason, "{message}");
        }
    }

    /// Logs the summaries of a window that has ended: call it now and then
    /// (each [`refused`](Self::refused) does too).
    pub fn flush(&self) {
        let summaries = self.lock().flush(Instant::now());
        for summary in summaries {
            tracing::warn!(
                address = ?summary.address,
                count = summary.count,
                "{summary} (only the first {LINES_PER_WINDOW} of a window are logged one by one)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_first_lines_a_window_counts_and_summarises_per_address() {
        let start = fogwire_testkit::time::epoch();
        let mut window = Window::new(start);
        let flooder: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let logged = (0..1000).filter(|_| window.note(flooder)).count();
        assert_eq!(logged, LINES_PER_WINDOW as usize);
        assert!(!window.note(other));
        assert!(window.flush(start + WINDOW / 2).is_empty(), "not yet");
        let summaries = window.flush(start + WINDOW);
        assert_eq!(
            summaries,
            vec![
                Summary {
                    address: Some(flooder),
                    count: 1000 - u64::from(LINES_PER_WINDOW)
                },
                Summary {
                    address: Some(other),
                    count: 1
                },
            ]
        );
        assert!(summaries[0].to_string().starts_with(
            "refused or failed 968 inbound connections from 192.0.2.1 in the last 10 s"
        ));
        // A new window logs again.
        assert!(window.note(flooder));
    }

    #[test]
    fn addresses_past_the_bound_are_counted_together() {
        let start = fogwire_testkit::time::epoch();
        let mut window = Window::new(start);
        for _ in 0..LINES_PER_WINDOW {
            window.note(IpAddr::from([10, 0, 0, 0]));
        }
        for index in 0..(ADDRESSES_MAX as u32 + 10) {
            window.note(IpAddr::from(index.to_be_bytes()));
        }
        let summaries = window.flush(start + WINDOW);
        assert_eq!(summaries.len(), ADDRESSES_MAX + 1);
        assert_eq!(
            summaries.last(),
            Some(&Summary {
                address: None,
                count: 10
            })
        );
    }
}
