//! Restores that a hostile tree cannot blow up: a small graph naming the
//! same subdirectory again and again is counted as it would be written
//! and refused before anything is; claimed sizes are checked against the
//! blobs; repeated names are refused; a restore stops when told to.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use fogwire_store::object::{self, DirEntry, EntryType};
use fogwire_store::{Config, Hash, RestoreLimits, Store, StoreError, TreeTotals};
use fogwire_testkit::data::pattern;

fn store(dir: &Path) -> Store {
    Store::open(&dir.join("store"), Config::default()).unwrap()
}

fn file(name: &str, hash: Hash, size: u64) -> DirEntry {
    DirEntry {
        name: name.to_owned(),
        kind: EntryType::File,
        executable: false,
        size,
        hash,
    }
}

fn subdirectory(name: &str, hash: Hash) -> DirEntry {
    DirEntry {
        name: name.to_owned(),
        kind: EntryType::Directory,
        executable: false,
        size: 0,
        hash,
    }
}

/// Adds a directory of `entries`; returns its root.
fn directory(store: &Store, entries: Vec<DirEntry>) -> Hash {
    let nodes = object::build_directory(entries).unwrap();
    *store.import_batch(&nodes).unwrap().last().unwrap()
}

/// A tree of `fan`^`levels` directories, each level naming one shared
/// directory `fan` times, with `files` files of `blob` at the bottom.
fn shared_tree(store: &Store, fan: usize, levels: usize, files: usize, blob: Hash) -> Hash {
    let size = store.entry(&blob).unwrap().unwrap().size;
    let mut current = directory(
        store,
        (0..files)
            .map(|i| file(&format!("f{i:05}"), blob, size))
            .collect(),
    );
    for _ in 0..levels {
        current = directory(
            store,
            (0..fan)
                .map(|i| subdirectory(&format!("d{i:05}"), current))
                .collect(),
        );
    }
    current
}

#[test]
fn a_shared_subtree_counts_every_time_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let blob = store.import_bytes(&pattern(1000, 1), None).unwrap();
    // 3 × 3 directories, each with 2 files of 1000 bytes.
    let root = shared_tree(&store, 3, 2, 2, blob);
    let totals = store.tree_totals(&root, &RestoreLimits::default()).unwrap();
    assert_eq!(
        totals,
        TreeTotals {
            files: 18,
            directories: 12,
            bytes: 18_000,
        }
    );
    // Restored, that is exactly what is written.
    let target = dir.path().join("out");
    let report = store.export_dir(&root, &target, &mut |_| {}).unwrap();
    assert_eq!((report.files, report.directories), (18, 12));
    assert_eq!(report.bytes, 18_000);
    assert_eq!(
        std::fs::read(target.join("d00002/d00001/f00001")).unwrap(),
        pattern(1000, 1)
    );
}

#[test]
fn a_small_graph_of_a_million_files_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let blob = store.import_bytes(&pattern(64 * 1024, 2), None).unwrap();
    // Four nodes of 1000 entries: 10⁹ files and 64 TB if restored.
    let root = shared_tree(&store, 1000, 2, 1000, blob);
    let target = dir.path().join("out");
    let written = AtomicU64::new(0);
    let refused = store
        .export_dir_bounded(
            &root,
            &target,
            &RestoreLimits::default(),
            &|| false,
            &mut |done, _| written.store(done, Ordering::Relaxed),
        )
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::TooLarge { hash, .. } if hash == root),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("nothing was written"),
        "{refused}"
    );
    assert!(!target.exists());
    assert_eq!(written.load(Ordering::Relaxed), 0);
    // The bytes limit holds on its own: one level of 1000 × 64 KiB.
    let wide = shared_tree(&store, 1, 0, 1000, blob);
    let limits = RestoreLimits {
        entries_max: 1_000_000,
        bytes_max: 1 << 20,
    };
    let refused = store.tree_totals(&wide, &limits).unwrap_err();
    let StoreError::TooLarge { would, .. } = &refused else {
        panic!("{refused}");
    };
    assert_eq!(would, "1000 files, 0 directories and 65536000 bytes");
    // Within limits raised for it, the same tree restores.
    let raised = RestoreLimits {
        entries_max: 1000,
        bytes_max: 64_000 * 1024,
    };
    store
        .export_dir_bounded(&wide, &target, &raised, &|| false, &mut |_, _| {})
        .unwrap();
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 1000);
}

#[test]
fn claimed_sizes_and_repeated_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let blob = store.import_bytes(&pattern(5000, 3), None).unwrap();
    // A file that claims 50 bytes of a 5000-byte blob.
    let lying = directory(&store, vec![file("a", blob, 50)]);
    let refused = store
        .tree_totals(&lying, &RestoreLimits::default())
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("`a` claims 50 bytes, but its blob"),
        "{refused}"
    );
    assert!(
        store
            .export_dir(&lying, &dir.path().join("out1"), &mut |_| {})
            .is_err()
    );
    assert!(!dir.path().join("out1").exists());
    // An index whose two children are one node: every name twice.
    let entries: Vec<DirEntry> = (0..object::NODE_ENTRIES_MAX + 1)
        .map(|i| file(&format!("n{i:05}"), blob, 5000))
        .collect();
    let nodes = object::build_directory(entries).unwrap();
    assert_eq!(nodes.len(), 3, "two directory nodes and their index");
    let (first, second) = (Hash::of(&nodes[0]), Hash::of(&nodes[1]));
    let mut index = nodes[2].clone();
    let at = index
        .windows(32)
        .position(|window| window == second.as_bytes())
        .unwrap();
    index[at..at + 32].copy_from_slice(first.as_bytes());
    store.import_batch(&nodes[..2]).unwrap();
    let twice = store.import_bytes(&index, None).unwrap();
    let refused = store
        .tree_totals(&twice, &RestoreLimits::default())
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("is listed twice or out of order"),
        "{refused}"
    );
}

#[test]
fn a_restore_told_to_stop_stops_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let big = store.import_bytes(&pattern(8 << 20, 4), None).unwrap();
    let root = directory(
        &store,
        (0..4)
            .map(|i| file(&format!("big{i}"), big, 8 << 20))
            .collect(),
    );
    // Told to stop once the second file is half written.
    let stop = AtomicBool::new(false);
    let target = dir.path().join("out");
    let stopped = store
        .export_dir_bounded(
            &root,
            &target,
            &RestoreLimits::default(),
            &|| stop.load(Ordering::Relaxed),
            &mut |done, _| {
                if done >= (8 << 20) + (4 << 20) {
                    stop.store(true, Ordering::Relaxed);
                }
            },
        )
        .unwrap_err();
    assert!(matches!(stopped, StoreError::Stopped(_)), "{stopped}");
    // The first file whole, nothing of the second: no temporary file left.
    let mut left: Vec<String> = std::fs::read_dir(&target)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec!["big0".to_owned()]);
    assert_eq!(std::fs::read(target.join("big0")).unwrap().len(), 8 << 20);
}
