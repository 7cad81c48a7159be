//! The cluster manifest: which services a cluster runs, how many of each,
//! and where they may go. Its owner writes it as TOML and publishes it on
//! the cluster's signed feed (`docs/protocol/cluster.md` §2); every board
//! decodes it with [`Manifest::from_toml`], which refuses anything
//! malformed, unknown or beyond the limits with an error that says where
//! and what to do, and hands [`Manifest::services`] to
//! [`crate::placement::place`].
//!
//! ```toml
//! [[service]]
//! name = "relays"        # unique; a-z, 0-9 and '-', at most 64 bytes
//! kind = "relay"         # relay, seeder, worker, hub, ledger, exit, gateway
//! count = 3              # 1..=1024 instances (default 1)
//! cores = 1              # what each instance needs (default 0)
//! memory_mib = 256
//! disk_mib = 0
//! # pin = "fw1…"         # the only board it may run on
//! # shares_board = false # may share a board with other sharing services
//! # blobs = ["…"]        # BLAKE3 hashes the board fetches before it starts
//! # config = "…"         # a blob holding the service's settings (TOML)
//! ```
//!
//! A service's `config` is the hash of a TOML file with the section of
//! the node's configuration its kind takes — `[exit]` for an exit,
//! `[compute]` for a worker or hub, `[ledger]` for a ledger, `[socks]` for
//! a gateway — so one manifest says how each service runs as well as
//! where. Relays and seeders take none.

use std::collections::BTreeSet;

use fogwire_identity::NodeId;
use serde::Deserialize;

use crate::placement::{Resources, ServiceSpec};

/// Longest manifest text accepted, in bytes.
pub const MANIFEST_LEN_MAX: usize = 256 * 1024;
/// Most services in a manifest.
pub const SERVICES_MAX: usize = 256;
/// Most instances of one service, and of all services together.
pub const COUNT_MAX: u32 = 1024;
pub const INSTANCES_MAX: u32 = 4096;
/// Longest service name, in bytes.
pub const NAME_LEN_MAX: usize = 64;

/// What a service does; each kind is one of the node's subsystems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Relays routes for others.
    Relay,
    /// Seeds the store's objects.
    Seeder,
    /// Runs compute jobs.
    Worker,
    /// Runs a compute hub.
    Hub,
    /// Runs the ledger.
    Ledger,
    /// Serves as an exit.
    Exit,
    /// Serves SOCKS and VPN to the local network.
    Gateway,
}

impl Kind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Relay => "relay",
            Kind::Seeder => "seeder",
            Kind::Worker => "worker",
            Kind::Hub => "hub",
            Kind::Ledger => "ledger",
            Kind::Exit => "exit",
            Kind::Gateway => "gateway",
        }
    }

    /// The section of a node's configuration a service of this kind
    /// takes as its `config`, if it takes one.
    pub fn config_section(&self) -> Option<&'static str> {
        match self {
            Kind::Exit => Some("exit"),
            Kind::Worker | Kind::Hub => Some("compute"),
            Kind::Ledger => Some("ledger"),
            Kind::Gateway => Some("socks"),
            Kind::Relay | Kind::Seeder => None,
        }
    }
}

/// Most blobs one service names.
pub const BLOBS_MAX: usize = 16;

/// One service of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub kind: Kind,
    pub spec: ServiceSpec,
    /// The blobs it needs (programs, configurations), by BLAKE3 hash: a
    /// board fetches them from the cluster before it starts the service.
    pub blobs: Vec<[u8; 32]>,
    /// Its settings: a blob holding a TOML section of its kind's (see
    /// [`Kind::config_section`]), fetched like the blobs.
    pub config: Option<[u8; 32]>,
}

/// A decoded, valid manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub services: Vec<Service>,
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    #[error("the manifest is {len} bytes, above the {MANIFEST_LEN_MAX}-byte limit")]
    TooLong { len: usize },
    #[error("the manifest is not valid TOML for a manifest: {0}")]
    Syntax(String),
    #[error("the manifest names {count} services; at most {SERVICES_MAX} are allowed")]
    TooManyServices { count: usize },
    #[error(
        "service #{index}: the name {name:?} must be 1 to {NAME_LEN_MAX} bytes of a-z, 0-9 and '-'"
    )]
    BadName { index: usize, name: String },
    #[error("service #{index}: the name {name:?} is used twice; give each service its own")]
    DuplicateName { index: usize, name: String },
    #[error("service {name:?}: count {count} must be 1 to {COUNT_MAX}")]
    BadCount { name: String, count: u32 },
    #[error("the manifest asks for {count} instances in all; at most {INSTANCES_MAX} are allowed")]
    TooManyInstances { count: u64 },
    #[error("service {name:?}: pin {pin:?} is not a node id (fw1…; `fogwire id` prints a board's)")]
    BadPin { name: String, pin: String },
    #[error(
        "service {name:?}: a pinned service runs on one board, so its count must be 1, not {count}"
    )]
    PinnedCount { name: String, count: u32 },
    #[error(
        "service {name:?}: a ledger keeps its log on one board's disk, so it must be pinned \
         (pin = \"fw1…\", the board that holds the log) until ledgers are replicated"
    )]
    LedgerUnpinned { name: String },
    #[error(
        "service {name:?}: blob {blob:?} is not a BLAKE3 hash (64 hex digits, as `fogwire store add` prints)"
    )]
    BadBlob { name: String, blob: String },
    #[error("service {name:?} names {count} blobs; at most {BLOBS_MAX}")]
    TooManyBlobs { name: String, count: usize },
    #[error(
        "service {name:?}: config {blob:?} is not a BLAKE3 hash (64 hex digits, as `fogwire store add` prints)"
    )]
    BadConfig { name: String, blob: String },
    #[error("service {name:?}: a {kind} takes no config; remove the config line")]
    ConfigNotTaken { name: String, kind: &'static str },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Text {
    #[serde(default)]
    service: Vec<ServiceText>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceText {
    name: String,
    kind: Kind,
    #[serde(default = "one")]
    count: u32,
    #[serde(default)]
    cores: u32,
    #[serde(default)]
    memory_mib: u64,
    #[serde(default)]
    disk_mib: u64,
    #[serde(default)]
    pin: Option<String>,
    #[serde(default)]
    shares_board: bool,
    #[serde(default)]
    blobs: Vec<String>,
    #[serde(default)]
    config: Option<String>,
}

fn one() -> u32 {
    1
}

/// A BLAKE3 hash in hex, as `fogwire store add` prints it.
fn blob_hash(text: &str) -> Option<[u8; 32]> {
    let mut hash = [0u8; 32];
    (text.len() == 64 && hex::decode_to_slice(text, &mut hash).is_ok()).then_some(hash)
}

fn valid_name(name: &str) -> bool {
    (1..=NAME_LEN_MAX).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Manifest {
    /// Decodes and checks a manifest's text.
    pub fn from_toml(text: &str) -> Result<Manifest, ManifestError> {
        if text.len() > MANIFEST_LEN_MAX {
            return Err(ManifestError::TooLong { len: text.len() });
        }
        let parsed: Text =
            toml::from_str(text).map_err(|error| ManifestError::Syntax(error.to_string()))?;
        if parsed.service.len() > SERVICES_MAX {
            return Err(ManifestError::TooManyServices {
                count: parsed.service.len(),
            });
        }
        let mut names = BTreeSet::new();
        let mut instances = 0u64;
        let mut services = Vec::with_capacity(parsed.service.len());
        for (index, service) in parsed.service.into_iter().enumerate() {
            let index = index + 1;
            if !valid_name(&service.name) {
                return Err(ManifestError::BadName {
                    index,
                    name: service.name,
                });
            }
            if !names.insert(service.name.clone()) {
                return Err(ManifestError::DuplicateName {
                    index,
                    name: service.name,
                });
            }
            if !(1..=COUNT_MAX).contains(&service.count) {
                return Err(ManifestError::BadCount {
                    name: service.name,
                    count: service.count,
                });
            }
            instances += u64::from(service.count);
            let pinned = match service.pin {
                None => None,
                Some(pin) => match pin.parse::<NodeId>() {
                    Ok(id) => Some(id),
                    Err(_) => {
                        return Err(ManifestError::BadPin {
                            name: service.name,
                            pin,
                        });
                    }
                },
            };
            if pinned.is_some() && service.count != 1 {
                return Err(ManifestError::PinnedCount {
                    name: service.name,
                    count: service.count,
                });
            }
            if service.kind == Kind::Ledger && pinned.is_none() {
                return Err(ManifestError::LedgerUnpinned { name: service.name });
            }
            if service.blobs.len() > BLOBS_MAX {
                return Err(ManifestError::TooManyBlobs {
                    name: service.name,
                    count: service.blobs.len(),
                });
            }
            let mut blobs = Vec::with_capacity(service.blobs.len());
            for blob in &service.blobs {
                let Some(hash) = blob_hash(blob) else {
                    return Err(ManifestError::BadBlob {
                        name: service.name,
                        blob: blob.chars().take(80).collect(),
                    });
                };
                blobs.push(hash);
            }
            let config = match &service.config {
                None => None,
                Some(_) if service.kind.config_section().is_none() => {
                    return Err(ManifestError::ConfigNotTaken {
                        name: service.name,
                        kind: service.kind.as_str(),
                    });
                }
                Some(text) => match blob_hash(text) {
                    Some(hash) => Some(hash),
                    None => {
                        return Err(ManifestError::BadConfig {
                            name: service.name,
                            blob: text.chars().take(80).collect(),
                        });
                    }
                },
            };
            services.push(Service {
                blobs,
                config,
                kind: service.kind,
                spec: ServiceSpec {
                    name: service.name,
                    count: service.count,
                    needs: Resources {
                        cores: service.cores,
                        memory_mib: service.memory_mib,
                        disk_mib: service.disk_mib,
                    },
                    pinned,
                    shares_board: service.shares_board,
                },
            });
        }
        if instances > u64::from(INSTANCES_MAX) {
            return Err(ManifestError::TooManyInstances { count: instances });
        }
        Ok(Manifest { services })
    }

    /// What placement takes.
    pub fn specs(&self) -> Vec<ServiceSpec> {
        self.services
            .iter()
            .map(|service| service.spec.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &str = r#"
[[service]]
name = "relays"
kind = "relay"
count = 3
cores = 1
memory_mib = 256

[[service]]
name = "ledger"
kind = "ledger"
disk_mib = 1024
pin = "fw1syuhwr4g05t4744r23nvxnr7en9cmz53knhr0gja7c84hr7fkw2qax2t9q"

[[service]]
name = "proxy"
kind = "gateway"
blobs = ["af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"]
config = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
"#;

    #[test]
    fn a_manifest_decodes_with_defaults() {
        let manifest = Manifest::from_toml(EXAMPLE).unwrap();
        assert_eq!(manifest.services.len(), 3);
        assert_eq!(manifest.services[0].kind, Kind::Relay);
        assert_eq!(manifest.services[0].spec.count, 3);
        assert_eq!(manifest.services[0].spec.needs.memory_mib, 256);
        let ledger = &manifest.services[1].spec;
        assert_eq!((ledger.count, ledger.needs.disk_mib), (1, 1024));
        assert!(!ledger.shares_board && ledger.pinned.is_some());
        assert_eq!(manifest.services[2].blobs, [*blake3::hash(b"").as_bytes()]);
        assert_eq!(
            manifest.services[2].config,
            Some(*blake3::hash(b"").as_bytes())
        );
        assert_eq!(manifest.services[0].config, None);
        assert_eq!(manifest.specs().len(), 3);
    }

    #[test]
    fn bad_manifests_are_refused_with_what_to_fix() {
        let refused = |text: &str| Manifest::from_toml(text).unwrap_err().to_string();
        let syntax = refused("[[service]]\nname = \"a\"\nkind = \"miner\"\n");
        assert!(syntax.contains("line 3"), "{syntax}");
        assert!(syntax.contains("miner"), "{syntax}");
        assert!(
            refused("[[service]]\nname = \"a\"\nkind = \"relay\"\ncolour = 1\n").contains("colour")
        );
        assert!(refused("[[service]]\nname = \"Relay\"\nkind = \"relay\"\n").contains("a-z"));
        assert!(
            refused("[[service]]\nname = \"a\"\nkind = \"relay\"\n[[service]]\nname = \"a\"\nkind = \"hub\"\n")
                .contains("used twice")
        );
        assert!(
            refused("[[service]]\nname = \"a\"\nkind = \"relay\"\ncount = 0\n").contains("count 0")
        );
        assert!(
            refused("[[service]]\nname = \"a\"\nkind = \"relay\"\npin = \"nobody\"\n")
                .contains("fogwire id")
        );
        assert!(refused("[[service]]\nname = \"l\"\nkind = \"ledger\"\n").contains("pinned"));
        assert!(
            refused("[[service]]\nname = \"a\"\nkind = \"relay\"\nblobs = [\"beef\"]\n")
                .contains("BLAKE3")
        );
        assert!(
            refused("[[service]]\nname = \"a\"\nkind = \"exit\"\nconfig = \"beef\"\n")
                .contains("config \"beef\" is not a BLAKE3 hash")
        );
        let empty = blake3::hash(b"");
        assert!(
            refused(&format!(
                "[[service]]\nname = \"a\"\nkind = \"relay\"\nconfig = \"{empty}\"\n"
            ))
            .contains("a relay takes no config")
        );
        let pin = fogwire_identity::Keypair::from_seed(&[1; 32]).node_id();
        assert!(
            refused(&format!(
                "[[service]]\nname = \"a\"\nkind = \"exit\"\ncount = 2\npin = \"{pin}\"\n"
            ))
            .contains("must be 1")
        );
        let many: String = (0..5)
            .map(|i| format!("[[service]]\nname = \"s{i}\"\nkind = \"relay\"\ncount = 1000\n"))
            .collect();
        assert!(refused(&many).contains("5000 instances"));
        assert!(refused(&" ".repeat(MANIFEST_LEN_MAX + 1)).contains("limit"));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,400}") {
            let _ = Manifest::from_toml(&text);
        }
    }
}
