//! The dashboard and the gateway in a real browser: headless Chromium,
//! driven over WebDriver (chromedriver) by fantoccini. Screenshots go to
//! the target directory's `screenshots/`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use fantoccini::{Client, ClientBuilder, Locator};
use fogwire_testkit::wait::{until_async, until_ok};

use crate::harness::{TestNode, stderr, stdout};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_driver() -> Driver {
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    Driver { child, port }
}

async fn browser(driver: &Driver) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900"],
        }),
    );
    let url = format!("http://127.0.0.1:{}", driver.port);
    until_ok("chromedriver to take a session", || {
        let capabilities = capabilities.clone();
        let url = url.clone();
        async move {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            ClientBuilder::new(connector)
                .capabilities(capabilities)
                .connect(&url)
                .await
        }
    })
    .await
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn text_of(client: &Client, css: &str) -> Option<String> {
    client.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

#[test]
fn the_dashboard_and_a_published_site_open_in_chromium() {
    let present =
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
    if !fogwire_testkit::prerequisite(present, "chromium and chromium-driver (Debian packages)") {
        return;
    }
    // Two boards of one cluster, and a site published to a feed.
    let first = TestNode::start("");
    let second = TestNode::start("");
    let linked = second.cli(&["connect", &first.peer_addr()]);
    assert!(linked.status.success(), "{}", stderr(&linked));
    let created: fogwire_api::ClusterCreated =
        serde_json::from_slice(&first.cli(&["cluster", "init", "--json"]).stdout).unwrap();
    let joined = second.cli(&["cluster", "join", &created.join_code]);
    assert!(joined.status.success(), "{}", stderr(&joined));
    let site = tempfile::tempdir().unwrap();
    std::fs::write(
        site.path().join("index.html"),
        "<!doctype html><title>A site</title><h1 id=\"greeting\">Published through fogwire</h1>",
    )
    .unwrap();
    let feed = stdout(&first.cli(&["feed", "new"])).trim().to_owned();
    let published = first.cli(&["feed", "publish", &feed, site.path().to_str().unwrap()]);
    assert!(published.status.success(), "{}", stderr(&published));
    // The operator's name for the second board, which the box page shows.
    let named = first.cli(&["name", "board-2", &second.node_id().to_string()]);
    assert!(named.status.success(), "{}", stderr(&named));
    let link = stdout(&first.cli(&["dashboard"])).trim().to_owned();
    let origin = link.split("/dash/").next().unwrap().to_owned();

    let driver = start_driver();
    let shots = screenshots();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = browser(&driver).await;
        // The link trades the token for a cookie and lands on the board.
        client.goto(&link).await.unwrap();
        assert_eq!(
            client.current_url().await.unwrap().as_str(),
            format!("{origin}/dash/")
        );
        let node_id = until_async("the board's id on the page", || async {
            text_of(&client, "#node").await.filter(|id| !id.is_empty())
        })
        .await;
        assert_eq!(node_id, first.node_id().to_string());
        // Its numbers change while it is open.
        let uptime = text_of(&client, "[data-field=uptime_secs]").await.unwrap();
        until_async("the uptime on the page to change", || async {
            text_of(&client, "[data-field=uptime_secs]")
                .await
                .filter(|now| *now != uptime)
        })
        .await;
        let cpu = text_of(&client, "[data-field=cpu_percent]").await.unwrap();
        assert!(cpu.ends_with('%'), "{cpu}");
        std::fs::write(
            shots.join("dashboard.png"),
            client.screenshot().await.unwrap(),
        )
        .unwrap();

        // The box page, by its link: both boards side by side.
        client
            .find(Locator::Id("nav-box"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        until_async("both boards' figures on the box page", || async {
            let rows = client
                .find_all(Locator::Css("#boards tbody tr"))
                .await
                .ok()?;
            if rows.len() != 2 {
                return None;
            }
            for row in rows {
                let cpu = row
                    .find(Locator::Css("td[data-field=cpu_percent]"))
                    .await
                    .ok()?;
                if !cpu.text().await.ok()?.ends_with('%') {
                    return None;
                }
            }
            Some(())
        })
        .await;
        let other = second.node_id().to_string();
        let row = client
            .find(Locator::Css(&format!("tr[data-board='{other}']")))
            .await
            .unwrap();
        let text = row.text().await.unwrap();
        assert!(text.contains("alive"), "{text}");
        assert!(text.contains("board-2"), "{text}");
        std::fs::write(shots.join("box.png"), client.screenshot().await.unwrap()).unwrap();

        // The published site, through the gateway.
        client
            .goto(&format!("{origin}/feed/{feed}/"))
            .await
            .unwrap();
        let greeting = until_async("the site's page", || async {
            text_of(&client, "#greeting").await
        })
        .await;
        assert_eq!(greeting, "Published through fogwire");
        assert_eq!(client.title().await.unwrap(), "A site");
        std::fs::write(shots.join("site.png"), client.screenshot().await.unwrap()).unwrap();
        client.close().await.unwrap();
    });
    eprintln!("screenshots in {}", shots.display());
}
