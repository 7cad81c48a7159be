//! The store stage: one node publishes a directory through a signed feed;
//! every other node follows the feed and replicates the directory, most of
//! them from each other rather than from the publisher (the demo's ring
//! puts half the nodes two hops away from it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fogwire_identity::Keypair;
use fogwire_store::{ContentKind, FeedId, Hash, feed_tag};

use crate::network::Network;
use crate::render::format_bytes;
use crate::routes::Narrator;
use fogwire_env::unix_ms as now_ms;

/// What the store stage showed.
#[derive(Debug, Clone, Default)]
pub struct StoreStage {
    pub publisher: usize,
    pub root: Option<Hash>,
    pub bytes: u64,
    /// Followers that hold the whole directory, pinned.
    pub replicated: usize,
    pub followers: usize,
    /// Followers that fetched some of it from another follower.
    pub from_each_other: usize,
    /// A far follower restored it byte for byte.
    pub restored_intact: Option<bool>,
    pub story: Vec<String>,
}

impl StoreStage {
    fn say(&mut self, narrator: &mut Narrator<'_>, line: String) {
        narrator(&line);
        self.story.push(line);
    }
}

/// A small website with a video: a few large files, many small ones.
fn write_site(root: &Path) -> std::io::Result<u64> {
    let mut total = 0u64;
    let mut put = |path: PathBuf, bytes: Vec<u8>| -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        total += bytes.len() as u64;
        std::fs::write(path, bytes)
    };
    put(
        root.join("index.html"),
        b"<h1>Published with fogwire</h1>\n<p>Every byte of this site is verified against one root hash.</p>\n"
            .to_vec(),
    )?;
    put(
        root.join("video/launch.mp4"),
        fogwire_env::pattern(12 << 20, 1),
    )?;
    for index in 0..24 {
        put(
            root.join(format!("photos/photo-{index:02}.jpg")),
            fogwire_env::pattern(150_000 + index * 1000, 100 + index as u64),
        )?;
    }
    for index in 0..120 {
        put(
            root.join(format!("notes/note-{index:03}.txt")),
            format!("note {index}: replicated peer to peer\n")
                .repeat(index + 1)
                .into_bytes(),
        )?;
    }
    Ok(total)
}

fn same_tree(a: &Path, b: &Path) -> bool {
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let list = |dir: &Path| -> Option<Vec<std::ffi::OsString>> {
            let mut names: Vec<_> = std::fs::read_dir(dir)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect();
            names.sort();
            Some(names)
        };
        let (Some(left), Some(right)) = (list(&a.join(&relative)), list(&b.join(&relative))) else {
            return false;
        };
        if left != right {
            return false;
        }
        for name in left {
            let path = relative.join(&name);
            if a.join(&path).is_dir() {
                stack.push(path);
            } else if std::fs::read(a.join(&path)).ok() != std::fs::read(b.join(&path)).ok() {
                return false;
            }
        }
    }
    true
}

/// Runs the stage with `publisher` publishing; every other node follows.
pub async fn run(
    network: &Network,
    publisher: usize,
    scratch: &Path,
    mut narrator: Narrator<'_>,
) -> StoreStage {
    let mut stage = StoreStage {
        publisher,
        ..StoreStage::default()
    };
    let nodes = network.nodes();
    let source = scratch.join("site");
    let bytes = match write_site(&source) {
        Ok(bytes) => bytes,
        Err(error) => {
            stage.say(&mut narrator, format!("store stage skipped: {error}"));
            return stage;
        }
    };
    stage.bytes = bytes;
    let key = match Keypair::generate() {
        Ok(key) => Arc::new(key),
        Err(error) => {
            stage.say(&mut narrator, format!("store stage skipped: {error}"));
            return stage;
        }
    };
    let feed = FeedId::from_key(key.node_id());
    // Everyone else follows the feed before anything is published.
    for (index, demo_node) in nodes.iter().enumerate() {
        if index == publisher || network.is_killed(index) {
            continue;
        }
        let store = demo_node.node.store().clone();
        let followed = tokio::task::spawn_blocking(move || store.set_following(&feed, true)).await;
        if matches!(followed, Ok(Ok(()))) {
            stage.followers += 1;
        }
    }
    let store = nodes[publisher].node.store().clone();
    let publish_key = key.clone();
    let publish_source = source.clone();
    let published = tokio::task::spawn_blocking(move || {
        let report =
            store.import_dir(&publish_source, Some(&feed_tag(&feed)), false, &mut |_| {})?;
        let root = report
            .root
            .ok_or_else(|| fogwire_store::StoreError::NotFound(Hash::of(b"")))?;
        store.publish(&publish_key, root, ContentKind::Directory, now_ms())?;
        let bytes = store.feed_root_bytes(&feed)?.unwrap_or_default();
        Ok::<_, fogwire_store::StoreError>((root, report.files, bytes))
    })
    .await;
    let (root, files, root_bytes) = match published {
        Ok(Ok(published)) => published,
        Ok(Err(error)) => {
            stage.say(&mut narrator, format!("store stage skipped: {error}"));
            return stage;
        }
        Err(error) => {
            stage.say(&mut narrator, format!("store stage skipped: {error}"));
            return stage;
        }
    };
    stage.root = Some(root);
    stage.say(
        &mut narrator,
        format!(
            "{} published a directory ({files} files, {}) through feed {}: root {}",
            nodes[publisher].name,
            format_bytes(bytes),
            feed.short(),
            &root.short()
        ),
    );
    let started = Instant::now();
    nodes[publisher]
        .node
        .replication()
        .announce(root_bytes, Some(nodes[publisher].node.node_id()))
        .await;
    // Watch the followers pin it, in the order they finish.
    let tag = feed_tag(&feed);
    let mut done: BTreeMap<usize, Duration> = BTreeMap::new();
    let deadline = started + Duration::from_secs(60);
    while done.len() < stage.followers && Instant::now() < deadline {
        for (index, demo_node) in nodes.iter().enumerate() {
            if index == publisher || network.is_killed(index) || done.contains_key(&index) {
                continue;
            }
            let store = demo_node.node.store().clone();
            let tag = tag.clone();
            let pinned = tokio::task::spawn_blocking(move || {
                store
                    .tags()
                    .map(|tags| {
                        tags.iter()
                            .any(|(name, hash)| *name == tag && *hash == root)
                    })
                    .unwrap_or(false)
            })
            .await
            .unwrap_or(false);
            if !pinned {
                continue;
            }
            done.insert(index, started.elapsed());
            // Where its bytes came from: the replication counters.
            let mut sources: Vec<(String, u64)> = demo_node
                .node
                .replication()
                .peers()
                .into_iter()
                .filter(|peer| peer.fetched_bytes > 0)
                .map(|peer| (network.name_of(&peer.peer), peer.fetched_bytes))
                .collect();
            sources.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
            let publisher_name = &nodes[publisher].name;
            if sources.iter().any(|(name, _)| name != publisher_name) {
                stage.from_each_other += 1;
            }
            let from: Vec<String> = sources
                .iter()
                .map(|(name, bytes)| format!("{name} {}", format_bytes(*bytes)))
                .collect();
            stage.say(
                &mut narrator,
                format!(
                    "  {} has it, verified and pinned, after {:.0} ms — fetched from {}",
                    demo_node.name,
                    started.elapsed().as_secs_f64() * 1e3,
                    from.join(", ")
                ),
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stage.replicated = done.len();
    // The farthest follower restores it: byte for byte what was published.
    if let Some((&far, _)) = done.iter().max_by_key(|(_, took)| **took) {
        let store = nodes[far].node.store().clone();
        let target = scratch.join(format!("restored-{}", nodes[far].name));
        let check_target = target.clone();
        let restored = tokio::task::spawn_blocking(move || {
            store.export_dir(&root, &check_target, &mut |_| {})
        })
        .await;
        let intact = matches!(restored, Ok(Ok(_))) && same_tree(&source, &target);
        stage.restored_intact = Some(intact);
        stage.say(
            &mut narrator,
            format!(
                "{} of {} followers replicated it, {} of them partly from other followers; {} restored it {}",
                stage.replicated,
                stage.followers,
                stage.from_each_other,
                nodes[far].name,
                if intact {
                    "byte for byte"
                } else {
                    "BUT IT DIFFERS"
                }
            ),
        );
    } else {
        stage.say(
            &mut narrator,
            format!("no follower replicated it within {} s", 60),
        );
    }
    stage
}
