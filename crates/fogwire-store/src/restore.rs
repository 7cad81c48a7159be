//! Exports: a blob to a file, a directory tree to a directory — bounded
//! and stoppable.
//!
//! A directory graph is small but may name the same subdirectory or file
//! many times over: 160 KB of objects can describe a million files and
//! tens of GiB. So before anything is written, [`Store::tree_totals`]
//! counts what the restore would write — every file and directory each
//! time it appears — from the distinct nodes (each read once, and no more
//! of them than the limit allows), checks every file's claimed size
//! against its blob and every directory's names for repeats, and the
//! restore is refused if it is over its [`RestoreLimits`]. While it
//! writes, a `stop` check (its client left, the node is shutting down)
//! ends it between chunk groups.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::Hash;
use crate::bao;
use crate::object::EntryType;
use crate::store::{DirReport, Store, StoreError, random_name};

/// What one restore may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreLimits {
    /// Files and directories (the target not counted).
    pub entries_max: u64,
    /// Bytes of all files.
    pub bytes_max: u64,
}

impl Default for RestoreLimits {
    fn default() -> Self {
        Self {
            entries_max: 100_000,
            bytes_max: 16 << 30,
        }
    }
}

/// What restoring a tree writes, counting each file and directory every
/// time it appears.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeTotals {
    pub files: u64,
    /// Subdirectories (the root not counted).
    pub directories: u64,
    pub bytes: u64,
}

impl TreeTotals {
    fn entries(&self) -> u64 {
        self.files.saturating_add(self.directories)
    }

    fn add(&mut self, other: &TreeTotals) {
        self.files = self.files.saturating_add(other.files);
        self.directories = self.directories.saturating_add(other.directories);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

/// Deepest tree a restore follows.
pub const RESTORE_DEPTH_MAX: usize = 1024;

/// Never stop (for callers with nothing to stop them).
pub fn never() -> bool {
    false
}

/// Counting state of [`Store::tree_totals`].
struct Count<'a> {
    limits: &'a RestoreLimits,
    root: Hash,
    /// Totals of each distinct directory seen.
    seen: HashMap<Hash, TreeTotals>,
    /// Entries read from distinct directories: a lower bound of what the
    /// restore writes, so past the limit the count stops.
    read: u64,
}

impl Store {
    /// What restoring the tree at `hash` would write, refused as
    /// [`StoreError::TooLarge`] past `limits`. Every blob must be here;
    /// a file whose claimed size is not its blob's, a directory listing a
    /// name twice, or a tree deeper than [`RESTORE_DEPTH_MAX`] is a
    /// [`StoreError::BadDirectory`]. Reads each distinct directory once,
    /// and never more entries than `limits.entries_max`.
    pub fn tree_totals(
        &self,
        hash: &Hash,
        limits: &RestoreLimits,
    ) -> Result<TreeTotals, StoreError> {
        let mut count = Count {
            limits,
            root: *hash,
            seen: HashMap::new(),
            read: 0,
        };
        let totals = self.count_tree(hash, &mut count, 0)?;
        if totals.entries() > limits.entries_max || totals.bytes > limits.bytes_max {
            return Err(StoreError::TooLarge {
                hash: *hash,
                would: format!(
                    "{} files, {} directories and {} bytes",
                    totals.files, totals.directories, totals.bytes
                ),
                limits: *limits,
            });
        }
        Ok(totals)
    }

    fn count_tree(
        &self,
        hash: &Hash,
        count: &mut Count<'_>,
        depth: usize,
    ) -> Result<TreeTotals, StoreError> {
        if let Some(totals) = count.seen.get(hash) {
            return Ok(*totals);
        }
        if depth > RESTORE_DEPTH_MAX {
            return Err(StoreError::BadDirectory {
                hash: count.root,
                problem: format!("it is more than {RESTORE_DEPTH_MAX} directories deep"),
            });
        }
        let entries = self.directory(hash)?;
        count.read = count.read.saturating_add(entries.len() as u64);
        if count.read > count.limits.entries_max {
            return Err(StoreError::TooLarge {
                hash: count.root,
                would: format!(
                    "more than {} files and directories",
                    count.limits.entries_max
                ),
                limits: *count.limits,
            });
        }
        let bad = |problem: String| StoreError::BadDirectory {
            hash: *hash,
            problem,
        };
        let mut totals = TreeTotals::default();
        for (position, entry) in entries.iter().enumerate() {
            // Nodes are sorted by name; across index children the whole
            // list must be too, or a name could come twice.
            if position > 0 && entries[position - 1].name.as_bytes() >= entry.name.as_bytes() {
                return Err(bad(format!(
                    "`{}` is listed twice or out of order",
                    entry.name
                )));
            }
            match entry.kind {
                EntryType::File => {
                    let blob = self
                        .entry(&entry.hash)?
                        .ok_or(StoreError::NotFound(entry.hash))?;
                    if blob.size != entry.size {
                        return Err(bad(format!(
                            "`{}` claims {} bytes, but its blob {} has {}",
                            entry.name, entry.size, entry.hash, blob.size
                        )));
                    }
                    totals.add(&TreeTotals {
                        files: 1,
                        directories: 0,
                        bytes: blob.size,
                    });
                }
                EntryType::Directory => {
                    let below = self.count_tree(&entry.hash, count, depth + 1)?;
                    totals.add(&below);
                    totals.directories = totals.directories.saturating_add(1);
                }
            }
        }
        count.seen.insert(*hash, totals);
        Ok(totals)
    }

    /// Writes a whole blob to `path`, verified, atomically (a temporary
    /// file beside it, renamed when complete; recorded while it exists, so
    /// that a restart after a kill removes it).
    pub fn export(
        &self,
        hash: &Hash,
        path: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, StoreError> {
        self.export_stoppable(hash, path, &never, progress)
    }

    /// [`Store::export`] that ends, as [`StoreError::Stopped`] and with
    /// its temporary file removed, once `stop` says so (checked at every
    /// chunk group).
    pub fn export_stoppable(
        &self,
        hash: &Hash,
        path: &Path,
        stop: &dyn Fn() -> bool,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, StoreError> {
        let entry = self.entry(hash)?.ok_or(StoreError::NotFound(*hash))?;
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        let tmp_path = parent.join(format!(
            ".{}.fogwire-{}",
            path.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            random_name()
        ));
        self.journal_export(&tmp_path, false)?;
        let cleanup = ExportFile {
            store: self,
            path: tmp_path.clone(),
        };
        let file = File::create(&tmp_path).map_err(StoreError::io(&tmp_path))?;
        let mut writer = BufWriter::with_capacity(bao::READ_BYTES, &file);
        let mut done = 0u64;
        let mut stopped = false;
        let read = self.read_range(hash, 0, entry.size, &mut |bytes| {
            if stop() {
                stopped = true;
                return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped"));
            }
            writer.write_all(bytes)?;
            done += bytes.len() as u64;
            progress(done);
            Ok(())
        });
        if stopped {
            return Err(StoreError::Stopped(STOPPED));
        }
        read?;
        writer.flush().map_err(StoreError::io(&tmp_path))?;
        drop(writer);
        file.sync_all().map_err(StoreError::io(&tmp_path))?;
        fs::rename(&tmp_path, path).map_err(StoreError::io(path))?;
        drop(cleanup);
        Ok(entry.size)
    }

    /// Restores the directory whose root is `hash` into `target`, which
    /// must not exist or be empty: names, contents and executable bits,
    /// every file verified; within the default [`RestoreLimits`].
    pub fn export_dir(
        &self,
        hash: &Hash,
        target: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<DirReport, StoreError> {
        let limits = RestoreLimits::default();
        self.export_dir_bounded(hash, target, &limits, &never, &mut |done, _| progress(done))
    }

    /// [`Store::export_dir`] within `limits` (checked before anything is
    /// written), ending as [`StoreError::Stopped`] once `stop` says so:
    /// what was restored by then stays, the file being written does not.
    /// `progress` is told the file bytes written, and of how many (the
    /// count made before writing, so the tree is walked once for both).
    pub fn export_dir_bounded(
        &self,
        hash: &Hash,
        target: &Path,
        limits: &RestoreLimits,
        stop: &dyn Fn() -> bool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<DirReport, StoreError> {
        if self.object(hash)?.is_none() {
            return Err(StoreError::NotAnObject(*hash));
        }
        let total = self.tree_totals(hash, limits)?.bytes;
        let mut progress = |done| progress(done, total);
        if target.exists()
            && fs::read_dir(target)
                .map_err(StoreError::io(target))?
                .next()
                .is_some()
        {
            return Err(StoreError::TargetNotEmpty(target.to_owned()));
        }
        fs::create_dir_all(target).map_err(StoreError::io(target))?;
        let mut report = DirReport {
            root: Some(*hash),
            ..DirReport::default()
        };
        let mut done = 0u64;
        let mut restore = Restore {
            report: &mut report,
            done: &mut done,
            stop,
            progress: &mut progress,
        };
        self.restore_dir(hash, target, &mut restore, 0)?;
        report.bytes = done;
        Ok(report)
    }

    fn restore_dir(
        &self,
        hash: &Hash,
        target: &Path,
        restore: &mut Restore<'_>,
        depth: usize,
    ) -> Result<(), StoreError> {
        if depth > RESTORE_DEPTH_MAX {
            return Err(StoreError::NotAnObject(*hash));
        }
        for entry in self.directory(hash)? {
            if (restore.stop)() {
                return Err(StoreError::Stopped(STOPPED));
            }
            let path = target.join(&entry.name);
            match entry.kind {
                EntryType::Directory => {
                    fs::create_dir(&path).map_err(StoreError::io(&path))?;
                    restore.report.directories += 1;
                    self.restore_dir(&entry.hash, &path, restore, depth + 1)?;
                }
                EntryType::File => {
                    let base = *restore.done;
                    let progress = &mut *restore.progress;
                    self.export_stoppable(&entry.hash, &path, restore.stop, &mut |bytes| {
                        progress(base + bytes)
                    })?;
                    if entry.executable {
                        use std::os::unix::fs::PermissionsExt;
                        let mut permissions = fs::metadata(&path)
                            .map_err(StoreError::io(&path))?
                            .permissions();
                        permissions.set_mode(permissions.mode() | 0o111);
                        fs::set_permissions(&path, permissions).map_err(StoreError::io(&path))?;
                    }
                    *restore.done += entry.size;
                    restore.report.files += 1;
                }
            }
        }
        Ok(())
    }
}

const STOPPED: &str = "its client left, or the node is shutting down";

/// A restore under way.
struct Restore<'a> {
    report: &'a mut DirReport,
    done: &'a mut u64,
    stop: &'a dyn Fn() -> bool,
    progress: &'a mut dyn FnMut(u64),
}

/// An export's temporary file: removed, and its record forgotten, when
/// the export ends either way (renamed away on success, so nothing to
/// remove then).
struct ExportFile<'a> {
    store: &'a Store,
    path: PathBuf,
}

impl Drop for ExportFile<'_> {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        if let Err(error) = self.store.journal_export(&self.path, true) {
            tracing::warn!(%error, "cannot forget an export's temporary file; the next start removes it");
        }
    }
}
