//! The `[cluster]` section of a node's configuration file.

use serde::Deserialize;
use smart_default::SmartDefault;

use fogwire_cluster_proto::JoinCode;
use fogwire_cluster_proto::swim;

/// `[cluster]`: the cluster this board belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// The join code of the cluster (`fwjoin1…`, from `fogwire cluster
    /// init`). None: the one `fogwire cluster join` kept in the data
    /// directory, if any; else this board is in no cluster.
    pub join: Option<JoinCode>,
    /// Announce this board and find the others on the local network by
    /// mDNS.
    #[default(true)]
    pub mdns: bool,
    /// One membership probe per period, ms.
    #[default(1_000)]
    pub probe_interval_ms: u64,
    /// How long a probe waits for a direct answer, ms (then asks others).
    #[default(500)]
    pub probe_timeout_ms: u64,
}

impl ClusterSection {
    /// The membership settings these give.
    pub fn swim(&self) -> swim::Config {
        swim::Config {
            probe_interval: std::time::Duration::from_millis(self.probe_interval_ms),
            probe_timeout: std::time::Duration::from_millis(self.probe_timeout_ms),
            ..swim::Config::default()
        }
    }

    /// Problems a configuration check reports: `(key, value, valid range)`.
    pub fn out_of_range(&self) -> Vec<(&'static str, u64, std::ops::Range<u64>)> {
        let mut problems = Vec::new();
        if !(100..60_001).contains(&self.probe_interval_ms) {
            problems.push((
                "cluster.probe_interval_ms",
                self.probe_interval_ms,
                100..60_001,
            ));
        }
        if !(10..self.probe_interval_ms.max(11)).contains(&self.probe_timeout_ms) {
            problems.push((
                "cluster.probe_timeout_ms",
                self.probe_timeout_ms,
                10..self.probe_interval_ms.max(11),
            ));
        }
        problems
    }
}
