//! Blobs moving between two real stores the way replication moves them:
//! encoded from one store's files, verified and written piece by piece
//! into the other's partial files, interrupted, resumed, served on while
//! incomplete, and collected.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use bytes::BytesMut;
use fogwire_store::{Config, Hash, Store, StoreError};
use fogwire_store_proto::message::{Groups, HaveState};
use fogwire_store_proto::stream::{ItemDecoder, ItemEncoder, all_groups};
use fogwire_testkit::data::pattern;

fn store(dir: &Path, name: &str) -> Store {
    Store::open(&dir.join(name), Config::default()).unwrap()
}

/// Moves `groups` of `hash` from `from` into `writer`, as a GET would.
fn transfer(from: &Store, writer: &mut fogwire_store::PartialWriter, groups: &Groups) {
    let source = from.source(&writer.hash()).unwrap().unwrap();
    let mut encoder = ItemEncoder::new(writer.hash(), writer.size(), groups);
    let mut decoder = ItemDecoder::new(writer.hash(), writer.size(), groups);
    while !encoder.is_done() {
        let mut piece = BytesMut::new();
        source.encode(&mut encoder, &mut piece, 7000).unwrap();
        let mut failed = None;
        decoder
            .push(&piece, &mut |verified| {
                if let Err(error) = writer.write(verified) {
                    failed = Some(error);
                }
            })
            .unwrap();
        assert!(failed.is_none());
    }
    assert!(decoder.is_done());
}

fn read_all(store: &Store, hash: &Hash) -> Vec<u8> {
    let size = store.entry(hash).unwrap().unwrap().size;
    let mut out = Vec::new();
    store
        .read_range(hash, 0, size, &mut |bytes| {
            out.extend_from_slice(bytes);
            Ok(())
        })
        .unwrap();
    out
}

#[test]
fn an_interrupted_download_resumes_with_what_it_had_and_finishes_intact() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(3_000_000, 1);
    let hash = {
        let seed = store(dir.path(), "seed");
        seed.import_bytes(&data, Some("x")).unwrap()
    };
    let seed = store(dir.path(), "seed");
    let size = data.len() as u64;
    {
        let fetcher = store(dir.path(), "fetcher");
        let mut writer = fetcher.begin_partial(hash, size).unwrap();
        assert!(matches!(
            fetcher.begin_partial(hash, size),
            Err(StoreError::Busy(_))
        ));
        transfer(&seed, &mut writer, &Groups::from(10..50));
        transfer(&seed, &mut writer, &Groups::from(100..120));
        assert_eq!(writer.have(), Groups::from(10..50) | Groups::from(100..120));
        // Served on while incomplete: exactly what it has.
        match fetcher.have(&hash).unwrap() {
            HaveState::Partial { size: s, groups } => {
                assert_eq!(s, size);
                assert_eq!(groups, writer.have());
            }
            other => panic!("expected partial, got {other:?}"),
        }
        let third = store(dir.path(), "third");
        let mut third_writer = third.begin_partial(hash, size).unwrap();
        transfer(&fetcher, &mut third_writer, &Groups::from(12..40));
        assert_eq!(third_writer.have(), Groups::from(12..40));
        // Interrupted: the writer and the store go away.
    }
    let fetcher = store(dir.path(), "fetcher");
    assert_eq!(fetcher.partials().unwrap().len(), 1);
    // Not being written: not offered to peers.
    assert_eq!(fetcher.have(&hash).unwrap(), HaveState::Absent);
    let mut writer = fetcher.begin_partial(hash, size).unwrap();
    assert_eq!(writer.have(), Groups::from(10..50) | Groups::from(100..120));
    let missing = all_groups(size) - writer.have();
    transfer(&seed, &mut writer, &missing);
    assert!(writer.is_complete());
    fetcher.finish_partial(writer, Some("fetched")).unwrap();
    assert_eq!(read_all(&fetcher, &hash), data);
    assert!(fetcher.partials().unwrap().is_empty());
    assert_eq!(fetcher.have(&hash).unwrap(), HaveState::Complete { size });
    // Reopened: the finished blob is a blob like any other.
    drop(fetcher);
    let fetcher = store(dir.path(), "fetcher");
    fetcher.verify(&hash).unwrap();
    assert!(
        !dir.path()
            .join("fetcher/partial")
            .read_dir()
            .unwrap()
            .any(|_| true)
    );
}

#[test]
fn a_damaged_partial_file_costs_the_damaged_groups_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(1_000_000, 2);
    let seed = store(dir.path(), "seed");
    let hash = seed.import_bytes(&data, None).unwrap();
    let size = data.len() as u64;
    {
        let fetcher = store(dir.path(), "fetcher");
        let mut writer = fetcher.begin_partial(hash, size).unwrap();
        transfer(&seed, &mut writer, &Groups::from(0..20));
    }
    // A torn write: one byte of group 7 never made it.
    let path = dir
        .path()
        .join("fetcher/partial")
        .join(format!("{hash}.data"));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[7 * 16384 + 5] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let fetcher = store(dir.path(), "fetcher");
    let writer = fetcher.begin_partial(hash, size).unwrap();
    assert_eq!(writer.have(), Groups::from(0..7) | Groups::from(8..20));
}

#[test]
fn small_blobs_finish_inline_and_unfinished_ones_cannot_finish() {
    let dir = tempfile::tempdir().unwrap();
    let seed = store(dir.path(), "seed");
    let fetcher = store(dir.path(), "fetcher");
    let small = pattern(9000, 3);
    let hash = seed.import_bytes(&small, None).unwrap();
    let mut writer = fetcher.begin_partial(hash, 9000).unwrap();
    transfer(&seed, &mut writer, &all_groups(9000));
    fetcher.finish_partial(writer, None).unwrap();
    assert_eq!(read_all(&fetcher, &hash), small);
    assert_eq!(
        fetcher.entry(&hash).unwrap().unwrap().location,
        fogwire_store::Location::Inline
    );
    assert!(matches!(
        fetcher.begin_partial(hash, 9000),
        Err(StoreError::AlreadyHeld(_))
    ));

    let big = pattern(200_000, 4);
    let big_hash = seed.import_bytes(&big, None).unwrap();
    let mut writer = fetcher.begin_partial(big_hash, 200_000).unwrap();
    transfer(&seed, &mut writer, &Groups::from(0..3));
    assert!(matches!(
        fetcher.finish_partial(writer, None),
        Err(StoreError::Incomplete(_))
    ));
}

#[test]
fn collection_drops_idle_partials_but_never_one_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let seed = store(dir.path(), "seed");
    let fetcher = store(dir.path(), "fetcher");
    let a = pattern(500_000, 5);
    let b = pattern(500_000, 6);
    let hash_a = seed.import_bytes(&a, None).unwrap();
    let hash_b = seed.import_bytes(&b, None).unwrap();
    {
        let mut idle = fetcher.begin_partial(hash_a, 500_000).unwrap();
        transfer(&seed, &mut idle, &Groups::from(0..4));
    }
    let mut active = fetcher.begin_partial(hash_b, 500_000).unwrap();
    transfer(&seed, &mut active, &Groups::from(0..4));
    let report = fetcher.gc(Some(0)).unwrap();
    assert_eq!(report.removed_blobs, 1);
    let left = fetcher.partials().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].hash, hash_b);
    assert!(left[0].active);
    let missing = all_groups(500_000) - active.have();
    transfer(&seed, &mut active, &missing);
    fetcher.finish_partial(active, None).unwrap();
    assert_eq!(read_all(&fetcher, &hash_b), b);
}

#[test]
fn corrupt_bytes_on_disk_are_refused_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let seed = store(dir.path(), "seed");
    let data = pattern(300_000, 7);
    let path = dir.path().join("file");
    std::fs::write(&path, &data).unwrap();
    let hash = seed.import_file(&path, None, &mut |_| {}).unwrap();
    drop(seed);
    let blob = dir
        .path()
        .join("seed/blobs")
        .join(&hash.to_string()[..2])
        .join(format!("{hash}.data"));
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[100_000] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let seed = store(dir.path(), "seed");
    let source = seed.source(&hash).unwrap().unwrap();
    let mut encoder = ItemEncoder::new(hash, 300_000, &all_groups(300_000));
    let mut out = BytesMut::new();
    let mut result = Ok(());
    while !encoder.is_done() && result.is_ok() {
        result = source.encode(&mut encoder, &mut out, 1 << 20);
    }
    let error = result.unwrap_err();
    assert!(error.to_string().contains("98304"), "{error}");
    // Nothing from the damaged group on: 6 groups and their pairs only.
    assert!(out.len() < 7 * 16384);
}
