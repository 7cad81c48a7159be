//! Small groups (MLS) between real nodes over real routes on loopback:
//! an owner adds members, everyone's messages reach everyone, a removed
//! member gets nothing more, a member that leaves is removed by the
//! owner, and every node restarted keeps its groups' history and keys.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use fogwire_identity::{Keypair, NodeId};
use fogwire_msg::{GroupEvent, GroupId, Standing};
use fogwire_node::{Node, NodeOptions};
use fogwire_testkit::nodes::{keypair, link, node, start, until_routable};
use fogwire_testkit::wait;

fn persistent(key: Arc<Keypair>, dir: &std::path::Path) -> NodeOptions {
    let mut options = NodeOptions::local(key);
    options.data_dir = Some(dir.to_owned());
    options.store_dir = Some(dir.join("store"));
    options
}

/// The texts of a group's history at `node`, as (sender, text), in order.
async fn texts(node: &Node, group: GroupId) -> Vec<(NodeId, String)> {
    node.messenger()
        .group_history(group, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|(entry, _)| match entry.event {
            GroupEvent::Text(text) => Some((NodeId::from_bytes(&entry.from).unwrap(), text)),
            _ => None,
        })
        .collect()
}

async fn until_texts(node: &Node, group: GroupId, count: usize) -> Vec<(NodeId, String)> {
    wait::until_async("group messages to arrive", || async {
        let got = texts(node, group).await;
        (got.len() >= count).then_some(got)
    })
    .await
}

/// `node`'s view of the group: its members and where it stands.
async fn view(node: &Node, group: GroupId) -> Option<(Vec<[u8; 32]>, Standing)> {
    node.messenger()
        .groups()
        .await
        .unwrap()
        .into_iter()
        .find(|known| known.id == group)
        .map(|known| (known.members, known.standing))
}

async fn until_view(node: &Node, group: GroupId, members: usize, standing: Standing) {
    wait::until_async("a group's membership to reach a node", || async {
        view(node, group)
            .await
            .filter(|(known, stands)| known.len() == members && *stands == standing)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_carries_everyones_messages_follows_its_membership_and_survives_restarts() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let keys: Vec<Arc<Keypair>> = (0..3).map(|_| keypair()).collect();
    let relay = node().await;
    let mut nodes = Vec::new();
    for (key, dir) in keys.iter().zip(&dirs) {
        let member = start(persistent(key.clone(), dir.path())).await;
        link(&member, &relay).await;
        nodes.push(member);
    }
    for member in &nodes[1..] {
        until_routable(&nodes[0], member).await;
    }
    let ids: Vec<NodeId> = nodes.iter().map(Node::node_id).collect();
    let (owner, bob, carol) = (&nodes[0], &nodes[1], &nodes[2]);

    let group = owner
        .messenger()
        .group_create("friends".into())
        .await
        .unwrap();
    let id = group.id;
    owner.messenger().group_add(id, ids[1]).await.unwrap();
    let added = owner.messenger().group_add(id, ids[2]).await.unwrap();
    assert_eq!(added.members.len(), 3);
    // Adding twice, or by another than the owner: refused, said why.
    let again = owner.messenger().group_add(id, ids[2]).await.unwrap_err();
    assert!(
        again.to_string().contains("already in the group"),
        "{again}"
    );
    until_view(bob, id, 3, Standing::Member).await;
    until_view(carol, id, 3, Standing::Member).await;
    let not_owner = bob.messenger().group_add(id, ids[2]).await.unwrap_err();
    assert!(
        not_owner.to_string().contains("only the group's owner"),
        "{not_owner}"
    );
    let named = bob.messenger().groups().await.unwrap();
    assert_eq!(named[0].name, "friends");
    assert_eq!(named[0].owner, *ids[0].as_bytes());

    // Everyone writes; everyone sees everyone's, each sender's in order.
    for (index, member) in nodes.iter().enumerate() {
        for n in 0..3 {
            let text = format!("{index}:{n}");
            member.messenger().group_send(id, text).await.unwrap();
        }
    }
    for member in &nodes {
        let got = until_texts(member, id, 9).await;
        assert_eq!(got.len(), 9, "each once");
        for (index, sender) in ids.iter().enumerate() {
            let from: Vec<&str> = got
                .iter()
                .filter(|(by, _)| by == sender)
                .map(|(_, text)| text.as_str())
                .collect();
            let sent: Vec<String> = (0..3).map(|n| format!("{index}:{n}")).collect();
            assert_eq!(from, sent, "in the order {sender} sent them");
        }
    }
    // What the owner sent counts the members it reached.
    wait::until_async("the owner's messages to reach both members", || async {
        let history = owner.messenger().group_history(id, 100).await.unwrap();
        history
            .iter()
            .filter(|(entry, _)| entry.from == *ids[0].as_bytes())
            .filter(|(entry, _)| matches!(entry.event, GroupEvent::Text(_)))
            .all(|(entry, delivered)| entry.carried_by.len() == 2 && *delivered == 2)
            .then_some(())
    })
    .await;

    // Carol removed: she knows; what follows goes to Bob only.
    owner.messenger().group_remove(id, ids[2]).await.unwrap();
    until_view(carol, id, 1, Standing::Removed).await;
    until_view(bob, id, 2, Standing::Member).await;
    let after = owner
        .messenger()
        .group_send(id, "without carol".into())
        .await
        .unwrap();
    assert_eq!(after.carried_by.len(), 1, "sealed for Bob alone");
    until_texts(bob, id, 10).await;
    let refused = carol
        .messenger()
        .group_send(id, "still here?".into())
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("no longer in the group"),
        "{refused}"
    );
    assert!(
        !texts(carol, id)
            .await
            .iter()
            .any(|(_, text)| text == "without carol")
    );

    // Every node restarted: history and keys are all there, and the
    // group goes on.
    let before: Vec<Vec<(NodeId, String)>> = {
        let mut all = Vec::new();
        for member in &nodes {
            all.push(texts(member, id).await);
        }
        all
    };
    for member in nodes.drain(..) {
        member.shutdown().await;
    }
    for (key, dir) in keys.iter().zip(&dirs) {
        let member = start(persistent(key.clone(), dir.path())).await;
        link(&member, &relay).await;
        nodes.push(member);
    }
    for (member, kept) in nodes.iter().zip(&before) {
        assert_eq!(&texts(member, id).await, kept, "history survives a restart");
    }
    let (owner, bob, carol) = (&nodes[0], &nodes[1], &nodes[2]);
    until_routable(owner, bob).await;
    owner
        .messenger()
        .group_send(id, "after the restart".into())
        .await
        .unwrap();
    bob.messenger()
        .group_send(id, "bob after the restart".into())
        .await
        .unwrap();
    let at_bob = until_texts(bob, id, 12).await;
    assert!(at_bob.iter().any(|(_, text)| text == "after the restart"));
    let at_owner = until_texts(owner, id, 12).await;
    assert!(
        at_owner
            .iter()
            .any(|(_, text)| text == "bob after the restart")
    );
    assert_eq!(view(carol, id).await.unwrap().1, Standing::Removed);

    // Bob leaves: the owner removes him.
    bob.messenger().group_leave(id).await.unwrap();
    assert_eq!(view(bob, id).await.unwrap().1, Standing::Left);
    until_view(owner, id, 1, Standing::Member).await;
    let history = owner.messenger().group_history(id, 100).await.unwrap();
    assert!(
        history
            .iter()
            .any(|(entry, _)| entry.event == GroupEvent::Removed(vec![*ids[1].as_bytes()]))
    );
}
