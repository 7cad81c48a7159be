//! The demo's dashboards: every node serves its control API on a free
//! loopback port, as a daemon does, so each board's dashboard is live and
//! the first node's box page shows every board of the cluster.

use std::sync::Arc;

use fogwire_control::ApiToken;
use tokio_util::sync::CancellationToken;

use crate::Network;

/// Why the dashboards could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DashboardError {
    #[error("cannot make an API token: {0}")]
    Token(String),
    #[error(transparent)]
    Listen(#[from] fogwire_control::ControlError),
}

/// The dashboards being served; they stop when this is dropped.
#[derive(Debug)]
pub struct Dashboards {
    /// The link that opens the first node's dashboard (its token inside).
    pub link: String,
    stop: CancellationToken,
}

impl Drop for Dashboards {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Serves every node's control API (and so its dashboard) on loopback.
pub async fn serve(network: &Network) -> Result<Dashboards, DashboardError> {
    let stop = CancellationToken::new();
    let mut link = String::new();
    for (index, demo_node) in network.nodes().iter().enumerate() {
        let token = ApiToken::generate().map_err(|e| DashboardError::Token(e.to_string()))?;
        let listener =
            fogwire_control::bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr =
            listener
                .local_addr()
                .map_err(|source| fogwire_control::ControlError::Listen {
                    addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                    source,
                })?;
        if index == 0 {
            link = format!("http://{addr}/dash/login?token={}", token.as_str());
        }
        tokio::spawn(fogwire_control::serve(
            listener,
            Arc::new(demo_node.node.clone()),
            token,
            stop.clone(),
        ));
    }
    Ok(Dashboards { link, stop })
}
