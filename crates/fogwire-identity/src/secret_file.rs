//! Files that hold secrets: node keys and API tokens.
//!
//! They are written atomically (a temporary file with mode 0600 in the same
//! directory, synced, then renamed over the target, then the directory
//! synced), so a crash leaves either the old file or the new one, never half
//! of one. They are read only if neither group nor others have any access:
//! a secret others could read is no longer a secret, and the node refuses to
//! start rather than carry on with it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Access bits that must be clear on a secret file: any group or other access.
const FORBIDDEN_MODE_BITS: u32 = 0o077;

/// Why a secret file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretFileError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} has mode {mode:04o}, so other users can read it; a secret file must be \
         private to its owner: run `chmod 600 {path}`",
        path = path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SecretFileError + '_ {
    move |source| SecretFileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads a secret file after checking that only its owner can access it.
pub fn read(path: &Path) -> Result<Vec<u8>, SecretFileError> {
    let metadata = fs::metadata(path).map_err(io_error(path))?;
    if !metadata.is_file() {
        return Err(SecretFileError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & FORBIDDEN_MODE_BITS != 0 {
        return Err(SecretFileError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    fs::read(path).map_err(io_error(path))
}

/// Writes `contents` to `path` atomically with mode 0600, replacing any
/// existing file.
pub fn write(path: &Path, contents: &[u8]) -> Result<(), SecretFileError> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let file_name = path.file_name().ok_or_else(|| SecretFileError::NotAFile {
        path: path.to_owned(),
    })?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(file_name);
    temporary_name.push(format!(".tmp{}", std::process::id()));
    let temporary = directory.join(temporary_name);

    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(io_error(&temporary))?;
        file.write_all(contents).map_err(io_error(&temporary))?;
        file.sync_all().map_err(io_error(&temporary))?;
        fs::rename(&temporary, path).map_err(io_error(path))?;
        // Make the rename itself durable.
        File::open(directory)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error(directory))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_files_are_private_and_readable_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write(&path, b"hunter2").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read(&path).unwrap(), b"hunter2");
        // Overwriting keeps the mode and leaves no temporary file behind.
        write(&path, b"second").unwrap();
        assert_eq!(read(&path).unwrap(), b"second");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn files_others_can_read_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write(&path, b"x").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o610] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let error = read(&path).unwrap_err();
            assert!(matches!(error, SecretFileError::Permissions { mode: m, .. } if m == mode));
            assert!(error.to_string().contains("chmod 600"), "{error}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(read(&path).is_ok());
    }
}
