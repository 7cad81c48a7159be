//! The `locator` service every node serves: which nodes offer a service,
//! and its method table (the Cocaine locator's job).
//!
//! Method 0, `resolve(name)`, answers one chunk:
//! `[endpoints, version, methods]` — the node ids (strings) that
//! advertise the service (this node first if it serves it), the protocol
//! version (1), and a map of method name → index (empty if this node does
//! not serve the service and so cannot vouch for its methods).

use std::sync::Weak;

use fogwire_identity::NodeId;
use fogwire_route::Routing;
use fogwire_rpc_proto::{Value, code};

use crate::{BoxFuture, Replier, Rpc, RpcState, Service};

/// The locator's name.
pub const LOCATOR: &str = "locator";

/// The advert entry by which a node says it serves RPC service `name`.
pub fn advertised(service: &str) -> String {
    format!("rpc:{service}")
}

/// The locator service. It holds its RPC weakly: the RPC holds it.
pub(crate) struct Locator {
    pub(crate) rpc: Weak<RpcState>,
    pub(crate) routing: Option<Routing>,
}

impl Service for Locator {
    fn methods(&self) -> &[&'static str] {
        &["resolve"]
    }

    fn call(&self, _method: u64, args: Vec<Value>, reply: Replier) -> BoxFuture<()> {
        let rpc = self.rpc.upgrade().map(|inner| Rpc { inner });
        let routing = self.routing.clone();
        Box::pin(async move {
            let Some(rpc) = rpc else {
                reply.error(code::FAILED, "the node is stopping").await;
                return;
            };
            let Some(name) = args.first().and_then(Value::as_str).map(str::to_owned) else {
                reply
                    .error(
                        code::BAD_ARGS,
                        "resolve takes one argument: the service's name",
                    )
                    .await;
                return;
            };
            let (endpoints, methods) = locate(&rpc, routing.as_ref(), &name).await;
            let methods = Value::Map(
                methods
                    .iter()
                    .enumerate()
                    .map(|(index, method)| (Value::from(*method), Value::from(index as u64)))
                    .collect(),
            );
            let endpoints = Value::Array(
                endpoints
                    .into_iter()
                    .map(|id| Value::from(id.to_string()))
                    .collect(),
            );
            let mut reply = reply;
            reply
                .chunk(vec![endpoints, Value::from(1u64), methods])
                .await;
            reply.choke().await;
        })
    }
}

/// The nodes that advertise RPC service `name` (this node first if it
/// serves it), and its method table if this node serves it.
pub(crate) async fn locate(
    rpc: &Rpc,
    routing: Option<&Routing>,
    name: &str,
) -> (Vec<NodeId>, Vec<&'static str>) {
    let methods = rpc.methods_of(name).unwrap_or_default();
    let mut endpoints = Vec::new();
    if !methods.is_empty()
        && let Some(local) = rpc.inner.local
    {
        endpoints.push(local);
    }
    let entry = advertised(name);
    if let Some(routing) = routing
        && let Ok(nodes) = routing.nodes().await
    {
        for info in nodes {
            if !info.this_node && info.advert.services.contains(&entry) {
                endpoints.push(info.advert.origin);
            }
        }
    }
    (endpoints, methods)
}
