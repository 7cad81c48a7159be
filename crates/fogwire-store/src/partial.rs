//! Blobs arriving from peers, and blobs served to them.
//!
//! A download writes each verified hash pair and chunk group straight into
//! files under `partial/` that already have the blob's full length (zeros
//! where nothing arrived yet):
//!
//! ```text
//! <root>/partial/<hash>.data   the blob's bytes, holes where missing
//! <root>/partial/<hash>.obao   its post-order outboard, zeros where missing
//! ```
//!
//! The database records only that a partial blob of some size exists.
//! Which chunk groups are there is never trusted to a record: resuming
//! scans the files and keeps exactly the groups that verify up to the
//! root ([`bao::verified_groups`]), so a crash mid-write, a torn page or a
//! stale record can cost a re-download of a group, never a bad byte. While
//! a download runs, what it has is known in memory and served to other
//! peers. A finished download moves its files into `blobs/` and commits
//! the blob's entry, exactly like an import.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bao_tree::io::outboard::PostOrderOutboard;
use bao_tree::io::sync::ReadAt;
use bytes::BytesMut;
use fogwire_store_proto::message::{Groups, HaveState};
use fogwire_store_proto::stream::{ItemEncoder, Verified, all_groups};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::Hash;
use crate::bao::{self, CHUNK_GROUP_BYTES, VerifyError};
use crate::store::{INLINE_MAX, Location, Protection, Store, StoreError, lock, now_ms};

/// Partial blobs: hash → `size u64 | started ms u64`, big-endian.
pub(crate) const PARTIAL: TableDefinition<&[u8], &[u8]> = TableDefinition::new("partial");

/// Groups held by each partial blob being written now.
pub(crate) type Live = Arc<Mutex<HashMap<Hash, Arc<Mutex<Groups>>>>>;

/// A partial download's record: `size u64 | started ms u64`, big-endian.
pub fn encode_partial(size: u64, started_ms: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&size.to_be_bytes());
    out[8..].copy_from_slice(&started_ms.to_be_bytes());
    out
}

/// The record [`encode_partial`] writes (size, started ms); `None` if too
/// short.
pub fn decode_partial(bytes: &[u8]) -> Option<(u64, u64)> {
    let size = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let started = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((size, started))
}

/// A partial blob: its size and when its download started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialInfo {
    pub hash: Hash,
    pub size: u64,
    pub started_ms: u64,
    /// A download is writing it now.
    pub active: bool,
}

/// Writes a blob arriving from peers. One per blob at a time.
#[derive(Debug)]
pub struct PartialWriter {
    hash: Hash,
    size: u64,
    data: File,
    outboard: File,
    data_path: PathBuf,
    outboard_path: PathBuf,
    have: Arc<Mutex<Groups>>,
    live: Live,
    _protection: Protection,
}

impl PartialWriter {
    pub fn hash(&self) -> Hash {
        self.hash
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The chunk groups written and verified so far.
    pub fn have(&self) -> Groups {
        lock(&self.have).clone()
    }

    pub fn is_complete(&self) -> bool {
        *lock(&self.have) == all_groups(self.size)
    }

    /// Writes what a decoder verified: a hash pair into the outboard, or
    /// a chunk group into the data (then counted as held, and served).
    pub fn write(&mut self, verified: Verified<'_>) -> io::Result<()> {
        match verified {
            Verified::Parent { node, pair } => {
                if let Some(at) = bao::outboard_offset(self.size, node) {
                    let mut both = [0u8; 64];
                    both[..32].copy_from_slice(pair.0.as_bytes());
                    both[32..].copy_from_slice(pair.1.as_bytes());
                    self.outboard.write_all_at(&both, at)?;
                }
            }
            Verified::Group { offset, data } => {
                self.data.write_all_at(data, offset)?;
                let index = offset / CHUNK_GROUP_BYTES as u64;
                let mut have = lock(&self.have);
                *have |= Groups::from(index..index + 1);
            }
        }
        Ok(())
    }
}

impl Drop for PartialWriter {
    fn drop(&mut self) {
        lock(&self.live).remove(&self.hash);
    }
}

/// Where a blob's bytes come from when serving it: the store's file, a
/// file added by reference, the database (small blobs), or a partial
/// blob's files.
#[derive(Debug)]
enum Bytes {
    File(File),
    Memory(Vec<u8>),
}

impl ReadAt for Bytes {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Bytes::File(file) => FileExt::read_at(file, buf, pos),
            Bytes::Memory(bytes) => bytes.read_at(pos, buf),
        }
    }
}

/// A blob opened for serving to peers; holds it safe from collection.
#[derive(Debug)]
pub struct Source {
    hash: Hash,
    size: u64,
    available: Option<Groups>,
    data: Bytes,
    outboard: PostOrderOutboard<Bytes>,
    _protection: Protection,
}

impl Source {
    pub fn hash(&self) -> Hash {
        self.hash
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The chunk groups this node holds (all of a complete blob).
    pub fn available(&self) -> Groups {
        self.available
            .clone()
            .unwrap_or_else(|| all_groups(self.size))
    }

    /// Appends the next steps of `encoder`'s encoding to `out` (at least
    /// `target` bytes, or to its end), verifying every byte it reads:
    /// damaged bytes on this disk are reported, never sent.
    pub fn encode(
        &self,
        encoder: &mut ItemEncoder,
        out: &mut BytesMut,
        target: usize,
    ) -> Result<(), VerifyError> {
        encoder.next(&self.data, &self.outboard, out, target)
    }
}

impl Store {
    fn partial_dir(&self) -> PathBuf {
        self.root().join("partial")
    }

    fn partial_paths(&self, hash: &Hash) -> (PathBuf, PathBuf) {
        let dir = self.partial_dir();
        (
            dir.join(format!("{hash}.data")),
            dir.join(format!("{hash}.obao")),
        )
    }

    /// Starts receiving a blob of `size` bytes (a size the caller has
    /// verified), or resumes an earlier download of it: the groups that
    /// verify are kept. Fails if the blob is complete already, or another
    /// download of it is running.
    pub fn begin_partial(&self, hash: Hash, size: u64) -> Result<PartialWriter, StoreError> {
        let protection = self.protect(hash);
        if self.entry(&hash)?.is_some() {
            return Err(StoreError::AlreadyHeld(hash));
        }
        let have = Arc::new(Mutex::new(Groups::empty()));
        {
            let mut live = lock(&self.live);
            if live.contains_key(&hash) {
                return Err(StoreError::Busy(hash));
            }
            live.insert(hash, have.clone());
        }
        let live = self.live.clone();
        // From here, dropping the writer (also on error) unregisters it.
        let (data_path, outboard_path) = self.partial_paths(&hash);
        let open = |path: &PathBuf| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(StoreError::io(path))
        };
        let dir = self.partial_dir();
        fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
        let writer = PartialWriter {
            hash,
            size,
            data: open(&data_path)?,
            outboard: open(&outboard_path)?,
            data_path,
            outboard_path,
            have,
            live,
            _protection: protection,
        };
        let recorded = self.partial_record(&hash)?;
        let outboard_len = bao::tree(size).outboard_size();
        if recorded.is_some_and(|(recorded_size, _)| recorded_size == size) {
            let outboard = PostOrderOutboard {
                root: hash.into(),
                tree: bao::tree(size),
                data: &writer.outboard,
            };
            let found = bao::verified_groups(&writer.data, outboard)
                .map_err(StoreError::io(&writer.data_path))?;
            if !found.is_empty() {
                tracing::info!(
                    blob = %hash,
                    groups = fogwire_store_proto::message::group_count(&found),
                    "resuming a download"
                );
            }
            *lock(&writer.have) = found;
        } else {
            // New, or recorded with another size (a lying peer's): start
            // from nothing.
            for (file, len, path) in [
                (&writer.data, 0, &writer.data_path),
                (&writer.outboard, 0, &writer.outboard_path),
                (&writer.data, size, &writer.data_path),
                (&writer.outboard, outboard_len, &writer.outboard_path),
            ] {
                file.set_len(len).map_err(StoreError::io(path))?;
            }
            let write = self.db().begin_write().map_err(|e| self.db_error(e))?;
            {
                let mut table = write.open_table(PARTIAL).map_err(|e| self.db_error(e))?;
                table
                    .insert(
                        hash.as_bytes().as_slice(),
                        encode_partial(size, now_ms()).as_slice(),
                    )
                    .map_err(|e| self.db_error(e))?;
            }
            write.commit().map_err(|e| self.db_error(e))?;
        }
        Ok(writer)
    }

    fn partial_record(&self, hash: &Hash) -> Result<Option<(u64, u64)>, StoreError> {
        let read = self.db().begin_read().map_err(|e| self.db_error(e))?;
        let table = read.open_table(PARTIAL).map_err(|e| self.db_error(e))?;
        Ok(table
            .get(hash.as_bytes().as_slice())
            .map_err(|e| self.db_error(e))?
            .and_then(|value| decode_partial(value.value())))
    }

    /// Every partial blob, written now or left by an interrupted download.
    pub fn partials(&self) -> Result<Vec<PartialInfo>, StoreError> {
        let live = lock(&self.live).keys().copied().collect::<Vec<_>>();
        let read = self.db().begin_read().map_err(|e| self.db_error(e))?;
        let table = read.open_table(PARTIAL).map_err(|e| self.db_error(e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| self.db_error(e))? {
            let (key, value) = row.map_err(|e| self.db_error(e))?;
            if let (Some(hash), Some((size, started_ms))) =
                (Hash::from_slice(key.value()), decode_partial(value.value()))
            {
                out.push(PartialInfo {
                    hash,
                    size,
                    started_ms,
                    active: live.contains(&hash),
                });
            }
        }
        Ok(out)
    }

    /// Completes a download whose every chunk group is written: its files
    /// move into place and the blob's entry (and tag) is committed.
    pub fn finish_partial(
        &self,
        writer: PartialWriter,
        tag: Option<&str>,
    ) -> Result<(), StoreError> {
        if !writer.is_complete() {
            return Err(StoreError::Incomplete(writer.hash));
        }
        let hash = writer.hash;
        if writer.size <= INLINE_MAX {
            // Small blobs live in the database, whatever brought them.
            let mut bytes = vec![0u8; writer.size as usize];
            FileExt::read_exact_at(&writer.data, &mut bytes, 0)
                .map_err(StoreError::io(&writer.data_path))?;
            // Unregistered first, so that its files go with the record.
            drop(writer);
            self.import_bytes(&bytes, tag)?;
            self.remove_partial(&hash)?;
            return Ok(());
        }
        writer
            .outboard
            .sync_all()
            .map_err(StoreError::io(&writer.outboard_path))?;
        if self.config().sync_on_add {
            writer
                .data
                .sync_all()
                .map_err(StoreError::io(&writer.data_path))?;
        }
        let dir = self.blob_dir(&hash);
        fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
        let (data_path, outboard_path) = (self.data_path(&hash), self.outboard_path(&hash));
        fs::rename(&writer.outboard_path, &outboard_path)
            .map_err(StoreError::io(&outboard_path))?;
        fs::rename(&writer.data_path, &data_path).map_err(StoreError::io(&data_path))?;
        crate::store::sync_dir(&dir).map_err(StoreError::io(&dir))?;
        self.commit_blob_with(hash, writer.size, tag, |write| {
            let mut table = write.open_table(PARTIAL).map_err(|e| self.db_error(e))?;
            table
                .remove(hash.as_bytes().as_slice())
                .map_err(|e| self.db_error(e))?;
            Ok(())
        })?;
        if !self.config().sync_on_add {
            let data = writer
                .data
                .try_clone()
                .map_err(StoreError::io(&data_path))?;
            std::thread::spawn(move || {
                let _ = data.sync_data();
            });
        }
        Ok(())
    }

    /// Forgets a partial blob and deletes its files (not while a download
    /// writes it).
    pub fn remove_partial(&self, hash: &Hash) -> Result<bool, StoreError> {
        let write = self.db().begin_write().map_err(|e| self.db_error(e))?;
        let existed = {
            let mut table = write.open_table(PARTIAL).map_err(|e| self.db_error(e))?;
            table
                .remove(hash.as_bytes().as_slice())
                .map_err(|e| self.db_error(e))?
                .is_some()
        };
        write.commit().map_err(|e| self.db_error(e))?;
        if !lock(&self.live).contains_key(hash) {
            let (data, outboard) = self.partial_paths(hash);
            let _ = fs::remove_file(data);
            let _ = fs::remove_file(outboard);
        }
        Ok(existed)
    }

    /// What this node holds of a blob, as it tells peers.
    pub fn have(&self, hash: &Hash) -> Result<HaveState, StoreError> {
        if let Some(entry) = self.entry(hash)? {
            return Ok(HaveState::Complete { size: entry.size });
        }
        let live = lock(&self.live).get(hash).cloned();
        if let Some(groups) = live {
            let groups = lock(&groups).clone();
            if let Some((size, _)) = self.partial_record(hash)?
                && !groups.is_empty()
            {
                return Ok(HaveState::Partial { size, groups });
            }
        }
        Ok(HaveState::Absent)
    }

    /// Opens a blob (complete, or being downloaded) for serving.
    pub fn source(&self, hash: &Hash) -> Result<Option<Source>, StoreError> {
        let protection = self.protect(*hash);
        let outboard_of = |size: u64, data: Bytes| PostOrderOutboard {
            root: (*hash).into(),
            tree: bao::tree(size),
            data,
        };
        if let Some(entry) = self.entry(hash)? {
            let (data, outboard) = match entry.location {
                Location::Inline => (
                    Bytes::Memory(self.read_to_vec(hash, INLINE_MAX)?),
                    Bytes::Memory(Vec::new()),
                ),
                Location::File | Location::External => {
                    let data_path = self.file_of(hash, entry.location)?;
                    let outboard_path = self.outboard_path(hash);
                    let data = File::open(&data_path).map_err(StoreError::io(&data_path))?;
                    let outboard =
                        File::open(&outboard_path).map_err(StoreError::io(&outboard_path))?;
                    (Bytes::File(data), Bytes::File(outboard))
                }
            };
            self.touch(hash);
            return Ok(Some(Source {
                hash: *hash,
                size: entry.size,
                available: None,
                data,
                outboard: outboard_of(entry.size, outboard),
                _protection: protection,
            }));
        }
        let HaveState::Partial { size, groups } = self.have(hash)? else {
            return Ok(None);
        };
        let (data_path, outboard_path) = self.partial_paths(hash);
        let data = File::open(&data_path).map_err(StoreError::io(&data_path))?;
        let outboard = File::open(&outboard_path).map_err(StoreError::io(&outboard_path))?;
        Ok(Some(Source {
            hash: *hash,
            size,
            available: Some(groups),
            data: Bytes::File(data),
            outboard: outboard_of(size, Bytes::File(outboard)),
            _protection: protection,
        }))
    }

    /// At open: drops partial records whose files are gone or the wrong
    /// length, and deletes files no record names.
    pub(crate) fn recover_partials(&self) -> Result<(), StoreError> {
        let dir = self.partial_dir();
        fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
        let records = self.partials()?;
        let mut kept = std::collections::HashSet::new();
        let mut lost = Vec::new();
        for info in records {
            let (data, outboard) = self.partial_paths(&info.hash);
            let outboard_len = bao::tree(info.size).outboard_size();
            if fs::metadata(&data).is_ok_and(|m| m.len() == info.size)
                && fs::metadata(&outboard).is_ok_and(|m| m.len() == outboard_len)
            {
                kept.insert(info.hash);
            } else {
                lost.push(info.hash);
            }
        }
        if !lost.is_empty() {
            let write = self.db().begin_write().map_err(|e| self.db_error(e))?;
            {
                let mut table = write.open_table(PARTIAL).map_err(|e| self.db_error(e))?;
                for hash in &lost {
                    table
                        .remove(hash.as_bytes().as_slice())
                        .map_err(|e| self.db_error(e))?;
                }
            }
            write.commit().map_err(|e| self.db_error(e))?;
        }
        for file in fs::read_dir(&dir).map_err(StoreError::io(&dir))?.flatten() {
            let name = file.file_name();
            let stem = name.to_string_lossy();
            let hash = stem.split('.').next().and_then(|h| h.parse::<Hash>().ok());
            if hash.is_none_or(|hash| !kept.contains(&hash)) {
                let _ = fs::remove_file(file.path());
            }
        }
        Ok(())
    }

    /// Collection's share of partial blobs: those no download is writing
    /// go, oldest first, while the cache holds more than `budget` with
    /// `kept_bytes` of complete blobs in it. Returns (blobs, bytes) removed.
    pub(crate) fn collect_partials(
        &self,
        budget: u64,
        mut kept_bytes: u64,
    ) -> Result<(u64, u64), StoreError> {
        let mut partials = self.partials()?;
        // Newest first: they are the ones kept.
        partials.sort_by_key(|info| std::cmp::Reverse(info.started_ms));
        let (mut blobs, mut bytes) = (0, 0);
        for info in partials {
            if info.active || (budget > 0 && kept_bytes + info.size <= budget) {
                kept_bytes += info.size;
                continue;
            }
            if self.remove_partial(&info.hash)? {
                blobs += 1;
                bytes += info.size;
            }
        }
        Ok((blobs, bytes))
    }
}
