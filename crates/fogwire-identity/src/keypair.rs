use std::fmt;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use zeroize::Zeroizing;

use crate::NodeId;
use crate::record::{Domain, Signature, signing_input};
use crate::secret_file::{self, SecretFileError};

/// A node's Ed25519 key pair: the secret that makes it who it is.
///
/// On disk it is a PKCS#8 PEM file (`-----BEGIN PRIVATE KEY-----`), the
/// format `openssl pkey` reads, written with mode 0600.
pub struct Keypair {
    signing: SigningKey,
    node_id: NodeId,
}

impl Keypair {
    /// A fresh key pair from the operating system's random number generator.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut())?;
        Ok(Self::from_seed(&seed))
    }

    /// The key pair for a 32-byte Ed25519 seed. Deterministic: for tests and
    /// simulations only, never for a real node.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(seed);
        let node_id = NodeId::from_verifying_key(&signing.verifying_key());
        Self { signing, node_id }
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Signs `body` as a record of kind `domain`. A signature made for one
    /// domain never verifies under another.
    pub fn sign(&self, domain: Domain, body: &[u8]) -> Signature {
        use ed25519_dalek::Signer;
        Signature(self.signing.sign(&signing_input(domain, body)).to_bytes())
    }

    /// A 32-byte secret derived from this key for `context` (BLAKE3's key
    /// derivation over the seed): the same key always gives the same
    /// secret, and the secret tells nothing about the key. For secrets an
    /// owner must be able to recover from the key file alone (a cluster's
    /// join secret).
    pub fn derive_secret(&self, context: &str) -> [u8; 32] {
        let seed = Zeroizing::new(self.signing.to_bytes());
        blake3::derive_key(context, seed.as_ref())
    }

    /// Loads the key at `path`, or creates one there if no file exists.
    /// Returns the key and whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), KeyFileError> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => Ok((Self::load(path)?, false)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let keypair = Self::generate().map_err(|error| KeyFileError::Random {
                    detail: error.to_string(),
                })?;
                keypair.save(path)?;
                Ok((keypair, true))
            }
            Err(source) => Err(KeyFileError::File(SecretFileError::Io {
                path: path.to_owned(),
                source,
            })),
        }
    }

    /// Loads the key at `path`, refusing a file that others can read.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let bytes = Zeroizing::new(secret_file::read(path)?);
        let text = std::str::from_utf8(&bytes).map_err(|_| KeyFileError::Malformed {
            path: path.to_owned(),
            detail: "not UTF-8 text".into(),
        })?;
        let signing =
            SigningKey::from_pkcs8_pem(text).map_err(|error| KeyFileError::Malformed {
                path: path.to_owned(),
                detail: error.to_string(),
            })?;
        let node_id = NodeId::from_verifying_key(&signing.verifying_key());
        Ok(Self { signing, node_id })
    }

    /// Writes the key to `path` atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), KeyFileError> {
        let pem = self
            .signing
            .to_pkcs8_pem(Default::default())
            .map_err(|error| KeyFileError::Malformed {
                path: path.to_owned(),
                detail: error.to_string(),
            })?;
        secret_file::write(path, pem.as_bytes())?;
        Ok(())
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret half.
        f.debug_struct("Keypair")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// Why a node key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    #[error(transparent)]
    File(#[from] SecretFileError),
    #[error(
        "{}: not a fogwire node key ({detail}); move it aside and restart to create a new \
         identity, or restore the original key file",
        path.display()
    )]
    Malformed { path: PathBuf, detail: String },
    #[error("the operating system's random number generator failed: {detail}")]
    Random { detail: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_a_private_key_once_and_loads_it_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let (created, was_created) = Keypair::load_or_create(&path).unwrap();
        assert!(was_created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (loaded, was_created) = Keypair::load_or_create(&path).unwrap();
        assert!(!was_created);
        assert_eq!(created.node_id(), loaded.node_id());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn refuses_a_key_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        Keypair::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = Keypair::load_or_create(&path).unwrap_err();
        assert!(matches!(
            error,
            KeyFileError::File(SecretFileError::Permissions { mode: 0o644, .. })
        ));
    }

    #[test]
    fn reports_a_malformed_key_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        secret_file::write(&path, b"not a key").unwrap();
        let error = Keypair::load(&path).unwrap_err();
        assert!(matches!(error, KeyFileError::Malformed { .. }));
        assert!(error.to_string().contains("node.key"), "{error}");
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let keypair = Keypair::from_seed(&[42; 32]);
        let debug = format!("{keypair:?}");
        assert!(debug.contains("NodeId"));
        assert!(!debug.contains("42"));
    }
}
