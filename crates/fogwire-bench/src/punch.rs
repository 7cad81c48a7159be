//! Hole punching on loopback: how long two nodes that reach each other
//! only through a hub take to make a direct QUIC link (`Node::direct`: an
//! ask over a route through the hub, then both dial), beside a plain TCP
//! link dialed directly between two such nodes, in the same run.

use std::time::{Duration, Instant};

use fogwire_node::{Node, NodeOptions};
use serde::Serialize;

use crate::link::{BenchError, median};

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tries: usize,
    /// From asking to a direct link both ends keep: median and slowest.
    pub punch_median_ms: f64,
    pub punch_max_ms: f64,
    /// A plain TCP link dialed directly (connect, handshake, first ping
    /// answered): median.
    pub plain_link_median_ms: f64,
    pub punch_to_plain: f64,
    /// Tries that made no direct link (must be 0 on loopback).
    pub failed: usize,
}

/// Which try is being measured, for progress output.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub try_index: usize,
}

/// Runs `tries` punches and as many plain dials, interleaved. Must be
/// called outside any tokio runtime.
pub fn run(tries: usize, mut progress: impl FnMut(Step)) -> Result<Report, BenchError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let start = |options: NodeOptions| async move {
            Node::start(options)
                .await
                .map_err(|error| BenchError::Link(error.to_string()))
        };
        let key = || {
            fogwire_identity::Keypair::generate()
                .map(std::sync::Arc::new)
                .map_err(|error| BenchError::Link(error.to_string()))
        };
        let hub = start(NodeOptions::local(key()?)).await?;
        let a = start(NodeOptions::local(key()?)).await?;
        let b = start(NodeOptions::local(key()?)).await?;
        for node in [&a, &b] {
            node.connect(hub.peer_addr())
                .await
                .map_err(|error| BenchError::Link(error.to_string()))?;
        }
        // Until each has the other's advert and a path through the hub.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = a
                .routing()
                .find(b.node_id(), fogwire_route::Constraints::default(), 1)
                .await
                .is_ok_and(|paths| !paths.is_empty());
            if found {
                break;
            }
            if Instant::now() > deadline {
                return Err(BenchError::Link("no path between the two nodes".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (mut punches, mut plain, mut failed) = (Vec::new(), Vec::new(), 0);
        for try_index in 0..tries.max(1) {
            progress(Step { try_index });
            let started = Instant::now();
            match a.direct(b.node_id()).await {
                Ok(_) => punches.push(started.elapsed().as_secs_f64() * 1e3),
                Err(_) => failed += 1,
            }
            a.disconnect(&b.node_id()).await;
            until_unlinked(&a, &b).await;
            let started = Instant::now();
            a.connect(b.peer_addr())
                .await
                .map_err(|error| BenchError::Link(error.to_string()))?;
            plain.push(started.elapsed().as_secs_f64() * 1e3);
            a.disconnect(&b.node_id()).await;
            until_unlinked(&a, &b).await;
        }
        let punch_median_ms = median(&punches);
        let plain_link_median_ms = median(&plain);
        let report = Report {
            tries: tries.max(1),
            punch_median_ms,
            punch_max_ms: punches.iter().copied().fold(0.0, f64::max),
            plain_link_median_ms,
            punch_to_plain: if plain_link_median_ms > 0.0 {
                punch_median_ms / plain_link_median_ms
            } else {
                0.0
            },
            failed,
        };
        for node in [a, b, hub] {
            node.shutdown().await;
        }
        Ok(report)
    })
}

/// Waits (briefly) until neither end holds a link to the other.
async fn until_unlinked(a: &Node, b: &Node) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while (a.link(&b.node_id()).is_some() || b.link(&a.node_id()).is_some())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
