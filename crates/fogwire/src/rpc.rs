//! `fogwire rpc …`: call services of linked nodes by hand.

use std::path::Path;

use anyhow::bail;
use fogwire_api::{RpcCallRequest, RpcLine};

use crate::control::client;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Call a method of a service on a linked node and print its answer,
    /// one JSON value per line (each chunk's values as a JSON array).
    ///
    /// Arguments are JSON (`5`, `"text"`, `[1,2]`, `{"bin":"00ff"}` for
    /// binary); one that is not JSON is taken as a string. The method is
    /// a name, which the node's locator turns into its index, or an index.
    ///
    /// Example: `fogwire rpc call fw1q… locator resolve locator` lists the
    /// nodes that serve the locator.
    Call(CallArgs),
}

#[derive(Debug, clap::Args)]
pub struct CallArgs {
    /// The node (its id, or the start of one; `fogwire nodes` lists them).
    node: String,
    service: String,
    /// The method's name or index.
    method: String,
    /// The arguments, each JSON (or a plain string).
    args: Vec<String>,
    /// Give the call this many milliseconds at most.
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
}

pub async fn run(home: &Path, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Call(args) => call(home, args).await,
    }
}

async fn call(home: &Path, args: CallArgs) -> anyhow::Result<()> {
    let method = match args.method.parse::<u64>() {
        Ok(index) => serde_json::Value::from(index),
        Err(_) => serde_json::Value::from(args.method.clone()),
    };
    let request = RpcCallRequest {
        node: args.node,
        service: args.service,
        method,
        args: args
            .args
            .iter()
            .map(|arg| {
                serde_json::from_str(arg).unwrap_or_else(|_| serde_json::Value::from(arg.as_str()))
            })
            .collect(),
        timeout_ms: args.timeout_ms,
    };
    let mut failure = None;
    let mut ended = false;
    client(home)?
        .rpc_call(&request, |line| match line {
            RpcLine::Chunk(values) => {
                println!("{}", serde_json::Value::Array(values));
            }
            RpcLine::Choke => ended = true,
            RpcLine::Error { message, .. } => failure = Some(message),
        })
        .await?;
    if let Some(message) = failure {
        bail!("{message}");
    }
    if !ended {
        bail!("the node ended the answer without its end");
    }
    Ok(())
}
