//! The node's TOML configuration.
//!
//! Every key is optional and has a default. Unknown keys and bad values stop
//! start-up with an error that names the file, the line and column, shows
//! the line, and says what would be valid.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use smart_default::SmartDefault;

use crate::PeerAddr;

/// Name of the configuration file in a node's home directory.
pub const CONFIG_FILE_NAME: &str = "fogwire.toml";
/// Port peers dial by default.
pub const DEFAULT_LINK_PORT: u16 = 7100;
pub use fogwire_control::config::{ApiSection, DEFAULT_API_PORT, LoopbackAddr, WebSection};

/// A node's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the node keeps its key, API token and state. Relative to the
    /// configuration file's directory.
    #[default(PathBuf::from("data"))]
    pub data_dir: PathBuf,
    /// Peers to keep a link to, reconnecting with backoff.
    pub peers: Vec<PeerAddr>,
    pub link: LinkSection,
    pub route: RouteSection,
    pub store: StoreSection,
    pub compute: fogwire_compute::config::ComputeSection,
    pub ledger: fogwire_account::ledger::LedgerSection,
    pub exit: fogwire_exit::config::ExitSection,
    pub socks: fogwire_exit::config::SocksSection,
    pub relay: fogwire_relay::RelaySection,
    pub cluster: fogwire_cluster::config::ClusterSection,
    pub msg: fogwire_msg::config::MsgSection,
    pub api: ApiSection,
    pub web: WebSection,
    pub log: LogSection,
}

/// `[route]`: how this node takes part in routing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct RouteSection {
    /// Addresses (`host:port`) other nodes may dial this node at, named in
    /// its adverts. Empty: the link listen address, unless it is a
    /// wildcard (0.0.0.0 or ::), which says nothing to others.
    pub advertise: Vec<String>,
    /// Capacity offered to others' traffic on each link, kbit/s.
    #[default(1_000_000)]
    pub capacity_kbps: u32,
}

/// `[store]`: the content-addressed store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Bytes of unpinned blobs kept as a cache (least recently used go
    /// first beyond it).
    #[default(fogwire_store::Config::default().cache_bytes_max)]
    pub cache_bytes_max: u64,
    /// Wait for a blob's bytes to reach the disk before an add completes.
    #[default(fogwire_store::Config::default().sync_on_add)]
    pub sync_on_add: bool,
    /// Most bytes per second served to peers, all together (0: no cap).
    pub serve_bytes_per_sec_max: u64,
    /// Tell the network what this node pins (its tags' hashes), so that
    /// nodes beyond its neighbours find it holds them: the few nodes
    /// that keep those hashes' provider records learn that it does.
    #[default(true)]
    pub provide: bool,
    /// Keep provider records for the network (up to 262,144, 16,384 per
    /// holder, in memory), and say so in this node's advert.
    #[default(true)]
    pub keep_provider_records: bool,
}

/// `[link]`: peer links.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct LinkSection {
    /// Address peers dial to reach this node (port 0: any free port).
    #[default(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_LINK_PORT))]
    pub listen: SocketAddr,
    /// Also link over QUIC on the UDP port of the same number (what hole
    /// punching through NATs needs).
    #[default(true)]
    pub udp: bool,
    #[default(10_000)]
    pub handshake_timeout_ms: u64,
    #[default(15_000)]
    pub keepalive_interval_ms: u64,
    #[default(45_000)]
    pub idle_timeout_ms: u64,
    /// Most links at once; more are refused.
    #[default(256)]
    pub max_links: usize,
    /// Most inbound handshakes in progress at once; more connections are
    /// closed at once, which bounds what half-open connections can cost.
    #[default(64)]
    pub max_pending_handshakes: usize,
    /// Most of them from one IP address.
    #[default(fogwire_link::admission::PER_ADDRESS_DEFAULT)]
    pub max_handshakes_per_address: usize,
    /// Most inbound links from one IP address (peers this node keeps
    /// aside), so self-made identities from one machine cannot fill it.
    #[default(fogwire_link::slots::PER_ADDRESS_DEFAULT)]
    pub max_links_per_address: usize,
    /// When the node is full, an inbound link that has sent nothing this
    /// long since it came up gives its slot to a newcomer.
    #[default(fogwire_link::slots::GRACE.as_millis() as u64)]
    pub silent_link_grace_ms: u64,
    #[default(500)]
    pub reconnect_initial_ms: u64,
    #[default(60_000)]
    pub reconnect_max_ms: u64,
}

/// `[log]`: what the daemon logs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A level (error, warn, info, debug, trace) or a tracing filter such as
    /// "info,fogwire_link=debug". The RUST_LOG variable overrides it.
    #[default("info".into())]
    pub level: String,
    /// "text" (one line per event, for people) or "json" (one JSON object
    /// per line, for log collectors).
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A configuration that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based line and column, when the error is tied to a place.
    pub location: Option<(usize, usize)>,
    pub message: String,
    /// The offending line and a caret under the offending part.
    pub snippet: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some((line, column)) => write!(f, "{}:{line}:{column}: ", self.path.display())?,
            None => write!(f, "{}: ", self.path.display())?,
        }
        f.write_str(&self.message)?;
        if let Some(snippet) = &self.snippet {
            write!(f, "\n{snippet}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn at(path: &Path, source: &str, span: Option<Range<usize>>, message: String) -> Self {
        let Some(span) = span else {
            return Self {
                path: path.to_owned(),
                location: None,
                message,
                snippet: None,
            };
        };
        let start = span.start.min(source.len());
        let line_start = source[..start].rfind('\n').map_or(0, |index| index + 1);
        let line_end = source[start..]
            .find('\n')
            .map_or(source.len(), |index| start + index);
        let line_number = source[..start].matches('\n').count() + 1;
        let column = source[line_start..start].chars().count() + 1;
        let line_text = &source[line_start..line_end];
        let width = source[start..span.end.clamp(start, line_end)]
            .chars()
            .count()
            .max(1);
        let gutter = " ".repeat(line_number.to_string().len());
        let snippet = format!(
            "{gutter} |\n{line_number} | {line_text}\n{gutter} | {}{}",
            " ".repeat(column - 1),
            "^".repeat(width)
        );
        Self {
            path: path.to_owned(),
            location: Some((line_number, column)),
            message,
            snippet: Some(snippet),
        }
    }
}

/// Where `key = …` is written in `section` (`None` for the top level), for
/// errors about values whose parse succeeded but whose combination is wrong.
fn span_of_key(source: &str, section: Option<&str>, key: &str) -> Option<Range<usize>> {
    let mut in_section = section.is_none();
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            let name = trimmed.trim_matches(|c| c == '[' || c == ']').trim();
            in_section = section == Some(name);
        } else if in_section
            && let Some(rest) = trimmed.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            let start = offset + (line.len() - line.trim_start().len());
            return Some(start..start + key.len());
        }
        offset += line.len();
    }
    None
}

impl Config {
    /// Parses and checks a configuration; `path` is only used in errors.
    pub fn parse(path: &Path, source: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(source).map_err(|error| {
            // serde names Rust types; say what to write instead.
            let message = error
                .message()
                .trim()
                .replace("expected u64", "expected a whole number")
                .replace("expected usize", "expected a whole number")
                .replace("expected a sequence", "expected a list [\"…\", \"…\"]");
            ConfigError::at(path, source, error.span(), message)
        })?;
        config.validate(path, source)?;
        Ok(config)
    }

    /// Reads, parses and checks the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|error| ConfigError {
            path: path.to_owned(),
            location: None,
            message: if error.kind() == std::io::ErrorKind::NotFound {
                "no configuration file here; create one with `fogwire init`".into()
            } else {
                format!("cannot read the configuration: {error}")
            },
            snippet: None,
        })?;
        Self::parse(path, &source)
    }

    fn validate(&self, path: &Path, source: &str) -> Result<(), ConfigError> {
        let fail = |key: &str, message: String| {
            Err(ConfigError::at(
                path,
                source,
                span_of_key(source, Some("link"), key),
                message,
            ))
        };
        let link = &self.link;
        let ranges: [(&str, u64, Range<u64>); 6] = [
            (
                "handshake_timeout_ms",
                link.handshake_timeout_ms,
                100..600_001,
            ),
            (
                "keepalive_interval_ms",
                link.keepalive_interval_ms,
                100..3_600_001,
            ),
            ("idle_timeout_ms", link.idle_timeout_ms, 300..10_800_001),
            (
                "reconnect_initial_ms",
                link.reconnect_initial_ms,
                10..600_001,
            ),
            ("reconnect_max_ms", link.reconnect_max_ms, 10..86_400_001),
            (
                "silent_link_grace_ms",
                link.silent_link_grace_ms,
                1_000..86_400_001,
            ),
        ];
        for (key, value, range) in ranges {
            if !range.contains(&value) {
                return fail(
                    key,
                    format!(
                        "link.{key} = {value} is out of range: use {} to {} (milliseconds)",
                        range.start,
                        range.end - 1
                    ),
                );
            }
        }
        if link.keepalive_interval_ms >= link.idle_timeout_ms {
            return fail(
                "keepalive_interval_ms",
                format!(
                    "link.keepalive_interval_ms ({}) must be below link.idle_timeout_ms ({}), \
                     or every quiet link would time out; a third of it is a good value",
                    link.keepalive_interval_ms, link.idle_timeout_ms
                ),
            );
        }
        if link.reconnect_initial_ms > link.reconnect_max_ms {
            return fail(
                "reconnect_initial_ms",
                format!(
                    "link.reconnect_initial_ms ({}) must not exceed link.reconnect_max_ms ({})",
                    link.reconnect_initial_ms, link.reconnect_max_ms
                ),
            );
        }
        let counts = [
            ("max_links", link.max_links),
            ("max_pending_handshakes", link.max_pending_handshakes),
            (
                "max_handshakes_per_address",
                link.max_handshakes_per_address,
            ),
            ("max_links_per_address", link.max_links_per_address),
        ];
        for (key, value) in counts {
            if !(1..=65_536).contains(&value) {
                return fail(key, format!("link.{key} = {value} must be 1 to 65536"));
            }
        }
        if let Some((key, value, range)) = self.cluster.out_of_range().into_iter().next() {
            let field = key.trim_start_matches("cluster.");
            return Err(ConfigError::at(
                path,
                source,
                span_of_key(source, Some("cluster"), field),
                format!(
                    "{key} = {value} is out of range: use {} to {} (milliseconds)",
                    range.start,
                    range.end - 1
                ),
            ));
        }
        let route_fail = |key: &str, message: String| {
            Err(ConfigError::at(
                path,
                source,
                span_of_key(source, Some("route"), key),
                message,
            ))
        };
        if self.route.capacity_kbps == 0 {
            return route_fail(
                "capacity_kbps",
                "route.capacity_kbps must be above 0 (kbit/s offered to others' traffic)".into(),
            );
        }
        if self.route.advertise.len() > 8 {
            return route_fail(
                "advertise",
                format!(
                    "route.advertise lists {} addresses; adverts carry at most 8",
                    self.route.advertise.len()
                ),
            );
        }
        for address in &self.route.advertise {
            let valid = address.len() <= 255
                && address
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return route_fail(
                    "advertise",
                    format!(
                        "route.advertise: `{address}` is not a host:port such as \"203.0.113.7:7100\""
                    ),
                );
            }
        }
        if self.ledger.serve && self.ledger.genesis.is_empty() {
            return Err(ConfigError::at(
                path,
                source,
                span_of_key(source, Some("ledger"), "serve"),
                "ledger.serve = true with no genesis accounts would create a ledger in which \
                 nobody has a coin, and its genesis is fixed for good once created: name the \
                 accounts that start with coins, e.g. \
                 genesis = [{ account = \"fw1…\", coins = \"1000\" }] (`fogwire id` prints \
                 this node's id)"
                    .into(),
            ));
        }
        if let Err(error) = check_log_filter(&self.log.level) {
            return Err(ConfigError::at(
                path,
                source,
                span_of_key(source, Some("log"), "level"),
                format!(
                    "log.level = {:?} is not a level (error, warn, info, debug, trace) or a \
                     filter such as \"info,fogwire_link=debug\": {error}",
                    self.log.level
                ),
            ));
        }
        Ok(())
    }

    /// The data directory, resolved against the configuration file's
    /// directory when relative.
    pub fn data_dir_for(&self, config_path: &Path) -> PathBuf {
        if self.data_dir.is_absolute() {
            return self.data_dir.clone();
        }
        config_path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(&self.data_dir)
    }
}

const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks a log filter strictly: tracing would read a lone word like "loud"
/// as "everything from the module `loud`", which is never what was meant.
fn check_log_filter(filter: &str) -> Result<(), String> {
    for directive in filter.split(',').map(str::trim) {
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, level)| level);
        if !LOG_LEVELS.contains(&level.trim().to_ascii_lowercase().as_str()) {
            return Err(format!("`{directive}` names no level"));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(filter)
        .map(|_| ())
        .map_err(|error| error.to_string())
}

/// The commented configuration `fogwire init` writes, with the given
/// listening addresses. Every other key is shown with its default (a test
/// checks that uncommenting them changes nothing).
pub fn template(link_listen: SocketAddr, api_listen: SocketAddr) -> String {
    include_str!("fogwire.toml")
        .replace("{link_listen}", &link_listen.to_string())
        .replace("{api_listen}", &api_listen.to_string())
}
