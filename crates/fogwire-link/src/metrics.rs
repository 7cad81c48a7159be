//! Prometheus metrics of a node's links, in the OpenMetrics text format.
//!
//! Per-peer link counters are read from the live links at scrape time (and
//! from the totals of links that closed), through a [`LinkReport`] the link
//! manager implements, so the forwarding path only ever touches the link's
//! own atomics.

use std::collections::HashMap;
use std::time::Duration;

use fogwire_identity::NodeId;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::LinkSnapshot;

/// Peers whose closed-link totals are remembered for the metrics; beyond
/// this, the oldest are forgotten so churn cannot grow memory without bound.
pub const CLOSED_TOTALS_MAX: usize = 4096;

type Labels = Vec<(&'static str, String)>;

/// What the links add up to at a scrape.
#[derive(Debug, Default)]
pub struct LinkTally {
    /// Counters of each peer: its closed links' totals plus its live link.
    pub totals: HashMap<NodeId, LinkSnapshot>,
    /// Latest round-trip time of each live link that measured one.
    pub rtts: Vec<(NodeId, Duration)>,
    pub links: usize,
    pub pending_handshakes: usize,
}

/// Where the metrics read the links from at each scrape.
pub trait LinkReport: Send + Sync + std::fmt::Debug + 'static {
    /// The tally now; `None` if it cannot be read (nothing is reported).
    fn tally(&self) -> Option<LinkTally>;
}

pub struct Metrics {
    registry: Registry,
    handshakes: Family<Labels, Counter>,
    closes: Family<Labels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new(report: Box<dyn LinkReport>) -> Self {
        let mut registry = Registry::with_prefix("fogwire");
        let handshakes = Family::<Labels, Counter>::default();
        registry.register(
            "handshakes",
            "Link handshakes by direction and result (ok, or why they failed)",
            handshakes.clone(),
        );
        let closes = Family::<Labels, Counter>::default();
        registry.register(
            "link_closes",
            "Links closed, by who closed them and the close code",
            closes.clone(),
        );
        registry.register_collector(Box::new(LinkCollector { report }));
        Self {
            registry,
            handshakes,
            closes,
        }
    }

    /// Counts a handshake of `direction` that ended with `result`.
    pub fn handshake(&self, direction: &'static str, result: &str) {
        self.handshakes
            .get_or_create(&vec![
                ("direction", direction.to_owned()),
                ("result", result.to_owned()),
            ])
            .inc();
    }

    /// Counts a link closed by `side` with `code`.
    pub fn link_closed(&self, side: &'static str, code: &'static str) {
        self.closes
            .get_or_create(&vec![("side", side.to_owned()), ("code", code.to_owned())])
            .inc();
    }

    /// Every metric, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[derive(Debug)]
struct LinkCollector {
    report: Box<dyn LinkReport>,
}

impl Collector for LinkCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(LinkTally {
            mut totals,
            rtts,
            links,
            pending_handshakes: pending,
        }) = self.report.tally()
        else {
            return Ok(());
        };
        let gauge = ConstGauge::new(links as i64);
        gauge.encode(encoder.encode_descriptor(
            "links",
            "Links up now",
            None,
            gauge.metric_type(),
        )?)?;
        let gauge = ConstGauge::new(pending as i64);
        gauge.encode(encoder.encode_descriptor(
            "pending_handshakes",
            "Inbound handshakes in progress",
            None,
            gauge.metric_type(),
        )?)?;

        let mut peers: Vec<(NodeId, LinkSnapshot)> = totals.drain().collect();
        peers.sort_by_key(|(peer, _)| *peer);
        type Field = fn(&LinkSnapshot) -> u64;
        let families: [(&str, &str, Field, Field); 2] = [
            (
                "link_bytes",
                "Bytes on links to each peer (record prefixes and tags included)",
                |t| t.bytes_in,
                |t| t.bytes_out,
            ),
            (
                "link_frames",
                "Frames on links to each peer",
                |t| t.records_in,
                |t| t.records_out,
            ),
        ];
        for (name, help, incoming, outgoing) in families {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (peer, totals) in &peers {
                for (direction, value) in [("in", incoming(totals)), ("out", outgoing(totals))] {
                    let labels = [
                        ("peer", peer.to_string()),
                        ("direction", direction.to_owned()),
                    ];
                    ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "link_rtt_seconds",
            "Latest keepalive round-trip time of each link",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (peer, rtt) in rtts {
            let labels = [("peer", peer.to_string())];
            ConstGauge::new(rtt.as_secs_f64()).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
