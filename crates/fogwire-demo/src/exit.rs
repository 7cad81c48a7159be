//! The exit stage: one node serves as an exit (the board the cluster's
//! manifest placed it on), another fetches a page
//! from a web server on this machine through its SOCKS 5 proxy, over a
//! route of at least three hops — what `curl --socks5-hostname` does.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fogwire_exit::ProxyConfig;
use fogwire_exit_proto::wire::Destination;
use fogwire_node::NodeOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::network::Network;
use crate::routes::Narrator;

/// Links on the proxy's route to the exit, at least (fewer in a network
/// too small for a path that long: a ring of 4 has none over 2 hops).
const MIN_HOPS: usize = 3;

/// The hops the demo asks for in a network of `count`.
pub fn min_hops(count: usize) -> usize {
    MIN_HOPS.min(count / 2).max(1)
}
/// How long the stage may take in all.
const STAGE_TIMEOUT: Duration = Duration::from_secs(30);
const PAGE: &str = "<h1>fetched through a fogwire exit</h1>\n";

/// Every node runs a SOCKS proxy on loopback, as a user's machine would:
/// it is no role of the box (the exit is: the cluster's manifest places
/// it), and the stage uses the first node that is not the exit.
pub fn client_proxy(count: usize, options: &mut NodeOptions) {
    options.socks = Some(ProxyConfig {
        min_hops: min_hops(count),
        ..ProxyConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)))
    });
}

/// The node whose proxy the stage uses: the first that is not the exit.
pub fn client_of(count: usize, exit: usize) -> usize {
    usize::from(exit == 0).min(count - 1)
}

/// What the exit stage showed.
#[derive(Debug, Clone, Default)]
pub struct ExitStage {
    /// The page arrived whole.
    pub intact: Option<bool>,
    /// A ping crossed the VPN (none: not run, as when not root).
    pub vpn_pinged: Option<bool>,
    pub story: Vec<String>,
}

/// Serves one page over HTTP/1.0 on loopback.
async fn web_server() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 1024];
                let _ = socket.read(&mut request).await;
                let response = format!(
                    "HTTP/1.0 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n{PAGE}",
                    PAGE.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(address)
}

/// A SOCKS 5 CONNECT to `localhost:port` and an HTTP GET, as a browser
/// behind the proxy would: the response.
async fn fetch_through(proxy: SocketAddr, port: u16) -> std::io::Result<Vec<u8>> {
    let localhost = Destination::Host("localhost".into());
    let mut socket = fogwire_exit::client::connect(proxy, &localhost, port).await?;
    socket
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await?;
    Ok(response)
}

/// Runs the stage through the exit on node `exit`.
pub async fn run(network: &Network, exit: usize, narrator: Narrator<'_>) -> ExitStage {
    let mut stage = ExitStage::default();
    let mut say = |line: String, stage: &mut ExitStage| {
        narrator(&line);
        stage.story.push(line);
    };
    let nodes = network.nodes();
    let client = &nodes[client_of(nodes.len(), exit)];
    let exit = &nodes[exit];
    let Some(proxy) = client.node.proxy() else {
        return stage;
    };
    let outcome = tokio::time::timeout(STAGE_TIMEOUT, async {
        let server = web_server().await?;
        let started = Instant::now();
        // The exit must be known (its advert heard) before the proxy can
        // pick it; the first connection opens the route.
        let exit_id = exit.id();
        loop {
            let known = fogwire_exit::exits(client.node.routing())
                .await
                .unwrap_or_default();
            if known.iter().any(|e| e.node == exit_id && e.hops.is_some()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let response = fetch_through(proxy.local_addr(), server.port()).await?;
        Ok::<_, std::io::Error>((response, started.elapsed(), server))
    })
    .await;
    match outcome {
        Ok(Ok((response, took, server))) => {
            let intact = response.ends_with(PAGE.as_bytes());
            let route = proxy.routes().first().map(|(_, _, _, route)| *route);
            let listing = client.node.routing().routes().await.ok();
            let hops = listing
                .iter()
                .flat_map(|listing| listing.routes.iter())
                .find(|info| Some(info.id) == route)
                .map_or_else(|| "?".to_owned(), |info| info.path.len().to_string());
            say(
                format!(
                    "  {} fetched http://localhost:{}/ through exit {} over {} hops in {} ms: {}",
                    client.name,
                    server.port(),
                    exit.name,
                    hops,
                    took.as_millis(),
                    if intact {
                        "the page, intact"
                    } else {
                        "a wrong page"
                    }
                ),
                &mut stage,
            );
            say(
                format!(
                    "  (curl --socks5-hostname {} http://localhost:{}/ does the same)",
                    proxy.local_addr(),
                    server.port()
                ),
                &mut stage,
            );
            stage.intact = Some(intact);
        }
        Ok(Err(error)) => {
            say(format!("  the proxied fetch failed: {error}"), &mut stage);
            stage.intact = Some(false);
        }
        Err(_) => {
            say(
                format!("  the proxied fetch did not finish within {STAGE_TIMEOUT:?}"),
                &mut stage,
            );
            stage.intact = Some(false);
        }
    }
    let mut lines = Vec::new();
    let pinged = crate::vpn::ping_across(client, exit, &mut |line| lines.push(line)).await;
    for line in lines {
        say(line, &mut stage);
    }
    stage.vpn_pinged = pinged;
    stage
}
