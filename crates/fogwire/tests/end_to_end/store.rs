//! The store through the real binary: add and get with the b3sum hash,
//! the HTTP gateway with ranges, and a node killed again and again in the
//! middle of adds.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use fogwire_api::{BlobInfo, StoreStat};

use crate::harness::{TestNode, json, stderr, stdout, wait_until};
use fogwire_testkit::data::pattern;

fn hash_of(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// A raw HTTP GET of the node's API, returning the head and the body.
/// Writes `data` to `dir/input`, adds that file to `node`'s store, and
/// returns its hash.
fn add_file(node: &TestNode, dir: &Path, data: &[u8]) -> String {
    let input = dir.join("input");
    std::fs::write(&input, data).unwrap();
    let added = node.cli(&["store", "add", input.to_str().unwrap()]);
    assert!(added.status.success(), "{}", stderr(&added));
    hash_of(data)
}

fn http_get(node: &TestNode, path: &str, extra: &str) -> (String, Vec<u8>) {
    let addr = std::fs::read_to_string(node.home().join("data/api.addr")).unwrap();
    let token = std::fs::read_to_string(node.home().join("data/api.token")).unwrap();
    let mut stream = TcpStream::connect(addr.trim()).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n{extra}Connection: close\r\n\r\n",
        token.trim()
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    (
        String::from_utf8_lossy(&response[..split]).into_owned(),
        response[split + 4..].to_vec(),
    )
}

#[test]
fn files_added_come_back_byte_for_byte_with_the_b3sum_hash() {
    let node = TestNode::start("");
    let dir = tempfile::tempdir().unwrap();
    for (name, len) in [("empty", 0usize), ("small", 1000), ("large", 3_000_000)] {
        let data = pattern(len, len as u64 + 7);
        let input = dir.path().join(name);
        std::fs::write(&input, &data).unwrap();
        let added = node.cli(&["store", "add", input.to_str().unwrap(), "--tag", name]);
        let text = stdout(&added);
        assert!(added.status.success(), "{text}{}", stderr(&added));
        // The first line is what b3sum prints: the hash, two spaces, the path.
        assert_eq!(
            text.lines().next().unwrap(),
            format!("{}  {}", hash_of(&data), input.display())
        );
        let output = dir.path().join(format!("{name}.out"));
        let got = node.cli(&[
            "store",
            "get",
            &hash_of(&data),
            "-o",
            output.to_str().unwrap(),
        ]);
        assert!(got.status.success(), "{}", stderr(&got));
        assert_eq!(std::fs::read(&output).unwrap(), data, "{name}");
    }
    let blobs: Vec<BlobInfo> = json(&node.cli(&["store", "ls", "--json"]));
    assert_eq!(blobs.len(), 3);
    assert!(blobs.iter().all(|b| b.tags.len() == 1));
    // Unknown hashes and bad input get clear errors.
    let missing = node.cli(&["store", "get", &"0".repeat(64)]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("no blob"), "{}", stderr(&missing));
    let bad = node.cli(&["store", "get", "xyz"]);
    assert!(stderr(&bad).contains("64 hex digits"), "{}", stderr(&bad));
    let nothing = node.cli(&["store", "add", "/no/such/file"]);
    assert!(!nothing.status.success());
}

#[test]
fn store_get_never_overwrites_without_force_and_never_writes_into_the_data_directory() {
    let node = TestNode::start("");
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(5000, 3);
    let hash = add_file(&node, dir.path(), &data);

    let existing = dir.path().join("existing");
    std::fs::write(&existing, b"keep me").unwrap();
    let refused = node.cli(&["store", "get", &hash, "-o", existing.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("--force"), "{}", stderr(&refused));
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
    let forced = node.cli(&[
        "store",
        "get",
        &hash,
        "-o",
        existing.to_str().unwrap(),
        "--force",
    ]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_eq!(std::fs::read(&existing).unwrap(), data);

    // The node's own files, even forced, and even through a symlink.
    let token_path = node.home().join("data/api.token");
    let token = std::fs::read(&token_path).unwrap();
    let link = dir.path().join("link-to-data");
    std::os::unix::fs::symlink(node.home().join("data"), &link).unwrap();
    for target in [
        token_path.clone(),
        link.join("api.token"),
        link.join("new-file"),
    ] {
        let refused = node.cli(&[
            "store",
            "get",
            &hash,
            "-o",
            target.to_str().unwrap(),
            "--force",
        ]);
        assert!(!refused.status.success(), "{}", target.display());
        assert!(
            stderr(&refused).contains("data directory"),
            "{}",
            stderr(&refused)
        );
    }
    assert_eq!(std::fs::read(&token_path).unwrap(), token);
    assert!(!node.home().join("data/new-file").exists());
}

/// The temporary file of an export the node was killed in the middle of
/// is removed when the node starts again.
#[test]
fn an_export_interrupted_by_a_kill_leaves_no_temporary_file_after_a_restart() {
    let mut node = TestNode::start("");
    let dir = tempfile::tempdir().unwrap();
    let hash = add_file(&node, dir.path(), &pattern(256 << 20, 11));
    std::fs::remove_file(dir.path().join("input")).unwrap();

    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("copy");
    let getting = node.cli_in_background(&["store", "get", &hash, "-o", out.to_str().unwrap()]);
    let temporary = || {
        std::fs::read_dir(&out_dir)
            .unwrap()
            .flatten()
            .map(|entry| entry.path())
            .find(|path| {
                path.file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with(".copy.fogwire-"))
            })
    };
    // Kill while the export is writing its temporary file.
    let left =
        fogwire_testkit::wait::blocking::until_some("the export to start writing", temporary);
    node.stop("KILL");
    let _ = getting.wait_with_output();
    assert!(left.exists(), "the kill came after the export ended");
    assert!(!out.exists(), "the kill came after the export ended");

    let node = node.start_again();
    node.wait_for_log(
        "removed the temporary file of an export that was interrupted",
        1,
    );
    assert!(!left.exists());
    assert!(temporary().is_none());
}

#[test]
fn a_directory_added_is_restored_exactly_from_its_root() {
    let node = TestNode::start("");
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("css/fonts")).unwrap();
    std::fs::create_dir_all(site.join("empty")).unwrap();
    std::fs::write(site.join("index.html"), b"<h1>hi</h1>").unwrap();
    std::fs::write(site.join("css/site.css"), pattern(30_000, 1)).unwrap();
    std::fs::write(site.join("css/fonts/font.bin"), pattern(2_500_000, 2)).unwrap();
    let added = node.cli(&["store", "add", site.to_str().unwrap(), "--tag", "site"]);
    assert!(added.status.success(), "{}", stderr(&added));
    let root = stdout(&added).split_whitespace().next().unwrap().to_owned();
    let restored = dir.path().join("restored");
    let got = node.cli(&["store", "get", &root, "-o", restored.to_str().unwrap()]);
    assert!(got.status.success(), "{}", stderr(&got));
    assert!(
        stdout(&got).contains("restored 3 files in 4 directories"),
        "{}",
        stdout(&got)
    );
    for file in ["index.html", "css/site.css", "css/fonts/font.bin"] {
        assert_eq!(
            std::fs::read(restored.join(file)).unwrap(),
            std::fs::read(site.join(file)).unwrap(),
            "{file}"
        );
    }
    assert!(restored.join("empty").is_dir());
    // Collected with no cache, the pinned tree survives whole.
    assert!(node.cli(&["store", "gc", "--all"]).status.success());
    let again = dir.path().join("again");
    let got = node.cli(&["store", "get", &root, "-o", again.to_str().unwrap()]);
    assert!(got.status.success(), "{}", stderr(&got));
}

/// Threads of a process, from /proc.
fn threads_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap()
}

#[test]
fn stalled_gateway_readers_hold_no_threads_and_the_store_still_answers() {
    let node = TestNode::start("");
    let dir = tempfile::tempdir().unwrap();
    let hash = add_file(&node, dir.path(), &pattern(64 << 20, 21));
    let addr = std::fs::read_to_string(node.home().join("data/api.addr")).unwrap();
    let token = std::fs::read_to_string(node.home().join("data/api.token")).unwrap();
    // 200 readers, each stalled once its answer has begun: they read the
    // headers and then nothing, while the node has 64 MiB to send each.
    let mut stalled = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(addr.trim()).unwrap();
        write!(
            stream,
            "GET /blobs/{hash} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
            token.trim()
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        stalled.push(stream);
    }
    // The store answers while they stall, and the node holds a bounded
    // number of threads for them (the gateway reads 16 windows at once;
    // it used to hold one blocking thread per stalled reader).
    let stat = node.cli(&["store", "stat"]);
    assert!(stat.status.success(), "{}", stderr(&stat));
    let added = add_file(&node, dir.path(), &pattern(1 << 20, 22));
    assert_eq!(added, hash_of(&pattern(1 << 20, 22)));
    let threads = threads_of(node.pid());
    assert!(threads < 100, "{threads} threads for 200 stalled readers");
    // A reader that comes back gets every byte.
    let mut reader = stalled.pop().unwrap();
    let mut body = vec![0u8; 64 << 20];
    reader.read_exact(&mut body).unwrap();
    assert!(body == pattern(64 << 20, 21));
    drop(stalled);
}

#[test]
fn the_gateway_serves_blobs_with_ranges_and_correct_lengths() {
    let node = TestNode::start("");
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(100_000, 3);
    let input = dir.path().join("blob");
    std::fs::write(&input, &data).unwrap();
    assert!(
        node.cli(&["store", "add", input.to_str().unwrap()])
            .status
            .success()
    );
    let hash = hash_of(&data);
    let (head, body) = http_get(&node, &format!("/blobs/{hash}"), "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("content-length: 100000"), "{head}");
    assert!(head.contains("accept-ranges: bytes"), "{head}");
    assert_eq!(body, data);
    let (head, body) = http_get(
        &node,
        &format!("/blobs/{hash}"),
        "Range: bytes=70000-70099\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert!(
        head.contains("content-range: bytes 70000-70099/100000"),
        "{head}"
    );
    assert!(head.contains("content-length: 100"), "{head}");
    assert_eq!(body, data[70_000..70_100].to_vec());
    let (head, body) = http_get(&node, &format!("/blobs/{hash}"), "Range: bytes=-10\r\n");
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert_eq!(body, data[99_990..].to_vec());
    let (head, _) = http_get(&node, &format!("/blobs/{hash}"), "Range: bytes=200000-\r\n");
    assert!(head.starts_with("HTTP/1.1 416"), "{head}");
    assert!(head.contains("content-range: bytes */100000"), "{head}");
    let (head, _) = http_get(&node, &format!("/blobs/{}", "1".repeat(64)), "");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

/// Adds files again and again while the node is killed (SIGKILL) at
/// random moments; after every restart the store must open cleanly and
/// every blob it lists, and every add that completed, must be intact.
#[test]
fn killing_the_node_in_the_middle_of_adds_never_damages_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(std::path::PathBuf, Vec<u8>)> = (0..4)
        .map(|index| {
            let data = pattern(48_000_000 + index * 1_000_003, index as u64 + 100);
            let path = dir.path().join(format!("file{index}"));
            std::fs::write(&path, &data).unwrap();
            (path, data)
        })
        .collect();
    let mut node = TestNode::start("");
    let mut completed: Vec<String> = Vec::new();
    let mut seed = 0x1234_5678u64;
    for round in 0..12 {
        let (path, data) = &files[round % files.len()];
        let adding = std::process::Command::new(crate::harness::BINARY)
            .arg("--home")
            .arg(node.home())
            .args(["store", "add", path.to_str().unwrap(), "--json"])
            .arg("--tag")
            .arg(format!("round{round}"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Kill once the add has begun writing (or it has finished), a
        // random moment later.
        let tmp = node.home().join("data/store/tmp");
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(5)
            && std::fs::read_dir(&tmp).map_or(0, |dir| dir.count()) == 0
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let delay = if round % 2 == 0 { 0 } else { seed % 250 };
        std::thread::sleep(Duration::from_millis(delay));
        node.stop("KILL");
        let output = adding.wait_with_output().unwrap();
        if output.status.success() {
            completed.push(hash_of(data));
        }
        node = node.start_again();
        check_store(&node, dir.path(), &completed);
    }
    // The kills landed both before and after adds completed.
    eprintln!("{} of 12 adds completed before their kill", completed.len());
    assert!(
        completed.len() < 12,
        "no kill landed in the middle of an add"
    );
}

fn check_store(node: &TestNode, scratch: &Path, completed: &[String]) {
    let stat: StoreStat = json(&node.cli(&["store", "stat", "--json"]));
    let blobs: Vec<BlobInfo> = json(&node.cli(&["store", "ls", "--json"]));
    assert_eq!(stat.blobs as usize, blobs.len());
    for hash in completed {
        assert!(
            blobs.iter().any(|b| &b.hash == hash),
            "a completed add is gone: {hash}"
        );
    }
    for blob in &blobs {
        let out = scratch.join("check.out");
        // One scratch file for every check, overwritten each time.
        let got = node.cli(&[
            "store",
            "get",
            &blob.hash,
            "-o",
            out.to_str().unwrap(),
            "--force",
        ]);
        assert!(got.status.success(), "{}: {}", blob.hash, stderr(&got));
        assert_eq!(hash_of(&std::fs::read(&out).unwrap()), blob.hash);
    }
}

#[test]
fn short_forms_are_taken_back_where_hashes_and_ids_are() {
    let node = TestNode::start("");
    let other = TestNode::start("");
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(5000, 3);
    let input = dir.path().join("input");
    std::fs::write(&input, &data).unwrap();
    let added = node.cli(&["store", "add", input.to_str().unwrap()]);
    assert!(added.status.success(), "{}", stderr(&added));
    // The command it suggests works as printed.
    let suggestion = stderr(&added);
    let command = suggestion
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no command suggested: {suggestion}"));
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(&words[..3], ["fogwire", "store", "pin"], "{command}");
    let pinned = node.cli(&words[1..]);
    assert!(pinned.status.success(), "{command}: {}", stderr(&pinned));
    // The short form as tables print it, `…` and all.
    let short = fogwire_identity::short_form(&hash_of(&data));
    let output = dir.path().join("output");
    let got = node.cli(&["store", "get", &short, "-o", output.to_str().unwrap()]);
    assert!(got.status.success(), "{}", stderr(&got));
    assert_eq!(std::fs::read(&output).unwrap(), data);
    let unpinned = node.cli(&["store", "unpin", &short]);
    assert!(unpinned.status.success(), "{}", stderr(&unpinned));
    // A prefix no blob has, and one that is not hex, say so.
    let none = node.cli(&["store", "pin", "ffffffffffff"]);
    assert!(!none.status.success());
    assert!(
        stderr(&none).contains("fogwire store ls"),
        "{}",
        stderr(&none)
    );
    let bad = node.cli(&["store", "pin", "xyz"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("64 hex digits"), "{}", stderr(&bad));
    // A peer, disconnected by the short form `fogwire peers` shows.
    let linked = node.cli(&["connect", &other.peer_addr()]);
    assert!(linked.status.success(), "{}", stderr(&linked));
    let peer = fogwire_identity::short_form(&other.node_id().to_string());
    let dropped = node.cli(&["disconnect", &peer]);
    assert!(dropped.status.success(), "{}", stderr(&dropped));
    assert!(node.peers().is_empty());
}

#[test]
fn a_file_added_on_one_node_is_fetched_by_another_byte_for_byte() {
    let seed = TestNode::start("");
    let fetcher = TestNode::start("");
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(20_000_000, 77);
    let hash = add_file(&seed, dir.path(), &data);
    // Not linked yet: a clear error that says what to do.
    let output = dir.path().join("output");
    let lonely = fetcher.cli(&["store", "get", &hash, "-o", output.to_str().unwrap()]);
    assert!(!lonely.status.success());
    assert!(
        stderr(&lonely).contains("fogwire connect"),
        "{}",
        stderr(&lonely)
    );
    let linked = fetcher.cli(&["connect", &seed.peer_addr()]);
    assert!(linked.status.success(), "{}", stderr(&linked));
    wait_until("the seed sees the link", || !seed.peers().is_empty());
    let got = fetcher.cli(&["store", "get", &hash, "-o", output.to_str().unwrap()]);
    assert!(got.status.success(), "{}", stderr(&got));
    assert!(stderr(&got).contains("fetched 1 blob"), "{}", stderr(&got));
    assert_eq!(std::fs::read(&output).unwrap(), data);
    // The seed counted what it served to the fetcher.
    let served: Vec<fogwire_api::StorePeer> = json(&seed.cli(&["store", "peers", "--json"]));
    assert_eq!(served.len(), 1);
    assert!(served[0].served_bytes >= data.len() as u64);
}

#[test]
fn a_node_two_hops_away_is_fetched_from_over_a_route_with_store_get_from() {
    // seed - relay - fetcher: only the seed has the file, and it is not
    // the fetcher's neighbour.
    let seed = TestNode::start("");
    let relay = TestNode::start("");
    let fetcher = TestNode::start("");
    for (a, b) in [(&relay, &seed), (&fetcher, &relay)] {
        let linked = a.cli(&["connect", &b.peer_addr()]);
        assert!(linked.status.success(), "{}", stderr(&linked));
    }
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(6_000_000, 78);
    let hash = add_file(&seed, dir.path(), &data);
    let seed_id = seed.node_id().to_string();
    wait_until("the fetcher learns a path to the seed from adverts", || {
        fetcher.cli(&["route", "find", &seed_id]).status.success()
    });
    let output = dir.path().join("output");
    let got = fetcher.cli(&[
        "store",
        "get",
        &hash,
        "-o",
        output.to_str().unwrap(),
        "--from",
        &seed_id[..12],
    ]);
    let err = stderr(&got);
    assert!(got.status.success(), "{err}");
    assert!(err.contains("over a 2-hop route"), "{err}");
    assert!(err.contains("fetched 1 blob"), "{err}");
    assert_eq!(std::fs::read(&output).unwrap(), data);
    // The seed served it; the relay only forwarded.
    let served: Vec<fogwire_api::StorePeer> = json(&seed.cli(&["store", "peers", "--json"]));
    let to_fetcher = served
        .iter()
        .find(|peer| peer.peer == fetcher.node_id().to_string())
        .expect("the seed counted the fetcher");
    assert!(to_fetcher.served_bytes >= data.len() as u64);
    // An unknown node is a clear error.
    let unknown = fetcher.cli(&["store", "get", &hash, "-o", "/tmp/x", "--from", "fw1zzzz"]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("fogwire nodes"),
        "{}",
        stderr(&unknown)
    );
}

#[test]
fn killing_a_node_in_the_middle_of_downloads_never_damages_its_store() {
    let seed = TestNode::start("");
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<Vec<u8>> = (0..3)
        .map(|index| pattern(40_000_000 + index * 1_000_003, index as u64 + 300))
        .collect();
    for (index, data) in files.iter().enumerate() {
        let path = dir.path().join(format!("file{index}"));
        std::fs::write(&path, data).unwrap();
        let added = seed.cli(&["store", "add", path.to_str().unwrap()]);
        assert!(added.status.success(), "{}", stderr(&added));
    }
    // The fetcher links to the seed by configuration, so that it links
    // again after every restart.
    let home = crate::harness::init_home("127.0.0.1:0");
    let config = home.path().join("fogwire.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("peers = []", &format!("peers = [\"{}\"]", seed.peer_addr()));
    std::fs::write(&config, text).unwrap();
    let mut fetcher = TestNode::start_in(home);
    let mut completed: Vec<String> = Vec::new();
    let mut interrupted = 0;
    let mut random = 0x9e37_79b9u64;
    for _ in 0..8 {
        // A download still to do (each kill leaves one behind).
        let Some(data) = files
            .iter()
            .find(|data| !completed.contains(&hash_of(data)))
        else {
            break;
        };
        let hash = hash_of(data);
        wait_until("the fetcher links to the seed", || {
            !fetcher.peers().is_empty()
        });
        let out = dir
            .path()
            .join(format!("out{}", interrupted + completed.len()));
        let mut getting =
            fetcher.cli_in_background(&["store", "get", &hash, "-o", out.to_str().unwrap()]);
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        // Kill once the download has begun writing, a random moment later
        // (or at once if it finished before it was seen writing).
        let partial = fetcher.home().join("data/store/partial");
        let writing = fogwire_testkit::wait::blocking::until_some(
            "the download to begin writing, or to end",
            || {
                if std::fs::read_dir(&partial).is_ok_and(|mut dir| dir.next().is_some()) {
                    Some(true)
                } else {
                    getting.try_wait().unwrap().map(|_| false)
                }
            },
        );
        if writing {
            std::thread::sleep(Duration::from_millis(random % 50));
        }
        fetcher.stop("KILL");
        let output = getting.wait_with_output().unwrap();
        if output.status.success() {
            completed.push(hash.clone());
        } else {
            interrupted += 1;
        }
        fetcher = fetcher.start_again();
        // Opens cleanly, holds every completed blob intact, serves nothing
        // damaged.
        check_store(&fetcher, dir.path(), &completed);
    }
    // And every download finishes in the end, resuming what it had.
    wait_until("the fetcher links to the seed", || {
        !fetcher.peers().is_empty()
    });
    for data in &files {
        let out = dir.path().join("final");
        let got = fetcher.cli(&[
            "store",
            "get",
            &hash_of(data),
            "-o",
            out.to_str().unwrap(),
            "--force",
        ]);
        assert!(got.status.success(), "{}", stderr(&got));
        assert_eq!(&std::fs::read(&out).unwrap(), data);
    }
    eprintln!(
        "{interrupted} downloads interrupted by a kill, {} completed before theirs",
        completed.len()
    );
    // The kills did land mid-download (each is a 40 MB verified fetch,
    // killed within 50 ms of its first write), so resuming was exercised.
    assert!(interrupted > 0, "no kill interrupted a download");
}

#[test]
fn a_site_published_to_a_feed_is_served_by_path_with_types_ranges_and_listings() {
    let node = TestNode::start("");
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("docs/a b")).unwrap();
    std::fs::create_dir_all(site.join("media")).unwrap();
    std::fs::write(site.join("index.html"), b"<h1>home</h1>").unwrap();
    std::fs::write(site.join("docs/a b/notes.txt"), b"plain words").unwrap();
    std::fs::write(site.join("docs/<b>.css"), b"body{}").unwrap();
    let video = pattern(300_000, 9);
    std::fs::write(site.join("media/clip.mp4"), &video).unwrap();
    let feed = stdout(&node.cli(&["feed", "new"])).trim().to_owned();
    let published = node.cli(&["feed", "publish", &feed, site.to_str().unwrap(), "--json"]);
    assert!(published.status.success(), "{}", stderr(&published));
    let info: serde_json::Value = serde_json::from_slice(&published.stdout).unwrap();
    let root = info
        .pointer("/root/content")
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();

    for base in [format!("/tree/{root}"), format!("/feed/{feed}")] {
        // The root is its index file, once the URL ends in a slash.
        let (head, _) = http_get(&node, &base, "");
        assert!(head.starts_with("HTTP/1.1 308"), "{head}");
        assert!(head.contains(&format!("location: {base}/")), "{head}");
        let (head, body) = http_get(&node, &format!("{base}/"), "");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("content-type: text/html"), "{head}");
        assert!(head.contains("content-security-policy: sandbox"), "{head}");
        assert_eq!(body, b"<h1>home</h1>");
        // A video seeks: its type, and a range of it.
        let (head, body) = http_get(
            &node,
            &format!("{base}/media/clip.mp4"),
            "Range: bytes=1000-1999\r\n",
        );
        assert!(head.starts_with("HTTP/1.1 206"), "{head}");
        assert!(head.contains("content-type: video/mp4"), "{head}");
        assert!(
            head.contains("content-range: bytes 1000-1999/300000"),
            "{head}"
        );
        assert_eq!(body, &video[1000..2000]);
        // A directory without an index file is listed, names escaped; a
        // name with a space is reached by its escaped form.
        let (head, body) = http_get(&node, &format!("{base}/docs/"), "");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let page = String::from_utf8(body).unwrap();
        assert!(page.contains("href=\"a%20b/\""), "{page}");
        assert!(page.contains("&lt;b&gt;.css"), "{page}");
        assert!(!page.contains("<b>"), "{page}");
        let (head, body) = http_get(&node, &format!("{base}/docs/a%20b/notes.txt"), "");
        assert!(head.contains("content-type: text/plain"), "{head}");
        assert_eq!(body, b"plain words");
        // What is not there, and what would leave the tree.
        let (head, body) = http_get(&node, &format!("{base}/nothing.html"), "");
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
        assert!(String::from_utf8_lossy(&body).contains("no nothing.html"));
        let (head, _) = http_get(&node, &format!("{base}/index.html/more"), "");
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
        for outside in ["../index.html", "docs/../../x", "docs/%2e%2e/index.html"] {
            let (head, body) = http_get(&node, &format!("{base}/{outside}"), "");
            assert!(head.starts_with("HTTP/1.1 400"), "{outside}: {head}");
            assert!(
                String::from_utf8_lossy(&body).contains("paths stay inside their tree"),
                "{outside}"
            );
        }
    }
    // A path deeper than any is looked at: refused before any lookup.
    let deep = vec!["d"; 65].join("/");
    let (head, _) = http_get(&node, &format!("/tree/{root}/{deep}"), "");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    // Malformed names of trees and feeds, and a feed nobody published.
    let (head, _) = http_get(&node, "/tree/not-a-hash/", "");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let (head, _) = http_get(&node, "/feed/fwfeed1nonsense/", "");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let other = stdout(&node.cli(&["feed", "new"])).trim().to_owned();
    let (head, body) = http_get(&node, &format!("/feed/{other}/"), "");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("feed follow"));
    // A tree this node does not hold.
    let (head, _) = http_get(&node, &format!("/tree/{}/", "1".repeat(64)), "");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    // A feed or tree whose root is a file: the file itself, and no path
    // below it.
    let file = hash_of(&video);
    let (head, body) = http_get(&node, &format!("/tree/{file}"), "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, video);
    let (head, body) = http_get(&node, &format!("/tree/{file}/x"), "");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("the root is a file"));
}

#[test]
fn the_gateway_fetches_what_a_path_needs_from_peers_and_nothing_more() {
    let seed = TestNode::start("");
    let reader = TestNode::start("");
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("docs")).unwrap();
    let notes = b"words the reader has not asked for yet".to_vec();
    let video = pattern(2_000_000, 5);
    std::fs::write(site.join("docs/notes.txt"), &notes).unwrap();
    std::fs::write(site.join("clip.webm"), &video).unwrap();
    let extra = pattern(700_000, 6);
    std::fs::write(site.join("extra.bin"), &extra).unwrap();
    let added = seed.cli(&["store", "add", site.to_str().unwrap()]);
    assert!(added.status.success(), "{}", stderr(&added));
    let root = stdout(&added).split_whitespace().next().unwrap().to_owned();
    let linked = reader.cli(&["connect", &seed.peer_addr()]);
    assert!(linked.status.success(), "{}", stderr(&linked));
    wait_until("the seed sees the link", || !seed.peers().is_empty());

    // The reader holds nothing of the tree: the root and the video are
    // fetched as the request needs them, and the range served.
    let (head, body) = http_get(
        &reader,
        &format!("/tree/{root}/clip.webm"),
        "Range: bytes=1500000-1500099\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert!(head.contains("content-type: video/webm"), "{head}");
    assert_eq!(body, &video[1_500_000..1_500_100]);
    // Only that: the notes stay on the seed until a request needs them.
    let notes_hash = hash_of(&notes);
    let held = |node: &TestNode| -> Vec<String> {
        let blobs: Vec<serde_json::Value> = json(&node.cli(&["store", "ls", "--json"]));
        blobs
            .iter()
            .map(|blob| blob["hash"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(held(&reader).contains(&hash_of(&video)));
    assert!(!held(&reader).contains(&notes_hash));
    let (head, body) = http_get(&reader, &format!("/tree/{root}/docs/notes.txt"), "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, notes);
    assert!(held(&reader).contains(&notes_hash));
    // `store get -o -`: a file's bytes on standard output, fetched from
    // the seed as needed; a tree is refused with what to do instead.
    let piped = reader.cli(&["store", "get", &hash_of(&extra), "-o", "-"]);
    assert!(piped.status.success(), "{}", stderr(&piped));
    assert_eq!(piped.stdout, extra);
    let tree = reader.cli(&["store", "get", &root, "-o", "-"]);
    assert!(!tree.status.success());
    assert!(tree.stdout.is_empty());
    assert!(stderr(&tree).contains("-o <dir>"), "{}", stderr(&tree));
    // A tree nobody holds: said so.
    let (head, body) = http_get(&reader, &format!("/tree/{}/", "1".repeat(64)), "");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(
        String::from_utf8_lossy(&body).contains("none of the 1 peers asked has"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

#[test]
fn store_get_finds_what_no_neighbour_holds_through_the_network_and_says_so_when_nobody_does() {
    // seed - r1 - r2 - fetcher: only the seed holds the tree, three hops
    // from the fetcher, and nobody names it: the keepers of the root's
    // provider records, which the seed told, do.
    let nodes: Vec<TestNode> = (0..4).map(|_| TestNode::start("")).collect();
    for pair in nodes.windows(2) {
        let linked = pair[1].cli(&["connect", &pair[0].peer_addr()]);
        assert!(linked.status.success(), "{}", stderr(&linked));
    }
    let (seed, fetcher) = (&nodes[0], &nodes[3]);
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("docs")).unwrap();
    let big = pattern(3_000_000, 41);
    let small = b"a page only the seed holds".to_vec();
    std::fs::write(site.join("big.bin"), &big).unwrap();
    std::fs::write(site.join("docs/page.txt"), &small).unwrap();
    let added = seed.cli(&["store", "add", site.to_str().unwrap(), "--tag", "site"]);
    assert!(added.status.success(), "{}", stderr(&added));
    let root = stdout(&added).split_whitespace().next().unwrap().to_owned();
    let seed_id = seed.node_id().to_string();
    wait_until(
        "the fetcher's keepers name the seed as the tree's holder",
        || {
            let asked = fetcher.cli(&["store", "providers", &root, "--json"]);
            asked.status.success()
                && serde_json::from_slice::<fogwire_api::ProvidersReport>(&asked.stdout)
                    .is_ok_and(|report| report.holders.contains(&seed_id))
        },
    );
    let listed = fetcher.cli(&["store", "providers", &root]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(
        stdout(&listed).contains("provider-record keepers"),
        "{}",
        stdout(&listed)
    );

    // `store get` of the root: found, fetched over a route, every file.
    let output = dir.path().join("restored");
    let got = fetcher.cli(&["store", "get", &root, "-o", output.to_str().unwrap()]);
    assert!(got.status.success(), "{}", stderr(&got));
    assert_eq!(std::fs::read(output.join("big.bin")).unwrap(), big);
    assert_eq!(std::fs::read(output.join("docs/page.txt")).unwrap(), small);
    let said = stderr(&got);
    let seed_short = fogwire_identity::short_form(&seed_id);
    assert!(
        said.contains(&format!("from 1 peer(s): {seed_short}")),
        "{said}"
    );
    // The seed served it over the route; its neighbour r1 only carried it.
    let served: Vec<fogwire_api::StorePeer> = json(&seed.cli(&["store", "peers", "--json"]));
    let to_fetcher = served
        .iter()
        .find(|peer| peer.peer == fetcher.node_id().to_string())
        .expect("the seed counted the fetcher");
    assert!(to_fetcher.served_bytes >= big.len() as u64);
    // Not by a link: the two never linked.
    assert!(!fetcher.peers().iter().any(|peer| peer.node_id == seed_id));
    // The seed gave its record to the keepers it saw when it pinned the
    // tree (maybe only itself, at first), and to each new keeper as it
    // learnt the network: three of the four nodes, as the metrics say.
    wait_until("the seed's record to reach its three keepers", || {
        stdout(&seed.cli(&["metrics"]))
            .lines()
            .any(|line| line == "fogwire_store_provider_records_given 3")
    });

    // The gateway of a node two hops from the seed finds it the same way,
    // and fetches only the file the request needs.
    let reader = &nodes[2];
    let (head, body) = http_get(reader, &format!("/tree/{root}/docs/page.txt"), "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, small);

    // A blob nobody holds: the error says so, and whom it asked.
    let nobody = "7".repeat(64);
    let missing = fetcher.cli(&[
        "store",
        "get",
        &nobody,
        "-o",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert!(!missing.status.success());
    let said = stderr(&missing);
    // Its neighbour, and the seed over the route still open from the
    // fetch above, were asked; then the keepers.
    assert!(said.contains("peers asked has blob 7777"), "{said}");
    assert!(
        said.contains("no node in the network is known to hold it"),
        "{said}"
    );
    assert!(said.contains("provider-record keepers"), "{said}");
    let none = fetcher.cli(&["store", "providers", &nobody]);
    assert!(!none.status.success());
    assert!(
        stderr(&none).contains("no node in the network is known to hold"),
        "{}",
        stderr(&none)
    );
    let bad = fetcher.cli(&["store", "providers", "not-a-hash"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("is not a hash"), "{}", stderr(&bad));
}
