use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};
use fogwire_identity::Keypair;
use fogwire_node::config::{self, CONFIG_FILE_NAME, Config};
use fogwire_node::home::DataDir;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address other nodes dial to reach this one.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7100")]
    listen: SocketAddr,
    /// Address of the local control API; must be on loopback.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7101")]
    api: SocketAddr,
    /// Overwrite an existing configuration (the node key is kept).
    #[arg(long)]
    force: bool,
}

pub fn run(home: &Path, args: Args) -> anyhow::Result<()> {
    if !args.api.ip().is_loopback() {
        bail!(
            "--api {}: the control API listens on this machine only; use 127.0.0.1:<port> or [::1]:<port>",
            args.api
        );
    }
    let config_path = home.join(CONFIG_FILE_NAME);
    if config_path.exists() && !args.force {
        bail!(
            "{} already exists; pass --force to overwrite it (the node key is kept)",
            config_path.display()
        );
    }
    std::fs::create_dir_all(home).with_context(|| format!("cannot create {}", home.display()))?;
    let text = config::template(args.listen, args.api);
    // Check what we write parses, so `init` can never leave a broken file.
    let parsed = Config::parse(&config_path, &text)?;
    let temporary = home.join(format!(".{CONFIG_FILE_NAME}.tmp"));
    std::fs::write(&temporary, &text)
        .and_then(|()| std::fs::rename(&temporary, &config_path))
        .with_context(|| format!("cannot write {}", config_path.display()))?;

    let data_dir = DataDir::new(parsed.data_dir_for(&config_path));
    data_dir.create()?;
    let (keypair, created) = Keypair::load_or_create(&data_dir.key_path())?;
    data_dir.load_or_create_token()?;
    println!("wrote    {}", config_path.display());
    println!(
        "key      {} ({})",
        data_dir.key_path().display(),
        if created { "new" } else { "kept" }
    );
    println!("node id  {}", keypair.node_id());
    println!("links    {} (peers dial this)", args.listen);
    println!("api      {} (this machine only)", args.api);
    println!();
    println!(
        "start the node with:  fogwire --home {} node",
        home.display()
    );
    Ok(())
}

pub fn print_id(home: &Path, json: bool) -> anyhow::Result<()> {
    let id = node_id(home)?;
    if json {
        return crate::control::print_json(&serde_json::json!({
            "node_id": id.to_string(),
            "short": id.short(),
        }));
    }
    println!("{id}");
    Ok(())
}

/// This node's id, from its key file (the node need not run).
pub fn node_id(home: &Path) -> anyhow::Result<fogwire_identity::NodeId> {
    let config_path = home.join(CONFIG_FILE_NAME);
    let config = Config::load(&config_path)?;
    let data_dir = DataDir::new(config.data_dir_for(&config_path));
    Ok(Keypair::load(&data_dir.key_path())?.node_id())
}

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Print every setting in effect, as TOML: what fogwire.toml says,
    /// and the default of every key it leaves out. The file is checked
    /// as `fogwire node` would check it; an error names its line.
    Show {
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
        /// Show the cluster's join code instead of hiding it.
        #[arg(long)]
        secrets: bool,
    },
}

pub fn config(home: &Path, command: ConfigCommand) -> anyhow::Result<()> {
    let ConfigCommand::Show { json, secrets } = command;
    let path = home.join(CONFIG_FILE_NAME);
    let config = Config::load(&path)?;
    let mut value = toml::Value::try_from(&config).context("cannot show the configuration")?;
    if !secrets
        && let Some(join) = value
            .get_mut("cluster")
            .and_then(|cluster| cluster.get_mut("join"))
    {
        *join = toml::Value::String("fwjoin1… (hidden: --secrets shows it)".into());
    }
    if json {
        return crate::control::print_json(&value);
    }
    println!(
        "# {} and the defaults of what it leaves out",
        path.display()
    );
    print!(
        "{}",
        toml::to_string(&value).context("cannot show the configuration")?
    );
    Ok(())
}
