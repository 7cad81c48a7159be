//! A board's cluster files in its data directory: `cluster.key` (only on
//! the board that made the cluster: the key the manifest is signed with,
//! PKCS#8 PEM, mode 0600), `cluster.join` (the join code `fogwire cluster
//! join` was given, mode 0600) and `cluster-boot` (the boot counter).

use std::path::{Path, PathBuf};

use fogwire_cluster_proto::JoinCode;
use fogwire_identity::{KeyFileError, Keypair, secret_file};

pub const KEY_FILE: &str = "cluster.key";
pub const JOIN_FILE: &str = "cluster.join";

/// Why a cluster file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilesError {
    #[error("cluster key {path}: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: KeyFileError,
    },
    #[error("join code file {path}: {source}")]
    Join {
        path: PathBuf,
        #[source]
        source: secret_file::SecretFileError,
    },
    #[error("join code file {path}: {detail}; remove it and run `fogwire cluster join` again")]
    BadJoin { path: PathBuf, detail: String },
    #[error("{path} already holds a cluster key; this board made a cluster before")]
    KeyExists { path: PathBuf },
    #[error("cannot make a cluster key: {0}")]
    Random(String),
}

/// What the data directory says about the cluster.
#[derive(Default)]
pub struct Stored {
    pub key: Option<Keypair>,
    pub join: Option<JoinCode>,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored")
            .field("key", &self.key.as_ref().map(Keypair::node_id))
            .field("join", &self.join)
            .finish()
    }
}

/// Reads the cluster files in `dir` (missing files: nothing).
pub fn load(dir: &Path) -> Result<Stored, FilesError> {
    let key_path = dir.join(KEY_FILE);
    let key = if key_path.exists() {
        Some(Keypair::load(&key_path).map_err(|source| FilesError::Key {
            path: key_path.clone(),
            source,
        })?)
    } else {
        None
    };
    let join_path = dir.join(JOIN_FILE);
    let join = if join_path.exists() {
        let bytes = secret_file::read(&join_path).map_err(|source| FilesError::Join {
            path: join_path.clone(),
            source,
        })?;
        let text = String::from_utf8_lossy(&bytes);
        Some(
            text.trim()
                .parse::<JoinCode>()
                .map_err(|error| FilesError::BadJoin {
                    path: join_path.clone(),
                    detail: error.to_string(),
                })?,
        )
    } else {
        // The owner's board joins by its key.
        key.as_ref().map(JoinCode::of)
    };
    Ok(Stored { key, join })
}

/// Makes a cluster key (saved in `dir` when given) and returns it.
pub fn create_key(dir: Option<&Path>) -> Result<Keypair, FilesError> {
    let key = Keypair::generate().map_err(|error| FilesError::Random(error.to_string()))?;
    if let Some(dir) = dir {
        let path = dir.join(KEY_FILE);
        // Never over an existing key: that would orphan its cluster.
        if path.exists() {
            return Err(FilesError::KeyExists { path });
        }
        key.save(&path)
            .map_err(|source| FilesError::Key { path, source })?;
    }
    Ok(key)
}

/// Keeps `code` in `dir`, so the board rejoins after a restart.
pub fn save_join(dir: &Path, code: &JoinCode) -> Result<(), FilesError> {
    let path = dir.join(JOIN_FILE);
    secret_file::write(&path, format!("{code}\n").as_bytes())
        .map_err(|source| FilesError::Join { path, source })
}
