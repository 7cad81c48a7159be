//! RPC between nodes that do not link: a stream on a route to the `rpc`
//! route service carries the same messages as a link's RPC channel, each
//! framed as `length u32 (big-endian) | message`.

use bytes::Bytes;
use fogwire_identity::NodeId;
use fogwire_route::{Constraints, Opened, RouteError, RouteStream, Service};
use fogwire_rpc_proto::message::MESSAGE_LEN_MAX;
use tokio::sync::mpsc;

use crate::{Role, Rpc};

/// The route service that carries RPC between nodes that do not link.
pub const RPC_SERVICE: &str = "rpc";
/// Messages queued each way between a route stream and its connection.
const PIPE_QUEUE: usize = 64;

/// The `rpc` route service: RPC to nodes that reach this one over routes.
pub(crate) struct RpcService(pub(crate) Rpc);

impl Service for RpcService {
    fn accept(&self, stream: RouteStream) -> fogwire_route::services::BoxFuture<()> {
        self.0.over_stream(stream, Role::Acceptor);
        Box::pin(std::future::ready(()))
    }
}

impl Rpc {
    /// Carries RPC over `stream` (a route stream to or from `rpc`).
    pub(crate) fn over_stream(&self, stream: RouteStream, role: Role) {
        let peer = stream.peer();
        let (mut reader, mut writer) = stream.into_split();
        let (to_rpc, incoming) = mpsc::channel(PIPE_QUEUE);
        let (outgoing, mut from_rpc) = mpsc::channel::<Bytes>(PIPE_QUEUE);
        self.inner.tasks.spawn(async move {
            loop {
                let Ok(header) = reader.read_exact(4).await else {
                    break;
                };
                let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
                if len > MESSAGE_LEN_MAX {
                    tracing::warn!(%peer, len, "RPC frame over a route too long: stream dropped");
                    break;
                }
                let Ok(message) = reader.read_exact(len).await else {
                    break;
                };
                if to_rpc.send(message).await.is_err() {
                    break;
                }
            }
        });
        self.inner.tasks.spawn(async move {
            while let Some(message) = from_rpc.recv().await {
                let mut frame = Vec::with_capacity(4 + message.len());
                frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
                frame.extend_from_slice(&message);
                if writer.write_all(Bytes::from(frame)).await.is_err() {
                    return;
                }
            }
            let _ = writer.finish().await;
        });
        self.pipe_up(peer, role, incoming, outgoing);
    }

    /// Opens a route to `peer` and carries RPC to it over a stream on it,
    /// for a node this one does not link to. The route stays open until
    /// [`Routing::close`].
    pub async fn open_route(&self, peer: NodeId) -> Result<Opened, RouteError> {
        let routing = self.inner.routing.as_ref().ok_or(RouteError::Stopped)?;
        let opened = routing.open(peer, Constraints::default()).await?;
        match routing.connect(opened.route, RPC_SERVICE).await {
            Ok(stream) => {
                self.over_stream(stream, Role::Dialer);
                Ok(opened)
            }
            Err(error) => {
                let _ = routing.close(opened.route).await;
                Err(error)
            }
        }
    }
}
