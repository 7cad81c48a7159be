//! Groups between states on one thread, messages moved by hand: the
//! orders the network may deliver in, and frames no honest member sends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use fogwire_identity::{Keypair, NodeId};
use fogwire_msg_proto::ReceiptKind;
use fogwire_msg_proto::group::{GroupFrame, GroupId};

use super::super::{Outcome, Outgoing, State, enqueue};
use super::{GroupEvent, Standing};

const NOW: u64 = 1_700_000_000_000;

struct Member {
    state: State,
    id: NodeId,
    _dir: tempfile::TempDir,
}

fn member(seed: u8) -> Member {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(Keypair::from_seed(&[seed; 32]));
    let id = key.node_id();
    let state = State::load(&dir.path().join("messages.redb"), key, NOW).unwrap();
    Member {
        state,
        id,
        _dir: dir,
    }
}

/// Moves what `from` queued for `to` (seals, opens, receipts back).
fn deliver(from: &mut Member, to: &mut Member) {
    let pending = from.state.pending(&to.id, 10_000).unwrap();
    if pending.records.is_empty() {
        return;
    }
    if !from.state.can_seal(&to.id).unwrap() {
        let card = to.state.card().to_vec();
        assert!(from.state.remember_card(&to.id, &card).unwrap());
    }
    let envelopes = from.state.seal(&to.id, &pending.records).unwrap();
    let (outcomes, _) = to.state.open(Some(&from.id), &envelopes, NOW).unwrap();
    let taken: Vec<_> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            Outcome::Taken(id) => Some(*id),
            _ => None,
        })
        .collect();
    let receipt = to
        .state
        .sign_receipt(&from.id, ReceiptKind::Delivered, taken, NOW);
    from.state.receipt(&to.id, &receipt).unwrap();
}

fn texts(member: &Member, group: GroupId) -> Vec<String> {
    member
        .state
        .group_history(group, 1_000)
        .unwrap()
        .into_iter()
        .filter_map(|(entry, _)| match entry.event {
            GroupEvent::Text(text) => Some(text),
            _ => None,
        })
        .collect()
}

fn add(owner: &mut Member, group: GroupId, new: &mut Member) {
    let package = new.state.key_package(NOW).unwrap();
    owner.state.group_add(group, new.id, &package, NOW).unwrap();
}

/// Queues a raw group frame from `from` to `to`.
fn inject(from: &mut Member, to: &Member, frame: &GroupFrame) {
    let write = from.state.db.begin_write().unwrap();
    enqueue(&write, &to.id, vec![Outgoing::Group(frame.encode())], NOW).unwrap();
    write.commit().unwrap();
}

#[test]
fn a_message_from_an_epoch_not_reached_yet_waits_for_the_owners_commit() {
    let (mut owner, mut bob, mut carol) = (member(1), member(2), member(3));
    let group = owner.state.group_create("g", NOW).unwrap().id;
    add(&mut owner, group, &mut bob);
    deliver(&mut owner, &mut bob);
    add(&mut owner, group, &mut carol);
    deliver(&mut owner, &mut carol);
    // Carol, in the new epoch, writes before Bob has the commit.
    carol
        .state
        .group_send(group, "hello from carol", NOW)
        .unwrap();
    deliver(&mut carol, &mut bob);
    assert!(texts(&bob, group).is_empty(), "waits for its epoch");
    deliver(&mut owner, &mut bob);
    assert_eq!(texts(&bob, group), ["hello from carol"]);
    deliver(&mut carol, &mut owner);
    assert_eq!(texts(&owner, group), ["hello from carol"]);
    // A message from before a commit still opens after it (past epochs
    // are kept): Bob writes, the owner removes Carol, then Bob's arrives.
    bob.state
        .group_send(group, "before the change", NOW)
        .unwrap();
    owner.state.group_remove(group, carol.id, NOW).unwrap();
    deliver(&mut bob, &mut owner);
    assert_eq!(
        texts(&owner, group),
        ["hello from carol", "before the change"]
    );
    deliver(&mut owner, &mut carol);
    let carols = carol.state.groups().unwrap();
    assert_eq!(carols[0].standing, Standing::Removed);
}

#[test]
fn frames_no_honest_member_sends_are_dropped_and_change_nothing() {
    let (mut owner, mut bob, mut mallory) = (member(1), member(2), member(4));
    let group = owner.state.group_create("g", NOW).unwrap().id;
    add(&mut owner, group, &mut bob);
    deliver(&mut owner, &mut bob);

    // A stranger's "commit" for the group: not its owner.
    let commit = GroupFrame::Commit {
        group,
        commit: vec![0; 64],
    };
    inject(&mut mallory, &bob, &commit);
    // A stranger's message to the group, and garbage under its id.
    let message = GroupFrame::Message {
        group,
        message: vec![1; 64],
    };
    inject(&mut mallory, &bob, &message);
    // A member's genuine message, relayed by a stranger: refused too.
    bob.state.group_send(group, "mine", NOW).unwrap();
    let pending = bob.state.pending(&owner.id, 10).unwrap();
    let frame = bob
        .state
        .bodies(&pending.records)
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    let fogwire_msg_proto::Body::Group(relayed) = frame else {
        panic!("a group frame");
    };
    let write = mallory.state.db.begin_write().unwrap();
    enqueue(&write, &owner.id, vec![Outgoing::Group(relayed)], NOW).unwrap();
    write.commit().unwrap();
    deliver(&mut mallory, &mut owner);
    assert!(texts(&owner, group).is_empty(), "only Bob sends Bob's");
    deliver(&mut bob, &mut owner);
    assert_eq!(texts(&owner, group), ["mine"]);
    // A stranger asking to leave a group it is not in; a welcome that is
    // not one.
    inject(&mut mallory, &owner, &GroupFrame::Leave { group });
    let welcome = GroupFrame::Welcome {
        group: GroupId([9; 16]),
        name: "trap".into(),
        welcome: vec![2; 100],
    };
    inject(&mut mallory, &bob, &welcome);
    let before = bob.state.groups().unwrap();
    deliver(&mut mallory, &mut bob);
    deliver(&mut mallory, &mut owner);
    assert_eq!(bob.state.groups().unwrap(), before);
    assert_eq!(owner.state.groups().unwrap()[0].members.len(), 2);
    // Nothing of it shows in the pairwise conversations either.
    assert!(crate::db::unread(bob.state.db(), 100).unwrap().is_empty());
}

#[test]
fn one_owner_fills_no_more_than_its_share_of_a_nodes_groups() {
    let (mut owner, mut bob) = (member(1), member(2));
    let package = bob.state.key_package(NOW).unwrap();
    for index in 0..=super::GROUPS_PER_OWNER_MAX {
        let group = owner
            .state
            .group_create(&format!("g{index}"), NOW)
            .unwrap()
            .id;
        owner.state.group_add(group, bob.id, &package, NOW).unwrap();
    }
    deliver(&mut owner, &mut bob);
    let groups = bob.state.groups().unwrap();
    assert_eq!(groups.len(), super::GROUPS_PER_OWNER_MAX);
    // One of them left: room for one more of the owner's.
    bob.state.group_leave(groups[0].id, NOW).unwrap();
    let group = owner.state.group_create("again", NOW).unwrap().id;
    owner.state.group_add(group, bob.id, &package, NOW).unwrap();
    deliver(&mut owner, &mut bob);
    assert!(
        bob.state
            .groups()
            .unwrap()
            .iter()
            .any(|known| known.id == group)
    );
}

#[test]
fn a_member_removed_and_added_again_keeps_its_history_and_reads_only_what_came_while_in() {
    let (mut owner, mut bob) = (member(1), member(2));
    let group = owner.state.group_create("g", NOW).unwrap().id;
    add(&mut owner, group, &mut bob);
    owner.state.group_send(group, "first", NOW).unwrap();
    deliver(&mut owner, &mut bob);
    owner.state.group_remove(group, bob.id, NOW).unwrap();
    owner.state.group_send(group, "while out", NOW).unwrap();
    deliver(&mut owner, &mut bob);
    assert_eq!(bob.state.groups().unwrap()[0].standing, Standing::Removed);
    add(&mut owner, group, &mut bob);
    owner.state.group_send(group, "back", NOW).unwrap();
    deliver(&mut owner, &mut bob);
    assert_eq!(texts(&bob, group), ["first", "back"]);
    assert_eq!(bob.state.groups().unwrap()[0].standing, Standing::Member);
}
