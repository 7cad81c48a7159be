//! The peers an operator linked by hand and the ones they cut off.
//!
//! `fogwire connect` promises to keep a peer linked: the book writes each
//! such peer to a file (one `<node id>@<host>:<port>` per line) so that a
//! restart links it again. `fogwire disconnect` removes it and blocks the
//! peer for [`BLOCK_FOR`], so that the peer's own redialing does not undo
//! the operator's choice at once; a `connect` lifts the block.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fogwire_identity::NodeId;

use crate::PeerAddr;

/// How long a disconnected peer's links are refused.
pub const BLOCK_FOR: Duration = Duration::from_secs(10 * 60);
/// Peers the book keeps; more are not written (and said so).
pub const KEPT_MAX: usize = 4096;

/// A peer book that could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BookError {
    #[error("cannot read the peers linked with `fogwire connect` from {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path}:{line}: `{text}` is not <node id>@<host>:<port> ({detail}); fix or delete the line"
    )]
    Line {
        path: PathBuf,
        line: usize,
        text: String,
        detail: String,
    },
}

#[derive(Debug, Default)]
struct Entries {
    kept: BTreeMap<NodeId, PeerAddr>,
    blocked: HashMap<NodeId, Instant>,
}

/// The book: kept peers (in a file, if it has one) and blocked ones.
#[derive(Debug, Default)]
pub struct PeerBook {
    path: Option<PathBuf>,
    entries: Mutex<Entries>,
}

impl PeerBook {
    /// Opens the book kept in `path` (none: kept in memory only); returns
    /// it with the peers to link again.
    pub fn open(path: Option<PathBuf>) -> Result<(PeerBook, Vec<PeerAddr>), BookError> {
        let mut entries = Entries::default();
        if let Some(path) = &path {
            let text = match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(error) if error.kind() == io::ErrorKind::NotFound => String::new(),
                Err(source) => {
                    return Err(BookError::Read {
                        path: path.clone(),
                        source,
                    });
                }
            };
            for (index, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let addr: PeerAddr =
                    line.parse()
                        .map_err(|error: crate::ParsePeerAddrError| BookError::Line {
                            path: path.clone(),
                            line: index + 1,
                            text: line.to_owned(),
                            detail: error.to_string(),
                        })?;
                if entries.kept.len() < KEPT_MAX {
                    entries.kept.insert(addr.node_id, addr);
                }
            }
        }
        let kept = entries.kept.values().cloned().collect();
        Ok((
            PeerBook {
                path,
                entries: Mutex::new(entries),
            },
            kept,
        ))
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps `addr` (linked again after a restart) and lifts any block.
    /// A book that cannot be written is logged: the link stands all the
    /// same, only the next start will not know it.
    pub fn keep(&self, addr: &PeerAddr) {
        let mut entries = self.lock();
        entries.blocked.remove(&addr.node_id);
        if entries.kept.get(&addr.node_id) == Some(addr) {
            return;
        }
        if entries.kept.len() >= KEPT_MAX && !entries.kept.contains_key(&addr.node_id) {
            tracing::warn!(peer = %addr, "linked, but not kept for the next start: the book keeps at most {KEPT_MAX} peers");
            return;
        }
        entries.kept.insert(addr.node_id, addr.clone());
        self.write(&entries);
    }

    /// Whether the operator keeps `peer` linked.
    pub fn is_kept(&self, peer: &NodeId) -> bool {
        self.lock().kept.contains_key(peer)
    }

    /// Forgets `peer` and refuses its links for [`BLOCK_FOR`] from `now`.
    pub fn forget(&self, peer: &NodeId, now: Instant) {
        let mut entries = self.lock();
        entries.blocked.retain(|_, until| *until > now);
        entries.blocked.insert(*peer, now + BLOCK_FOR);
        if entries.kept.remove(peer).is_some() {
            self.write(&entries);
        }
    }

    /// Lifts the refusal of `peer`'s links (the operator links to it
    /// again), without keeping it yet.
    pub fn unblock(&self, peer: &NodeId) {
        self.lock().blocked.remove(peer);
    }

    /// Why `peer`'s links are refused, if the operator cut it off less than
    /// [`BLOCK_FOR`] before `now`.
    pub fn blocked(&self, peer: &NodeId, now: Instant) -> Option<&'static str> {
        self.is_blocked(peer, now)
            .then_some("disconnected by the operator (links refused for 10 min)")
    }

    /// Whether the operator cut `peer` off less than [`BLOCK_FOR`] ago.
    pub fn is_blocked(&self, peer: &NodeId, now: Instant) -> bool {
        self.lock()
            .blocked
            .get(peer)
            .is_some_and(|until| *until > now)
    }

    /// Writes the kept peers, atomically (a temporary file renamed); a
    /// failure is logged.
    fn write(&self, entries: &Entries) {
        let Some(path) = &self.path else {
            return;
        };
        let written = (|| {
            let tmp = temporary(path);
            let mut file = std::fs::File::create(&tmp)?;
            writeln!(
                file,
                "# Peers linked with `fogwire connect`, linked again at start; `fogwire disconnect` removes one."
            )?;
            for addr in entries.kept.values() {
                writeln!(file, "{addr}")?;
            }
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(error) = written {
            tracing::warn!(path = %path.display(), %error, "cannot write the peers to link at the next start");
        }
    }
}

fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(seed: u8, port: u16) -> PeerAddr {
        let id = fogwire_identity::Keypair::from_seed(&[seed; 32]).node_id();
        format!("{id}@127.0.0.1:{port}").parse().unwrap()
    }

    #[test]
    fn kept_peers_survive_a_reopen_and_forgotten_ones_are_blocked_for_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers");
        let (book, kept) = PeerBook::open(Some(path.clone())).unwrap();
        assert!(kept.is_empty());
        book.keep(&addr(1, 7100));
        book.keep(&addr(2, 7200));
        book.keep(&addr(2, 7201));
        let now = fogwire_testkit::time::epoch();
        book.forget(&addr(1, 7100).node_id, now);
        assert!(book.is_blocked(&addr(1, 1).node_id, now + BLOCK_FOR / 2));
        assert!(!book.is_blocked(&addr(1, 1).node_id, now + BLOCK_FOR));
        assert!(!book.is_blocked(&addr(2, 1).node_id, now));

        let (_, kept) = PeerBook::open(Some(path.clone())).unwrap();
        assert_eq!(kept, vec![addr(2, 7201)]);

        // Connecting again lifts the block.
        book.keep(&addr(1, 7100));
        assert!(!book.is_blocked(&addr(1, 1).node_id, now));
    }

    #[test]
    fn a_bad_line_names_the_file_and_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers");
        std::fs::write(&path, format!("# comment\n{}\nnot a peer\n", addr(1, 1))).unwrap();
        let error = PeerBook::open(Some(path)).unwrap_err().to_string();
        assert!(error.contains("peers:3: `not a peer`"), "{error}");
    }
}
