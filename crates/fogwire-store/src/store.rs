//! The blob store of one node: redb for metadata, tags and small blobs;
//! files for large blobs and their outboards.
//!
//! ```text
//! <root>/store.redb            metadata, tags, blobs of at most 16 KiB
//! <root>/blobs/ab/<hash>.data  a large blob's bytes
//! <root>/blobs/ab/<hash>.obao  its post-order outboard (see `bao`)
//! <root>/tmp/                  imports in progress; emptied at open
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
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bao_tree::io::outboard::PostOrderOutboard;
use bao_tree::{ChunkNum, ChunkRanges};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::Hash;
use crate::bao::{self, CHUNK_GROUP_BYTES, VerifyError};

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

const ENTRY_VERSION: u8 = 1;
const ENTRY_LEN: usize = 1 + 8 + 1 + 8;
/// Longest tag name.
pub const TAG_LEN_MAX: usize = 255;

/// Where a blob's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Inline,
    File,
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
    fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut out = [0u8; ENTRY_LEN];
        out[0] = ENTRY_VERSION;
        out[1..9].copy_from_slice(&self.size.to_be_bytes());
        out[9] = match self.location {
            Location::Inline => 0,
            Location::File => 1,
        };
        out[10..].copy_from_slice(&self.last_used_ms.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Entry> {
        if bytes.len() != ENTRY_LEN || bytes[0] != ENTRY_VERSION {
            return None;
        }
        Some(Entry {
            size: u64::from_be_bytes(bytes[1..9].try_into().ok()?),
            location: match bytes[9] {
                0 => Location::Inline,
                1 => Location::File,
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
}

impl StoreError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Settings of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Bytes of unpinned blobs kept as a cache; garbage collection evicts
    /// the least recently used beyond it.
    pub cache_bytes_max: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cache_bytes_max: 8 * 1024 * 1024 * 1024,
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

fn random_name() -> String {
    let mut bytes = [0u8; 16];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Syncs a directory, so that the renames in it are durable.
fn sync_dir(path: &Path) -> io::Result<()> {
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
        };
        store.init_tables()?;
        store.recover()?;
        Ok(store)
    }

    fn db_error(&self, error: impl std::fmt::Display) -> StoreError {
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
        write.commit().map_err(|e| self.db_error(e))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn blob_dir(&self, hash: &Hash) -> PathBuf {
        self.root.join("blobs").join(&hash.to_string()[..2])
    }

    fn data_path(&self, hash: &Hash) -> PathBuf {
        self.blob_dir(hash).join(format!("{hash}.data"))
    }

    fn outboard_path(&self, hash: &Hash) -> PathBuf {
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
        let entries = self.entries()?;
        let mut lost = Vec::new();
        for (hash, entry) in &entries {
            if entry.location != Location::File {
                continue;
            }
            let data_ok = fs::metadata(self.data_path(hash)).is_ok_and(|m| m.len() == entry.size);
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

    /// Adds bytes held in memory.
    pub fn import_bytes(&self, data: &[u8], tag: Option<&str>) -> Result<Hash, StoreError> {
        if data.len() as u64 <= INLINE_MAX {
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
        self.import_reader(file, size, tag, progress, Some(path))
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
        let tmp = self.root.join("tmp");
        let name = random_name();
        let (tmp_data, tmp_outboard) = (
            tmp.join(format!("{name}.data")),
            tmp.join(format!("{name}.obao")),
        );
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
        data_file.sync_all().map_err(StoreError::io(&tmp_data))?;
        outboard_file
            .sync_all()
            .map_err(StoreError::io(&tmp_outboard))?;
        let _guard = self.protect(hash);
        if self.entry(&hash)?.is_none() {
            let dir = self.blob_dir(&hash);
            fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
            let (data_path, outboard_path) = (self.data_path(&hash), self.outboard_path(&hash));
            fs::rename(&tmp_outboard, &outboard_path).map_err(StoreError::io(&outboard_path))?;
            fs::rename(&tmp_data, &data_path).map_err(StoreError::io(&data_path))?;
            sync_dir(&dir).map_err(StoreError::io(&dir))?;
        }
        drop(cleanup);
        self.commit_blob(hash, size, None, tag)?;
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
        if let Some(tag) = tag {
            check_tag(tag)?;
        }
        let write = self.db.begin_write().map_err(|e| self.db_error(e))?;
        {
            let mut blobs = write.open_table(BLOBS).map_err(|e| self.db_error(e))?;
            let entry = Entry {
                size,
                location: if inline.is_some() {
                    Location::Inline
                } else {
                    Location::File
                },
                last_used_ms: now_ms(),
            };
            blobs
                .insert(hash.as_bytes().as_slice(), entry.encode().as_slice())
                .map_err(|e| self.db_error(e))?;
            if let Some(data) = inline {
                let mut table = write.open_table(INLINE).map_err(|e| self.db_error(e))?;
                table
                    .insert(hash.as_bytes().as_slice(), data)
                    .map_err(|e| self.db_error(e))?;
            }
            if let Some(tag) = tag {
                let mut tags = write.open_table(TAGS).map_err(|e| self.db_error(e))?;
                tags.insert(tag, hash.as_bytes().as_slice())
                    .map_err(|e| self.db_error(e))?;
            }
        }
        write.commit().map_err(|e| self.db_error(e))
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
            Location::File => {
                let data_path = self.data_path(hash);
                let outboard_path = self.outboard_path(hash);
                let data = File::open(&data_path).map_err(StoreError::io(&data_path))?;
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
                    error => corrupt(error),
                })?;
            }
        }
        self.touch(hash);
        Ok(())
    }

    /// Marks a blob used now (best effort: a failure only ages it).
    fn touch(&self, hash: &Hash) {
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
                entry.last_used_ms = now_ms();
                let _ = blobs.insert(hash.as_bytes().as_slice(), entry.encode().as_slice());
            }
        }
        let _ = write.commit();
    }

    /// Writes a whole blob to `path`, verified, atomically (a temporary
    /// file beside it, renamed when complete).
    pub fn export(
        &self,
        hash: &Hash,
        path: &Path,
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
        let cleanup = TempFiles(vec![tmp_path.clone()]);
        let file = File::create(&tmp_path).map_err(StoreError::io(&tmp_path))?;
        let mut writer = BufWriter::with_capacity(bao::READ_BYTES, &file);
        let mut done = 0u64;
        self.read_range(hash, 0, entry.size, &mut |bytes| {
            writer.write_all(bytes)?;
            done += bytes.len() as u64;
            progress(done);
            Ok(())
        })?;
        writer.flush().map_err(StoreError::io(&tmp_path))?;
        drop(writer);
        file.sync_all().map_err(StoreError::io(&tmp_path))?;
        fs::rename(&tmp_path, path).map_err(StoreError::io(path))?;
        drop(cleanup);
        Ok(entry.size)
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
        removed.ok_or_else(|| StoreError::NoTag(tag.to_owned()))
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
            let mut pinned = std::collections::HashSet::new();
            for row in tags.iter().map_err(|e| self.db_error(e))? {
                let (_, value) = row.map_err(|e| self.db_error(e))?;
                if let Some(hash) = Hash::from_slice(value.value()) {
                    pinned.insert(hash);
                }
            }
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
                if protected.contains_key(&hash) || kept_bytes + entry.size <= budget {
                    kept_bytes += entry.size;
                    report.kept_blobs += 1;
                    report.kept_bytes += entry.size;
                } else {
                    doomed.push((hash, entry));
                }
            }
            drop(protected);
            let mut inline = write.open_table(INLINE).map_err(|e| self.db_error(e))?;
            for (hash, entry) in &doomed {
                blobs
                    .remove(hash.as_bytes().as_slice())
                    .map_err(|e| self.db_error(e))?;
                if entry.location == Location::Inline {
                    inline
                        .remove(hash.as_bytes().as_slice())
                        .map_err(|e| self.db_error(e))?;
                }
                report.removed_blobs += 1;
                report.removed_bytes += entry.size;
            }
            removed = doomed;
        }
        write.commit().map_err(|e| self.db_error(e))?;
        // The entries are gone; a crash from here leaves orphan files,
        // which the next open deletes.
        for (hash, entry) in removed {
            if entry.location == Location::File {
                let _ = fs::remove_file(self.data_path(&hash));
                let _ = fs::remove_file(self.outboard_path(&hash));
            }
        }
        Ok(report)
    }
}

fn check_tag(tag: &str) -> Result<(), StoreError> {
    if tag.is_empty() || tag.len() > TAG_LEN_MAX {
        return Err(StoreError::BadTag { len: tag.len() });
    }
    Ok(())
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
