//! Fetching blobs and object graphs from peers.
//!
//! One blob: ask every neighbour what it has (HAS), prove the size by
//! fetching the last chunk group from a holder (its hash chain binds the
//! length), then let the download scheduler spread the chunk groups over
//! all holders. Answers are verified and written on a blocking thread,
//! group by group, into the store's partial files; a request whose data
//! fails verification drops its peer, and its groups go to the others.
//!
//! An object graph: fetch the root; while there are object nodes whose
//! children are missing, ask the neighbours about all the missing children
//! at once (one HAS of up to 512 hashes), fetch the small ones many to a
//! GET from one holder, and the large ones blob by blob as above.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fogwire_identity::NodeId;
use fogwire_store::bao::CHUNK_GROUP_BYTES;
use fogwire_store::object::{self, EntryType, Node};
use fogwire_store::{Hash, PartialWriter, RestoreLimits, StoreError};
use fogwire_store_proto::download::{Action, BUSY_PAUSE, Download, Failure, Stuck};
use fogwire_store_proto::message::{
    ERROR_BUSY, GET_ITEMS_MAX, GetItem, Groups, HAS_MAX, HaveState, Message as StoreMessage,
    group_count, runs,
};
use fogwire_store_proto::stream::{ItemDecoder, Verified, all_groups};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::peer::{PeerLink, Reply};
use crate::providers::Holding;
use crate::{Counters, FetchError, FetchProgress, FetchReport, ProgressFn, ReplicationState, lock};

/// Object nodes nest at most this deep below a root.
pub(crate) const DEPTH_MAX: usize = 64;
/// Blobs up to this size travel whole, many to a GET, from one holder.
const SMALL_MAX: u64 = 256 * 1024;
/// Claimed bytes of small blobs in one GET.
const BATCH_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Verified-data messages between the download and its writer thread.
const WRITER_QUEUE: usize = 64;
/// Times a probe is asked again of a peer that answers busy (about the
/// stall timeout in all).
const BUSY_RETRIES: u32 = 200;
/// Error codes by name, for messages.
fn error_name(code: u8) -> &'static str {
    use fogwire_store_proto::message::*;
    match code {
        ERROR_NOT_FOUND => "not found",
        ERROR_NOT_HELD => "groups not held",
        ERROR_BUSY => "busy",
        ERROR_TOO_LARGE => "request too large",
        ERROR_CORRUPT => "its copy is damaged",
        _ => "unknown error",
    }
}

/// Totals of one fetch, shared by its parts.
#[derive(Default)]
struct Tally {
    progress: FetchProgress,
    fetched_blobs: u64,
    fetched_bytes: u64,
    from: HashMap<NodeId, u64>,
}

#[derive(Clone)]
struct Reporter {
    tally: Arc<std::sync::Mutex<Tally>>,
    progress: Option<ProgressFn>,
}

impl Reporter {
    fn update(&self, change: impl FnOnce(&mut Tally)) {
        let snapshot = {
            let mut tally = lock(&self.tally);
            change(&mut tally);
            tally.progress
        };
        if let Some(progress) = &self.progress {
            progress(snapshot);
        }
    }
}

/// The limits of a fetch nobody bounded: as many distinct entries as a
/// directory may list, any size.
pub(crate) fn whole_graph() -> RestoreLimits {
    RestoreLimits {
        entries_max: fogwire_store::store::DIRECTORY_ENTRIES_MAX as u64,
        bytes_max: u64::MAX,
    }
}

/// Fetches `hash` alone: its size.
pub(crate) async fn fetch_one(
    inner: &Arc<ReplicationState>,
    hash: Hash,
) -> Result<u64, FetchError> {
    let reporter = Reporter {
        tally: Arc::default(),
        progress: None,
    };
    let _held = inner.store.protect(hash);
    // A gateway fetches a site file by file: the routes to its holders
    // stay a while for the next one.
    let (size, _holders) = fetch_root(inner, hash, &reporter, crate::providers::LINGER).await?;
    Ok(size)
}

/// Fetches the root of a fetch from the peers, or, if none has it, from
/// holders found beyond them by its provider records: the routes to them
/// stay open while the returned [`Holding`] lives, for the rest of a tree.
async fn fetch_root(
    inner: &Arc<ReplicationState>,
    hash: Hash,
    reporter: &Reporter,
    linger: Duration,
) -> Result<(u64, Holding), FetchError> {
    let asked = match fetch_blob(inner, hash, reporter).await {
        Ok(size) => return Ok((size, Holding::default())),
        Err(FetchError::NotFound { asked, .. }) => asked,
        Err(error) => return Err(error),
    };
    let (holding, lookup) = crate::providers::find_and_reach(inner, hash, linger)
        .await
        .map_err(|beyond| FetchError::NotFound {
            hash,
            asked,
            beyond,
        })?;
    match fetch_blob(inner, hash, reporter).await {
        Ok(size) => Ok((size, holding)),
        Err(FetchError::NotFound { asked, .. }) => {
            let failures = lookup
                .holders
                .iter()
                .map(|holder| (*holder, "did not have it when asked".to_owned()))
                .collect();
            Err(FetchError::NotFound {
                hash,
                asked,
                beyond: crate::providers::Beyond::HoldersFailed { lookup, failures },
            })
        }
        Err(error) => Err(error),
    }
}

/// Fetches `hash` and, if it is an object node, the graph below it: each
/// distinct node once, however often the graph names it, and refused
/// before any file is fetched if its distinct files and directories, or
/// their bytes, are over `limits`.
pub(crate) async fn fetch(
    inner: &Arc<ReplicationState>,
    hash: Hash,
    tag: Option<String>,
    progress: Option<ProgressFn>,
    limits: &RestoreLimits,
) -> Result<FetchReport, FetchError> {
    if let Some(tag) = &tag
        && (tag.is_empty() || tag.len() > fogwire_store::store::TAG_LEN_MAX)
    {
        return Err(FetchError::Store(StoreError::BadTag { len: tag.len() }));
    }
    let reporter = Reporter {
        tally: Arc::default(),
        progress,
    };
    // Everything fetched stays safe from collection until the root is
    // pinned (or the fetch ends).
    let mut protections = vec![inner.store.protect(hash)];
    // Routes to holders beyond the neighbours, if it took those, stay
    // open until the whole tree is here.
    let (size, _holders) = fetch_root(inner, hash, &reporter, Duration::ZERO).await?;
    let mut directory = false;
    let mut blobs = 1u64;
    let mut bytes = size;
    if size <= object::NODE_LEN_MAX as u64 {
        // First the object nodes, level by level (they are small, and say
        // what else is needed); then every file at once, so that small
        // ones travel many to a message and large ones side by side.
        let mut level = vec![hash];
        let mut files = Vec::new();
        // Every distinct hash named below the root, once.
        let mut seen: HashSet<Hash> = HashSet::from([hash]);
        let mut entries = 0u64;
        let mut depth = 0usize;
        while !level.is_empty() {
            if depth > DEPTH_MAX {
                return Err(FetchError::TooDeep(hash));
            }
            let nodes = {
                let level = std::mem::take(&mut level);
                inner
                    .blocking(move |store| {
                        level
                            .iter()
                            .map(|node| store.object(node))
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .await?
            };
            for node in nodes.into_iter().flatten() {
                directory = true;
                match node {
                    Node::Directory(listed) => {
                        for entry in listed {
                            if !seen.insert(entry.hash) {
                                continue;
                            }
                            protections.push(inner.store.protect(entry.hash));
                            blobs += 1;
                            entries += 1;
                            match entry.kind {
                                EntryType::Directory => level.push(entry.hash),
                                EntryType::File => {
                                    bytes = bytes.saturating_add(entry.size);
                                    files.push(entry.hash);
                                }
                            }
                        }
                    }
                    Node::Index(children) => {
                        for child in children {
                            if !seen.insert(child.hash) {
                                continue;
                            }
                            protections.push(inner.store.protect(child.hash));
                            blobs += 1;
                            level.push(child.hash);
                        }
                    }
                }
                if entries > limits.entries_max || bytes > limits.bytes_max {
                    return Err(FetchError::TooLarge {
                        hash,
                        would: format!(
                            "at least {entries} distinct files and directories and {bytes} bytes"
                        ),
                        limits: *limits,
                    });
                }
            }
            fetch_many(inner, level.clone(), &reporter).await?;
            depth += 1;
        }
        fetch_many(inner, files, &reporter).await?;
    }
    if let Some(tag) = &tag {
        let tag = tag.clone();
        inner
            .blocking(move |store| store.set_tag(&tag, &hash))
            .await?;
    }
    drop(protections);
    let tally = lock(&reporter.tally);
    let mut from: Vec<(NodeId, u64)> = tally.from.iter().map(|(p, b)| (*p, *b)).collect();
    from.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
    Ok(FetchReport {
        hash,
        size,
        blobs,
        bytes,
        fetched_blobs: tally.fetched_blobs,
        fetched_bytes: tally.fetched_bytes,
        from,
        directory,
    })
}

/// Asks `links` what they hold of `hashes` (at most [`HAS_MAX`]), all at
/// once; peers that do not answer in time count as holding nothing, and
/// are left out of downloads for a minute.
async fn ask_all(
    inner: &Arc<ReplicationState>,
    links: &[Arc<PeerLink>],
    hashes: &[Hash],
) -> Vec<(Arc<PeerLink>, Vec<HaveState>)> {
    let mut asks = JoinSet::new();
    for link in links {
        let link = link.clone();
        let hashes = hashes.to_vec();
        let timeout = inner.config.has_timeout;
        let state = inner.clone();
        asks.spawn(async move {
            let count = hashes.len();
            let answer = tokio::time::timeout(timeout, async {
                let mut pending = link
                    .request(|id| StoreMessage::Has {
                        id,
                        hashes: hashes.clone(),
                    })
                    .await?;
                match pending.next().await? {
                    Reply::Have(entries) => Some(entries),
                    _ => None,
                }
            })
            .await;
            // A peer that stays silent is not waited on by the next fetch.
            if answer.is_err() {
                state.sideline(link.peer, timeout);
            }
            let answer = answer.ok().flatten();
            // Entries are matched by hash: a peer answering about other
            // hashes only fails to help.
            let states = match answer {
                Some(entries) => {
                    let by_hash: HashMap<Hash, HaveState> =
                        entries.into_iter().map(|e| (e.hash, e.state)).collect();
                    hashes
                        .iter()
                        .map(|h| by_hash.get(h).cloned().unwrap_or(HaveState::Absent))
                        .collect()
                }
                None => vec![HaveState::Absent; count],
            };
            (link, states)
        });
    }
    let mut out = Vec::new();
    while let Some(answer) = asks.join_next().await {
        if let Ok(answer) = answer {
            out.push(answer);
        }
    }
    out
}

fn claimed_size(state: &HaveState) -> Option<u64> {
    match state {
        HaveState::Absent => None,
        HaveState::Complete { size } | HaveState::Partial { size, .. } => Some(*size),
    }
}

fn available(state: &HaveState) -> Option<Option<Groups>> {
    match state {
        HaveState::Absent => None,
        HaveState::Complete { .. } => Some(None),
        HaveState::Partial { groups, .. } => Some(Some(groups.clone())),
    }
}

/// Fetches the children of a node: small ones batched, large ones one by
/// one, `fetch_parallel` at a time.
async fn fetch_many(
    inner: &Arc<ReplicationState>,
    hashes: Vec<Hash>,
    reporter: &Reporter,
) -> Result<(), FetchError> {
    let mut unique = HashSet::new();
    let hashes: Vec<Hash> = hashes.into_iter().filter(|h| unique.insert(*h)).collect();
    let (missing, held_bytes, held_blobs) = inner
        .blocking(move |store| {
            let (mut missing, mut held_bytes, mut held_blobs) = (Vec::new(), 0, 0);
            for hash in hashes {
                match store.have(&hash)? {
                    HaveState::Complete { size } => {
                        held_bytes += size;
                        held_blobs += 1;
                    }
                    _ => missing.push(hash),
                }
            }
            Ok((missing, held_bytes, held_blobs))
        })
        .await?;
    reporter.update(|tally| {
        tally.progress.done_bytes += held_bytes;
        tally.progress.total_bytes += held_bytes;
        tally.progress.blobs += held_blobs;
    });
    if missing.is_empty() {
        return Ok(());
    }
    let links = inner.usable_links();
    if links.is_empty() {
        return Err(FetchError::NoPeers { hash: missing[0] });
    }
    // Who has what, for all of them at once.
    let mut small: BTreeMap<NodeId, Vec<(Hash, u64)>> = BTreeMap::new();
    let mut large = Vec::new();
    for chunk in missing.chunks(HAS_MAX) {
        let answers = ask_all(inner, &links, chunk).await;
        for (index, hash) in chunk.iter().enumerate() {
            let mut complete = Vec::new();
            for (link, states) in &answers {
                if let Some(HaveState::Complete { size }) = states.get(index) {
                    complete.push((link.clone(), *size));
                }
            }
            // Spread small blobs over their complete holders.
            match complete.get(index % complete.len().max(1)) {
                Some((link, size)) if *size <= SMALL_MAX => {
                    small.entry(link.peer).or_default().push((*hash, *size));
                    reporter.update(|tally| tally.progress.total_bytes += size);
                }
                _ => large.push(*hash),
            }
        }
    }
    let links_by_peer: HashMap<NodeId, Arc<PeerLink>> =
        links.iter().map(|l| (l.peer, l.clone())).collect();
    let mut jobs: JoinSet<Result<Vec<Hash>, FetchError>> = JoinSet::new();
    let mut queue: Vec<Job> = Vec::new();
    for (peer, blobs) in small {
        let Some(link) = links_by_peer.get(&peer) else {
            continue;
        };
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        for (hash, size) in blobs {
            if batch.len() == GET_ITEMS_MAX || batch_bytes + size > BATCH_BYTES_MAX {
                queue.push(Job::Batch(link.clone(), std::mem::take(&mut batch)));
                batch_bytes = 0;
            }
            batch_bytes += size;
            batch.push((hash, size));
        }
        if !batch.is_empty() {
            queue.push(Job::Batch(link.clone(), batch));
        }
    }
    queue.extend(large.into_iter().map(Job::Blob));
    queue.reverse();
    let mut retry = Vec::new();
    loop {
        while jobs.len() < inner.config.fetch_parallel.max(1)
            && let Some(job) = queue.pop()
        {
            let inner = inner.clone();
            let reporter = reporter.clone();
            jobs.spawn(async move {
                match job {
                    Job::Batch(link, batch) => fetch_batch(&inner, &link, batch, &reporter).await,
                    Job::Blob(hash) => fetch_blob(&inner, hash, &reporter).await.map(|_| vec![]),
                }
            });
        }
        let Some(done) = jobs.join_next().await else {
            break;
        };
        match done {
            // Blobs a batch could not get go one by one, from anyone.
            Ok(Ok(left)) => retry.extend(left),
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(FetchError::Stopped),
        }
        if queue.is_empty() && !retry.is_empty() {
            queue.extend(retry.drain(..).map(Job::Blob));
        }
    }
    Ok(())
}

enum Job {
    Batch(Arc<PeerLink>, Vec<(Hash, u64)>),
    Blob(Hash),
}

/// Fetches small blobs whole in one GET from one peer; returns those it
/// could not get (the peer failed, or lied and was penalised).
async fn fetch_batch(
    inner: &Arc<ReplicationState>,
    link: &Arc<PeerLink>,
    batch: Vec<(Hash, u64)>,
    reporter: &Reporter,
) -> Result<Vec<Hash>, FetchError> {
    let items: Vec<GetItem> = batch
        .iter()
        .map(|(hash, size)| GetItem {
            hash: *hash,
            groups: all_groups(*size),
        })
        .collect();
    let Some(mut pending) = link
        .request(|id| StoreMessage::Get {
            id,
            items: items.clone(),
        })
        .await
    else {
        return Ok(batch.into_iter().map(|(h, _)| h).collect());
    };
    let mut receiving = BatchItem::new(&batch, &items, 0);
    // Items before this one are verified, their bytes here.
    let mut stored = 0usize;
    let mut verified: Vec<Vec<u8>> = Vec::new();
    let stall = inner.config.stall_timeout;
    loop {
        let reply = match tokio::time::timeout(stall, pending.next()).await {
            Ok(Some(reply)) => reply,
            Ok(None) | Err(_) => break,
        };
        // Data for a later item, or the end: every item before it must be
        // complete (an empty blob's encoding is empty: complete at once).
        let next = match &reply {
            Reply::Data { item, .. } => usize::from(*item),
            Reply::Done => batch.len(),
            _ => break,
        };
        if next < stored || next > batch.len() {
            inner.penalise(link.peer, "answered items out of order");
            break;
        }
        let mut short = false;
        while stored < next {
            if !receiving.decoder.is_done() {
                short = true;
                break;
            }
            verified.push(std::mem::take(&mut receiving.bytes));
            stored += 1;
            if stored < batch.len() {
                receiving = BatchItem::new(&batch, &items, stored);
            }
        }
        if short {
            inner.penalise(link.peer, "ended an item short");
            break;
        }
        let Reply::Data { bytes: data, .. } = reply else {
            break;
        };
        Counters::add(&pending.counters().fetched_bytes, data.len() as u64);
        let blob = &mut receiving.bytes;
        let result = receiving.decoder.push(&data, &mut |verified| {
            if let Verified::Group { offset, data } = verified {
                // In order: offsets only grow within one item.
                blob.truncate(offset as usize);
                blob.extend_from_slice(data);
            }
        });
        if let Err(error) = result {
            inner.penalise(link.peer, &format!("blob {}: {error}", batch[stored].0));
            break;
        }
    }
    // Everything verified goes into the store in one commit.
    if !verified.is_empty() {
        let count = verified.len();
        inner
            .blocking(move |store| store.import_batch(&verified))
            .await?;
        let bytes: u64 = batch[..count].iter().map(|(_, size)| size).sum();
        reporter.update(|tally| {
            tally.progress.done_bytes += bytes;
            tally.progress.blobs += count as u64;
            tally.fetched_blobs += count as u64;
            tally.fetched_bytes += bytes;
            *tally.from.entry(link.peer).or_default() += bytes;
        });
        tracing::debug!(blobs = count, bytes, peer = %link.peer, "fetched a batch");
    }
    Ok(batch[stored..].iter().map(|(h, _)| *h).collect())
}

/// The item of a batch being received.
struct BatchItem {
    decoder: ItemDecoder,
    bytes: Vec<u8>,
}

impl BatchItem {
    fn new(batch: &[(Hash, u64)], items: &[GetItem], index: usize) -> Self {
        let (hash, size) = batch[index];
        Self {
            decoder: ItemDecoder::new(hash, size, &items[index].groups),
            bytes: Vec::with_capacity(size as usize),
        }
    }
}

/// What one probe verified: the hash pairs above the last chunk group and
/// the group itself.
enum Owned {
    Parent(bao_tree::TreeNode, (blake3::Hash, blake3::Hash)),
    Group(u64, Vec<u8>),
}

/// Fetches the last chunk group of `hash` assuming `size`: if it
/// verifies, the size is proven.
async fn probe(
    inner: &Arc<ReplicationState>,
    link: &Arc<PeerLink>,
    hash: Hash,
    size: u64,
) -> Result<Vec<Owned>, Failure> {
    let last = group_count(&all_groups(size)) - 1;
    let groups = Groups::from(last..last + 1);
    let mut pending = link
        .request(|id| StoreMessage::Get {
            id,
            items: vec![GetItem {
                hash,
                groups: groups.clone(),
            }],
        })
        .await
        .ok_or(Failure::Gone)?;
    let mut decoder = ItemDecoder::new(hash, size, &groups);
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(inner.config.stall_timeout, pending.next()).await {
            Ok(Some(Reply::Data { item: 0, bytes })) => {
                Counters::add(&pending.counters().fetched_bytes, bytes.len() as u64);
                decoder
                    .push(&bytes, &mut |verified| match verified {
                        Verified::Parent { node, pair } => out.push(Owned::Parent(node, pair)),
                        Verified::Group { offset, data } => {
                            out.push(Owned::Group(offset, data.to_vec()));
                        }
                    })
                    .map_err(|_| Failure::Corrupt)?;
            }
            Ok(Some(Reply::Done)) if decoder.is_done() => return Ok(out),
            Ok(Some(Reply::Done | Reply::Data { .. })) => return Err(Failure::Corrupt),
            Ok(Some(Reply::Error(ERROR_BUSY))) => return Err(Failure::Busy),
            _ => return Err(Failure::Gone),
        }
    }
}

/// Fetches one blob (resuming what is held of it); returns its size.
async fn fetch_blob(
    inner: &Arc<ReplicationState>,
    hash: Hash,
    reporter: &Reporter,
) -> Result<u64, FetchError> {
    let lock = inner.fetch_lock(hash);
    let _fetching = lock.lock().await;
    if let HaveState::Complete { size } = inner.blocking(move |s| s.have(&hash)).await? {
        reporter.update(|tally| {
            tally.progress.done_bytes += size;
            tally.progress.total_bytes += size;
            tally.progress.blobs += 1;
        });
        return Ok(size);
    }
    let links = inner.usable_links();
    if links.is_empty() {
        return Err(FetchError::NoPeers { hash });
    }
    let answers = ask_all(inner, &links, &[hash]).await;
    let mut holders: Vec<(Arc<PeerLink>, HaveState)> = answers
        .into_iter()
        .filter_map(|(link, mut states)| {
            let state = states.pop()?;
            claimed_size(&state).map(|_| (link, state))
        })
        .collect();
    if holders.is_empty() {
        return Err(FetchError::NotFound {
            hash,
            asked: links.len(),
            beyond: crate::providers::Beyond::NotSearched,
        });
    }
    // Holders of the whole blob first: they can answer the probe.
    holders.sort_by_key(|(_, state)| !matches!(state, HaveState::Complete { .. }));
    let mut claims: BTreeMap<u64, usize> = BTreeMap::new();
    for (_, state) in &holders {
        if let Some(size) = claimed_size(state) {
            *claims.entry(size).or_default() += 1;
        }
    }
    let mut by_votes: Vec<(u64, usize)> = claims.into_iter().collect();
    by_votes.sort_by_key(|(_, votes)| std::cmp::Reverse(*votes));
    let mut proven = None;
    let mut failures = Vec::new();
    'sizes: for (size, _) in by_votes {
        let last = group_count(&all_groups(size)) - 1;
        for (link, state) in &holders {
            let can_answer = match state {
                HaveState::Complete { size: s } => *s == size,
                HaveState::Partial { size: s, groups } => *s == size && groups.contains(&last),
                HaveState::Absent => false,
            };
            if !can_answer {
                continue;
            }
            let mut answer = probe(inner, link, hash, size).await;
            // Busy serving others: it answers soon.
            for _ in 0..BUSY_RETRIES {
                if !matches!(answer, Err(Failure::Busy)) {
                    break;
                }
                tokio::time::sleep(BUSY_PAUSE).await;
                answer = probe(inner, link, hash, size).await;
            }
            match answer {
                Ok(verified) => {
                    proven = Some((size, verified, link.peer));
                    break 'sizes;
                }
                Err(Failure::Corrupt) => {
                    inner.penalise(link.peer, &format!("claimed blob {hash} has {size} bytes"));
                    failures.push(format!("{} lied about its size", link.peer.short()));
                }
                Err(Failure::Gone) => {
                    failures.push(format!("{} did not answer", link.peer.short()))
                }
                Err(Failure::Busy) => failures.push(format!("{} stayed busy", link.peer.short())),
            }
        }
    }
    let Some((size, verified, prover)) = proven else {
        return Err(FetchError::Size {
            hash,
            detail: if failures.is_empty() {
                "no holder has its last chunk group yet".into()
            } else {
                failures.join("; ")
            },
        });
    };
    reporter.update(|tally| tally.progress.total_bytes += size);
    if size <= CHUNK_GROUP_BYTES as u64 {
        // One chunk group: the probe brought all of it.
        let bytes = verified
            .into_iter()
            .find_map(|item| match item {
                Owned::Group(_, data) => Some(data),
                Owned::Parent(..) => None,
            })
            .unwrap_or_default();
        inner
            .blocking(move |store| store.import_bytes(&bytes, None))
            .await?;
        reporter.update(|tally| {
            tally.progress.done_bytes += size;
            tally.progress.blobs += 1;
            tally.fetched_blobs += 1;
            tally.fetched_bytes += size;
            *tally.from.entry(prover).or_default() += size;
        });
        return Ok(size);
    }
    let mut writer = inner
        .blocking(move |store| store.begin_partial(hash, size))
        .await?;
    // What an earlier, interrupted download left.
    let resumed = groups_bytes(&writer.have(), size);
    let writer = tokio::task::spawn_blocking(move || {
        for item in verified {
            match item {
                Owned::Parent(node, pair) => writer.write(Verified::Parent { node, pair })?,
                Owned::Group(offset, data) => writer.write(Verified::Group {
                    offset,
                    data: &data,
                })?,
            }
        }
        Ok::<_, std::io::Error>(writer)
    })
    .await
    .map_err(|_| FetchError::Stopped)?
    .map_err(|source| StoreError::Io {
        path: inner.store.root().join("partial"),
        source,
    })?;
    // The probe's group counts as fetched, and as progress.
    let held = groups_bytes(&writer.have(), size);
    reporter.update(|tally| tally.progress.done_bytes += held);
    let peers: Vec<(Arc<PeerLink>, Option<Groups>)> = holders
        .into_iter()
        .filter(|(_, state)| claimed_size(state) == Some(size))
        .filter_map(|(link, state)| available(&state).map(|groups| (link, groups)))
        .collect();
    let writer = download(inner, writer, peers, reporter).await?;
    let fetched = size - resumed;
    inner
        .blocking(move |store| store.finish_partial(writer, None))
        .await?;
    reporter.update(|tally| {
        tally.progress.blobs += 1;
        tally.fetched_blobs += 1;
        tally.fetched_bytes += fetched;
    });
    tracing::info!(blob = %hash, size, "fetched");
    Ok(size)
}

/// Bytes of a blob of `size` in chunk groups `groups`.
fn groups_bytes(groups: &Groups, size: u64) -> u64 {
    let group = CHUNK_GROUP_BYTES as u64;
    runs(groups)
        .into_iter()
        .map(|(start, end)| (end * group).min(size).saturating_sub(start * group))
        .sum()
}

/// Answers on their way to the writer, in arrival order.
enum ToWriter {
    Data { key: u64, bytes: Bytes },
    Done { key: u64 },
}

/// What the download tells the writer about requests. A list it reads
/// before each answer rather than a queue the download could wait on, so
/// that the download never waits for the writer while the writer waits
/// for the download. Bounded by the requests in flight.
enum Control {
    Start { key: u64, groups: Groups },
    Forget { key: u64 },
}

type Controls = Arc<std::sync::Mutex<Vec<Control>>>;

enum FromWriter {
    Verified {
        key: u64,
        groups: Groups,
    },
    Finished {
        key: u64,
    },
    /// The answer failed verification, or ended short.
    Bad {
        key: u64,
        why: String,
    },
    Failed(std::io::Error),
}

enum Event {
    Failed {
        key: u64,
        peer: NodeId,
        why: String,
        /// The peer answered busy: not a failure of the peer's.
        busy: bool,
    },
    /// Who holds the blob now (the answers of a HAS to every neighbour).
    Holders(Vec<(Arc<PeerLink>, HaveState)>),
}

/// Asks every usable neighbour what it holds of `hash`, in a task of its
/// own: answers come through the same links as the download's data, so
/// the download must keep taking data while it waits for them.
fn spawn_ask(inner: &Arc<ReplicationState>, hash: Hash, events: mpsc::Sender<Event>) {
    let inner = inner.clone();
    tokio::spawn(async move {
        let candidates = inner.usable_links();
        let answers = ask_all(&inner, &candidates, &[hash]).await;
        let holders = answers
            .into_iter()
            .filter_map(|(link, mut states)| states.pop().map(|state| (link, state)))
            .collect();
        let _ = events.send(Event::Holders(holders)).await;
    });
}

/// Verifies answers and writes them, in arrival order, on a blocking
/// thread; returns the writer when the download lets go.
fn write_loop(
    mut writer: PartialWriter,
    controls: Controls,
    mut inputs: mpsc::Receiver<ToWriter>,
    outputs: mpsc::Sender<FromWriter>,
) -> PartialWriter {
    let (hash, size) = (writer.hash(), writer.size());
    let mut decoders: HashMap<u64, ItemDecoder> = HashMap::new();
    while let Some(input) = inputs.blocking_recv() {
        for control in lock(&controls).drain(..) {
            match control {
                Control::Start { key, groups } => {
                    decoders.insert(key, ItemDecoder::new(hash, size, &groups));
                }
                Control::Forget { key } => {
                    decoders.remove(&key);
                }
            }
        }
        let output = match input {
            ToWriter::Done { key } => match decoders.remove(&key) {
                Some(decoder) if decoder.is_done() => FromWriter::Finished { key },
                Some(decoder) => FromWriter::Bad {
                    key,
                    why: format!("ended its answer {} bytes short", decoder.remaining()),
                },
                None => continue,
            },
            ToWriter::Data { key, bytes } => {
                let Some(decoder) = decoders.get_mut(&key) else {
                    continue;
                };
                let mut verified = Groups::empty();
                let mut failed = None;
                let result = decoder.push(&bytes, &mut |item| {
                    if let Verified::Group { offset, .. } = &item {
                        let group = offset / 16384;
                        verified |= Groups::from(group..group + 1);
                    }
                    if let Err(error) = writer.write(item)
                        && failed.is_none()
                    {
                        failed = Some(error);
                    }
                });
                if let Some(error) = failed {
                    let _ = outputs.blocking_send(FromWriter::Failed(error));
                    break;
                }
                if !verified.is_empty()
                    && outputs
                        .blocking_send(FromWriter::Verified {
                            key,
                            groups: verified,
                        })
                        .is_err()
                {
                    break;
                }
                match result {
                    Ok(()) => continue,
                    Err(error) => {
                        decoders.remove(&key);
                        FromWriter::Bad {
                            key,
                            why: error.to_string(),
                        }
                    }
                }
            }
        };
        if outputs.blocking_send(output).is_err() {
            break;
        }
    }
    writer
}

/// Asks `link` for `item` and passes the answers to the writer; reports a
/// request that cannot be sent (no room in the peer's queue for the stall
/// timeout counts as stalling), fails or stalls.
async fn forward(
    key: u64,
    (link, item): (Arc<PeerLink>, GetItem),
    to_writer: mpsc::Sender<ToWriter>,
    events: mpsc::Sender<Event>,
    stall: Duration,
) {
    let peer = link.peer;
    let get = |id| StoreMessage::Get {
        id,
        items: vec![item],
    };
    let mut busy = false;
    let why = 'failed: {
        let mut pending = match tokio::time::timeout(stall, link.request(get)).await {
            Ok(Some(pending)) => pending,
            Ok(None) => break 'failed "its link closed".to_string(),
            Err(_) => break 'failed format!("took no request for {} s", stall.as_secs()),
        };
        loop {
            match tokio::time::timeout(stall, pending.next()).await {
                Err(_) => break format!("sent nothing for {} s", stall.as_secs()),
                Ok(None) => break "its link closed".to_string(),
                Ok(Some(Reply::Data { item: 0, bytes })) => {
                    Counters::add(&pending.counters().fetched_bytes, bytes.len() as u64);
                    if to_writer.send(ToWriter::Data { key, bytes }).await.is_err() {
                        return;
                    }
                }
                Ok(Some(Reply::Done)) => {
                    let _ = to_writer.send(ToWriter::Done { key }).await;
                    return;
                }
                Ok(Some(Reply::Error(code))) => {
                    busy = code == ERROR_BUSY;
                    break format!("refused: {}", error_name(code));
                }
                Ok(Some(_)) => break "answered out of turn".to_string(),
            }
        }
    };
    let _ = events
        .send(Event::Failed {
            key,
            peer,
            why,
            busy,
        })
        .await;
}

/// Runs the download scheduler over `peers` until every chunk group of the
/// blob is written.
async fn download(
    inner: &Arc<ReplicationState>,
    writer: PartialWriter,
    peers: Vec<(Arc<PeerLink>, Option<Groups>)>,
    reporter: &Reporter,
) -> Result<PartialWriter, FetchError> {
    let (hash, size) = (writer.hash(), writer.size());
    let config = fogwire_store_proto::download::Config {
        stall_cutoff: 3 * inner.config.stall_timeout,
        ..inner.config.download.clone()
    };
    let mut download: Download<NodeId> = Download::new(hash, size, writer.have(), config);
    let mut links: HashMap<NodeId, Arc<PeerLink>> = HashMap::new();
    for (link, groups) in peers {
        download.add_peer(link.peer, groups);
        links.insert(link.peer, link);
    }
    let (to_writer, writer_inputs) = mpsc::channel(WRITER_QUEUE);
    let (writer_outputs, mut from_writer) = mpsc::channel(WRITER_QUEUE);
    let controls = Controls::default();
    let writer_controls = controls.clone();
    let writer_thread = tokio::task::spawn_blocking(move || {
        write_loop(writer, writer_controls, writer_inputs, writer_outputs)
    });
    let (events_sender, mut events) = mpsc::channel(256);
    let mut forwarders: HashMap<u64, (NodeId, tokio::task::AbortHandle)> = HashMap::new();
    let mut last_why = String::from("no holder left");
    // The download decides what to ask of whom, when to ask who holds the
    // blob, and when to give up; this loop carries it out.
    let result = loop {
        let now = Instant::now();
        while let Some(action) = download.poll_action(now) {
            match action {
                Action::Request { peer, key, groups } => {
                    let Some(link) = links.get(&peer).filter(|l| !l.is_closed()).cloned() else {
                        download.remove_peer(peer);
                        continue;
                    };
                    lock(&controls).push(Control::Start {
                        key,
                        groups: groups.clone(),
                    });
                    // Sent from the request's own task: a peer that stops
                    // reading fills its queue, and waiting for room here
                    // would hold up every other peer's data.
                    let task = tokio::spawn(forward(
                        key,
                        (link, GetItem { hash, groups }),
                        to_writer.clone(),
                        events_sender.clone(),
                        inner.config.stall_timeout,
                    ));
                    forwarders.insert(key, (peer, task.abort_handle()));
                }
                Action::Cancel { key, .. } => {
                    if let Some((_, task)) = forwarders.remove(&key) {
                        task.abort();
                    }
                    lock(&controls).push(Control::Forget { key });
                }
                Action::AskHolders => spawn_ask(inner, hash, events_sender.clone()),
            }
        }
        match download.outcome(Instant::now()) {
            Some(Ok(())) => break Ok(()),
            Some(Err(Stuck::NoHolder)) => break Err(last_why.clone()),
            Some(Err(Stuck::Silent(silent))) => {
                break Err(format!("nothing arrived for {} s", silent.as_secs()));
            }
            None => {}
        }
        let wake_at = download.poll_timeout();
        tokio::select! {
            output = from_writer.recv() => match output {
                Some(FromWriter::Verified { key, groups }) => {
                    let new = groups_bytes(&(&groups - download.have()), size);
                    download.on_verified(key, &groups, Instant::now());
                    if let Some((peer, _)) = forwarders.get(&key) {
                        let peer = *peer;
                        let delta = new;
                        reporter.update(|tally| {
                            tally.progress.done_bytes += delta;
                            *tally.from.entry(peer).or_default() += delta;
                        });
                    }
                }
                Some(FromWriter::Finished { key }) => {
                    forwarders.remove(&key);
                    download.on_done(key);
                }
                Some(FromWriter::Bad { key, why }) => {
                    if let Some((peer, task)) = forwarders.remove(&key) {
                        task.abort();
                        inner.penalise(peer, &format!("blob {hash}: {why}"));
                        last_why = format!("{} sent bad data ({why})", peer.short());
                    }
                    download.on_failed(key, Failure::Corrupt, Instant::now());
                }
                Some(FromWriter::Failed(error)) => {
                    break Err(format!("cannot write to the store: {error}"));
                }
                None => break Err("the writer stopped".into()),
            },
            event = events.recv() => match event {
                Some(Event::Failed { key, peer, why, busy: true }) => {
                    // Serving others (or this fetch's other downloads):
                    // fewer requests at a time, after a pause.
                    forwarders.remove(&key);
                    download.on_failed(key, Failure::Busy, Instant::now());
                    tracing::trace!(blob = %hash, peer = %peer, why, "peer busy");
                }
                Some(Event::Failed { key, peer, why, busy: false }) => {
                    // What it sent before failing is still written (and
                    // counts): its decoder stays until the download ends.
                    forwarders.remove(&key);
                    download.on_failed(key, Failure::Gone, Instant::now());
                    tracing::debug!(blob = %hash, peer = %peer, why, "request failed");
                    last_why = format!("{} {why}", peer.short());
                    if links.get(&peer).is_none_or(|l| l.is_closed()) {
                        download.remove_peer(peer);
                        links.remove(&peer);
                    }
                }
                Some(Event::Holders(holders)) => {
                    let mut found = Vec::new();
                    for (link, state) in holders {
                        if claimed_size(&state) != Some(size) {
                            continue;
                        }
                        if let Some(groups) = available(&state) {
                            found.push((link.peer, groups));
                            links.insert(link.peer, link);
                        }
                    }
                    download.on_holders(found);
                }
                None => break Err("the download's events stopped".into()),
            },
            // A paused peer may be asked again, the holders are due, or
            // the download gives up for silence.
            () = sleep_until_opt(wake_at) => {}
            _ = inner.shutdown.cancelled() => break Err("shutting down".into()),
        }
    };
    for (_, (_, task)) in forwarders.drain() {
        task.abort();
    }
    drop(to_writer);
    let writer = writer_thread.await.map_err(|_| FetchError::Stopped)?;
    match result {
        Ok(()) => Ok(writer),
        Err(detail) => {
            let done = groups_bytes(&writer.have(), size);
            Err(FetchError::Stuck {
                hash,
                done,
                size,
                detail,
            })
        }
    }
}

/// Sleeps until `at`; forever without one.
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
