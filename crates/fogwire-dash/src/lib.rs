//! The dashboard's figures, kept without I/O or a clock of their own: one
//! board's [`Sample`] each second, an hour of the charted ones in a
//! [`History`] of fixed size, per-second rates made from byte counters
//! ([`Rate`]), and what changed between two samples ([`changes`]), which is
//! all a live page is sent after its first view. Also the page itself
//! ([`assets`], compiled in: the node serves it with no network fetch) and
//! a probe of the host's CPU, memory and disk ([`host`]).

pub mod assets;
pub mod host;

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Seconds of per-second history a board keeps: one hour.
pub const HISTORY_SECONDS: usize = 3_600;

/// One board's figures at one moment. Counters the page shows as they are
/// (bytes relayed, tasks run) are totals; bandwidth is per second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When it was taken (milliseconds since the Unix epoch).
    pub unix_ms: u64,
    pub node_id: String,
    pub version: String,
    pub uptime_secs: u64,
    /// The whole machine's CPU use, 0 to 100.
    pub cpu_percent: f32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    /// The file system holding the node's data.
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
    /// Link bytes per second, all links together.
    pub rx_bytes_per_sec: u64,
    pub tx_bytes_per_sec: u64,
    pub links: u64,
    /// Others' routes this node relays now, and the bytes carried on them.
    pub transit_routes: u64,
    pub relayed_bytes: u64,
    pub store_bytes: u64,
    pub store_blobs: u64,
    /// Tasks this board's worker has run (the records it keeps).
    pub tasks_run: u64,
    /// The node's coins (units), when a ledger answered.
    pub balance: Option<u64>,
    pub earned_per_hour: Option<u64>,
    pub earned_forwarding_per_hour: Option<u64>,
    pub earned_serving_per_hour: Option<u64>,
    pub earned_computing_per_hour: Option<u64>,
    /// The services the cluster runs on this board (`exit`, `worker`, …).
    pub services: Vec<String>,
}

/// The largest figures a board may send (JSON).
pub const SAMPLE_BYTES_MAX: usize = 16 * 1024;

/// Why another board's figures were not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SampleError {
    #[error("its figures are {0} bytes, over the {SAMPLE_BYTES_MAX} bytes allowed")]
    TooLong(usize),
    #[error("its figures are malformed: {0}")]
    Malformed(String),
}

/// Another board's figures, as its `dash.sample` answer carries them
/// (JSON; unknown fields are ignored, so boards of a newer version can
/// send more).
pub fn decode_sample(bytes: &[u8]) -> Result<Sample, SampleError> {
    if bytes.len() > SAMPLE_BYTES_MAX {
        return Err(SampleError::TooLong(bytes.len()));
    }
    serde_json::from_slice(bytes).map_err(|e| SampleError::Malformed(e.to_string()))
}

/// The fields of `after` that differ from `before`, by their JSON names:
/// what a page that holds `before` needs to show `after`. All of them when
/// there is no `before`.
pub fn changes(
    before: Option<&Sample>,
    after: &Sample,
) -> serde_json::Map<String, serde_json::Value> {
    let after = object_of(after);
    let Some(before) = before.map(object_of) else {
        return after;
    };
    after
        .into_iter()
        .filter(|(name, value)| before.get(name) != Some(value))
        .collect()
}

fn object_of(sample: &Sample) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(sample) {
        Ok(serde_json::Value::Object(map)) => map,
        // A struct of numbers and strings always serializes as an object.
        _ => serde_json::Map::new(),
    }
}

/// A per-second rate from a counter read now and then. The counter may
/// fall (a link that closed takes its bytes with it): the rate is then
/// what the rest added, never negative.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rate {
    last: Option<(u64, u64)>,
}

impl Rate {
    /// Takes the counter's `total` read at `unix_ms`; the rate since the
    /// last reading (0 for the first).
    pub fn update(&mut self, total: u64, unix_ms: u64) -> u64 {
        let rate = match self.last {
            Some((last_total, last_ms)) if unix_ms > last_ms => {
                let added = total.saturating_sub(last_total);
                let per_sec = u128::from(added) * 1000 / u128::from(unix_ms - last_ms);
                u64::try_from(per_sec).unwrap_or(u64::MAX)
            }
            _ => 0,
        };
        self.last = Some((total, unix_ms));
        rate
    }
}

/// The charted figures of one second.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    unix_ms: u64,
    cpu_percent: f32,
    memory_used_bytes: u64,
    rx_bytes_per_sec: u64,
    tx_bytes_per_sec: u64,
}

/// The last [`HISTORY_SECONDS`] samples' charted figures (time, CPU,
/// memory, bandwidth in and out): 40 bytes each, so at most 144 KB.
#[derive(Debug, Clone, Default)]
pub struct History {
    points: VecDeque<Point>,
}

/// A history as columns, as the page draws it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub unix_ms: Vec<u64>,
    pub cpu_percent: Vec<f32>,
    pub memory_used_bytes: Vec<u64>,
    pub rx_bytes_per_sec: Vec<u64>,
    pub tx_bytes_per_sec: Vec<u64>,
}

impl History {
    /// Keeps `sample`'s charted figures, dropping the oldest beyond the
    /// bound.
    pub fn push(&mut self, sample: &Sample) {
        if self.points.len() >= HISTORY_SECONDS {
            self.points.pop_front();
        }
        self.points.push_back(Point {
            unix_ms: sample.unix_ms,
            cpu_percent: sample.cpu_percent,
            memory_used_bytes: sample.memory_used_bytes,
            rx_bytes_per_sec: sample.rx_bytes_per_sec,
            tx_bytes_per_sec: sample.tx_bytes_per_sec,
        });
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Every kept second, oldest first.
    pub fn series(&self) -> Series {
        let mut series = Series::default();
        for point in &self.points {
            series.unix_ms.push(point.unix_ms);
            series.cpu_percent.push(point.cpu_percent);
            series.memory_used_bytes.push(point.memory_used_bytes);
            series.rx_bytes_per_sec.push(point.rx_bytes_per_sec);
            series.tx_bytes_per_sec.push(point.tx_bytes_per_sec);
        }
        series
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(unix_ms: u64, cpu: f32) -> Sample {
        Sample {
            unix_ms,
            cpu_percent: cpu,
            node_id: "n".into(),
            ..Sample::default()
        }
    }

    #[test]
    fn only_what_changed_is_sent_after_the_first_view() {
        let first = sample(1_000, 10.0);
        assert_eq!(changes(None, &first).len(), object_of(&first).len());
        let mut second = sample(2_000, 10.0);
        second.links = 3;
        let changed = changes(Some(&first), &second);
        let names: Vec<&str> = changed.keys().map(String::as_str).collect();
        assert_eq!(names, ["links", "unix_ms"]);
        assert_eq!(changed["links"], 3);
        assert!(changes(Some(&second), &second).is_empty());
    }

    #[test]
    fn a_rate_is_per_second_and_never_negative() {
        let mut rate = Rate::default();
        assert_eq!(rate.update(1_000, 10_000), 0);
        assert_eq!(rate.update(3_000, 12_000), 1_000);
        // A link closed: its bytes left the total.
        assert_eq!(rate.update(500, 13_000), 0);
        assert_eq!(rate.update(1_500, 14_000), 1_000);
        // The same moment twice: no division by zero.
        assert_eq!(rate.update(9_000, 14_000), 0);
    }

    #[test]
    fn history_keeps_one_hour_and_drops_the_oldest() {
        let mut history = History::default();
        for second in 0..(HISTORY_SECONDS as u64 + 10) {
            history.push(&sample(second * 1000, second as f32));
        }
        assert_eq!(history.len(), HISTORY_SECONDS);
        let series = history.series();
        assert_eq!(series.unix_ms.first(), Some(&10_000));
        assert_eq!(
            series.unix_ms.last(),
            Some(&((HISTORY_SECONDS as u64 + 9) * 1000))
        );
        assert_eq!(series.cpu_percent.len(), HISTORY_SECONDS);
    }
}
