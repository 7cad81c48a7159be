//! Real nodes for the benchmarks, each on its own single-threaded
//! runtime, and polling for what they are waiting for.

use std::time::{Duration, Instant};

use fogwire_node::{Node, NodeOptions};
use tokio::runtime::Runtime;

use crate::link::{BenchError, node_runtime, on};

/// A node on its own runtime.
pub(crate) struct BenchNode {
    pub(crate) runtime: Runtime,
    pub(crate) node: Node,
}

impl BenchNode {
    pub(crate) fn start(name: &str, options: NodeOptions) -> Result<Self, BenchError> {
        let runtime = node_runtime(name)?;
        let node = on(&runtime, Node::start(options))?.map_err(bench_error)?;
        Ok(Self { runtime, node })
    }

    pub(crate) fn link_to(&self, other: &BenchNode) -> Result<(), BenchError> {
        let node = self.node.clone();
        let addr = other.node.peer_addr();
        on(&self.runtime, async move { node.connect(addr).await })?.map_err(bench_error)?;
        Ok(())
    }

    pub(crate) fn stop(self) {
        let node = self.node.clone();
        let _ = on(&self.runtime, async move { node.shutdown().await });
    }
}

pub(crate) fn bench_error(error: impl std::fmt::Display) -> BenchError {
    BenchError::Link(error.to_string())
}

/// Polls `done` every `every` until it holds, for at most `patience`.
pub(crate) fn until(
    what: &str,
    every: Duration,
    patience: Duration,
    mut done: impl FnMut() -> Result<bool, BenchError>,
) -> Result<(), BenchError> {
    let started = Instant::now();
    while !done()? {
        if started.elapsed() > patience {
            return Err(BenchError::Link(format!("gave up waiting: {what}")));
        }
        std::thread::sleep(every);
    }
    Ok(())
}
