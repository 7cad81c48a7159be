//! The files a node keeps in its data directory.
//!
//! ```text
//! <data_dir>/            mode 0700
//!   node.key             the node's Ed25519 key, PKCS#8 PEM, mode 0600
//!   api.token            the control API token, mode 0600
//!   api.addr             where the running node's control API listens;
//!                        written at start, removed at clean shutdown
//!   routes.redb          the network graph, this node's advert sequence
//!                        number and relay receipts (fogwire-route)
//!   store/               the content-addressed store (fogwire-store)
//!   replication.redb     bytes served to and fetched from each peer
//!                        (fogwire-replicate)
//! ```

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fogwire_control::ApiToken;
use fogwire_identity::secret_file::{self, SecretFileError};

/// A node's data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

/// Why a file of the data directory could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Secret(#[from] SecretFileError),
    #[error("{}: not a valid API token; delete it and restart the node to make a new one", path.display())]
    BadToken { path: PathBuf },
    #[error(
        "the node does not seem to be running: {} is missing (a running node writes it)",
        path.display()
    )]
    NotRunning { path: PathBuf },
    #[error("{}: not an address; is the node running? Restart it to rewrite it", path.display())]
    BadAddr { path: PathBuf },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_owned(),
        source,
    }
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn key_path(&self) -> PathBuf {
        self.root.join("node.key")
    }

    pub fn token_path(&self) -> PathBuf {
        self.root.join("api.token")
    }

    pub fn store_path(&self) -> PathBuf {
        self.root.join("store")
    }

    /// Where the compute roles keep their records (worker.redb, hub.redb).
    pub fn compute_path(&self) -> PathBuf {
        self.root.join("compute")
    }

    /// The ledger's log, if this node runs the ledger.
    pub fn ledger_path(&self) -> PathBuf {
        self.root.join("ledger.redb")
    }

    pub fn routes_path(&self) -> PathBuf {
        self.root.join("routes.redb")
    }

    pub fn replication_path(&self) -> PathBuf {
        self.root.join("replication.redb")
    }

    pub fn api_addr_path(&self) -> PathBuf {
        self.root.join("api.addr")
    }

    /// Creates the directory (mode 0700) if it does not exist.
    pub fn create(&self) -> Result<(), DataDirError> {
        if self.root.is_dir() {
            return Ok(());
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(io_error(&self.root))?;
        // `mode` is filtered by the umask; make sure it is private.
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
            .map_err(io_error(&self.root))
    }

    /// The API token, made on first use.
    pub fn load_or_create_token(&self) -> Result<ApiToken, DataDirError> {
        let path = self.token_path();
        match fs::symlink_metadata(&path) {
            Ok(_) => self.read_token(),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let token = ApiToken::generate()
                    .map_err(|error| io_error(&path)(io::Error::other(error.to_string())))?;
                secret_file::write(&path, token.as_str().as_bytes())?;
                Ok(token)
            }
            Err(error) => Err(io_error(&path)(error)),
        }
    }

    /// The API token, which must exist and be private.
    pub fn read_token(&self) -> Result<ApiToken, DataDirError> {
        let path = self.token_path();
        let bytes = secret_file::read(&path)?;
        let text =
            String::from_utf8(bytes).map_err(|_| DataDirError::BadToken { path: path.clone() })?;
        ApiToken::parse(text.trim()).ok_or(DataDirError::BadToken { path })
    }

    /// Records where the control API listens, for the CLI to find.
    pub fn write_api_addr(&self, addr: SocketAddr) -> Result<(), DataDirError> {
        let path = self.api_addr_path();
        // The address is not secret, but the write must be atomic all the
        // same: the CLI may read it at any moment.
        secret_file::write(&path, format!("{addr}\n").as_bytes())?;
        Ok(())
    }

    pub fn read_api_addr(&self) -> Result<SocketAddr, DataDirError> {
        let path = self.api_addr_path();
        let text = fs::read_to_string(&path).map_err(|error| {
            if error.kind() == io::ErrorKind::NotFound {
                DataDirError::NotRunning { path: path.clone() }
            } else {
                io_error(&path)(error)
            }
        })?;
        text.trim()
            .parse()
            .map_err(|_| DataDirError::BadAddr { path })
    }

    pub fn remove_api_addr(&self) {
        let _ = fs::remove_file(self.api_addr_path());
    }
}
