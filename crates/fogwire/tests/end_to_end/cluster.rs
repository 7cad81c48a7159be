//! A box of boards: eight network namespaces on one Linux bridge (the
//! box's switch), each running `fogwire node` with nothing but the
//! cluster's join code in its configuration. They find each other by
//! mDNS, agree on who is alive, notice a board killed, ride out a board
//! paused for 2 s, survive a partition of the switch and heal, take a
//! restarted board back under its identity, and never admit a board of
//! another cluster on the same switch.

use std::collections::BTreeMap;
use std::time::Duration;

use fogwire_api::ClusterStatus;

use crate::exit::json;
use crate::harness::wait_until;
use crate::netns::{NsNode, ip, namespaces_available};

/// The switch: a namespace holding the bridge every board's cable
/// plugs into (and a second bridge to split the box in two).
struct Switch {
    namespace: String,
}

impl Switch {
    fn new(tag: &str) -> Self {
        let namespace = format!("fwsw{tag}");
        ip(&["netns", "add", &namespace]).unwrap();
        for bridge in ["br0", "br1"] {
            ip(&["-n", &namespace, "link", "add", bridge, "type", "bridge"]).unwrap();
            ip(&["-n", &namespace, "link", "set", bridge, "up"]).unwrap();
        }
        Self { namespace }
    }

    /// Plugs `board` in: its `eth0` at 10.88.0.<host>/24.
    fn plug(&self, board: &NsNode, port: &str, host: u8) {
        ip(&[
            "link",
            "add",
            "eth0",
            "netns",
            &board.namespace,
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            &self.namespace,
        ])
        .unwrap();
        let address = format!("10.88.0.{host}/24");
        ip(&[
            "-n",
            &board.namespace,
            "addr",
            "add",
            &address,
            "dev",
            "eth0",
        ])
        .unwrap();
        ip(&["-n", &board.namespace, "link", "set", "eth0", "up"]).unwrap();
        self.move_port(port, "br0");
        ip(&["-n", &self.namespace, "link", "set", port, "up"]).unwrap();
    }

    fn move_port(&self, port: &str, bridge: &str) {
        ip(&["-n", &self.namespace, "link", "set", port, "master", bridge]).unwrap();
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.namespace]);
    }
}

fn status(board: &NsNode) -> Option<ClusterStatus> {
    json(&board.cli(&["cluster", "status", "--json"]))
}

/// What `board` sees: each member's node id and state.
fn view(board: &NsNode) -> BTreeMap<String, String> {
    status(board)
        .map(|status| {
            status
                .members
                .into_iter()
                .map(|member| (member.node_id, member.state))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether every board of `group` sees exactly `alive` as alive, and
/// `dead` as dead.
fn sees(boards: &[NsNode], group: &[usize], alive: &[&str], dead: &[&str]) -> bool {
    group.iter().all(|index| {
        let view = view(&boards[*index]);
        let alive_here: Vec<&str> = view
            .iter()
            .filter(|(_, state)| *state == "alive")
            .map(|(id, _)| id.as_str())
            .collect();
        let mut want: Vec<&str> = alive.to_vec();
        want.sort_unstable();
        alive_here == want
            && dead
                .iter()
                .all(|id| view.get(*id).is_some_and(|state| state == "dead"))
    })
}

/// The board that runs the gateway, once every board that answers places
/// it on the same board and that board reports it running.
fn gateway_board(boards: &[NsNode], ids: &[String]) -> Option<usize> {
    let mut placed: Option<String> = None;
    for board in boards {
        // A killed board answers nothing: skip it.
        let Some(status) = status(board) else {
            continue;
        };
        let on = status
            .placement
            .iter()
            .find(|placed| placed.service == "socks")?
            .board
            .clone();
        if *placed.get_or_insert_with(|| on.clone()) != on {
            return None;
        }
    }
    let index = ids.iter().position(|id| Some(id) == placed.as_ref())?;
    let running = status(&boards[index])?
        .services
        .iter()
        .any(|service| service.name == "socks" && service.state == "running");
    running.then_some(index)
}

/// Polls a namespace's CLI no more than five times a second.
fn slowly<T>(probe: impl FnOnce() -> T) -> T {
    std::thread::sleep(Duration::from_millis(200));
    probe()
}

#[test]
fn eight_boards_on_a_bridge_form_a_cluster_from_the_join_code_alone() {
    if !namespaces_available("cl") {
        return;
    }
    let tag = (std::process::id() % 100_000).to_string();
    let switch = Switch::new(&tag);
    let mut boards: Vec<NsNode> = (0..9)
        .map(|index| NsNode::new(&format!("fwb{index}x{tag}")))
        .collect();
    for (index, board) in boards.iter().enumerate() {
        switch.plug(board, &format!("fwp{index}x{tag}"), index as u8 + 1);
    }
    // The first board makes the cluster; the others get one line.
    boards[0].start();
    let created: fogwire_api::ClusterCreated =
        json(&boards[0].cli(&["cluster", "init", "--json"])).expect("cluster init");
    for board in &mut boards[1..8] {
        board.edit_config(|text| {
            text.replace(
                "# join = \"fwjoin1…\"",
                &format!("join = \"{}\"", created.join_code),
            )
        });
        board.start();
    }
    // A ninth board on the same switch, in a cluster of its own.
    boards[8].start();
    let stranger: fogwire_api::ClusterCreated =
        json(&boards[8].cli(&["cluster", "init", "--json"])).expect("the stranger's init");
    assert_ne!(stranger.cluster, created.cluster);

    let ids: Vec<String> = boards.iter().map(NsNode::id).collect();
    let all: Vec<&str> = ids[..8].iter().map(String::as_str).collect();
    let box_of_eight: Vec<usize> = (0..8).collect();
    wait_until("the eight boards to see each other alive", || {
        slowly(|| sees(&boards, &box_of_eight, &all, &[]))
    });
    // Every board of the cluster links to every other by itself.
    wait_until("every board to link to every other", || {
        slowly(|| {
            boards[..8].iter().all(|board| {
                status(board).is_some_and(|status| {
                    status.cluster.as_deref() == Some(created.cluster.as_str())
                        && status.mdns
                        && status.members.iter().all(|member| member.linked)
                })
            })
        })
    });
    // The stranger heard the same announcements and stayed alone.
    assert!(sees(&boards, &[8], &[ids[8].as_str()], &[]));

    // The manifest: one SOCKS gateway for the box. Only the owner can
    // publish it; every board takes it and one runs the gateway.
    let manifest = boards[0].home.path().join("manifest.toml");
    std::fs::write(
        &manifest,
        "[[service]]\nname = \"socks\"\nkind = \"gateway\"\n\n\
         [[service]]\nname = \"relays\"\nkind = \"relay\"\ncount = 2\n",
    )
    .unwrap();
    let manifest = manifest.display().to_string();
    let refused = boards[1].cli(&["cluster", "apply", &manifest]);
    assert!(!refused.status.success());
    assert!(crate::harness::stderr(&refused).contains("only the board that made the cluster"));
    let applied = boards[0].cli(&["cluster", "apply", &manifest]);
    assert!(
        applied.status.success(),
        "{}",
        crate::harness::stderr(&applied)
    );
    let gateway = crate::harness::wait_for(
        "every board to place the gateway, and one to run it",
        || slowly(|| gateway_board(&boards[..8], &ids)),
    );
    // Only the two relays' boards carry others' routes now: a 2-link path
    // between two other boards passes through a relay.
    let relays: Vec<String> = status(&boards[0])
        .unwrap()
        .placement
        .iter()
        .filter(|placed| placed.service == "relays")
        .map(|placed| placed.board.clone())
        .collect();
    assert_eq!(relays.len(), 2);
    let others: Vec<usize> = (0..8)
        .filter(|index| !relays.contains(&ids[*index]))
        .collect();
    let (from, to) = (others[0], others[1]);
    wait_until("a 2-link path to pass through a relay", || {
        slowly(|| {
            let found: Option<serde_json::Value> =
                json(&boards[from].cli(&["route", "find", &ids[to], "--hops", "2", "--json"]));
            found
                .and_then(|found| {
                    let middle = found.pointer("/0/nodes/1")?.as_str()?.to_owned();
                    Some(relays.contains(&middle))
                })
                .unwrap_or(false)
        })
    });

    // `kill -STOP` for 2 s: suspected perhaps, never declared failed.
    let paused = (gateway + 1) % 8;
    let node_pid = boards[paused].child.as_ref().unwrap().id().to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &node_pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    std::thread::sleep(Duration::from_secs(2));
    signal("-CONT");
    // Suspicions raised while it slept (by it, of boards whose answers
    // waited in its socket, and of it by others) are refuted within a
    // few periods; on a loaded machine that may take longer than any
    // fixed sleep, so wait for the view rather than assume it.
    std::thread::sleep(Duration::from_secs(2));
    wait_until("every board to see all eight alive after the pause", || {
        slowly(|| sees(&boards, &box_of_eight, &all, &[]))
    });
    for board in &boards[..8] {
        let log = std::fs::read_to_string(board.home.path().join("node.log")).unwrap();
        let short = fogwire_identity::short_form(&ids[paused]);
        assert!(
            !log.lines()
                .any(|line| line.contains("member failed") && line.contains(&short)),
            "a 2 s pause was reported as a failure:\n{log}"
        );
    }

    // `kill -9` of the board running the gateway (`ip netns exec` execs
    // the node: the child is the node).
    let killed = gateway;
    if let Some(mut child) = boards[killed].child.take() {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let survivors: Vec<usize> = (0..8).filter(|index| *index != killed).collect();
    let alive: Vec<&str> = survivors.iter().map(|index| ids[*index].as_str()).collect();
    wait_until("the killed board to be declared failed everywhere", || {
        slowly(|| sees(&boards, &survivors, &alive, &[ids[killed].as_str()]))
    });
    // Its gateway runs on another board, and serves SOCKS there.
    let moved = crate::harness::wait_for("the gateway to run on another board", || {
        slowly(|| gateway_board(&boards[..8], &ids).filter(|board| *board != killed))
    });
    let connects = boards[survivors[0]]
        .run("python3")
        .args([
            "-c",
            &format!(
                "import socket; socket.create_connection(('10.88.0.{}', 1080), 5).close()",
                moved + 1
            ),
        ])
        .status()
        .unwrap();
    assert!(connects.success(), "the moved gateway does not answer");

    // Split the switch in two halves of the survivors. Both go on, each
    // seeing the other as failed.
    let (left, right) = survivors.split_at(4);
    for index in right.iter() {
        switch.move_port(&format!("fwp{index}x{tag}"), "br1");
    }
    let left_ids: Vec<&str> = left.iter().map(|index| ids[*index].as_str()).collect();
    let right_ids: Vec<&str> = right.iter().map(|index| ids[*index].as_str()).collect();
    wait_until("both halves of the partition to settle", || {
        slowly(|| {
            sees(&boards, left, &left_ids, &right_ids)
                && sees(&boards, right, &right_ids, &left_ids)
        })
    });
    for index in right.iter() {
        switch.move_port(&format!("fwp{index}x{tag}"), "br0");
    }
    wait_until("the healed box to converge", || {
        slowly(|| sees(&boards, &survivors, &alive, &[]))
    });

    // The killed board comes back under its identity, one boot later.
    boards[killed].start();
    wait_until("the restarted board to rejoin", || {
        slowly(|| sees(&boards, &box_of_eight, &all, &[]))
    });
    for board in &boards[..8] {
        let status = status(board).unwrap();
        assert_eq!(status.members.len(), 8, "a stale entry stayed");
        let back = status
            .members
            .iter()
            .find(|member| member.node_id == ids[killed])
            .unwrap();
        assert_eq!(back.boot, 2);
    }
    // Nobody ever took the stranger in, and it took nobody.
    for board in &boards[..8] {
        assert!(!view(board).contains_key(&ids[8]));
    }
    assert_eq!(view(&boards[8]).len(), 1);
    drop(boards);
    drop(switch);
}
