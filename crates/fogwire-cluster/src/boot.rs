//! The boot counter: how many times this board has started in a cluster.
//!
//! Membership orders news about a board by (boot, incarnation), so a
//! restarted board must come back with a higher boot than any before it.
//! A wall clock cannot promise that on boards without a real-time clock
//! (they start in 1970 until NTP answers), so the count is kept on disk,
//! written durably before the board announces itself.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Why the boot counter could not be read or advanced.
#[derive(Debug, thiserror::Error)]
#[error("boot counter {path}: {source}")]
pub struct BootError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Reads the count at `path`, adds one, writes it back (to a temporary
/// file, synced, then renamed over), and returns the new count. A missing
/// file counts as 0; a file that is not a number is an error rather than
/// a silent restart from 1.
pub fn advance(path: &Path) -> Result<u64, BootError> {
    let error = |source| BootError {
        path: path.to_owned(),
        source,
    };
    let previous = match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse::<u64>().map_err(|_| {
            error(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "`{}` is not a count; remove the file to start counting again",
                    text.trim().chars().take(40).collect::<String>()
                ),
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(error(e)),
    };
    let next = previous.saturating_add(1);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(error)?;
    }
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary).map_err(error)?;
    file.write_all(format!("{next}\n").as_bytes())
        .map_err(error)?;
    file.sync_all().map_err(error)?;
    std::fs::rename(&temporary, path).map_err(error)?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_start_counts_one_more_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster").join("boot");
        assert_eq!(advance(&path).unwrap(), 1);
        assert_eq!(advance(&path).unwrap(), 2);
        std::fs::write(&path, "twelve").unwrap();
        let error = advance(&path).unwrap_err().to_string();
        assert!(error.contains("not a count"), "{error}");
    }
}
