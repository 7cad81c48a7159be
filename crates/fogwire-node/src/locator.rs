//! The `locator` RPC service every node serves: which nodes offer a
//! service, and its method table (the Cocaine locator's job).
//!
//! Method 0, `resolve(name)`, answers one chunk:
//! `[endpoints, version, methods]` — the node ids (strings) that
//! advertise the service (this node first if it serves it), the protocol
//! version (1), and a map of method name → index (empty if this node does
//! not serve the service and so cannot vouch for its methods).

use std::sync::{Arc, Weak};

use fogwire_rpc::{BoxFuture, Replier, Service};
use fogwire_rpc_proto::{Value, code};

use crate::Node;
use crate::node::Inner;

/// The locator's name, and how nodes advertise an RPC service.
pub const LOCATOR: &str = "locator";

/// The advert entry of an RPC service.
pub fn advertised(service: &str) -> String {
    format!("rpc:{service}")
}

pub(crate) struct Locator(pub(crate) Weak<Inner>);

impl Service for Locator {
    fn methods(&self) -> &[&'static str] {
        &["resolve"]
    }

    fn call(&self, _method: u64, args: Vec<Value>, mut reply: Replier) -> BoxFuture<()> {
        let inner = self.0.upgrade();
        Box::pin(async move {
            let Some(inner) = inner else {
                reply.error(code::FAILED, "the node is stopping").await;
                return;
            };
            let node = Node { inner };
            let Some(name) = args.first().and_then(Value::as_str).map(str::to_owned) else {
                reply
                    .error(
                        code::BAD_ARGS,
                        "resolve takes one argument: the service's name",
                    )
                    .await;
                return;
            };
            let (endpoints, methods) = node.locate(&name).await;
            let methods = Value::Map(
                methods
                    .iter()
                    .enumerate()
                    .map(|(index, method)| (Value::from(*method), Value::from(index as u64)))
                    .collect(),
            );
            let endpoints = Value::Array(endpoints.into_iter().map(Value::from).collect());
            reply
                .chunk(vec![endpoints, Value::from(1u64), methods])
                .await;
            reply.choke().await;
        })
    }
}

/// Registers the locator on `node`.
pub(crate) fn serve(node: &Node) {
    node.rpc()
        .serve(LOCATOR, Arc::new(Locator(Arc::downgrade(&node.inner))));
}
