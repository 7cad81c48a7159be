//! Replication between real nodes over real links on loopback: blobs and
//! directories fetched from one peer or several, resumed after a cut,
//! feeds followed across hops; and peers that lie (flipped bits, wrong
//! lengths, the wrong blob) or flood, caught and penalised while the
//! download completes from honest peers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fogwire_env::unix_ms as now_ms;
use fogwire_identity::{Keypair, NodeId};
use fogwire_link::proto::{Config as LinkConfig, LinkIdentity};
use fogwire_link::{ChannelReceiver, ChannelSender, LinkHandle};
use fogwire_node::{Node, NodeOptions};
use fogwire_replicate::{CHANNEL_STORE, FetchError};
use fogwire_store::{Config as StoreConfig, Hash, Store};
use fogwire_store_proto::message::{
    DATA_LEN_MAX, ERROR_BUSY, GetItem, Groups, HaveEntry, HaveState, Message, data_header,
};
use fogwire_store_proto::stream::{ItemEncoder, all_groups};
use fogwire_testkit::data::pattern;
use fogwire_testkit::nodes::{node, start, until_routable};
use fogwire_testkit::wait::{self, PATIENCE};

fn replicating_with(node: &Node, peer: NodeId) -> bool {
    node.replication()
        .peers()
        .iter()
        .any(|p| p.peer == peer && p.linked)
}

/// Links `a` to `b` and waits until both replicate over the link.
async fn link(a: &Node, b: &Node) {
    a.connect(b.peer_addr()).await.unwrap();
    let (a_id, b_id) = (a.node_id(), b.node_id());
    wait::until("replication over the new link", || {
        replicating_with(a, b_id) && replicating_with(b, a_id)
    })
    .await;
}

async fn add(node: &Node, data: Vec<u8>) -> Hash {
    let store = node.store().clone();
    tokio::task::spawn_blocking(move || store.import_bytes(&data, Some("test")).unwrap())
        .await
        .unwrap()
}

async fn add_dir(node: &Node, source: &Path, tag: &str) -> Hash {
    let (store, source, tag) = (node.store().clone(), source.to_owned(), tag.to_owned());
    tokio::task::spawn_blocking(move || {
        store
            .import_dir(&source, Some(&tag), false, &mut |_| {})
            .unwrap()
            .root
            .unwrap()
    })
    .await
    .unwrap()
}

async fn export_dir(node: &Node, root: Hash, target: &Path) {
    let (store, target) = (node.store().clone(), target.to_owned());
    tokio::task::spawn_blocking(move || store.export_dir(&root, &target, &mut |_| {}).unwrap())
        .await
        .unwrap();
}

async fn read(node: &Node, hash: Hash) -> Vec<u8> {
    let store = node.store().clone();
    tokio::task::spawn_blocking(move || store.read_to_vec(&hash, u64::MAX).unwrap())
        .await
        .unwrap()
}

fn stats(node: &Node, peer: NodeId) -> fogwire_replicate::PeerStats {
    node.replication()
        .peers()
        .into_iter()
        .find(|p| p.peer == peer)
        .expect("the peer is known")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_added_on_one_node_is_fetched_byte_for_byte_by_another() {
    let (a, b) = (node().await, node().await);
    let data = pattern(5_000_000, 1);
    let hash = add(&a, data.clone()).await;
    assert_eq!(hash.to_string(), blake3::hash(&data).to_hex().to_string());
    link(&b, &a).await;
    let report = b.replication().fetch(hash, None, None).await.unwrap();
    assert_eq!(report.size, data.len() as u64);
    assert_eq!(report.fetched_blobs, 1);
    assert_eq!(read(&b, hash).await, data);
    // Counted on both sides.
    assert!(stats(&a, b.node_id()).served_bytes >= data.len() as u64);
    assert!(stats(&b, a.node_id()).fetched_bytes >= data.len() as u64);
    // Held now: a second fetch asks nobody.
    let again = b.replication().fetch(hash, None, None).await.unwrap();
    assert_eq!(again.fetched_blobs, 0);
    // Small blobs too.
    let small = add(&a, b"tiny".to_vec()).await;
    b.replication().fetch(small, None, None).await.unwrap();
    assert_eq!(read(&b, small).await, b"tiny");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_nobody_has_is_reported_not_found() {
    let (a, b) = (node().await, node().await);
    let missing = Hash::of(b"nobody has this");
    assert!(matches!(
        b.replication().fetch(missing, None, None).await,
        Err(FetchError::NoPeers { .. })
    ));
    link(&b, &a).await;
    match b.replication().fetch(missing, None, None).await {
        Err(FetchError::NotFound { asked: 1, .. }) => {}
        other => panic!("expected not found, got {other:?}"),
    }
}

fn write_tree(root: &Path) {
    std::fs::create_dir_all(root.join("docs/deep/deeper")).unwrap();
    for i in 0..150 {
        std::fs::write(
            root.join(format!("docs/note-{i:03}.txt")),
            format!("note {i}\n").repeat(i + 1),
        )
        .unwrap();
    }
    std::fs::write(root.join("docs/deep/deeper/big.bin"), pattern(3_000_000, 2)).unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::write(root.join("medium.bin"), pattern(100_000, 3)).unwrap();
}

fn assert_same_tree(a: &Path, b: &Path) {
    let mut stack = vec![std::path::PathBuf::new()];
    let mut files = 0;
    while let Some(relative) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(a.join(&relative))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        let mut other: Vec<_> = std::fs::read_dir(b.join(&relative))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        other.sort();
        assert_eq!(names, other, "entries of {}", relative.display());
        for name in names {
            let path = relative.join(&name);
            if a.join(&path).is_dir() {
                stack.push(path);
            } else {
                files += 1;
                assert_eq!(
                    std::fs::read(a.join(&path)).unwrap(),
                    std::fs::read(b.join(&path)).unwrap(),
                    "{}",
                    path.display()
                );
            }
        }
    }
    assert!(files > 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_is_fetched_from_its_root_and_restored_exactly() {
    let (a, b) = (node().await, node().await);
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    write_tree(&source);
    let root = add_dir(&a, &source, "tree").await;
    link(&b, &a).await;
    let report = b
        .replication()
        .fetch(root, Some("fetched".into()), None)
        .await
        .unwrap();
    assert!(report.directory);
    assert!(report.fetched_blobs > 150, "{report:?}");
    let target = dir.path().join("restored");
    export_dir(&b, root, &target).await;
    assert_same_tree(&source, &target);
    // Pinned as a whole: collection keeps every part.
    let store = b.store().clone();
    let gc = tokio::task::spawn_blocking(move || store.gc(Some(0)).unwrap())
        .await
        .unwrap();
    assert_eq!(gc.removed_blobs, 0);
    // Only what is missing is fetched again.
    let again = b.replication().fetch(root, None, None).await.unwrap();
    assert_eq!(again.fetched_blobs, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_blob_comes_from_several_peers_at_once() {
    let (a, c, b) = (node().await, node().await, node().await);
    let data = pattern(24 * 1024 * 1024, 4);
    let hash = add(&a, data.clone()).await;
    assert_eq!(add(&c, data.clone()).await, hash);
    link(&b, &a).await;
    link(&b, &c).await;
    let report = b.replication().fetch(hash, None, None).await.unwrap();
    assert_eq!(read(&b, hash).await, data);
    assert_eq!(report.from.len(), 2, "both peers sent part: {report:?}");
    assert!(report.from.iter().all(|(_, bytes)| *bytes > 0));
}

/// How a fake peer misbehaves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lie {
    /// Flips a bit in every answer but the size probe's.
    FlipBit,
    /// Claims a size the blob does not have.
    WrongLength,
    /// Sends another blob's bytes, of the same size.
    WrongBlob,
    /// Honest, but its link dies after this many bytes.
    CutAfter(u64),
    /// Never answers "who has it".
    Mute,
    /// Honest, but serves one message every 250 ms.
    Drip,
}

/// A peer on a real link that answers from a real store of its own, and
/// lies as told.
struct FakePeer {
    /// Its id, as the node knows it.
    id: NodeId,
    /// Every hash the node asked it about ("who has it"), in order.
    asked: Arc<std::sync::Mutex<Vec<Hash>>>,
    _link: LinkHandle,
}

impl FakePeer {
    async fn start(node: &Node, store: Arc<Store>, serves: (Hash, Hash), lie: Lie) -> FakePeer {
        let keypair = Arc::new(Keypair::generate().unwrap());
        Self::start_as(node, keypair, store, serves, lie).await
    }

    /// [`FakePeer::start`] under a given identity (to link again as the
    /// same peer).
    async fn start_as(
        node: &Node,
        keypair: Arc<Keypair>,
        store: Arc<Store>,
        serves: (Hash, Hash),
        lie: Lie,
    ) -> FakePeer {
        let (id, link, receiver, sender) = raw_link(node, keypair).await;
        let handle = link.clone();
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = asked.clone();
        tokio::spawn(async move {
            fake_serve(handle, receiver, sender, store, serves, lie, record).await;
        });
        wait::until("the node replicates with the fake", || {
            replicating_with(node, id)
        })
        .await;
        FakePeer {
            id,
            asked,
            _link: link,
        }
    }

    fn was_asked_for(&self, hash: Hash) -> bool {
        self.asked.lock().unwrap().contains(&hash)
    }
}

async fn raw_link(
    node: &Node,
    keypair: Arc<Keypair>,
) -> (NodeId, LinkHandle, ChannelReceiver, ChannelSender) {
    let id = keypair.node_id();
    let identity = LinkIdentity::generate(keypair).unwrap();
    let config = Arc::new(LinkConfig {
        channels: fogwire_replicate::link_channels(),
        ..LinkConfig::default()
    });
    let established = fogwire_link::connect(node.local_addr(), node.node_id(), &identity, config)
        .await
        .unwrap();
    let link = fogwire_link::spawn(established);
    let receiver = link.take_receiver(CHANNEL_STORE).unwrap();
    let sender = link.sender(CHANNEL_STORE).unwrap();
    (id, link, receiver, sender)
}

async fn fake_serve(
    link: LinkHandle,
    mut receiver: ChannelReceiver,
    sender: ChannelSender,
    store: Arc<Store>,
    (claimed, real): (Hash, Hash),
    lie: Lie,
    asked: Arc<std::sync::Mutex<Vec<Hash>>>,
) {
    let size = store.entry(&real).unwrap().unwrap().size;
    let mut sent = 0u64;
    while let Some(bytes) = receiver.recv().await {
        let Ok(message) = Message::decode(&bytes) else {
            continue;
        };
        match message {
            Message::Has { id, hashes } => {
                asked.lock().unwrap().extend(hashes.iter().copied());
                if lie == Lie::Mute {
                    continue;
                }
                let entries = hashes
                    .into_iter()
                    .map(|hash| HaveEntry {
                        hash,
                        state: if hash == claimed {
                            HaveState::Complete {
                                size: if lie == Lie::WrongLength {
                                    size - 20_000
                                } else {
                                    size
                                },
                            }
                        } else {
                            HaveState::Absent
                        },
                    })
                    .collect();
                let _ = sender.send(Message::Have { id, entries }.encode()).await;
            }
            Message::Get { id, items } => {
                let item: &GetItem = &items[0];
                let source = store.source(&real).unwrap().unwrap();
                // The size the requester assumes decides the encoding's
                // shape; serve the real tree's bytes in it.
                let groups = &item.groups & &all_groups(size);
                let probe = groups == Groups::from(groups_last(size)..groups_last(size) + 1);
                let mut encoder = ItemEncoder::new(real, size, &groups);
                let mut out = BytesMut::new();
                while !encoder.is_done() {
                    let target = out.len() + DATA_LEN_MAX;
                    source.encode(&mut encoder, &mut out, target).unwrap();
                }
                let mut first = true;
                while !out.is_empty() {
                    let mut body = out.split_to(out.len().min(DATA_LEN_MAX));
                    if lie == Lie::FlipBit && !probe && first {
                        let at = body.len() / 2;
                        body[at] ^= 0x10;
                    }
                    first = false;
                    sent += body.len() as u64;
                    if let Lie::CutAfter(limit) = lie
                        && sent > limit
                    {
                        link.close(fogwire_link::proto::CloseCode::NORMAL, "cut")
                            .await;
                        return;
                    }
                    let message = fogwire_link::proto::Message::with_prefix(
                        &data_header(id, 0),
                        body.freeze(),
                    );
                    if sender.send(message).await.is_err() {
                        return;
                    }
                    if lie == Lie::Drip {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
                let _ = sender.send(Message::Done { id }.encode()).await;
            }
            _ => {}
        }
    }
}

fn groups_last(size: u64) -> u64 {
    size.div_ceil(16384).max(1) - 1
}

/// A store of its own for a fake peer, holding `data`.
fn fake_store(dir: &Path, data: &[u8]) -> (Arc<Store>, Hash) {
    let store = Store::open(dir, StoreConfig::default()).unwrap();
    let hash = store.import_bytes(data, Some("x")).unwrap();
    (Arc::new(store), hash)
}

async fn lying_peer_is_caught(lie: Lie) {
    let (honest, b) = (node().await, node().await);
    let data = pattern(12 * 1024 * 1024, 5);
    let hash = add(&honest, data.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (store, real) = match lie {
        Lie::WrongBlob => fake_store(dir.path(), &pattern(data.len(), 6)),
        _ => fake_store(dir.path(), &data),
    };
    let fake = FakePeer::start(&b, store, (hash, real), lie).await;
    let fake_key = fake.id;
    link(&b, &honest).await;
    let report = b.replication().fetch(hash, None, None).await.unwrap();
    // Every linked peer is asked who has a blob: the fake was.
    assert!(fake.was_asked_for(hash), "{lie:?}");
    assert_eq!(read(&b, hash).await, data, "{lie:?}");
    let fake_stats = stats(&b, fake_key);
    assert!(fake_stats.corrupt >= 1, "{lie:?}: {fake_stats:?}");
    assert!(
        report
            .from
            .iter()
            .any(|(peer, _)| *peer == honest.node_id()),
        "{lie:?}: {report:?}"
    );
    // Left out of the next download: not even asked who has it, although
    // it is still linked (an unpenalised peer always is, as above).
    let other = add(&honest, pattern(200_000, 7)).await;
    let report = b.replication().fetch(other, None, None).await.unwrap();
    assert!(
        replicating_with(&b, fake_key),
        "{lie:?}: the fake's link is gone"
    );
    assert!(
        !fake.was_asked_for(other),
        "{lie:?}: the fake was asked again"
    );
    assert!(report.from.iter().all(|(peer, _)| *peer != fake_key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_serving_in_a_slow_drip_keeps_no_share_of_the_download() {
    // Bound proven: a peer that serves honest bytes at a trickle holds up
    // only what it delivers; what it has not delivered moves to a faster
    // peer (halved away, the last groups taken whole), and the blob
    // arrives whole. The fetching node waits an hour before it gives up
    // on a request that sends nothing, so only that can end the download
    // (without the end game it hung on the drip's last groups).
    let mut options = fogwire_testkit::nodes::options();
    options.replication.stall_timeout = Duration::from_secs(3600);
    let (honest, b) = (node().await, start(options).await);
    let data = pattern(12 * 1024 * 1024, 8);
    let hash = add(&honest, data.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (store, real) = fake_store(dir.path(), &data);
    let fake = FakePeer::start(&b, store, (hash, real), Lie::Drip).await;
    link(&b, &honest).await;
    let fetch = b.replication().fetch(hash, None, None);
    let report = tokio::time::timeout(Duration::from_secs(300), fetch)
        .await
        .expect("the download waited on the drip")
        .unwrap();
    assert_eq!(read(&b, hash).await, data);
    let from = |peer: NodeId| {
        let bytes = report.from.iter().filter(|(p, _)| *p == peer);
        bytes.map(|(_, bytes)| *bytes).sum::<u64>()
    };
    // The drip was asked (and, unless the honest peer's end game took its
    // every group first, served some: how much is timing)…
    assert!(fake.was_asked_for(hash), "the drip was never asked");
    // …but the faster peer delivered nearly all.
    assert!(
        from(fake.id) < data.len() as u64 / 4,
        "the drip kept its share: {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_who_has_it_is_waited_on_once_not_by_every_fetch() {
    let (honest, b) = (node().await, node().await);
    let data = pattern(300_000, 8);
    let hash = add(&honest, data.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (store, real) = fake_store(dir.path(), &data);
    let mute = FakePeer::start(&b, store, (hash, real), Lie::Mute).await;
    link(&b, &honest).await;
    // The first fetch asks it, gets no answer, and completes from the
    // honest peer once its wait is over.
    b.replication().fetch(hash, None, None).await.unwrap();
    assert_eq!(read(&b, hash).await, data);
    assert!(mute.was_asked_for(hash));
    // The next fetch does not ask it again (nor wait for it), although
    // its link is still up.
    let other = add(&honest, pattern(200_000, 9)).await;
    b.replication().fetch(other, None, None).await.unwrap();
    assert!(
        replicating_with(&b, mute.id),
        "the mute peer's link is gone"
    );
    assert!(!mute.was_asked_for(other), "the mute peer was asked again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_left_out_for_silence_is_asked_again_once_it_links_again() {
    // A peer restarting looks silent; its next link ends the pause.
    let (honest, b) = (node().await, node().await);
    let data = pattern(300_000, 10);
    let hash = add(&honest, data.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (store, real) = fake_store(dir.path(), &data);
    let keypair = Arc::new(Keypair::generate().unwrap());
    let mute =
        FakePeer::start_as(&b, keypair.clone(), store.clone(), (hash, real), Lie::Mute).await;
    link(&b, &honest).await;
    b.replication().fetch(hash, None, None).await.unwrap();
    assert!(mute.was_asked_for(hash));
    // The same peer, linked again (its old link closed).
    mute._link
        .close(fogwire_link::proto::CloseCode::NORMAL, "restarting")
        .await;
    let back = FakePeer::start_as(&b, keypair, store, (hash, real), Lie::Mute).await;
    let other = add(&honest, pattern(200_000, 11)).await;
    b.replication().fetch(other, None, None).await.unwrap();
    assert!(
        back.was_asked_for(other),
        "the peer linked again was left out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_is_caught_and_the_download_completes_from_others() {
    lying_peer_is_caught(Lie::FlipBit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_length_is_caught_and_the_download_completes_from_others() {
    lying_peer_is_caught(Lie::WrongLength).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_of_the_wrong_blob_is_caught_and_the_download_completes_from_others() {
    lying_peer_is_caught(Lie::WrongBlob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_download_resumes_where_it_stopped() {
    let b = node().await;
    let data = pattern(16 * 1024 * 1024, 8);
    let dir = tempfile::tempdir().unwrap();
    let (store, hash) = fake_store(dir.path(), &data);
    // A peer that dies after sending about 6 MiB.
    let _fake = FakePeer::start(&b, store, (hash, hash), Lie::CutAfter(6 << 20)).await;
    let stopped_at = match b.replication().fetch(hash, None, None).await {
        Err(FetchError::Stuck { done, size, .. }) => {
            assert!(done > 0 && done < size, "{done} of {size}");
            done
        }
        other => panic!("expected the download to stop, got {other:?}"),
    };
    // Another holder appears: the download picks up from what it has.
    let a = node().await;
    add(&a, data.clone()).await;
    link(&b, &a).await;
    let report = b.replication().fetch(hash, None, None).await.unwrap();
    assert!(
        report.fetched_bytes <= data.len() as u64 - stopped_at,
        "resumed from {stopped_at}, not started over: {report:?}"
    );
    assert_eq!(read(&b, hash).await, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_bad_or_oversized_requests_are_bounded() {
    let b = node().await;
    let data = pattern(40 * 1024 * 1024, 9);
    let hash = add(&b, data).await;
    let (_, link, mut receiver, sender) =
        raw_link(&b, Arc::new(Keypair::generate().unwrap())).await;
    // Many GETs at once: beyond the per-peer bound they are refused BUSY.
    for id in 1..=20u32 {
        let message = Message::Get {
            id,
            items: vec![GetItem {
                hash,
                groups: Groups::from(0..2048),
            }],
        };
        sender.send(message.encode()).await.unwrap();
    }
    let mut busy = 0;
    let mut finished = 0;
    while busy + finished < 20 {
        let bytes = tokio::time::timeout(PATIENCE, receiver.recv())
            .await
            .unwrap()
            .unwrap();
        match Message::decode(&bytes).unwrap() {
            Message::Error { code, .. } if code == ERROR_BUSY => busy += 1,
            Message::Done { .. } => finished += 1,
            _ => {}
        }
    }
    assert!(busy >= 12, "{busy} refused busy");
    // Asking about too many hashes, too many groups, or junk: refused by
    // the decoder, and after a few such messages the link is closed.
    let too_many_hashes = {
        let mut bytes = vec![0x01, 0, 0, 0, 1];
        bytes.extend_from_slice(&513u16.to_be_bytes());
        bytes.extend(std::iter::repeat_n(0u8, 513 * 32));
        Bytes::from(bytes)
    };
    let huge_range = {
        let mut bytes = vec![0x03, 0, 0, 0, 2, 0, 1];
        bytes.extend_from_slice(hash.as_bytes());
        bytes.extend_from_slice(&1u16.to_be_bytes());
        bytes.extend_from_slice(&0u64.to_be_bytes());
        bytes.extend_from_slice(&u64::MAX.to_be_bytes());
        Bytes::from(bytes)
    };
    sender.send(too_many_hashes).await.unwrap();
    sender.send(huge_range).await.unwrap();
    for junk in 0..10u8 {
        let _ = sender.send(Bytes::from(vec![0xee, junk, 1, 2, 3])).await;
    }
    let reason = tokio::time::timeout(PATIENCE, link.closed()).await.unwrap();
    assert_eq!(reason.code, fogwire_link::proto::CloseCode::PROTOCOL_ERROR);
}

/// The next message on `receiver` that `pick` takes, skipping others.
async fn next_matching<T>(
    receiver: &mut ChannelReceiver,
    mut pick: impl FnMut(Message) -> Option<T>,
) -> T {
    loop {
        let bytes = tokio::time::timeout(PATIENCE, receiver.recv())
            .await
            .unwrap()
            .unwrap();
        if let Some(found) = pick(Message::decode(&bytes).unwrap()) {
            return found;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_flooding_provider_records_is_held_to_its_share_and_others_are_still_found() {
    use fogwire_store_proto::providers::RECORDS_PER_PROVIDER_MAX;
    let (keeper, honest) = (node().await, node().await);
    link(&honest, &keeper).await;
    let keypair = Arc::new(Keypair::generate().unwrap());
    let flooder = keypair.node_id();
    let (_, _link, mut receiver, sender) = raw_link(&keeper, keypair).await;
    // Records of far more blobs than one holder may have kept, 512 to a
    // message: the keeper takes its share and says how many it took.
    let batches = RECORDS_PER_PROVIDER_MAX / 512 + 8;
    let mut taken = 0usize;
    for batch in 0..batches {
        let hashes = (0..512u32)
            .map(|i| Hash::of(&[(batch as u32).to_be_bytes(), i.to_be_bytes()].concat()))
            .collect();
        let id = batch as u32 + 1;
        sender
            .send(Message::Provide { id, hashes }.encode())
            .await
            .unwrap();
        let (answered, now, ttl_secs) = next_matching(&mut receiver, |message| match message {
            Message::Provided {
                id,
                taken,
                ttl_secs,
            } => Some((id, taken, ttl_secs)),
            _ => None,
        })
        .await;
        assert_eq!(answered, id);
        assert!(ttl_secs > 0);
        taken += usize::from(now);
    }
    assert_eq!(taken, RECORDS_PER_PROVIDER_MAX);
    assert_eq!(
        keeper.replication().provider_stats().records_kept,
        RECORDS_PER_PROVIDER_MAX as u64
    );
    // What it gave first is kept: the keeper, which is one of that hash's
    // keepers (of two nodes, the flooder having no advert), names it —
    // though never to the flooder itself, which asks.
    let first = Hash::of(&[0u32.to_be_bytes(), 0u32.to_be_bytes()].concat());
    let lookup = keeper.replication().find_providers(first).await;
    assert_eq!(lookup.holders, vec![flooder], "{lookup:?}");
    sender
        .send(
            Message::Find {
                id: 9999,
                hash: first,
            }
            .encode(),
        )
        .await
        .unwrap();
    let named = next_matching(&mut receiver, |message| match message {
        Message::Providers { id: 9999, nodes } => Some(nodes),
        _ => None,
    })
    .await;
    assert!(named.is_empty(), "{named:?}");
    // An honest holder's record still goes in (the keeper is one of its
    // keepers: there are only two nodes), and the keeper names it.
    let data = pattern(100_000, 12);
    let hash = add(&honest, data).await;
    let honest_id = *honest.node_id().as_bytes();
    let started = Instant::now();
    for id in 10_000u32.. {
        sender
            .send(Message::Find { id, hash }.encode())
            .await
            .unwrap();
        let named = next_matching(&mut receiver, |message| match message {
            Message::Providers {
                id: answered,
                nodes,
            } if answered == id => Some(nodes),
            _ => None,
        })
        .await;
        if named.contains(&honest_id) {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the flooded keeper never took the honest holder's record"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        keeper.replication().provider_stats().records_kept,
        RECORDS_PER_PROVIDER_MAX as u64 + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_feed_reaches_nodes_two_hops_away() {
    // publisher — relay — far: far is linked to relay only.
    let (publisher, relay, far) = (node().await, node().await, node().await);
    link(&relay, &publisher).await;
    link(&far, &relay).await;
    let key = Arc::new(Keypair::generate().unwrap());
    let feed = fogwire_store::FeedId::from_key(key.node_id());
    for follower in [&relay, &far] {
        let store = follower.store().clone();
        tokio::task::spawn_blocking(move || store.set_following(&feed, true).unwrap())
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("site");
    write_tree(&source);
    let store = publisher.store().clone();
    let source2 = source.clone();
    let publisher_key = key.clone();
    let root = tokio::task::spawn_blocking(move || {
        let key = publisher_key;
        let tag = fogwire_store::feed_tag(&feed);
        let root = store
            .import_dir(&source2, Some(&tag), false, &mut |_| {})
            .unwrap()
            .root
            .unwrap();
        store
            .publish(&key, root, fogwire_store::ContentKind::Directory, now_ms())
            .unwrap();
        store.feed_root_bytes(&feed).unwrap().unwrap()
    })
    .await
    .unwrap();
    publisher
        .replication()
        .announce(root, Some(publisher.node_id()))
        .await;
    let tag = fogwire_store::feed_tag(&feed);
    for follower in [&relay, &far] {
        let store = follower.store().clone();
        let tag = tag.clone();
        wait::until("the follower pins the feed's content", || {
            store.tags().unwrap().iter().any(|(name, _)| *name == tag)
        })
        .await;
    }
    let content = far.store().feed_root(&feed).unwrap().unwrap().content;
    let target = dir.path().join("far");
    export_dir(&far, content, &target).await;
    assert_same_tree(&source, &target);
    // far fetched it from relay, its only neighbour — or, if it asked
    // before relay had it, from the publisher, over a route the keepers of
    // the content's provider records pointed it to.
    let fetched: u64 = far
        .replication()
        .peers()
        .iter()
        .filter(|p| p.peer == relay.node_id() || p.peer == publisher.node_id())
        .map(|p| p.fetched_bytes)
        .sum();
    assert!(fetched > 3_000_000, "{fetched}");
    // A newer root replaces the older one everywhere.
    let store = publisher.store().clone();
    let (v2, root2) = tokio::task::spawn_blocking(move || {
        let hash = store.import_bytes(b"version two", None).unwrap();
        store
            .publish(&key, hash, fogwire_store::ContentKind::Blob, now_ms())
            .unwrap();
        (hash, store.feed_root_bytes(&feed).unwrap().unwrap())
    })
    .await
    .unwrap();
    publisher
        .replication()
        .announce(root2, Some(publisher.node_id()))
        .await;
    let store = far.store().clone();
    wait::until("the newer root reaches far, and its content", || {
        store
            .tags()
            .unwrap()
            .iter()
            .any(|(name, hash)| *name == tag && *hash == v2)
    })
    .await;
    assert_eq!(store.feed_root(&feed).unwrap().unwrap().seq, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_two_hops_away_is_fetched_from_over_a_route() {
    // a - b - c: a and c are not neighbours; only c has the blob, and it
    // does not tell the network (its pins stay its own), so a finds it
    // only when told where to look.
    let mut quiet = fogwire_testkit::nodes::options();
    quiet.replication.provide = false;
    let (a, b, c) = (node().await, node().await, start(quiet).await);
    link(&a, &b).await;
    link(&b, &c).await;
    let data = pattern(3_000_000, 7);
    let hash = add(&c, data.clone()).await;
    until_routable(&a, &c).await;
    // Without a route, nobody a can reach has it, and no keeper knows.
    assert!(matches!(
        a.replication().fetch(hash, None, None).await,
        Err(FetchError::NotFound {
            beyond: fogwire_replicate::Beyond::NoHolder(_),
            ..
        })
    ));
    // The lookup may have left a route to c (one of the keepers) pooled.
    a.replication().close_idle_routes().await;
    let route = a
        .replication()
        .open_route(c.node_id())
        .await
        .unwrap()
        .expect("c is no neighbour");
    assert_eq!(route.route.path, vec![b.node_id(), c.node_id()]);
    assert!(a.replication().is_peer(c.node_id()));
    let report = a.replication().fetch(hash, None, None).await.unwrap();
    assert_eq!(report.fetched_blobs, 1);
    assert_eq!(read(&a, hash).await, data);
    // Every byte came from c, over the route; b only relayed it.
    assert!(
        !report.from.is_empty() && report.from.iter().all(|(peer, _)| *peer == c.node_id()),
        "{report:?}"
    );
    assert_eq!(stats(&b, a.node_id()).served_bytes, 0);
    assert!(stats(&c, a.node_id()).served_bytes >= data.len() as u64);
    route.close().await;
    wait::until("the store stream to end at both ends", || {
        !a.replication().is_peer(c.node_id()) && !c.replication().is_peer(a.node_id())
    })
    .await;
    // A neighbour needs no route.
    assert!(
        a.replication()
            .open_route(b.node_id())
            .await
            .unwrap()
            .is_none()
    );
    // Nor does an unknown node get one.
    let stranger = Keypair::generate().unwrap().node_id();
    assert!(a.replication().open_route(stranger).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_badly_framed_store_stream_over_a_route_is_reset_and_the_node_serves_on() {
    let (a, b, c) = (node().await, node().await, node().await);
    link(&a, &b).await;
    link(&b, &c).await;
    let hash = add(&c, pattern(100_000, 9)).await;
    until_routable(&a, &c).await;
    let opened = a
        .routing()
        .open(c.node_id(), fogwire_route::Constraints::default())
        .await
        .unwrap();
    for garbage in [
        &[0x00, 0x00][..],          // an empty frame
        &[0xff, 0xff, 1, 2, 3][..], // longer than any message
    ] {
        let mut stream = a
            .routing()
            .connect(opened.route, fogwire_replicate::STORE_SERVICE)
            .await
            .unwrap();
        stream
            .write_all(Bytes::copy_from_slice(garbage))
            .await
            .unwrap();
        // c resets the stream: reading ends without an answer.
        let answer = tokio::time::timeout(PATIENCE, stream.read_to_end(1 << 20))
            .await
            .expect("c ends the stream");
        assert!(answer.is_err() || answer.unwrap().is_empty());
    }
    // c still serves a well-behaved fetcher.
    let route = a
        .replication()
        .open_route(c.node_id())
        .await
        .unwrap()
        .unwrap();
    a.replication().fetch(hash, None, None).await.unwrap();
    assert_eq!(read(&a, hash).await, pattern(100_000, 9));
    route.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_large_files_from_one_peer_do_not_overrun_what_it_serves_at_once() {
    // Several large blobs fetched at once ask one peer for more requests
    // than it serves at a time: the BUSY answers slow the fetch down,
    // never fail it.
    let (a, b) = (node().await, node().await);
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::create_dir_all(&source).unwrap();
    for index in 0..6u64 {
        std::fs::write(
            source.join(format!("big{index}")),
            pattern(20 * 1024 * 1024 + index as usize * 1000, 100 + index),
        )
        .unwrap();
    }
    let root = add_dir(&a, &source, "big").await;
    link(&b, &a).await;
    let started = Instant::now();
    let report = b.replication().fetch(root, None, None).await.unwrap();
    tracing::info!(?report, elapsed = ?started.elapsed(), "fetched");
    assert_eq!(report.fetched_blobs, 7);
    let target = dir.path().join("restored");
    export_dir(&b, root, &target).await;
    for index in 0..6u64 {
        let name = format!("big{index}");
        assert!(
            std::fs::read(source.join(&name)).unwrap()
                == std::fs::read(target.join(&name)).unwrap(),
            "{name} differs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_a_node_that_does_not_follow_fetches_from_the_named_holder() {
    // publisher — relay — far: only far follows; relay passes the root on
    // but holds none of the content, so far goes over a route to the
    // publisher the announcement names. (No node keeps provider records
    // here, so that the announcement's name is the only way to the
    // content.)
    let without_records = || {
        let mut options = fogwire_testkit::nodes::options();
        options.replication.keep_provider_records = false;
        options
    };
    let (publisher, relay, far) = (
        start(without_records()).await,
        start(without_records()).await,
        start(without_records()).await,
    );
    link(&relay, &publisher).await;
    link(&far, &relay).await;
    until_routable(&far, &publisher).await;
    let key = Arc::new(Keypair::generate().unwrap());
    let feed = fogwire_store::FeedId::from_key(key.node_id());
    let store = far.store().clone();
    tokio::task::spawn_blocking(move || store.set_following(&feed, true).unwrap())
        .await
        .unwrap();
    let data = pattern(2_000_000, 31);
    let store = publisher.store().clone();
    let root = tokio::task::spawn_blocking(move || {
        let content = store
            .import_bytes(&data, Some(&fogwire_store::feed_tag(&feed)))
            .unwrap();
        store
            .publish(&key, content, fogwire_store::ContentKind::Blob, now_ms())
            .unwrap();
        store.feed_root_bytes(&feed).unwrap().unwrap()
    })
    .await
    .unwrap();
    publisher
        .replication()
        .announce(root, Some(publisher.node_id()))
        .await;
    let tag = fogwire_store::feed_tag(&feed);
    let store = far.store().clone();
    wait::until("far pins the feed's content", || {
        store.tags().unwrap().iter().any(|(name, _)| *name == tag)
    })
    .await;
    let content = far.store().feed_root(&feed).unwrap().unwrap().content;
    assert_eq!(read(&far, content).await, pattern(2_000_000, 31));
    // From the publisher, over the route; the relay served nothing.
    assert!(stats(&publisher, far.node_id()).served_bytes >= 2_000_000);
    assert_eq!(stats(&relay, far.node_id()).served_bytes, 0);
    // The route is closed once the content is in.
    wait::until("the store stream to end", || {
        !far.replication().is_peer(publisher.node_id())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_per_peer_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(Keypair::generate().unwrap());
    let options = || {
        let mut options = NodeOptions::local(key.clone());
        options.store_dir = Some(dir.path().join("store"));
        options.replication.counters_path = Some(dir.path().join("replication.redb"));
        options
    };
    let seed = Node::start(options()).await.unwrap();
    let fetcher = node().await;
    let hash = add(&seed, pattern(1_500_000, 12)).await;
    link(&fetcher, &seed).await;
    fetcher.replication().fetch(hash, None, None).await.unwrap();
    let before = stats(&seed, fetcher.node_id());
    assert!(before.served_bytes >= 1_500_000);
    seed.shutdown().await;
    drop(seed);
    let seed = Node::start(options()).await.unwrap();
    let after = stats(&seed, fetcher.node_id());
    assert_eq!(after.served_bytes, before.served_bytes);
    assert_eq!(after.served_requests, before.served_requests);
    assert!(!after.linked);
    seed.shutdown().await;
}
