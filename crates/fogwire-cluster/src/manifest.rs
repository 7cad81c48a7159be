//! The cluster's manifest as the cluster key's signed feed
//! (`docs/protocol/cluster.md` §8): the owner board publishes each version
//! (`fogwire cluster apply`), every board follows the feed — replication
//! floods its roots and fetches what they name — and takes a new version
//! only when its root is signed by the cluster key, newer than the one
//! held, and its text a valid manifest.

use std::sync::Arc;
use std::time::Duration;

use fogwire_cluster_proto::manifest::{MANIFEST_LEN_MAX, Manifest, ManifestError};
use fogwire_identity::Keypair;
use fogwire_replicate::Replication;
use fogwire_store::{ContentKind, FeedId, Hash, Store, StoreError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often a board looks for a newer manifest in its store (replication
/// brings roots and content in the meantime).
const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// A manifest version this board runs by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub seq: u64,
    pub content: Hash,
    pub published_at_ms: u64,
    pub manifest: Manifest,
}

/// Why a manifest could not be published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    #[error("this board is in no cluster: `fogwire cluster init` makes one")]
    NoCluster,
    #[error(
        "only the board that made the cluster (it holds cluster.key) publishes its manifest; \
         run `fogwire cluster apply` there"
    )]
    NotOwner,
    #[error("the manifest is refused: {0}")]
    Invalid(#[from] ManifestError),
    #[error("the manifest is not UTF-8 text")]
    NotText,
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the store's thread stopped")]
    Stopped,
}

/// The feed a cluster's manifest is published on.
pub fn feed_of(cluster: &fogwire_cluster_proto::ClusterId) -> FeedId {
    FeedId::from_key(cluster.key())
}

/// Publishes `text` as the next version of the manifest of the cluster
/// whose key is `key`, and announces it to the neighbours. Returns the
/// version.
pub async fn publish(
    store: &Arc<Store>,
    replication: &Replication,
    key: Arc<Keypair>,
    text: Vec<u8>,
) -> Result<Applied, ApplyError> {
    let source = std::str::from_utf8(&text).map_err(|_| ApplyError::NotText)?;
    let manifest = Manifest::from_toml(source)?;
    let store_for_work = store.clone();
    let me = key.node_id();
    let (root, bytes) = tokio::task::spawn_blocking(move || {
        let feed = FeedId::from_key(key.node_id());
        let content = store_for_work.import_bytes(&text, Some(&fogwire_store::feed_tag(&feed)))?;
        store_for_work.publish(&key, content, ContentKind::Blob, fogwire_env::unix_ms())
    })
    .await
    .map_err(|_| ApplyError::Stopped)??;
    // The owner's node id is the cluster id; boards that need the content
    // and miss it at their neighbours fetch it over a route from there.
    replication.announce(bytes, Some(me)).await;
    Ok(Applied {
        seq: root.seq,
        content: root.content,
        published_at_ms: root.published_at_ms,
        manifest,
    })
}

/// Follows the manifest feed `feed` until `stop`: publishes each valid
/// newer version on `applied`, and the reason a newer version was refused
/// on `refused` (the board keeps the one it had).
pub(crate) async fn follow(
    store: Arc<Store>,
    replication: Replication,
    feed: FeedId,
    applied: watch::Sender<Option<Arc<Applied>>>,
    refused: watch::Sender<Option<String>>,
    stop: CancellationToken,
) {
    {
        let store = store.clone();
        let _ = tokio::task::spawn_blocking(move || store.set_following(&feed, true)).await;
    }
    replication.sync_feed(feed);
    let mut held = 0u64;
    let mut refused_seq = 0u64;
    loop {
        let store = store.clone();
        let found = tokio::task::spawn_blocking(move || newest(&store, &feed, held)).await;
        match found {
            Ok(Some(Ok(version))) => {
                held = version.seq;
                tracing::info!(
                    seq = version.seq,
                    services = version.manifest.services.len(),
                    "cluster: manifest version {} taken",
                    version.seq
                );
                applied.send_replace(Some(Arc::new(version)));
                refused.send_replace(None);
            }
            Ok(Some(Err((seq, why)))) => {
                if seq != refused_seq {
                    refused_seq = seq;
                    tracing::warn!(
                        seq,
                        "cluster: manifest version {seq} refused, keeping version {held}: {why}"
                    );
                    refused.send_replace(Some(format!("version {seq} refused: {why}")));
                }
            }
            Ok(None) | Err(_) => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(CHECK_INTERVAL) => {}
        }
    }
}

/// The feed's newest version if it is newer than `held` and its content
/// is in the store: the manifest, or why it is refused.
fn newest(store: &Store, feed: &FeedId, held: u64) -> Option<Result<Applied, (u64, String)>> {
    let root = store.feed_root(feed).ok()??;
    if root.seq <= held || root.kind != ContentKind::Blob {
        return None;
    }
    // Not here yet: replication is fetching it.
    store.entry(&root.content).ok()??;
    let text = match store.read_to_vec(&root.content, MANIFEST_LEN_MAX as u64) {
        Ok(text) => text,
        Err(error) => return Some(Err((root.seq, error.to_string()))),
    };
    let Ok(source) = std::str::from_utf8(&text) else {
        return Some(Err((root.seq, "not UTF-8 text".to_owned())));
    };
    Some(
        Manifest::from_toml(source)
            .map(|manifest| Applied {
                seq: root.seq,
                content: root.content,
                published_at_ms: root.published_at_ms,
                manifest,
            })
            .map_err(|error| (root.seq, error.to_string())),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use fogwire_store::{Config, FeedRoot};

    use super::*;

    const ONE: &str = "[[service]]\nname = \"socks\"\nkind = \"gateway\"\n";
    const TWO: &str = "[[service]]\nname = \"exit\"\nkind = \"exit\"\n";

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store"), Config::default()).unwrap();
        (dir, store)
    }

    /// Publishes `text` on `key`'s feed in `store`, as the owner would.
    fn publish(store: &Store, key: &Keypair, text: &str) -> Vec<u8> {
        let content = store.import_bytes(text.as_bytes(), None).unwrap();
        store
            .publish(key, content, ContentKind::Blob, 1_000)
            .unwrap()
            .1
    }

    #[test]
    fn a_board_takes_only_newer_valid_versions_signed_by_the_cluster_key() {
        let (_dir, owner) = store();
        let (_dir2, board) = store();
        let key = Keypair::from_seed(&[1; 32]);
        let feed = FeedId::from_key(key.node_id());
        let first = publish(&owner, &key, ONE);
        // The board receives the root (replication does this) and the blob.
        board.accept_feed_root(&first, 1_000).unwrap();
        board.import_bytes(ONE.as_bytes(), None).unwrap();
        let taken = newest(&board, &feed, 0).unwrap().unwrap();
        assert_eq!((taken.seq, taken.manifest.services.len()), (1, 1));
        // Nothing newer: nothing to take.
        assert!(newest(&board, &feed, taken.seq).is_none());

        // Forged: a feed is named by its key, so a root signed by another
        // key is a root of that key's own feed, never of the cluster's; and
        // a genuine root altered in transit fails its signature.
        let stranger = Keypair::from_seed(&[2; 32]);
        let content = board.import_bytes(TWO.as_bytes(), None).unwrap();
        let held = board.feed_root(&feed).unwrap().unwrap();
        let forged: FeedRoot = held.next(content, ContentKind::Blob, TWO.len() as u64, 2_000);
        let forged = board
            .accept_feed_root(&forged.sign(&stranger), 2_000)
            .unwrap();
        assert_ne!(forged.feed, feed);
        assert!(newest(&board, &feed, taken.seq).is_none());
        let mut altered = publish(&owner, &key, TWO);
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(board.accept_feed_root(&altered, 2_000).is_err());
        assert!(newest(&board, &feed, taken.seq).is_none());

        // A newer valid version is taken; then the older one, replayed, is
        // refused.
        let second = owner.feed_root_bytes(&feed).unwrap().unwrap();
        board.accept_feed_root(&second, 2_000).unwrap();
        let taken = newest(&board, &feed, taken.seq).unwrap().unwrap();
        assert_eq!(taken.seq, 2);
        assert_eq!(taken.manifest.services[0].spec.name, "exit");
        assert!(board.accept_feed_root(&first, 3_000).is_err());

        // Signed by the cluster key but not a valid manifest: refused with
        // the reason, and the board keeps version 2.
        let bad = publish(
            &owner,
            &key,
            "[[service]]\nname = \"x\"\nkind = \"miner\"\n",
        );
        board.accept_feed_root(&bad, 3_000).unwrap();
        board
            .import_bytes(b"[[service]]\nname = \"x\"\nkind = \"miner\"\n", None)
            .unwrap();
        let (seq, why) = newest(&board, &feed, 2).unwrap().unwrap_err();
        assert_eq!(seq, 3);
        // (The follower logs it once and keeps running by version 2.)
        assert!(why.contains("miner"), "{why}");
    }
}
