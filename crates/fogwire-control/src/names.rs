//! Names the operator gives nodes (`fogwire name alice fw1…`): taken
//! wherever a node id is (before ids and their prefixes), and shown by
//! the CLI in place of short ids. They are this node's own petnames,
//! never learnt from others: a name another node claims for itself could
//! be anyone's. Kept in `<data_dir>/names.toml` (`name = "fw1…"`),
//! written whole on each change (a temporary file renamed over it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use axum::http::StatusCode;
use fogwire_identity::NodeId;

use crate::server::Refusal;

/// The file, in the node's data directory.
pub const NAMES_FILE: &str = "names.toml";
/// Most names one node keeps.
pub const NAMES_MAX: usize = 4_096;
/// Longest name.
pub const NAME_LEN_MAX: usize = 63;

/// Why a text cannot be a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    #[error(
        "`{0}` cannot be a name: 1 to {NAME_LEN_MAX} of a-z, 0-9, '-', '_', '.', starting with a \
         letter or digit"
    )]
    Invalid(String),
    #[error("`{0}` cannot be a name: it would read as a node id (fw1…) or as this node (me)")]
    Reserved(String),
}

/// Why a names file cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NamesFileError {
    #[error("cannot read it: {0}")]
    Read(#[from] std::io::Error),
    #[error("not a names file (name = \"fw1…\" per line): {0}")]
    Malformed(String),
    #[error(transparent)]
    Name(#[from] NameError),
}

/// Why a text cannot be a name, if it cannot.
pub fn check_name(name: &str) -> Result<(), NameError> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
    let starts_well = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if name.is_empty() || name.len() > NAME_LEN_MAX || !valid_chars || !starts_well {
        return Err(NameError::Invalid(name.to_owned()));
    }
    // Ids and their short forms start with "fw1"; "me" is this node.
    if name.starts_with("fw1") || name == "me" {
        return Err(NameError::Reserved(name.to_owned()));
    }
    Ok(())
}

/// The names a node keeps.
#[derive(Debug, Default)]
pub(crate) struct Names {
    path: Option<PathBuf>,
    map: RwLock<BTreeMap<String, NodeId>>,
}

impl Names {
    /// The names in `data_dir`'s file (none without a data directory). A
    /// file that cannot be read is logged and taken as empty: names are a
    /// convenience, never a reason for the node not to start.
    pub(crate) fn load(data_dir: Option<&Path>) -> Self {
        let path = data_dir.map(|dir| dir.join(NAMES_FILE));
        let map = path
            .as_deref()
            .and_then(|path| match read(path) {
                Ok(map) => Some(map),
                Err(why) => {
                    tracing::warn!(
                        "{}: {why}; no names are known until it is fixed",
                        path.display()
                    );
                    None
                }
            })
            .unwrap_or_default();
        Self {
            path,
            map: RwLock::new(map),
        }
    }

    fn map(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, NodeId>> {
        self.map
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The node `name` names.
    pub(crate) fn get(&self, name: &str) -> Option<NodeId> {
        self.map().get(name.trim()).copied()
    }

    pub(crate) fn list(&self) -> Vec<(String, NodeId)> {
        self.map()
            .iter()
            .map(|(name, id)| (name.clone(), *id))
            .collect()
    }

    /// Gives `node` the name `name` (a node may have several names; a name
    /// names one node); the node it named before, if any.
    pub(crate) fn set(&self, name: &str, node: NodeId) -> Result<Option<NodeId>, Refusal> {
        check_name(name).map_err(|why| Refusal(StatusCode::BAD_REQUEST, why.to_string()))?;
        let mut map = self
            .map
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if map.len() >= NAMES_MAX && !map.contains_key(name) {
            return Err(Refusal(
                StatusCode::INSUFFICIENT_STORAGE,
                format!("this node keeps at most {NAMES_MAX} names: remove one first"),
            ));
        }
        let mut next = map.clone();
        let before = next.insert(name.to_owned(), node);
        self.save(&next)?;
        *map = next;
        Ok(before)
    }

    /// Forgets `name`; the node it named, if it named one.
    pub(crate) fn remove(&self, name: &str) -> Result<Option<NodeId>, Refusal> {
        let mut map = self
            .map
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = map.clone();
        let removed = next.remove(name.trim());
        if removed.is_some() {
            self.save(&next)?;
            *map = next;
        }
        Ok(removed)
    }

    fn save(&self, map: &BTreeMap<String, NodeId>) -> Result<(), Refusal> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let text = toml::to_string(map).map_err(|e| {
            Refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot write the names: {e}"),
            )
        })?;
        let temporary = path.with_extension("toml.tmp");
        let written =
            std::fs::write(&temporary, text).and_then(|()| std::fs::rename(&temporary, path));
        written.map_err(|e| {
            Refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot write {}: {e}", path.display()),
            )
        })
    }
}

pub(crate) async fn list(
    axum::extract::State(state): axum::extract::State<std::sync::Arc<crate::server::ApiState>>,
) -> axum::Json<Vec<fogwire_api::NodeName>> {
    axum::Json(
        state
            .names
            .list()
            .into_iter()
            .map(|(name, id)| fogwire_api::NodeName {
                name,
                node_id: id.to_string(),
            })
            .collect(),
    )
}

pub(crate) async fn set(
    axum::extract::State(state): axum::extract::State<std::sync::Arc<crate::server::ApiState>>,
    body: bytes::Bytes,
) -> Result<axum::Json<fogwire_api::NodeName>, Refusal> {
    let request: fogwire_api::NameRequest = serde_json::from_slice(&body).map_err(|e| {
        Refusal(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"name\": …, \"node\": \"<node id>\"}}: {e}"),
        )
    })?;
    let nodes = state.node.routing().nodes().await?;
    let node = crate::routes::resolve(&state.names, &nodes, &request.node)?;
    state.names.set(&request.name, node)?;
    Ok(axum::Json(fogwire_api::NodeName {
        name: request.name,
        node_id: node.to_string(),
    }))
}

pub(crate) async fn remove(
    axum::extract::State(state): axum::extract::State<std::sync::Arc<crate::server::ApiState>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<axum::Json<fogwire_api::NodeName>, Refusal> {
    match state.names.remove(&name)? {
        Some(id) => Ok(axum::Json(fogwire_api::NodeName {
            name,
            node_id: id.to_string(),
        })),
        None => Err(Refusal(
            StatusCode::NOT_FOUND,
            format!("no node is named `{name}`; `fogwire names` lists them"),
        )),
    }
}

/// The names in a names file: none if it does not exist.
pub fn read(path: &Path) -> Result<BTreeMap<String, NodeId>, NamesFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e.into()),
    }
}

/// The names in a names file's text.
pub fn parse(text: &str) -> Result<BTreeMap<String, NodeId>, NamesFileError> {
    let map: BTreeMap<String, NodeId> =
        toml::from_str(text).map_err(|e| NamesFileError::Malformed(e.to_string()))?;
    for name in map.keys() {
        check_name(name)?;
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_kept_and_read_back() {
        for bad in [
            "",
            "Alice",
            "-x",
            "fw1abc",
            "me",
            "a b",
            "ä",
            &"x".repeat(64),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["alice", "board-3", "n0", "eu.exit_1"] {
            check_name(good).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let names = Names::load(Some(dir.path()));
        let id = fogwire_identity::Keypair::from_seed(&[1; 32]).node_id();
        let other = fogwire_identity::Keypair::from_seed(&[2; 32]).node_id();
        assert_eq!(names.set("alice", id).unwrap(), None);
        assert_eq!(names.set("alice", other).unwrap(), Some(id));
        assert!(names.set("Alice", id).is_err());
        let again = Names::load(Some(dir.path()));
        assert_eq!(again.get("alice"), Some(other));
        assert_eq!(again.remove("alice").unwrap(), Some(other));
        assert_eq!(again.remove("alice").unwrap(), None);
        assert_eq!(Names::load(Some(dir.path())).list(), vec![]);
        // A broken file: no names, and the node goes on.
        std::fs::write(dir.path().join(NAMES_FILE), "alice = 3").unwrap();
        assert!(read(&dir.path().join(NAMES_FILE)).is_err());
        assert_eq!(Names::load(Some(dir.path())).list(), vec![]);
    }
}
