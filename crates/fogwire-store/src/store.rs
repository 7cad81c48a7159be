//! The blob store of one node: redb for metadata, tags and small blobs;
//! files for large blobs and their outboards.
//!
//! ```text
//! <root>/store.redb            metadata, tags, blobs of at most 16 KiB
//! <root>/blobs/ab/<hash>.data  a large blob's bytes
//! <root>/blobs/ab/<hash>.obao  its post-order outboard (see `bao`)
//! <root>/tmp/                  imports in progress; emptied at open
//! <root>/partial/              downloads in progress (see `partial`)
//! ```
//!
//! Crash safety: an import writes its files under `tmp/`, syncs them,
//! renames them into `blobs/`, syncs the directory, and only then commits
//! the blob's entry (redb commits are durable). Garbage collection commits
//! the removal of entries first and deletes files after. So a crash at
//! any moment leaves at worst files no entry names, which `open` deletes;
//! every committed entry has its complete files. Bytes damaged on disk
//! later are caught on read by the outboard and reported, never served.
//!
//! Pins are tags (named references). A tag can only name a blob that is
//! there, checked in the same transaction that writes it; an import can
//! set its tag in the transaction that commits the blob. Garbage
//! collection never removes a tagged blob, nor one that is being written
//! or read (a protection taken before the entry exists and held until the
//! caller is done), so no race between adding, tagging and collecting can
//! lose data.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bao_tree::io::outboard::PostOrderOutboard;
use bao_tree::{ChunkNum, ChunkRanges};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::Hash;
use crate::bao::{self, CHUNK_GROUP_BYTES, VerifyError};
use crate::feed::{ContentKind, FeedId, FeedRoot};
use crate::object::{self, DirEntry, EntryType, Node};
pub(crate) use fogwire_env::unix_ms as now_ms;

/// Blobs up to this size live inside the database: a blob of one chunk
/// group has no outboard, and a file per tiny blob would cost more than
/// the blob.
pub const INLINE_MAX: u64 = CHUNK_GROUP_BYTES as u64;

/// Hash → blob entry (see [`Entry`] for the layout).
const BLOBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blobs");
/// Hash → bytes, for inline blobs.
const INLINE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("inline");
/// Tag name → hash.
const TAGS: TableDefinition<&str, &[u8]> = TableDefinition::new("tags");
/// Hash → path of the file a blob added by reference is read from.
const EXTERNAL: TableDefinition<&[u8], &[u8]> = TableDefinition::new("external");
/// Feed key → the latest root held (its wire form).
const FEEDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("feeds");
/// Feed key → 1, for the feeds this node follows.
const FOLLOWING: TableDefinition<&[u8], u8> = TableDefinition::new("following");
/// Temporary file of an export in progress (its path's bytes) → 1. An
/// export writes beside its target, anywhere on disk; a process killed in
/// the middle leaves the file there, and only this record finds it again.
const EXPORTS: TableDefinition<&[u8], u8> = TableDefinition::new("exports");

const ENTRY_VERSION: u8 = 1;
const ENTRY_LEN: usize = 1 + 8 + 1 + 8;
/// Longest tag name.
pub const TAG_LEN_MAX: usize = 255;

/// Where a blob's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Inline,
    File,
    /// In the file it was added from, by reference: the store keeps only
    /// its outboard, and reports it if the file changes or goes.
    External,
}

/// What the store knows of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub size: u64,
    pub location: Location,
    /// Last read or written, Unix ms: the cache evicts the oldest first.
    pub last_used_ms: u64,
}

impl Entry {
    /// `version u8 | size u64 | location u8 | last used ms u64`, big-endian.
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut out = [0u8; ENTRY_LEN];
        out[0] = ENTRY_VERSION;
        out[1..9].copy_from_slice(&self.size.to_be_bytes());
        out[9] = match self.location {
            Location::Inline => 0,
            Location::File => 1,
            Location::External => 2,
        };
        out[10..].copy_from_slice(&self.last_used_ms.to_be_bytes());
        out
    }

    /// The record [`Entry::encode`] writes, or `None` for anything else
    /// (a damaged or foreign database).
    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        if bytes.len() != ENTRY_LEN || bytes[0] != ENTRY_VERSION {
            return None;
        }
        Some(Entry {
            size: u64::from_be_bytes(bytes[1..9].try_into().ok()?),
            location: match bytes[9] {
                0 => Location::Inline,
                1 => Location::File,
                2 => Location::External,
                _ => return None,
            },
            last_used_ms: u64::from_be_bytes(bytes[10..].try_into().ok()?),
        })
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("store database {}: {detail}", path.display())]
    Database { path: PathBuf, detail: String },
    #[error("no blob {0} in this store")]
    NotFound(Hash),
    #[error("blob {0} is already held")]
    AlreadyHeld(Hash),
    #[error("blob {0} is being downloaded already")]
    Busy(Hash),
    #[error("blob {0} is not complete")]
    Incomplete(Hash),
    #[error("blob {hash}: {source}")]
    Corrupt {
        hash: Hash,
        #[source]
        source: VerifyError,
    },
    #[error("tag names are 1 to {TAG_LEN_MAX} bytes, not {len}")]
    BadTag { len: usize },
    #[error("no tag `{0}`")]
    NoTag(String),
    #[error("{path} changed while it was being added (expected {expected} bytes)")]
    Changed { path: PathBuf, expected: u64 },
    #[error("range {start}..{end} is outside the blob's {size} bytes")]
    BadRange { start: u64, end: u64, size: u64 },
    #[error("blob {0} is not a directory")]
    NotAnObject(Hash),
    #[error(transparent)]
    Feed(#[from] crate::feed::FeedError),
    #[error("{}: the name is not one a directory entry may have (UTF-8, 1 to 255 bytes, no `/`)", .0.display())]
    BadName(PathBuf),
    #[error("{} exists and is not empty: restore into a new or empty directory", .0.display())]
    TargetNotEmpty(PathBuf),
    #[error("directory {hash} is not a tree that can be restored: {problem}")]
    BadDirectory { hash: Hash, problem: String },
    #[error(
        "restoring {hash} would write {would}, over the limits of {} files and directories and {} bytes; nothing was written (raise the limits to restore it)",
        limits.entries_max,
        limits.bytes_max
    )]
    TooLarge {
        hash: Hash,
        would: String,
        limits: crate::restore::RestoreLimits,
    },
    #[error("stopped before the export was done ({0})")]
    Stopped(&'static str),
    #[error(
        "blob {hash} was added by reference from {}, which {problem}: add the file again",
        path.display()
    )]
    ExternalChanged {
        hash: Hash,
        path: PathBuf,
        problem: String,
    },
}

impl StoreError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Most entries one directory may list (through its index nodes).
pub const DIRECTORY_ENTRIES_MAX: usize = 1 << 20;

/// Settings of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Bytes of unpinned blobs kept as a cache; garbage collection evicts
    /// the least recently used beyond it.
    pub cache_bytes_max: u64,
    /// Wait for a blob's bytes to reach the disk before an add completes.
    /// Off, they are synced in the background: a killed process loses
    /// nothing (the page cache outlives it), and after a power loss a blob
    /// whose bytes did not make it is caught by verification on read. On,
    /// an add also waits for the disk, which for large files is most of
    /// its time.
    pub sync_on_add: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cache_bytes_max: 8 * 1024 * 1024 * 1024,
            sync_on_add: false,
        }
    }
}

/// Sizes and counts of a store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    pub blobs: u64,
    pub bytes: u64,
    pub pinned_blobs: u64,
    pub pinned_bytes: u64,
    pub tags: u64,
    pub cache_bytes_max: u64,
}

/// What a garbage collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    pub removed_blobs: u64,
    pub removed_bytes: u64,
    /// Unpinned blobs kept as cache.
    pub kept_blobs: u64,
    pub kept_bytes: u64,
}

/// What adding or restoring a directory did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirReport {
    /// The directory's root hash.
    pub root: Option<Hash>,
    pub files: u64,
    /// Subdirectories (the root not counted).
    pub directories: u64,
    /// File bytes.
    pub bytes: u64,
    /// Symbolic links and special files left out.
    pub skipped: Vec<PathBuf>,
}

/// Keeps a blob from garbage collection while it is held.
#[derive(Debug)]
pub struct Protection {
    hash: Hash,
    protected: Arc<Mutex<HashMap<Hash, usize>>>,
}

impl Drop for Protection {
    fn drop(&mut self) {
        let mut protected = lock(&self.protected);
        if let Some(count) = protected.get_mut(&self.hash) {
            *count -= 1;
            if *count == 0 {
                protected.remove(&self.hash);
            }
        }
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn random_name() -> String {
    let mut bytes = [0u8; 16];
    let _ = getrandom::fill(&mut bytes);
    hex::encode(bytes)
}

/// Syncs a directory, so that the renames in it are durable.
pub(crate) fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// A node's blob store. Blocking: call it from a blocking thread.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    db_path: PathBuf,
    db: Database,
    config: Config,
    protected: Arc<Mutex<HashMap<Hash, usize>>>,
    pub(crate) live: crate::partial::Live,
    /// The last "last used" stamp given out: stamps never repeat, so the
    /// cache's least-recently-used order is the order of use even within
    /// one millisecond.
    last_stamp: std::sync::atomic::AtomicU64,
    /// Counts commits that set or removed a tag, for those who follow
    /// what is pinned ([`Store::tags_generation`]).
    tags_generation: std::sync::atomic::AtomicU64,
}

impl Store {
    /// Opens (or creates) the store at `root`, deleting what an
    /// interrupted import or collection left behind, and dropping entries
    /// whose files are gone.
    pub fn open(root: &Path, config: Config) -> Result<Store, StoreError> {
        for dir in [root.to_owned(), root.join("blobs"), root.join("tmp")] {
            fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
        }
        let db_path = root.join("store.redb");
        let db = Database::create(&db_path).map_err(|e| StoreError::Database {
            path: db_path.clone(),
            detail: format!(
                "{e} (if the file is damaged, move it away; blobs are then added again or \
                 fetched from peers)"
            ),
        })?;
        let store = Store {
            root: root.to_owned(),
            db_path,
            db,
            config,
            protected: Arc::default(),
            live: Arc::default(),
            last_stamp: std::sync::atomic::AtomicU64::new(0),
            tags_generation: std::sync::atomic::AtomicU64::new(0),
        };
        store.init_tables()?;
        store.recover()?;
        store.recover_partials()?;
        Ok(store)
    }

    pub(crate) fn db_error(&self, error: impl std::fmt::Display) -> StoreError {
        StoreError::Database {
            path: self.db_path.clone(),
            detail: error.to_string(),
        }
    }

    fn init_tables(&self) -> Result<(), StoreError> {
        let write = self.db.begin_write().map_err(|e| self.db_error(e))?;
        write.open_table(BLOBS).map_err(|e| self.db_error(e))?;
        write.open_table(INLINE).map_err(|e| self.db_error(e))?;
        write.open_table(TAGS).map_err(|e| self.db_error(e))?;
        write.open_table(EXTERNAL).map_err(|e| self.db_error(e))?;
        write.open_table(FEEDS).map_err(|e| self.db_error(e))?;
        write.open_table(FOLLOWING).map_err(|e| self.db_error(e))?;
        write.open_table(EXPORTS).map_err(|e| self.db_error(e))?;
        write
            .open_table(crate::partial::PARTIAL)
            .map_err(|e| self.db_error(e))?;
        write.commit().map_err(|e| self.db_error(e))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn blob_dir(&self, hash: &Hash) -> PathBuf {
        self.root.join("blobs").join(&hash.to_string()[..2])
    }

    pub(crate) fn data_path(&self, hash: &Hash) -> PathBuf {
        self.blob_dir(hash).join(format!("{hash}.data"))
    }

    pub(crate) fn outboard_path(&self, hash: &Hash) -> PathBuf {
        self.blob_dir(hash).join(format!("{hash}.obao"))
    }

    /// Keeps `hash` from garbage collection until the guard is dropped.
    pub fn protect(&self, hash: Hash) -> Protection {
        *lock(&self.protected).entry(hash).or_insert(0) += 1;
        Protection {
            hash,
            protected: self.protected.clone(),
        }
    }

    /// Cleans up after a crash: empties `tmp/`, deletes blob files no entry
    /// names, and drops entries whose files are missing or short.
    fn recover(&self) -> Result<(), StoreError> {
        let tmp = self.root.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(StoreError::io(&tmp))?.flatten() {
            let _ = fs::remove_file(entry.path());
        }
        self.remove_interrupted_exports()?;
        let entries = self.entries()?;
        let mut lost = Vec::new();
        for (hash, entry) in &entries {
            if entry.location == Location::Inline {
                continue;
            }
            // A file added by reference may be on a disk not mounted yet:
            // reads report it; only the outboard is the store's.
            let data_ok = entry.location == Location::External
                || fs::metadata(self.data_path(hash)).is_ok_and(|m| m.len() == entry.size);
            let outboard_len = bao::tree(entry.size).outboard_size();
            let outboard_ok =
                fs::metadata(self.outboard_path(hash)).is_ok_and(|m| m.len() == outboard_len);
            if !(data_ok && outboard_ok) {
                tracing::warn!(
                    blob = %hash,
                    "blob files missing or truncated: dropping it from the store (add or fetch it again)"
                );
                lost.push(*hash);
            }
        }
        if !lost.is_empty() {
            let write = self.db.begin_write().map_err(|e| self.db_error(e))?;
            {
                let mut blobs = write.open_table(BLOBS).map_err(|e| self.db_error(e))?;
                for hash in &lost {
                    blobs
                        .remove(hash.as_bytes().as_slice())
                        .map_err(|e| self.db_error(e))?;
                }
            }
            write.commit().map_err(|e| self.db_error(e))?;
        }
        // Files no entry names: left by a crash between rename and commit,
        // or between a collection's commit and its deletions.
        let known: std::collections::HashSet<Hash> = entries
            .iter()
            .filter(|(hash, _)| !lost.contains(hash))
            .map(|(hash, _)| *hash)
            .collect();
        let blobs_dir = self.root.join("blobs");
        for shard in fs::read_dir(&blobs_dir)
            .map_err(StoreError::io(&blobs_dir))?
            .flatten()
        {
            let Ok(files) = fs::read_dir(shard.path()) else {
                continue;
            };
            for file in files.flatten() {
                let name = file.file_name();
                let stem = name.to_string_lossy();
                let hash = stem.split('.').next().and_then(|h| h.parse::<Hash>().ok());
                if hash.is_none_or(|hash| !known.contains(&hash)) {
                    let _ = fs::remove_file(file.path());
                }
            }
        }
        Ok(())
    }

    /// Every blob with its entry.
    pub fn entries(&self) -> Result<Vec<(Hash, Entry)>, StoreError> {
        let read = self.db.begin_read().map_err(|e| self.db_error(e))?;
        let table = read.open_table(BLOBS).map_err(|e| self.db_error(e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| self.db_error(e))? {
            let (key, value) = row.map_err(|e| self.db_error(e))?;
            if let (Some(hash), Some(entry)) =
                (Hash::from_slice(key.value()), Entry::decode(value.value()))
            {
                out.push((hash, entry));
            }
        }
        Ok(out)
    }

    pub fn entry(&self, hash: &Hash) -> Result<Option<Entry>, StoreError> {
        let read = self.db.begin_read().map_err(|e| self.db_error(e))?;
        let table = read.open_table(BLOBS).map_err(|e| self.db_error(e))?;
        Ok(table
            .get(hash.as_bytes().as_slice())
            .map_err(|e| self.db_error(e))?
            .and_then(|value| Entry::decode(value.value())))
    }

    /// Adds many blobs held in memory (a directory's small files fetched
    /// from a peer, say) with one commit for all of them: each is named
    /// by its hash, stored inline or as files like any other, and either
    /// all are committed or none.
    pub fn import_batch(&self, blobs: &[Vec<u8>]) -> Result<Vec<Hash>, StoreError> {
        self.import_many(blobs, true)
    }

    /// Like [`Store::import_batch`], but the commit is not waited onto the
    /// disk: a crash before the next durable commit may lose these blobs
    /// (the store stays consistent). For what can be made again, such as
    /// a task's output, where a sync per blob would cost more than the
    /// work.
    pub fn import_batch_unsynced(&self, blobs: &[Vec<u8>]) -> Result<Vec<Hash>, StoreError> {
        self.import_many(blobs, false)
    }

    fn import_many(&self, blobs: &[Vec<u8>], durable: bool) -> Result<Vec<Hash>, StoreError> {
        let mut hashes = Vec::with_capacity(blobs.len());
        let mut guards = Vec::with_capacity(blobs.len());
        let mut entries: Vec<(Hash, u64, Option<&[u8]>)> = Vec::with_capacity(blobs.len());
        let mut cleanup = TempFiles(Vec::new());
        let mut dirs = std::collections::BTreeSet::new();
        let mut synced_later = Vec::new();
        for data in blobs {
            let object = data.len() <= object::NODE_LEN_MAX && object::looks_like_object(data);
            if data.len() as u64 <= INLINE_MAX || object {
                let hash = Hash::of(data);
                guards.push(self.protect(hash));
                entries.push((hash, data.len() as u64, Some(data)));
                hashes.push(hash);
                continue;
            }
            let (tmp_data, tmp_outboard) = self.temp_paths();
            cleanup.0.push(tmp_data.clone());
            cleanup.0.push(tmp_outboard.clone());
            let data_file = File::create(&tmp_data).map_err(StoreError::io(&tmp_data))?;
            let outboard_file =
                File::create(&tmp_outboard).map_err(StoreError::io(&tmp_outboard))?;
            (&data_file)
                .write_all(data)
                .map_err(StoreError::io(&tmp_data))?;
            let hash = bao::outboard_streaming(
                &data[..],
                data.len() as u64,
                BufWriter::with_capacity(64 * 1024, &outboard_file),
                |_| Ok(()),
            )
            .map_err(StoreError::io(&tmp_outboard))?;
            if durable {
                outboard_file
                    .sync_all()
                    .map_err(StoreError::io(&tmp_outboard))?;
            }
            if durable && self.config.sync_on_add {
                data_file.sync_all().map_err(StoreError::io(&tmp_data))?;
            } else if durable {
                synced_later.push(data_file);
            }
            guards.push(self.protect(hash));
            if self.entry(&hash)?.is_none() {
                let dir = self.blob_dir(&hash);
                fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
                let (data_path, outboard_path) = (self.data_path(&hash), self.outboard_path(&hash));
                fs::rename(&tmp_outboard, &outboard_path)
                    .map_err(StoreError::io(&outboard_path))?;
                fs::rename(&tmp_data, &data_path).map_err(StoreError::io(&data_path))?;
                dirs.insert(dir);
            }
            entries.push((hash, data.len() as u64, None));
            hashes.push(hash);
        }
        if durable {
            for dir in &dirs {
                sync_dir(dir).map_err(StoreError::io(dir))?;
            }
        }
        let mut write = self.db.begin_write().map_err(|e| self.db_error(e))?;
        if !durable {
            write
                .set_durability(redb::Durability::None)
                .map_err(|e| self.db_error(e))?;
        }
        for (hash, size, data) in &entries {
            self.insert_blob(&write, *hash, *size, *data)?;
        }
        write.commit().map_err(|e| self.db_error(e))?;
        drop(cleanup);
        drop(guards);
        if !synced_later.is_empty() {
            std::thread::spawn(move || {
                for file in synced_later {
                    let _ = file.sync_data();
                }
            });
        }
        Ok(hashes)
    }

    /// Adds bytes held in memory.
    pub fn import_bytes(&self, data: &[u8], tag: Option<&str>) -> Result<Hash, StoreError> {
        // Object nodes stay inline whatever their size (at most a few
        // hundred KiB), so collection can follow them inside its
        // transaction.
        let object = data.len() <= object::NODE_LEN_MAX && object::looks_like_object(data);
        if data.len() as u64 <= INLINE_MAX || object {
            let hash = Hash::of(data);
            let _guard = self.protect(hash);
            self.commit_blob(hash, data.len() as u64, Some(data), tag)?;
            return Ok(hash);
        }
        self.import_reader(data, data.len() as u64, tag, &mut |_| {}, None)
    }

    /// Adds the file at `path`, reading it once; `progress` is told the
    /// bytes done. Memory stays at one 1 MiB buffer whatever the size.
    pub fn import_file(
        &self,
        path: &Path,
        tag: Option<&str>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Hash, StoreError> {
        let file = File::open(path).map_err(StoreError::io(path))?;
        let size = file.metadata().map_err(StoreError::io(path))?.len();
        if size <= INLINE_MAX {
            let mut data = Vec::with_capacity(size as usize);
            file.take(INLINE_MAX + 1)
                .read_to_end(&mut data)
                .map_err(StoreError::io(path))?;
            if data.len() as u64 != size {
                return Err(StoreError::Changed {
                    path: path.to_owned(),
                    expected: size,
                });
            }
            progress(size);
            return self.import_bytes(&data, tag);
        }
        self.import_copy(file, path, size, tag, progress)
    }

    /// Adds the file at `path` by reference: the store hashes it (on two
    /// threads when large) and keeps only its outboard; reads come from
    /// the file itself, verified as always, and report it if it changed.
    /// No copy: fast, and no second copy on disk, as long as the file
    /// stays as it is.
    pub fn import_reference(
        &self,
        path: &Path,
        tag: Option<&str>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Hash, StoreError> {
        let path = path.canonicalize().map_err(StoreError::io(path))?;
        let file = File::open(&path).map_err(StoreError::io(&path))?;
        let size = file.metadata().map_err(StoreError::io(&path))?.len();
        if size <= INLINE_MAX {
            // Too small to be worth a reference.
            return self.import_file(&path, tag, progress);
        }
        if let Some(tag) = tag {
            check_tag(tag)?;
        }
        let (_, tmp_outboard) = self.temp_paths();
        let cleanup = TempFiles(vec![tmp_outboard.clone()]);
        let outboard_file = File::create(&tmp_outboard).map_err(StoreError::io(&tmp_outboard))?;
        let hashed = std::sync::atomic::AtomicU64::new(0);
        let hash = std::thread::scope(|scope| {
            let worker = scope.spawn(|| bao::outboard_file(&file, size, &outboard_file, &hashed));
            while !worker.is_finished() {
                progress(hashed.load(std::sync::atomic::Ordering::Relaxed));
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            worker
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("hashing thread failed")))
        })
        .map_err(StoreError::io(&path))?;
        progress(size);
        if file.metadata().map_err(StoreError::io(&path))?.len() != size {
            return Err(StoreError::Changed {
                path: path.clone(),
                expected: size,
            });
        }
        outboard_file
            .sync_all()
            .map_err(StoreError::io(&tmp_outboard))?;
        let _guard = self.protect(hash);
        if self.entry(&hash)?.is_some() {
            // Already held (perhaps as a copy): keep what is there.
            if let Some(tag) = tag {
                self.set_tag(tag, &hash)?;
            }
            return Ok(hash);
        }
        let dir = self.blob_dir(&hash);
        fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
        let outboard_path = self.outboard_path(&hash);
        fs::rename(&tmp_outboard, &outboard_path).map_err(StoreError::io(&outboard_path))?;
        sync_dir(&dir).map_err(StoreError::io(&dir))?;
        drop(cleanup);
        let write = self.db.begin_write().map_err(|e| self.db_error(e))?;
        {
            let entry = Entry {
                size,
                location: Location::External,
                last_used_ms: self.use_stamp(),
            };
            let mut blobs = write.open_table(BLOBS).map_err(|e| self.db_error(e))?;
            blobs
                .insert(hash.as_bytes().as_slice(), entry.encode().as_slice())
                .map_err(|e| self.db_error(e))?;
            let mut external = write.open_table(EXTERNAL).map_err(|e| self.db_error(e))?;
            external
                .insert(hash.as_bytes().as_slice(), path.as_os_str().as_bytes())
                .map_err(|e| self.db_error(e))?;
            if let Some(tag) = tag {
                let mut tags = write.open_table(TAGS).map_err(|e| self.db_error(e))?;
                tags.insert(tag, hash.as_bytes().as_slice())
                    .map_err(|e| self.db_error(e))?;
            }
        }
        write.commit().map_err(|e| self.db_error(e))?;
        if tag.is_some() {
            self.tags_changed();
        }
        Ok(hash)
    }

    /// Where the bytes of a blob kept in a file are: the store's own
    /// file, or the one it was added by reference from.
    pub(crate) fn file_of(&self, hash: &Hash, location: Location) -> Result<PathBuf, StoreError> {
        match location {
            Location::External => self.external_path(hash)?.ok_or(StoreError::NotFound(*hash)),
            _ => Ok(self.data_path(hash)),
        }
    }

    /// The file a blob added by reference is read from.
    pub fn external_path(&self, hash: &Hash) -> Result<Option<PathBuf>, StoreError> {
        let read = self.db.begin_read().map_err(|e| self.db_error(e))?;
        let table = read.open_table(EXTERNAL).map_err(|e| self.db_error(e))?;
        Ok(table
            .get(hash.as_bytes().as_slice())
            .map_err(|e| self.db_error(e))?
            .map(|value| PathBuf::from(std::ffi::OsStr::from_bytes(value.value()))))
    }

    /// Adds a large file: one thread copies it into the store inside the
    /// kernel (`copy_file_range`), while this one hashes the copy right
    /// behind it, so the store names exactly the bytes it holds, even if
    /// the source changes meanwhile.
    fn import_copy(
        &self,
        source: File,
        path: &Path,
        size: u64,
        tag: Option<&str>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Hash, StoreError> {
        if let Some(tag) = tag {
            check_tag(tag)?;
        }
        let (tmp_data, tmp_outboard) = self.temp_paths();
        let cleanup = TempFiles(vec![tmp_data.clone(), tmp_outboard.clone()]);
        let copy = File::create(&tmp_data).map_err(StoreError::io(&tmp_data))?;
        let outboard_file = File::create(&tmp_outboard).map_err(StoreError::io(&tmp_outboard))?;
        let copied = CopyProgress::default();
        let hashed = std::thread::scope(|scope| {
            let copier = scope.spawn(|| {
                let result = copy_in_steps(&source, &copy, size, &copied);
                copied.finish(result.as_ref().err().map(io::Error::kind));
                result
            });
            let follower = Follow {
                file: File::open(&tmp_data)?,
                position: 0,
                copied: &copied,
            };
            let mut done = 0u64;
            let hashed = bao::outboard_streaming(
                follower,
                size,
                BufWriter::with_capacity(64 * 1024, &outboard_file),
                |block| {
                    done += block.len() as u64;
                    progress(done);
                    Ok(())
                },
            );
            let copy_result = copier
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("copy thread failed")));
            copy_result.and(hashed)
        });
        let hash = hashed.map_err(|error| {
            if error.kind() == io::ErrorKind::UnexpectedEof {
                // The file got shorter while it was being copied.
                StoreError::Changed {
                    path: path.to_owned(),
                    expected: size,
                }
            } else {
                StoreError::Io {
                    path: path.to_owned(),
                    source: error,
                }
            }
        })?;
        self.finish_import(
            hash,
            size,
            tag,
            copy,
            outboard_file,
            &tmp_data,
            &tmp_outboard,
        )?;
        drop(cleanup);
        Ok(hash)
    }

    fn temp_paths(&self) -> (PathBuf, PathBuf) {
        let tmp = self.root.join("tmp");
        let name = random_name();
        (
            tmp.join(format!("{name}.data")),
            tmp.join(format!("{name}.obao")),
        )
    }

    /// Moves a complete import's files into place and commits its entry.
    #[allow(clippy::too_many_arguments)]
    fn finish_import(
        &self,
        hash: Hash,
        size: u64,
        tag: Option<&str>,
        data_file: File,
        outboard_file: File,
        tmp_data: &Path,
        tmp_outboard: &Path,
    ) -> Result<(), StoreError> {
        outboard_file
            .sync_all()
            .map_err(StoreError::io(tmp_outboard))?;
        if self.config.sync_on_add {
            data_file.sync_all().map_err(StoreError::io(tmp_data))?;
        }
        let _guard = self.protect(hash);
        if self.entry(&hash)?.is_none() {
            let dir = self.blob_dir(&hash);
            fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
            let (data_path, outboard_path) = (self.data_path(&hash), self.outboard_path(&hash));
            fs::rename(tmp_outboard, &outboard_path).map_err(StoreError::io(&outboard_path))?;
            fs::rename(tmp_data, &data_path).map_err(StoreError::io(&data_path))?;
            sync_dir(&dir).map_err(StoreError::io(&dir))?;
        }
        self.commit_blob(hash, size, None, tag)?;
        if !self.config.sync_on_add {
            // Reach the disk eventually, off the add's path.
            std::thread::spawn(move || {
                let _ = data_file.sync_data();
            });
        }
        Ok(())
    }

    fn import_reader(
        &self,
        reader: impl Read,
        size: u64,
        tag: Option<&str>,
        progress: &mut dyn FnMut(u64),
        source: Option<&Path>,
    ) -> Result<Hash, StoreError> {
        if let Some(tag) = tag {
            check_tag(tag)?;
        }
        let (tmp_data, tmp_outboard) = self.temp_paths();
        let cleanup = TempFiles(vec![tmp_data.clone(), tmp_outboard.clone()]);
        let data_file = File::create(&tmp_data).map_err(StoreError::io(&tmp_data))?;
        let outboard_file = File::create(&tmp_outboard).map_err(StoreError::io(&tmp_outboard))?;
        let mut data_writer = BufWriter::with_capacity(bao::READ_BYTES, &data_file);
        let mut done = 0u64;
        let hash = bao::outboard_streaming(
            reader,
            size,
            BufWriter::with_capacity(64 * 1024, &outboard_file),
            |block| {
                data_writer.write_all(block)?;
                done += block.len() as u64;
                progress(done);
                Ok(())
            },
        )
        .map_err(|error| {
            let path = source.unwrap_or(&tmp_data).to_owned();
            if error.kind() == io::ErrorKind::UnexpectedEof {
                // The file got shorter while it was being read.
                StoreError::Changed {
                    path,
                    expected: size,
                }
            } else {
                StoreError::Io {
                    path,
                    source: error,
                }
            }
        })?;
        data_writer.flush().map_err(StoreError::io(&tmp_data))?;
        drop(data_writer);
        self.finish_import(
            hash,
            size,
            tag,
            data_file,
            outboard_file,
            &tmp_data,
            &tmp_outboard,
        )?;
        drop(cleanup);
        Ok(hash)
    }

    /// Records a blob (with its bytes, if inline) and its tag in one
    /// transaction.
    fn commit_blob(
        &self,
        hash: Hash,
        size: u64,
        inline: Option<&[u8]>,
        tag: Option<&str>,
    ) -> Result<(), StoreError> {
        self.commit_blob_in(hash, size, inline, tag, |_| Ok(()))
    }

    /// Commits a blob's entry (its files in place) and its tag, with
    /// `also` done in the same transaction.
    pub(crate) fn commit_blob_with(
        &self,
        hash: Hash,
        size: u64,
        tag: Option<&str>,
        also: impl FnOnce(&redb::WriteTransaction) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.commit_blob_in(hash, size, None, tag, also)
    }

    /// Records a blob (its bytes too, when inline) in `write`.
    fn insert_blob(
        &self,
        write: &redb::WriteTransaction,
        hash: Hash,
        size: u64,
        inline: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let entry = Entry {
            size,
            location: if inline.is_some() {
                Location::Inline
            } else {
                Location::File
            },
            last_used_ms: self.use_stamp(),
        };
        let mut blobs = write.open_table(BLOBS).map_err(|e| self.db_error(e))?;
        blobs
            .insert(hash.as_bytes().as_slice(), entry.encode().as_slice())
            .map_err(|e| self.db_error(e))?;
        if let Some(data) = inline {
            let mut table = write.open_table(INLINE).map_err(|e| self.db_error(e))?;
            table
                .insert(hash.as_bytes().as_slice(), data)
                .map_err(|e| self.db_error(e))?;
        }
        Ok(())
    }

    fn commit_blob_in(
        &self,
        hash: Hash,
        size: u64,
        inline: Option<&[u8]>,
        tag: Option<&str>,
        also: impl FnOnce(&redb::WriteTransaction) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if let Some(tag) = tag {
            check_tag(tag)?;
        }
        let write = self.db.begin_write().map_err(|e| self.db_error(e))?;
        also(&write)?;
        self.insert_blob(&write, hash, size, inline)?;
        if let Some(tag) = tag {
            let mut tags = write.open_table(TAGS).map_err(|e| self.db_error(e))?;
            tags.insert(tag, hash.as_bytes().as_slice())
                .map_err(|e| self.db_error(e))?;
        }
        write.commit().map_err(|e| self.db_error(e))?;
        if tag.is_some() {
            self.tags_changed();
        }
        Ok(())
    }

    /// Reads bytes `start..end` of a blob, verified chunk group by chunk
    /// group, handing them to `out` in order.
    pub fn read_range(
        &self,
        hash: &Hash,
        start: u64,
        end: u64,
        out: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<(), StoreError> {
        let _guard = self.protect(*hash);
        let entry = self.entry(hash)?.ok_or(StoreError::NotFound(*hash))?;
        if start > end || end > entry.size {
            return Err(StoreError::BadRange {
                start,
                end,
                size: entry.size,
            });
        }
        let corrupt = |source| StoreError::Corrupt {
            hash: *hash,
            source,
        };
        match entry.location {
            Location::Inline => {
                let read = self.db.begin_read().map_err(|e| self.db_error(e))?;
                let table = read.open_table(INLINE).map_err(|e| self.db_error(e))?;
                let value = table
                    .get(hash.as_bytes().as_slice())
                    .map_err(|e| self.db_error(e))?
                    .ok_or(StoreError::NotFound(*hash))?;
                let data = value.value();
                if Hash::of(data) != *hash {
                    return Err(corrupt(VerifyError::Corrupt { offset: 0 }));
                }
                out(&data[start as usize..end as usize]).map_err(|e| self.db_error(e))?;
            }
            Location::File | Location::External => {
                let data_path = self.file_of(hash, entry.location)?;
                let outboard_path = self.outboard_path(hash);
                let data = File::open(&data_path).map_err(|error| match entry.location {
                    Location::External => StoreError::ExternalChanged {
                        hash: *hash,
                        path: data_path.clone(),
                        problem: format!("cannot be opened ({error})"),
                    },
                    _ => StoreError::Io {
                        path: data_path.clone(),
                        source: error,
                    },
                })?;
                if entry.location == Location::External {
                    let len = data.metadata().map_err(StoreError::io(&data_path))?.len();
                    if len != entry.size {
                        return Err(StoreError::ExternalChanged {
                            hash: *hash,
                            path: data_path,
                            problem: format!("is now {len} bytes, not {}", entry.size),
                        });
                    }
                }
                let outboard = PostOrderOutboard {
                    root: (*hash).into(),
                    tree: bao::tree(entry.size),
                    data: File::open(&outboard_path).map_err(StoreError::io(&outboard_path))?,
                };
                let chunk = |byte: u64| ChunkNum(byte / 1024);
                let last_chunk = ChunkNum(end.div_ceil(1024));
                let ranges = ChunkRanges::from(chunk(start)..last_chunk);
                let mut output_failed = false;
                bao::read_verified(&data, &outboard, &ranges, |offset, group| {
                    let from = start.max(offset);
                    let to = end.min(offset + group.len() as u64);
                    if from >= to {
                        return Ok(());
                    }
                    out(&group[(from - offset) as usize..(to - offset) as usize])
                        .inspect_err(|_| output_failed = true)
                })
                .map_err(|error| match error {
                    VerifyError::Io(source) if output_failed => StoreError::Io {
                        path: PathBuf::from("(output)"),
                        source,
                    },
                    VerifyError::Io(source) => StoreError::Io {
                        path: data_path.clone(),
                        source,
                    },
                    error if entry.location == Location::External => StoreError::ExternalChanged {
                        hash: *hash,
                        path: data_path.clone(),
                        problem: format!("changed ({error})"),
                    },
                    error => corrupt(error),
                })?;
            }
        }
        self.touch(hash);
        Ok(())
    }

    /// A "last used" stamp for now: the wall clock in ms, or one past the
    /// previous stamp if that is later.
    fn use_stamp(&self) -> u64 {
        use std::sync::atomic::Ordering;
        let now = now_ms();
        let previous = self
            .last_stamp
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(now);
        now.max(previous + 1)
    }

    /// Marks a blob used now (best effort: a failure only ages it).
    pub(crate) fn touch(&self, hash: &Hash) {
        let Ok(write) = self.db.begin_write() else {
            return;
        };
        if let Ok(mut blobs) = write.open_table(BLOBS) {
            let current = blobs
                .get(hash.as_bytes().as_slice())
                .ok()
                .flatten()
                .and_then(|value| Entry::decode(value.value()));
            if let Some(mut entry) = current {
                entry.last_used_ms = self.use_stamp();
                let _ = blobs.insert(hash.as_bytes().as_slice(), entry.encode().as_slice());
            }
        }
        let _ = write.commit();
    }

    /// Records (or with `done`, forgets) an export's temporary file.
    pub(crate) fn journal_export(&self, tmp_path: &Path, done: bool) -> Result<(), StoreError> {
        let key = tmp_path.as_os_str().as_bytes();
        let mut write = self.db.begin_write().map_err(|e| self.db_error(e))?;
        if done {
            // Only the record must survive a crash: a lost removal costs a
            // remove_file of a path already gone at the next start.
            write
                .set_durability(redb::Durability::None)
                .map_err(|e| self.db_error(e))?;
        }
        {
            let mut exports = write.open_table(EXPORTS).map_err(|e| self.db_error(e))?;
            if done {
                exports.remove(key).map_err(|e| self.db_error(e))?;
            } else {
                exports.insert(key, 1).map_err(|e| self.db_error(e))?;
            }
        }
        write.commit().map_err(|e| self.db_error(e))
    }

    /// Removes the temporary files of exports a killed process left.
    fn remove_interrupted_exports(&self) -> Result<(), StoreError> {
        let read = self.db.begin_read().map_err(|e| self.db_error(e))?;
        let exports = read.open_table(EXPORTS).map_err(|e| self.db_error(e))?;
        let mut left: Vec<PathBuf> = Vec::new();
        for row in exports.iter().map_err(|e| self.db_error(e))? {
            let (key, _) = row.map_err(|e| self.db_error(e))?;
            left.push(PathBuf::from(std::ffi::OsStr::from_bytes(key.value())));
        }
        drop(exports);
        drop(read);
        for path in left {
            match fs::remove_file(&path) {
                Ok(()) => tracing::info!(
                    path = %path.display(),
                    "removed the temporary file of an export that was interrupted"
                ),
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => tracing::warn!(
                    path = %path.display(),
                    %error,
                    "cannot remove the temporary file of an interrupted export; remove it by hand"
                ),
            }
            self.journal_export(&path, true)?;
        }
        Ok(())
    }

    /// Checks a whole blob against its hash.
    pub fn verify(&self, hash: &Hash) -> Result<(), StoreError> {
        let entry = self.entry(hash)?.ok_or(StoreError::NotFound(*hash))?;
        self.read_range(hash, 0, entry.size, &mut |_| Ok(()))
    }

    /// Names `hash` with `tag` (replacing what the tag named). Fails if the
    /// blob is not here, checked in the same transaction.
    pub fn set_tag(&self, tag: &str, hash: &Hash) -> Result<Option<Hash>, StoreError> {
        check_tag(tag)?;
        let write = self.db.begin_write().map_err(|e| self.db_error(e))?;
        let previous;
        {
            let blobs = write.open_table(BLOBS).map_err(|e| self.db_error(e))?;
            if blobs
                .get(hash.as_bytes().as_slice())
                .map_err(|e| self.db_error(e))?
                .is_none()
            {
                return Err(StoreError::NotFound(*hash));
            }
            let mut tags = write.open_table(TAGS).map_err(|e| self.db_error(e))?;
            previous = tags
                .insert(tag, hash.as_bytes().as_slice())
                .map_err(|e| self.db_error(e))?
                .and_then(|old| Hash::from_slice(old.value()));
        }
        write.commit().map_err(|e| self.db_error(e))?;
        self.tags_changed();
        Ok(previous)
    }

    /// Removes a tag; the blob it named becomes cache.
    pub fn remove_tag(&self, tag: &str) -> Result<Hash, StoreError> {
        let write = self.db.begin_write().map_err(|e| self.db_error(e))?;
        let removed;
        {
            let mut tags = write.open_table(TAGS).map_err(|e| self.db_error(e))?;
            removed = tags
                .remove(tag)
                .map_err(|e| self.db_error(e))?
                .and_then(|old| Hash::from_slice(old.value()));
        }
        write.commit().map_err(|e| self.db_error(e))?;
        self.tags_changed();
        removed.ok_or_else(|| StoreError::NoTag(tag.to_owned()))
    }

    fn tags_changed(&self) {
        self.tags_generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// A number that grows whenever a tag is set or removed: compare it
    /// with the last one seen to learn cheaply whether the pins changed.
    pub fn tags_generation(&self) -> u64 {
        self.tags_generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Every tag and the blob it names.
    pub fn tags(&self) -> Result<Vec<(String, Hash)>, StoreError> {
        let read = self.db.begin_read().map_err(|e| self.db_error(e))?;
        let table = read.open_table(TAGS).map_err(|e| self.db_error(e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| self.db_error(e))? {
            let (key, value) = row.map_err(|e| self.db_error(e))?;
            if let Some(hash) = Hash::from_slice(value.value()) {
                out.push((key.value().to_owned(), hash));
            }
        }
        Ok(out)
    }

    pub fn stat(&self) -> Result<Stat, StoreError> {
        let entries = self.entries()?;
        let tags = self.tags()?;
        let pinned: std::collections::HashSet<Hash> = tags.iter().map(|(_, h)| *h).collect();
        let mut stat = Stat {
            tags: tags.len() as u64,
            cache_bytes_max: self.config.cache_bytes_max,
            ..Stat::default()
        };
        for (hash, entry) in entries {
            stat.blobs += 1;
            stat.bytes += entry.size;
            if pinned.contains(&hash) {
                stat.pinned_blobs += 1;
                stat.pinned_bytes += entry.size;
            }
        }
        Ok(stat)
    }

    /// The latest root held for `feed`.
    pub fn feed_root(&self, feed: &FeedId) -> Result<Option<FeedRoot>, StoreError> {
        let read = self.db.begin_read().map_err(|e| self.db_error(e))?;
        let table = read.open_table(FEEDS).map_err(|e| self.db_error(e))?;
        let bytes = table
            .get(feed.as_bytes().as_slice())
            .map_err(|e| self.db_error(e))?
            .map(|value| value.value().to_vec());
        Ok(bytes.and_then(|bytes| FeedRoot::decode(&bytes).ok()))
    }

    /// The wire form of the latest root held for `feed`.
    pub fn feed_root_bytes(&self, feed: &FeedId) -> Result<Option<Vec<u8>>, StoreError> {
        let read = self.db.begin_read().map_err(|e| self.db_error(e))?;
        let table = read.open_table(FEEDS).map_err(|e| self.db_error(e))?;
        Ok(table
            .get(feed.as_bytes().as_slice())
            .map_err(|e| self.db_error(e))?
            .map(|value| value.value().to_vec()))
    }

    /// Takes in a root (from the feed's owner or a peer) if it is valid and
    /// newer than the one held; the check and the write are one
    /// transaction, so two roots arriving at once cannot both win.
    pub fn accept_feed_root(&self, bytes: &[u8], now_ms: u64) -> Result<FeedRoot, StoreError> {
        let root = FeedRoot::decode(bytes)?;
        let write = self.db.begin_write().map_err(|e| self.db_error(e))?;
        {
            let mut feeds = write.open_table(FEEDS).map_err(|e| self.db_error(e))?;
            let held = feeds
                .get(root.feed.as_bytes().as_slice())
                .map_err(|e| self.db_error(e))?
                .and_then(|value| FeedRoot::decode(value.value()).ok());
            root.check_newer(held.as_ref(), now_ms)?;
            feeds
                .insert(root.feed.as_bytes().as_slice(), bytes)
                .map_err(|e| self.db_error(e))?;
        }
        write.commit().map_err(|e| self.db_error(e))?;
        Ok(root)
    }

    /// Publishes a new root of the feed whose key is `key`, pointing at
    /// content already in the store; pins it under `feed/<feed id>`.
    pub fn publish(
        &self,
        key: &fogwire_identity::Keypair,
        content: Hash,
        kind: ContentKind,
        now_ms: u64,
    ) -> Result<(FeedRoot, Vec<u8>), StoreError> {
        let feed = FeedId::from_key(key.node_id());
        let size = match kind {
            ContentKind::Blob => {
                self.entry(&content)?
                    .ok_or(StoreError::NotFound(content))?
                    .size
            }
            ContentKind::Directory => self.directory(&content)?.iter().map(|e| e.size).sum(),
        };
        let _guard = self.protect(content);
        self.set_tag(&feed_tag(&feed), &content)?;
        let root = match self.feed_root(&feed)? {
            Some(held) => held.next(content, kind, size, now_ms),
            None => FeedRoot::first(feed, content, kind, size, now_ms),
        };
        let bytes = root.sign(key);
        self.accept_feed_root(&bytes, now_ms)?;
        Ok((root, bytes))
    }

    /// Follows (or stops following) a feed.
    pub fn set_following(&self, feed: &FeedId, follow: bool) -> Result<(), StoreError> {
        let write = self.db.begin_write().map_err(|e| self.db_error(e))?;
        {
            let mut table = write.open_table(FOLLOWING).map_err(|e| self.db_error(e))?;
            if follow {
                table
                    .insert(feed.as_bytes().as_slice(), 1)
                    .map_err(|e| self.db_error(e))?;
            } else {
                table
                    .remove(feed.as_bytes().as_slice())
                    .map_err(|e| self.db_error(e))?;
            }
        }
        write.commit().map_err(|e| self.db_error(e))
    }

    /// The feeds this node follows.
    pub fn following(&self) -> Result<Vec<FeedId>, StoreError> {
        let read = self.db.begin_read().map_err(|e| self.db_error(e))?;
        let table = read.open_table(FOLLOWING).map_err(|e| self.db_error(e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| self.db_error(e))? {
            let (key, _) = row.map_err(|e| self.db_error(e))?;
            if let Ok(key) = fogwire_identity::NodeId::from_slice(key.value()) {
                out.push(FeedId::from_key(key));
            }
        }
        Ok(out)
    }

    /// Every feed with a root held.
    pub fn feeds(&self) -> Result<Vec<FeedRoot>, StoreError> {
        let read = self.db.begin_read().map_err(|e| self.db_error(e))?;
        let table = read.open_table(FEEDS).map_err(|e| self.db_error(e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| self.db_error(e))? {
            let (_, value) = row.map_err(|e| self.db_error(e))?;
            if let Ok(root) = FeedRoot::decode(value.value()) {
                out.push(root);
            }
        }
        Ok(out)
    }

    /// Reads a whole blob into memory (for object nodes), verified.
    pub fn read_to_vec(&self, hash: &Hash, limit: u64) -> Result<Vec<u8>, StoreError> {
        let entry = self.entry(hash)?.ok_or(StoreError::NotFound(*hash))?;
        if entry.size > limit {
            return Err(StoreError::NotAnObject(*hash));
        }
        let mut out = Vec::with_capacity(entry.size as usize);
        self.read_range(hash, 0, entry.size, &mut |bytes| {
            out.extend_from_slice(bytes);
            Ok(())
        })?;
        Ok(out)
    }

    /// The object node a blob holds, if it is one.
    pub fn object(&self, hash: &Hash) -> Result<Option<Node>, StoreError> {
        let entry = self.entry(hash)?.ok_or(StoreError::NotFound(*hash))?;
        if entry.size > object::NODE_LEN_MAX as u64 {
            return Ok(None);
        }
        let bytes = self.read_to_vec(hash, object::NODE_LEN_MAX as u64)?;
        Ok(object::decode(&bytes).ok())
    }

    /// The entries of the directory whose root node is `hash`, in name
    /// order (following index nodes).
    pub fn directory(&self, hash: &Hash) -> Result<Vec<DirEntry>, StoreError> {
        let mut entries = Vec::new();
        self.directory_into(hash, &mut entries, 0)?;
        Ok(entries)
    }

    fn directory_into(
        &self,
        hash: &Hash,
        out: &mut Vec<DirEntry>,
        depth: usize,
    ) -> Result<(), StoreError> {
        // Index levels are few (1024² entries per two); more is a loop.
        if depth > 8 {
            return Err(StoreError::NotAnObject(*hash));
        }
        match self.object(hash)? {
            Some(Node::Directory(entries)) => {
                // Index nodes naming the same child many times would
                // otherwise list it without end.
                if out.len() + entries.len() > DIRECTORY_ENTRIES_MAX {
                    return Err(StoreError::BadDirectory {
                        hash: *hash,
                        problem: format!("it lists more than {DIRECTORY_ENTRIES_MAX} entries"),
                    });
                }
                out.extend(entries)
            }
            Some(Node::Index(children)) => {
                for child in children {
                    self.directory_into(&child.hash, out, depth + 1)?;
                }
            }
            None => return Err(StoreError::NotAnObject(*hash)),
        }
        Ok(())
    }

    /// Adds a directory: every file (copied, or by reference), then its
    /// object nodes; returns the root. Everything added stays protected
    /// from collection until the root is committed (with `tag`, if given).
    pub fn import_dir(
        &self,
        path: &Path,
        tag: Option<&str>,
        reference: bool,
        progress: &mut dyn FnMut(u64),
    ) -> Result<DirReport, StoreError> {
        if let Some(tag) = tag {
            check_tag(tag)?;
        }
        let mut report = DirReport::default();
        let mut guards = Vec::new();
        let mut done = 0u64;
        let (root, size) = self.add_dir(
            path,
            reference,
            &mut guards,
            &mut report,
            &mut done,
            progress,
        )?;
        if let Some(tag) = tag {
            self.set_tag(tag, &root)?;
        }
        report.root = Some(root);
        report.bytes = size;
        Ok(report)
    }

    #[allow(clippy::too_many_arguments)]
    fn add_dir(
        &self,
        path: &Path,
        reference: bool,
        guards: &mut Vec<Protection>,
        report: &mut DirReport,
        done: &mut u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(Hash, u64), StoreError> {
        let mut children: Vec<fs::DirEntry> = fs::read_dir(path)
            .map_err(StoreError::io(path))?
            .collect::<Result<_, _>>()
            .map_err(StoreError::io(path))?;
        children.sort_by_key(fs::DirEntry::file_name);
        let mut entries = Vec::with_capacity(children.len());
        for child in children {
            let child_path = child.path();
            let name = child
                .file_name()
                .into_string()
                .map_err(|_| StoreError::BadName(child_path.clone()))?;
            object::check_name(&name).map_err(|_| StoreError::BadName(child_path.clone()))?;
            let metadata =
                fs::symlink_metadata(&child_path).map_err(StoreError::io(&child_path))?;
            let kind = metadata.file_type();
            let entry = if kind.is_dir() {
                let (hash, size) =
                    self.add_dir(&child_path, reference, guards, report, done, progress)?;
                report.directories += 1;
                DirEntry {
                    name,
                    kind: EntryType::Directory,
                    executable: false,
                    size,
                    hash,
                }
            } else if kind.is_file() {
                let base = *done;
                let mut file_progress = |bytes: u64| progress(base + bytes);
                let hash = if reference {
                    self.import_reference(&child_path, None, &mut file_progress)?
                } else {
                    self.import_file(&child_path, None, &mut file_progress)?
                };
                guards.push(self.protect(hash));
                *done += metadata.len();
                report.files += 1;
                use std::os::unix::fs::PermissionsExt;
                DirEntry {
                    name,
                    kind: EntryType::File,
                    executable: metadata.permissions().mode() & 0o111 != 0,
                    size: metadata.len(),
                    hash,
                }
            } else {
                // Symbolic links and special files are not content.
                report.skipped.push(child_path);
                continue;
            };
            entries.push(entry);
        }
        let size = entries.iter().map(|e| e.size).sum();
        let nodes =
            object::build_directory(entries).map_err(|_| StoreError::BadName(path.to_owned()))?;
        let mut root = None;
        for node in &nodes {
            let hash = self.import_bytes(node, None)?;
            guards.push(self.protect(hash));
            root = Some(hash);
        }
        root.map(|root| (root, size))
            .ok_or_else(|| StoreError::BadName(path.to_owned()))
    }

    /// Evicts unpinned blobs, least recently used first, until what is
    /// left unpinned fits `cache_bytes_max` (`None`: the configured cache).
    /// Never removes a tagged blob or one being written or read.
    pub fn gc(&self, cache_bytes_max: Option<u64>) -> Result<GcReport, StoreError> {
        let budget = cache_bytes_max.unwrap_or(self.config.cache_bytes_max);
        let mut report = GcReport::default();
        let removed: Vec<(Hash, Entry)>;
        // Decide and commit in one transaction, so that a tag written
        // meanwhile either lands before (and is seen) or after (and fails
        // on the missing blob).
        let write = self.db.begin_write().map_err(|e| self.db_error(e))?;
        {
            let tags = write.open_table(TAGS).map_err(|e| self.db_error(e))?;
            let mut roots = Vec::new();
            for row in tags.iter().map_err(|e| self.db_error(e))? {
                let (_, value) = row.map_err(|e| self.db_error(e))?;
                if let Some(hash) = Hash::from_slice(value.value()) {
                    roots.push(hash);
                }
            }
            // A pinned directory pins everything below it: follow object
            // nodes (always inline) in this transaction's own view.
            let inline_table = write.open_table(INLINE).map_err(|e| self.db_error(e))?;
            let pinned = closure(roots, |hash| {
                inline_table
                    .get(hash.as_bytes().as_slice())
                    .ok()
                    .flatten()
                    .map(|value| value.value().to_vec())
            });
            drop(inline_table);
            let mut blobs = write.open_table(BLOBS).map_err(|e| self.db_error(e))?;
            let mut cache: Vec<(Hash, Entry)> = Vec::new();
            for row in blobs.iter().map_err(|e| self.db_error(e))? {
                let (key, value) = row.map_err(|e| self.db_error(e))?;
                if let (Some(hash), Some(entry)) =
                    (Hash::from_slice(key.value()), Entry::decode(value.value()))
                    && !pinned.contains(&hash)
                {
                    cache.push((hash, entry));
                }
            }
            // Newest first: they are the ones kept.
            cache.sort_by_key(|(_, entry)| std::cmp::Reverse(entry.last_used_ms));
            let protected = lock(&self.protected);
            let mut kept_bytes = 0u64;
            let mut doomed = Vec::new();
            for (hash, entry) in cache {
                // A budget of 0 means no cache at all, empty blobs included.
                if protected.contains_key(&hash)
                    || (budget > 0 && kept_bytes + entry.size <= budget)
                {
                    kept_bytes += entry.size;
                    report.kept_blobs += 1;
                    report.kept_bytes += entry.size;
                } else {
                    doomed.push((hash, entry));
                }
            }
            drop(protected);
            let mut inline = write.open_table(INLINE).map_err(|e| self.db_error(e))?;
            let mut external = write.open_table(EXTERNAL).map_err(|e| self.db_error(e))?;
            for (hash, entry) in &doomed {
                blobs
                    .remove(hash.as_bytes().as_slice())
                    .map_err(|e| self.db_error(e))?;
                match entry.location {
                    Location::Inline => {
                        inline
                            .remove(hash.as_bytes().as_slice())
                            .map_err(|e| self.db_error(e))?;
                    }
                    Location::External => {
                        external
                            .remove(hash.as_bytes().as_slice())
                            .map_err(|e| self.db_error(e))?;
                    }
                    Location::File => {}
                }
                report.removed_blobs += 1;
                report.removed_bytes += entry.size;
            }
            removed = doomed;
        }
        write.commit().map_err(|e| self.db_error(e))?;
        let (partial_blobs, partial_bytes) = self.collect_partials(budget, report.kept_bytes)?;
        report.removed_blobs += partial_blobs;
        report.removed_bytes += partial_bytes;
        // The entries are gone; a crash from here leaves orphan files,
        // which the next open deletes. A blob someone started adding again
        // since the decision is protected now, or committed already: its
        // files are left to the adder (who renames fresh ones over them, or
        // finds them in place). Holding the lock while deleting means no
        // adder protects a blob and then finds its files vanishing.
        let protected = lock(&self.protected);
        for (hash, entry) in removed {
            // Added again and committed since (its adder has let go): the
            // files are its files now.
            if protected.contains_key(&hash) || self.entry(&hash).ok().flatten().is_some() {
                continue;
            }
            match entry.location {
                Location::File => {
                    let _ = fs::remove_file(self.data_path(&hash));
                    let _ = fs::remove_file(self.outboard_path(&hash));
                }
                // Never the user's file: only what the store made.
                Location::External => {
                    let _ = fs::remove_file(self.outboard_path(&hash));
                }
                Location::Inline => {}
            }
        }
        Ok(report)
    }
}

/// The tag that pins what a feed points at on this node.
pub fn feed_tag(feed: &FeedId) -> String {
    format!("feed/{feed}")
}

fn check_tag(tag: &str) -> Result<(), StoreError> {
    if tag.is_empty() || tag.len() > TAG_LEN_MAX {
        return Err(StoreError::BadTag { len: tag.len() });
    }
    Ok(())
}

/// Every hash reachable from `roots` through object nodes that `node`
/// returns the bytes of (none for a blob that is not an object or is
/// not held).
fn closure(
    roots: Vec<Hash>,
    mut node: impl FnMut(&Hash) -> Option<Vec<u8>>,
) -> std::collections::HashSet<Hash> {
    let mut reached = std::collections::HashSet::new();
    let mut frontier = roots;
    while let Some(hash) = frontier.pop() {
        if !reached.insert(hash) {
            continue;
        }
        let Some(bytes) = node(&hash) else { continue };
        match object::decode(&bytes) {
            Ok(Node::Directory(entries)) => {
                frontier.extend(entries.into_iter().map(|entry| entry.hash));
            }
            Ok(Node::Index(children)) => {
                frontier.extend(children.into_iter().map(|child| child.hash));
            }
            Err(_) => {}
        }
    }
    reached
}

/// How far a copy has got, for the hasher following it.
#[derive(Debug, Default)]
struct CopyProgress {
    state: Mutex<(u64, Option<Option<io::ErrorKind>>)>,
    changed: std::sync::Condvar,
}

impl CopyProgress {
    fn advance(&self, copied: u64) {
        lock(&self.state).0 = copied;
        self.changed.notify_all();
    }

    /// The copy ended (with an error, or none).
    fn finish(&self, error: Option<io::ErrorKind>) {
        lock(&self.state).1 = Some(error);
        self.changed.notify_all();
    }

    /// Waits until more than `position` bytes are copied, or the copy has
    /// ended; returns what is copied.
    fn wait_past(&self, position: u64) -> io::Result<u64> {
        let mut state = lock(&self.state);
        loop {
            match *state {
                (copied, _) if copied > position => return Ok(copied),
                (_, Some(Some(kind))) => return Err(io::Error::new(kind, "copy failed")),
                (copied, Some(None)) => return Ok(copied),
                _ => {}
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

/// Bytes copied per step, each published to the hasher.
const COPY_STEP: u64 = 16 * 1024 * 1024;

/// Copies `size` bytes in steps; `std::io::copy` between files runs in
/// the kernel (`copy_file_range`).
fn copy_in_steps(
    source: &File,
    target: &File,
    size: u64,
    progress: &CopyProgress,
) -> io::Result<()> {
    let mut copied = 0u64;
    let (mut source, mut target) = (source, target);
    while copied < size {
        let step = (size - copied).min(COPY_STEP);
        let moved = io::copy(&mut (&mut source).take(step), &mut target)?;
        if moved == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        copied += moved;
        progress.advance(copied);
    }
    Ok(())
}

/// Reads a file while another thread is still writing it, never past
/// what has been written.
struct Follow<'a> {
    file: File,
    position: u64,
    copied: &'a CopyProgress,
}

impl Read for Follow<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if buffer.is_empty() {
            return Ok(0);
        }
        let copied = self.copied.wait_past(self.position)?;
        let available = (copied - self.position).min(buffer.len() as u64) as usize;
        if available == 0 {
            return Ok(0);
        }
        let read = self.file.read(&mut buffer[..available])?;
        self.position += read as u64;
        Ok(read)
    }
}

/// Files deleted on drop unless they were moved away.
struct TempFiles(Vec<PathBuf>);

impl Drop for TempFiles {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = fs::remove_file(path);
        }
    }
}
