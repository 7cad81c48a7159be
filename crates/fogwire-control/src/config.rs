//! The control API's sections of the node's configuration: `[api]`, the
//! local API, and `[web]`, the opt-in read-only listener for others.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Deserializer, Serialize};

/// Port of the local control API by default.
pub const DEFAULT_API_PORT: u16 = 7101;

/// `[api]`: the local control API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Must be a loopback address: the API is for this machine only.
    pub listen: LoopbackAddr,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            listen: LoopbackAddr(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                DEFAULT_API_PORT,
            )),
        }
    }
}

/// A socket address on the loopback interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopbackAddr(pub SocketAddr);

impl Serialize for LoopbackAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for LoopbackAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let addr: SocketAddr = text.parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "`{text}` is not an address:port such as \"127.0.0.1:{DEFAULT_API_PORT}\""
            ))
        })?;
        if !addr.ip().is_loopback() {
            return Err(serde::de::Error::custom(format!(
                "the control API listens on this machine only: use a loopback address such \
                 as \"127.0.0.1:{}\" or \"[::1]:{}\", not {addr}",
                addr.port(),
                addr.port()
            )));
        }
        Ok(Self(addr))
    }
}

/// `[web]`: a read-only listener for other machines (a LAN, a public
/// gateway, a Prometheus server), off unless `listen` is set. It needs no
/// token, serves only what is switched on here, answers GET alone, and
/// holds every client address to a request rate.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSection {
    /// Where to listen, e.g. "192.168.1.20:7102" or "0.0.0.0:7102";
    /// none: no such listener.
    pub listen: Option<SocketAddr>,
    /// The live dashboard (`/dash/`), read-only.
    pub dashboard: bool,
    /// The gateway: `/tree/…`, `/feed/…` and `/blobs/…`. Blobs this node
    /// lacks are fetched from its peers for any client who asks.
    pub gateway: bool,
    /// `/metrics`, for a Prometheus server to scrape.
    pub metrics: bool,
    /// Requests per second each client address may make, on average.
    pub requests_per_second: u32,
    /// Requests a client address may make at once, after a quiet spell.
    pub burst: u32,
}

impl Default for WebSection {
    fn default() -> Self {
        Self {
            listen: None,
            dashboard: true,
            gateway: true,
            metrics: false,
            requests_per_second: 20,
            burst: 60,
        }
    }
}
