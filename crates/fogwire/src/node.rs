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
    let log_level = init_logging(
        &config.log.level,
        config.log.format == fogwire_node::config::LogFormat::Json,
    );
    raise_open_files_limit();
    // Watched from the start: a signal that came before the handlers were
    // installed would kill the process without a clean stop (a script that
    // stops the node as soon as api.addr appears would see a failure).
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;

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

    let web = match config.web.listen {
        Some(addr) => {
            let listener = control::bind_web(addr).await?;
            let served: Vec<&str> = [
                ("the dashboard", config.web.dashboard),
                ("the gateway", config.web.gateway),
                ("metrics", config.web.metrics),
            ]
            .into_iter()
            .filter_map(|(what, on)| on.then_some(what))
            .collect();
            tracing::warn!(
                web = %listener.local_addr().context("[web] address")?,
                "[web] listening with no token, read-only: {} (anyone who can reach it may read \
                 them)",
                if served.is_empty() { "nothing switched on".to_owned() } else { served.join(", ") }
            );
            Some((listener, config.web.clone()))
        }
        None => None,
    };
    let stop = CancellationToken::new();
    let api = tokio::spawn(control::serve_with_web(
        listener,
        web,
        Arc::new(node.clone()),
        token,
        stop.clone(),
    ));

    // systemd (Type=notify) learns the node is up only now: its links
    // listen and its API answers.
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("running; control API on {api_addr}")),
    ]);
    let mut running = config;
    let signal_name = loop {
        tokio::select! {
            _ = terminate.recv() => break "SIGTERM",
            _ = interrupt.recv() => break "SIGINT",
            _ = hangup.recv() => reload(&config_path, &mut running, log_level.as_ref()),
        }
    };
    tracing::info!("{signal_name} received: shutting down");
    notify(&[sd_notify::NotifyState::Stopping]);
    stop.cancel();
    node.shutdown().await;
    let _ = api.await;
    data_dir.remove_api_addr();
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Tells the service manager (systemd's `NOTIFY_SOCKET`) how the node is;
/// nothing when there is none.
fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(error) = sd_notify::notify(false, states) {
        tracing::warn!(%error, "cannot tell the service manager the node's state");
    }
}

/// SIGHUP: reads the configuration file again. The log level is applied
/// at once (unless RUST_LOG sets it); the rest takes effect at the next
/// start, and the log says so. A file that does not load changes nothing.
fn reload(path: &Path, running: &mut Config, log_level: Option<&LogLevel>) {
    notify(&[sd_notify::NotifyState::Reloading]);
    match Config::load(path) {
        Err(error) => {
            tracing::warn!("SIGHUP: {error}; the running configuration stays as it was");
        }
        Ok(new) => {
            if new.log.level != running.log.level {
                match log_level {
                    Some(handle) => match EnvFilter::builder().parse(&new.log.level) {
                        Ok(filter) => {
                            let _ = handle.reload(filter);
                            tracing::info!(level = %new.log.level, "SIGHUP: log level changed");
                        }
                        Err(error) => tracing::warn!(%error, "SIGHUP: log level not changed"),
                    },
                    None => tracing::info!(
                        "SIGHUP: RUST_LOG sets the log level; [log] level is not applied"
                    ),
                }
            }
            let mut rest = new.clone();
            rest.log = running.log.clone();
            if rest != *running {
                tracing::warn!(
                    "SIGHUP: other settings changed in {}; they take effect at the next start \
                     (systemctl restart fogwire)",
                    path.display()
                );
            }
            tracing::info!("SIGHUP: configuration reloaded from {}", path.display());
            *running = new;
        }
    }
    notify(&[sd_notify::NotifyState::Ready]);
}

/// Changes the log filter of a running node.
pub type LogLevel = tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>;

/// Logs to standard error; RUST_LOG, if set, wins over the configured
/// level. The handle changes the level later, unless RUST_LOG set it.
pub fn init_logging(level: &str, json: bool) -> Option<LogLevel> {
    let configured = || {
        EnvFilter::builder()
            .parse(level)
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    // RUST_LOG wins, when it says something; a filter that does not parse
    // is reported, never silently ignored.
    let mut from_env = false;
    let filter = match std::env::var("RUST_LOG") {
        Ok(text) if !text.trim().is_empty() => match EnvFilter::builder().parse(&text) {
            Ok(filter) => {
                from_env = true;
                filter
            }
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
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let format = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let format = if json {
        format.json().boxed()
    } else {
        format.with_ansi(std::io::stderr().is_terminal()).boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(format)
        .try_init();
    (!from_env).then_some(handle)
}
