use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use fogwire_control as control;
use fogwire_identity::Keypair;
use fogwire_node::config::{CONFIG_FILE_NAME, Config};
use fogwire_node::home::DataDir;
use fogwire_node::{Node, NodeOptions};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Raises this process's open-files limit to its hard limit: every link,
/// API connection and store file holds a descriptor, and the usual soft
/// limit of 1,024 is a bound a few idle sockets could reach.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open-files limit"),
        Err(error) => tracing::warn!(
            %error,
            "cannot raise the open-files limit; links and API connections may run out of file \
             descriptors (raise it with `ulimit -n` or LimitNOFILE= in the service unit)"
        ),
    }
}

/// Runs the daemon until SIGINT or SIGTERM, then shuts down cleanly.
pub async fn run(home: &Path) -> anyhow::Result<()> {
    let config_path = home.join(CONFIG_FILE_NAME);
    let config = Config::load(&config_path)?;
    init_logging(
        &config.log.level,
        config.log.format == fogwire_node::config::LogFormat::Json,
    );
    raise_open_files_limit();
    // Watched from the start: a signal that came before the handlers were
    // installed would kill the process without a clean stop (a script that
    // stops the node as soon as api.addr appears would see a failure).
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;

    let data_dir = DataDir::new(config.data_dir_for(&config_path));
    data_dir.create()?;
    let (keypair, created) = Keypair::load_or_create(&data_dir.key_path())?;
    if created {
        tracing::info!(path = %data_dir.key_path().display(), "created a new node key");
    }
    let token = data_dir.load_or_create_token()?;

    let mut options = NodeOptions::from_config(&config, Arc::new(keypair));
    options.routing_store = Some(data_dir.routes_path());
    options.store_dir = Some(data_dir.store_path());
    options.compute_dir = Some(data_dir.compute_path());
    options.ledger_path = Some(data_dir.ledger_path());
    options.replication.counters_path = Some(data_dir.replication_path());
    options.data_dir = Some(data_dir.root().to_owned());
    let node = Node::start(options).await?;
    let listener = control::bind(config.api.listen.0).await?;
    let api_addr = listener.local_addr().context("control API address")?;
    data_dir.write_api_addr(api_addr)?;
    tracing::info!(api = %api_addr, "control API listening (token in {})", data_dir.token_path().display());

    let stop = CancellationToken::new();
    let api = tokio::spawn(control::serve(
        listener,
        Arc::new(node.clone()),
        token,
        stop.clone(),
    ));

    let signal_name = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };
    tracing::info!("{signal_name} received: shutting down");
    stop.cancel();
    node.shutdown().await;
    let _ = api.await;
    data_dir.remove_api_addr();
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Logs to standard error; RUST_LOG, if set, wins over the configured level.
pub fn init_logging(level: &str, json: bool) {
    let configured = || {
        EnvFilter::builder()
            .parse(level)
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    // RUST_LOG wins, when it says something; a filter that does not parse
    // is reported, never silently ignored.
    let filter = match std::env::var("RUST_LOG") {
        Ok(text) if !text.trim().is_empty() => match EnvFilter::builder().parse(&text) {
            Ok(filter) => filter,
            Err(error) => {
                eprintln!(
                    "warning: RUST_LOG={text:?} is not a tracing filter ({error}); logging at \
                     {level:?} instead (RUST_LOG=debug, or RUST_LOG=info,fogwire_link=debug)"
                );
                configured()
            }
        },
        _ => configured(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}
