//! What the cluster runs on a board, by the settings in each service's
//! config blob: a pinned ledger (found by every node through its advert,
//! stopped and started again on its log), a hub with its terms, and
//! configs that cannot be honoured failing with the reason rather than
//! running as something else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fogwire_ledger::proto::COIN;
use fogwire_node::Node;
use fogwire_testkit::{nodes, wait};

/// A service's state on `node`, and its error.
fn state(node: &Node, name: &str) -> Option<(String, Option<String>)> {
    node.cluster()
        .status()
        .services
        .into_iter()
        .find(|service| service.name == name)
        .map(|service| (service.state, service.error))
}

fn add(node: &Node, text: &str) -> String {
    node.store()
        .import_bytes(text.as_bytes(), Some("test/config"))
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn services_run_by_their_config_blobs_and_configs_they_cannot_honour_fail_with_the_reason() {
    let mut options = nodes::options();
    options.cluster.mdns = false;
    let node = nodes::start(options).await;
    node.cluster().init().await.unwrap();
    let me = node.node_id();
    let ledger = add(
        &node,
        &format!(
            "[ledger]\nprice_per_gib_forwarded = 7\ngenesis = [{{ account = \"{me}\", coins = 100 }}]\n"
        ),
    );
    let hub = add(&node, "[compute]\ncharge = true\ndocker = false\n");
    let not_an_exit = add(&node, "[compute]\nslots = 1\n");
    let vpn_exit = add(&node, "[exit]\nvpn = true\n");
    let no_genesis = add(&node, "[ledger]\nprice_per_gib_forwarded = 7\n");
    let service = |name: &str, kind: &str, config: &str| {
        format!(
            "[[service]]\nname = \"{name}\"\nkind = \"{kind}\"\nshares_board = true\nconfig = \"{config}\"\n"
        )
    };
    let ledger_service = format!(
        "[[service]]\nname = \"ledger\"\nkind = \"ledger\"\npin = \"{me}\"\nshares_board = true\nconfig = \"{ledger}\"\n"
    );
    let manifest = [
        ledger_service.clone(),
        service("hub", "hub", &hub),
        service("not-an-exit", "exit", &not_an_exit),
        service("vpn-exit", "exit", &vpn_exit),
    ]
    .join("\n");
    node.cluster().apply(manifest.into_bytes()).await.unwrap();

    wait::until_some("the ledger and the hub to run", || {
        let running = |name| state(&node, name).is_some_and(|(state, _)| state == "running");
        (running("ledger") && running("hub")).then_some(())
    })
    .await;
    // The ledger came from its config's genesis and rules, and this node
    // (which names no ledger node) finds it by its advert.
    let info = wait::until_ok("the ledger to answer", || node.ledger().client().info()).await;
    assert_eq!(info.genesis, 100 * COIN);
    assert_eq!(info.rules.price_per_gib_forwarded, 7 * COIN);
    assert!(node.cluster_services().hub().is_some());
    // Settings the kind does not take, or cannot honour here: failed,
    // with why.
    let failed = |name: &'static str| {
        let node = &node;
        wait::until_some(name, move || {
            state(node, name).and_then(|(state, error)| (state == "failed").then_some(error)?)
        })
    };
    assert!(
        failed("not-an-exit")
            .await
            .contains("has [compute]; kind exit takes [exit] only")
    );
    assert!(
        failed("vpn-exit")
            .await
            .contains("does not serve VPN clients")
    );

    // A new manifest without the ledger stops it; with it again, the
    // ledger opens its log again, which kept its genesis.
    let wallet = node.ledger().wallet().clone();
    wallet
        .send(fogwire_ledger::proto::Op::Transfer {
            to: fogwire_ledger::proto::Id([9; 32]),
            amount: COIN,
        })
        .await
        .unwrap();
    let log_len = node.ledger().client().info().await.unwrap().log_len;
    assert!(log_len >= 1);
    node.cluster()
        .apply(service("hub", "hub", &hub).into_bytes())
        .await
        .unwrap();
    wait::until("the ledger to stop", || state(&node, "ledger").is_none()).await;
    node.cluster()
        .apply(
            [
                ledger_service.replace("name = \"ledger\"", "name = \"books\""),
                service("broken", "ledger", &no_genesis).replace(
                    "shares_board = true\n",
                    &format!("shares_board = true\npin = \"{me}\"\n"),
                ),
            ]
            .join("\n")
            .into_bytes(),
        )
        .await
        .unwrap();
    wait::until("the ledger to run again", || {
        state(&node, "books").is_some_and(|(state, _)| state == "running")
    })
    .await;
    let info = wait::until_ok("the ledger to answer again", || {
        node.ledger().client().info()
    })
    .await;
    assert_eq!(info.genesis, 100 * COIN);
    assert_eq!(info.log_len, log_len, "the log before the stop was kept");
    assert!(failed("broken").await.contains("genesis"));
    node.shutdown().await;
}
