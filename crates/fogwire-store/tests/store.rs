//! The store on a real directory: adding, reading, tags, collection,
//! damage on disk, recovery after a crash, and races.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fogwire_store::{Config, Hash, Store, StoreError};
use fogwire_testkit::data::pattern;
use proptest::prelude::*;

fn write_file(dir: &Path, name: &str, data: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

fn store(dir: &Path) -> Store {
    Store::open(&dir.join("store"), Config::default()).unwrap()
}

fn read_all(store: &Store, hash: &Hash) -> Result<Vec<u8>, StoreError> {
    let size = store.entry(hash)?.ok_or(StoreError::NotFound(*hash))?.size;
    let mut out = Vec::new();
    store.read_range(hash, 0, size, &mut |bytes| {
        out.extend_from_slice(bytes);
        Ok(())
    })?;
    Ok(out)
}

#[test]
fn a_file_added_reads_back_exported_with_the_b3sum_hash() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    for (index, len) in [0usize, 1, 16 * 1024, 16 * 1024 + 1, 5 * 1024 * 1024 + 77]
        .into_iter()
        .enumerate()
    {
        let data = pattern(len, index as u64);
        let path = write_file(dir.path(), &format!("in{index}"), &data);
        let mut last = 0;
        let hash = store
            .import_file(&path, None, &mut |done| last = done)
            .unwrap();
        assert_eq!(hash, Hash::of(&data), "len {len}");
        assert_eq!(last, len as u64);
        assert_eq!(read_all(&store, &hash).unwrap(), data);
        let out = dir.path().join(format!("out{index}"));
        assert_eq!(store.export(&hash, &out, &mut |_| {}).unwrap(), len as u64);
        assert_eq!(std::fs::read(&out).unwrap(), data);
        // Adding it again changes nothing.
        assert_eq!(store.import_file(&path, None, &mut |_| {}).unwrap(), hash);
    }
    assert_eq!(store.stat().unwrap().blobs, 5);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn any_range_reads_exactly_those_bytes(len in 1usize..300_000, a in 0usize..300_000, b in 0usize..300_000) {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let data = pattern(len, 9);
        let hash = store.import_bytes(&data, None).unwrap();
        let (start, end) = (a.min(b) % (len + 1), a.max(b) % (len + 1));
        let (start, end) = (start.min(end), start.max(end));
        let mut out = Vec::new();
        store.read_range(&hash, start as u64, end as u64, &mut |bytes| {
            out.extend_from_slice(bytes);
            Ok(())
        }).unwrap();
        prop_assert_eq!(&out[..], &data[start..end]);
    }
}

#[test]
fn damage_on_disk_is_reported_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let data = pattern(1024 * 1024, 3);
    let hash = store.import_bytes(&data, Some("keep")).unwrap();
    let data_file = dir
        .path()
        .join("store/blobs")
        .join(&hash.to_string()[..2])
        .join(format!("{hash}.data"));
    let mut bytes = std::fs::read(&data_file).unwrap();
    bytes[700_000] ^= 0x40;
    std::fs::write(&data_file, bytes).unwrap();
    // Bytes before the damaged chunk group are served; the group is not.
    let mut served = Vec::new();
    let error = store
        .read_range(&hash, 0, data.len() as u64, &mut |bytes| {
            served.extend_from_slice(bytes);
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains("688128"), "{error}");
    assert_eq!(served.len(), 688_128);
    assert_eq!(&served[..], &data[..688_128]);
    // A range that avoids the damage still reads.
    assert_eq!(
        read_range_vec(&store, &hash, 0, 4096),
        data[..4096].to_vec()
    );
    assert!(store.verify(&hash).is_err());
    let out = dir.path().join("exported");
    assert!(store.export(&hash, &out, &mut |_| {}).is_err());
    assert!(!out.exists(), "a failed export leaves nothing behind");
}

fn read_range_vec(store: &Store, hash: &Hash, start: u64, end: u64) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .read_range(hash, start, end, &mut |bytes| {
            out.extend_from_slice(bytes);
            Ok(())
        })
        .unwrap();
    out
}

#[test]
fn tags_name_only_blobs_that_are_there() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let hash = store.import_bytes(b"tagged", None).unwrap();
    assert_eq!(store.set_tag("docs", &hash).unwrap(), None);
    assert_eq!(store.tags().unwrap(), vec![("docs".to_owned(), hash)]);
    let missing = Hash::of(b"never added");
    assert!(matches!(
        store.set_tag("other", &missing),
        Err(StoreError::NotFound(_))
    ));
    assert!(store.set_tag("", &hash).is_err());
    assert_eq!(store.remove_tag("docs").unwrap(), hash);
    assert!(matches!(
        store.remove_tag("docs"),
        Err(StoreError::NoTag(_))
    ));
}

#[test]
fn collection_keeps_pins_and_the_newest_cache() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let pinned = store
        .import_bytes(&pattern(100_000, 1), Some("pinned"))
        .unwrap();
    // Added one after the other, within the same millisecond or not.
    let old = store.import_bytes(&pattern(100_000, 2), None).unwrap();
    let new = store.import_bytes(&pattern(100_000, 3), None).unwrap();
    let small = store.import_bytes(b"tiny", None).unwrap();
    // A cache of 150 000 bytes keeps the newest unpinned blob (and the
    // tiny one), not the old one.
    let report = store.gc(Some(150_000)).unwrap();
    assert_eq!(report.removed_blobs, 1);
    assert!(store.entry(&old).unwrap().is_none());
    for kept in [pinned, new, small] {
        assert!(store.entry(&kept).unwrap().is_some());
        store.verify(&kept).unwrap();
    }
    // No cache: every unpinned blob goes, the pinned one stays.
    store.gc(Some(0)).unwrap();
    assert!(store.entry(&new).unwrap().is_none());
    assert!(store.entry(&small).unwrap().is_none());
    store.verify(&pinned).unwrap();
    // A protected blob survives even a cacheless collection.
    let held = store.import_bytes(&pattern(50_000, 4), None).unwrap();
    let guard = store.protect(held);
    store.gc(Some(0)).unwrap();
    assert!(store.entry(&held).unwrap().is_some());
    drop(guard);
    store.gc(Some(0)).unwrap();
    assert!(store.entry(&held).unwrap().is_none());
    // Files of removed blobs are gone too.
    let files: usize = walk(&dir.path().join("store/blobs"));
    assert_eq!(files, 2, "only the pinned blob's data and outboard remain");
}

fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|entry| {
            if entry.path().is_dir() {
                walk(&entry.path())
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn open_cleans_up_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (kept, truncated) = {
        let store = store(dir.path());
        let kept = store.import_bytes(&pattern(200_000, 5), None).unwrap();
        let truncated = store.import_bytes(&pattern(200_000, 6), None).unwrap();
        (kept, truncated)
    };
    let root = dir.path().join("store");
    // A crash mid-import leaves a temporary file; one between rename and
    // commit leaves files no entry names; a damaged disk truncates one.
    std::fs::write(root.join("tmp/abandoned.data"), b"half").unwrap();
    let orphan = Hash::of(b"orphan");
    let orphan_dir = root.join("blobs").join(&orphan.to_string()[..2]);
    std::fs::create_dir_all(&orphan_dir).unwrap();
    std::fs::write(orphan_dir.join(format!("{orphan}.data")), b"x").unwrap();
    let truncated_path = root
        .join("blobs")
        .join(&truncated.to_string()[..2])
        .join(format!("{truncated}.data"));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated_path)
        .unwrap();
    file.set_len(1000).unwrap();
    drop(file);
    let store = store(dir.path());
    assert!(!root.join("tmp/abandoned.data").exists());
    assert!(!orphan_dir.join(format!("{orphan}.data")).exists());
    assert!(store.entry(&truncated).unwrap().is_none());
    store.verify(&kept).unwrap();
}

#[test]
fn adding_tagging_and_collecting_at_once_never_loses_a_tagged_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(store(dir.path()));
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(Ordering::Relaxed) {
                store.gc(Some(0)).unwrap();
                rounds += 1;
            }
            rounds
        })
    };
    let writers: Vec<_> = (0..2u8)
        .map(|writer| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut tagged = Vec::new();
                for round in 0..40u8 {
                    let data = pattern(
                        20_000 + round as usize * 1000,
                        u64::from(writer) * 100 + u64::from(round),
                    );
                    let tag = format!("w{writer}-{round}");
                    // Added and tagged in one step: never unprotected.
                    let hash = store.import_bytes(&data, Some(&tag)).unwrap();
                    tagged.push((tag, hash, data));
                    // Tagging separately: either it lands (blob kept) or
                    // it fails because the collector took the blob first.
                    let loose = store
                        .import_bytes(&pattern(30_000, u64::from(round)), None)
                        .unwrap();
                    match store.set_tag(&format!("loose{writer}-{round}"), &loose) {
                        Ok(_) => tagged.push((
                            format!("loose{writer}-{round}"),
                            loose,
                            pattern(30_000, u64::from(round)),
                        )),
                        Err(StoreError::NotFound(_)) => {}
                        Err(other) => panic!("{other}"),
                    }
                }
                tagged
            })
        })
        .collect();
    let mut tagged = Vec::new();
    for writer in writers {
        tagged.extend(writer.join().unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    assert!(collector.join().unwrap() > 0);
    // Every entry still has its bytes (none lost to a collection racing
    // with the same blob being added again).
    for (hash, _) in store.entries().unwrap() {
        store.verify(&hash).unwrap();
    }
    store.gc(Some(0)).unwrap();
    for (tag, hash, data) in tagged {
        assert_eq!(read_all(&store, &hash).unwrap(), data, "tag {tag}");
    }
}

#[test]
fn a_file_added_by_reference_is_read_in_place_and_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let data = pattern(20 * 1024 * 1024 + 5, 8);
    let path = write_file(dir.path(), "referenced", &data);
    let mut last = 0;
    let hash = store
        .import_reference(&path, Some("ref"), &mut |done| last = done)
        .unwrap();
    assert_eq!(hash, Hash::of(&data));
    assert_eq!(last, data.len() as u64);
    assert_eq!(read_all(&store, &hash).unwrap(), data);
    // The store holds no copy: only the outboard.
    assert_eq!(walk(&dir.path().join("store/blobs")), 1);
    // Reopening keeps it.
    drop(store);
    let store = self::store(dir.path());
    assert_eq!(read_range_vec(&store, &hash, 5, 10), data[5..10].to_vec());
    // The file changes: reads say so, naming the file.
    let mut changed = data.clone();
    changed[12_345_678] ^= 1;
    std::fs::write(&path, &changed).unwrap();
    let error = read_all(&store, &hash).unwrap_err();
    assert!(
        matches!(error, StoreError::ExternalChanged { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("referenced"), "{error}");
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        read_all(&store, &hash),
        Err(StoreError::ExternalChanged { .. })
    ));
    // Collected: the outboard goes, and the user's file is never touched.
    std::fs::write(&path, &data).unwrap();
    store.remove_tag("ref").unwrap();
    store.gc(Some(0)).unwrap();
    assert!(store.entry(&hash).unwrap().is_none());
    assert_eq!(std::fs::read(&path).unwrap(), data);
}

/// Files under `root` as (relative path, bytes, executable), sorted.
fn tree_of(root: &Path) -> Vec<(String, Vec<u8>, bool)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            let metadata = std::fs::symlink_metadata(&path).unwrap();
            if metadata.is_dir() {
                out.push((format!("{relative}/"), Vec::new(), false));
                stack.push(path);
            } else if metadata.is_file() {
                let executable = metadata.permissions().mode() & 0o111 != 0;
                out.push((relative, std::fs::read(&path).unwrap(), executable));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_directory_is_named_by_one_root_and_restored_exactly() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::create_dir_all(source.join("docs/deep/deeper")).unwrap();
    std::fs::create_dir_all(source.join("empty")).unwrap();
    std::fs::write(source.join("readme.txt"), b"hello").unwrap();
    std::fs::write(source.join("empty-file"), b"").unwrap();
    std::fs::write(source.join("docs/big.bin"), pattern(3_000_000, 1)).unwrap();
    std::fs::write(source.join("docs/deep/deeper/note"), pattern(40_000, 2)).unwrap();
    std::fs::write(source.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        source.join("run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("readme.txt", source.join("link")).unwrap();
    let store = store(dir.path());
    let report = store
        .import_dir(&source, Some("site"), false, &mut |_| {})
        .unwrap();
    let root = report.root.unwrap();
    assert_eq!(report.files, 5);
    assert_eq!(report.directories, 4);
    assert_eq!(report.skipped, vec![source.join("link")]);
    // The same tree gives the same root.
    let again = store.import_dir(&source, None, true, &mut |_| {}).unwrap();
    assert_eq!(again.root, Some(root));
    // Collection keeps everything under a pinned root.
    store.gc(Some(0)).unwrap();
    let restored = dir.path().join("restored");
    store.export_dir(&root, &restored, &mut |_| {}).unwrap();
    let mut expected = tree_of(&source);
    expected.retain(|(path, _, _)| path != "link");
    assert_eq!(tree_of(&restored), expected);
    // Not into a directory that has something in it.
    assert!(matches!(
        store.export_dir(&root, &restored, &mut |_| {}),
        Err(StoreError::TargetNotEmpty(_))
    ));
    // A file is not a directory.
    let file_hash = Hash::of(b"hello");
    assert!(matches!(
        store.export_dir(&file_hash, &dir.path().join("x"), &mut |_| {}),
        Err(StoreError::NotAnObject(_))
    ));
    // Unpinned, the whole tree is cache and goes.
    store.remove_tag("site").unwrap();
    store.gc(Some(0)).unwrap();
    assert_eq!(store.stat().unwrap().blobs, 0);
}

#[test]
fn publishing_a_feed_pins_its_content_and_a_holder_only_moves_forward() {
    use fogwire_store::{ContentKind, FeedRoot};
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let key = fogwire_identity::Keypair::from_seed(&[7; 32]);
    let v1 = store.import_bytes(b"version one", None).unwrap();
    let (first, first_bytes) = store.publish(&key, v1, ContentKind::Blob, 1_000).unwrap();
    assert_eq!(first.seq, 1);
    let v2 = store.import_bytes(b"version two", None).unwrap();
    let (second, second_bytes) = store.publish(&key, v2, ContentKind::Blob, 2_000).unwrap();
    assert_eq!((second.seq, second.previous), (2, Some(v1)));
    assert_eq!(store.feed_root(&first.feed).unwrap(), Some(second.clone()));
    // What the feed points at is pinned; what it pointed at before is cache.
    store.gc(Some(0)).unwrap();
    assert!(store.entry(&v2).unwrap().is_some());
    assert!(store.entry(&v1).unwrap().is_none());
    // Another holder: takes the roots in order, refuses a replay.
    let other = dir.path().join("other");
    let holder = Store::open(&other, Config::default()).unwrap();
    holder.accept_feed_root(&first_bytes, 3_000).unwrap();
    holder.accept_feed_root(&second_bytes, 3_000).unwrap();
    assert!(matches!(
        holder.accept_feed_root(&first_bytes, 3_000),
        Err(StoreError::Feed(fogwire_store::feed::FeedError::Old {
            have: 2,
            got: 1
        }))
    ));
    assert_eq!(holder.feeds().unwrap(), vec![second]);
    holder.set_following(&first.feed, true).unwrap();
    assert_eq!(holder.following().unwrap(), vec![first.feed]);
    let _ = FeedRoot::decode(&first_bytes).unwrap();
}

#[test]
fn unsynced_imports_read_back_and_last_once_a_durable_commit_follows() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let small = pattern(100, 1);
    let large = pattern(300 * 1024, 2);
    let hashes = store
        .import_batch_unsynced(&[small.clone(), large.clone()])
        .unwrap();
    assert_eq!(read_all(&store, &hashes[0]).unwrap(), small);
    assert_eq!(read_all(&store, &hashes[1]).unwrap(), large);
    // A durable commit after them makes them durable too.
    store.import_batch(&[pattern(10, 3)]).unwrap();
    drop(store);
    let store = self::store(dir.path());
    assert_eq!(read_all(&store, &hashes[0]).unwrap(), small);
    assert_eq!(read_all(&store, &hashes[1]).unwrap(), large);
}
