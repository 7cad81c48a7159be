//! Bounded restores through the real binary: a peer serving a tiny
//! directory graph that would restore into a billion files is refused
//! before anything is written; a restore stops when its client leaves and
//! when the node is stopped, leaving no temporary file.

use std::path::Path;

use fogwire_store::Hash;
use fogwire_store::object::{self, DirEntry, EntryType};
use fogwire_testkit::data::pattern;

use crate::harness::{TestNode, stderr, wait_until};

fn entry(name: String, kind: EntryType, hash: Hash, size: u64) -> DirEntry {
    DirEntry {
        name,
        kind,
        executable: false,
        size,
        hash,
    }
}

/// Adds `bytes` on `node` as a file; returns its hash.
fn add(node: &TestNode, dir: &Path, name: &str, bytes: &[u8]) -> Hash {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let added = node.cli(&["store", "add", path.to_str().unwrap(), "--tag", name]);
    assert!(added.status.success(), "{}", stderr(&added));
    Hash::of(bytes)
}

/// Adds a directory node of `count` entries all naming `hash`.
fn add_directory(
    node: &TestNode,
    dir: &Path,
    name: &str,
    count: usize,
    kind: EntryType,
    hash: Hash,
    size: u64,
) -> Hash {
    let entries = (0..count)
        .map(|i| entry(format!("e{i:05}"), kind, hash, size))
        .collect();
    let nodes = object::build_directory(entries).unwrap();
    assert_eq!(nodes.len(), 1);
    add(node, dir, name, &nodes[0])
}

/// `store get` in the background, as a user who may go away.
fn get_in_background(node: &TestNode, hash: &Hash, out: &Path) -> std::process::Child {
    node.cli_in_background(&[
        "store",
        "get",
        &hash.to_string(),
        "-o",
        out.to_str().unwrap(),
    ])
}

fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_tiny_graph_from_a_peer_that_restores_into_a_billion_files_is_refused() {
    let seed = TestNode::start("");
    let fetcher = TestNode::start("");
    let dir = tempfile::tempdir().unwrap();
    // Three directory nodes of 1000 entries (about 150 KB in all) over one
    // 64 KiB file: 10⁹ files, 64 TB, if restored.
    let blob = add(&seed, dir.path(), "blob", &pattern(64 * 1024, 5));
    let bottom = add_directory(
        &seed,
        dir.path(),
        "bottom",
        1000,
        EntryType::File,
        blob,
        64 * 1024,
    );
    let middle = add_directory(
        &seed,
        dir.path(),
        "middle",
        1000,
        EntryType::Directory,
        bottom,
        0,
    );
    let root = add_directory(
        &seed,
        dir.path(),
        "root",
        1000,
        EntryType::Directory,
        middle,
        0,
    );
    let linked = fetcher.cli(&["connect", &seed.peer_addr()]);
    assert!(linked.status.success(), "{}", stderr(&linked));
    let out = dir.path().join("restored");
    let got = fetcher.cli(&[
        "store",
        "get",
        &root.to_string(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!got.status.success());
    let said = stderr(&got);
    assert!(said.contains("would write 1000000000 files"), "{said}");
    assert!(said.contains("nothing was written"), "{said}");
    assert!(!out.exists());
    // The fetcher holds the four distinct blobs, not a billion of anything.
    let stat: fogwire_api::StoreStat =
        serde_json::from_slice(&fetcher.cli(&["store", "stat", "--json"]).stdout).unwrap();
    assert!(stat.blobs <= 4, "{stat:?}");
    // A limit names what it bounds: here, 1000 files of the bottom node
    // over 20 MB.
    let got = fetcher.cli(&[
        "store",
        "get",
        &bottom.to_string(),
        "-o",
        out.to_str().unwrap(),
        "--max-bytes",
        "20M",
    ]);
    assert!(!got.status.success());
    let said = stderr(&got);
    assert!(
        said.contains("1000 files, 0 directories and 65536000 bytes"),
        "{said}"
    );
}

#[test]
fn a_restore_stops_when_its_client_leaves_and_when_the_node_stops() {
    let mut node = TestNode::start("");
    let dir = tempfile::tempdir().unwrap();
    // 200 files of one 16 MiB blob: 3.2 GiB to write.
    let blob = add(&node, dir.path(), "blob", &pattern(16 << 20, 6));
    let root = add_directory(
        &node,
        dir.path(),
        "big",
        200,
        EntryType::File,
        blob,
        16 << 20,
    );
    // The client goes away once the restore is writing.
    let out = dir.path().join("left");
    let mut client = get_in_background(&node, &root, &out);
    wait_until("the restore to write", || !names_in(&out).is_empty());
    client.kill().unwrap();
    let _ = client.wait();
    node.wait_for_log("an export stopped before it was done", 1);
    let written = names_in(&out);
    assert!(written.len() < 200, "the restore ran to its end");
    assert!(
        written.iter().all(|name| !name.contains(".fogwire-")),
        "a temporary file was left: {written:?}"
    );
    // Nothing more is written once it stopped.
    let count = written.len();
    assert!(node.cli(&["status"]).status.success());
    assert_eq!(names_in(&out).len(), count);

    // The node is stopped in the middle of another: it exits, cleanly,
    // and leaves no temporary file once started again.
    let out = dir.path().join("stopped");
    let mut client = get_in_background(&node, &root, &out);
    wait_until("the restore to write", || !names_in(&out).is_empty());
    let status = node.stop("TERM");
    assert!(status.success(), "{status:?}");
    let _ = client.wait();
    let count = names_in(&out)
        .iter()
        .filter(|name| !name.contains(".fogwire-"))
        .count();
    assert!(count < 200, "the restore ran to its end");
    let node = node.start_again();
    assert!(node.cli(&["status"]).status.success());
    let names = names_in(&out);
    assert!(
        names.iter().all(|name| !name.contains(".fogwire-")),
        "{names:?}"
    );
    assert_eq!(names.len(), count, "written after the node stopped");
}
