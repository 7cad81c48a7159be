//! The configuration file: parsing, the template `fogwire init` writes,
//! and errors that name the file, the line and the fix.

use std::path::{Path, PathBuf};

use fogwire_node::config::{Config, ConfigError, template};

fn parse(source: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/fogwire.toml"), source)
}

#[test]
fn the_template_parses_to_the_defaults() {
    let defaults = Config::default();
    let source = template(defaults.link.listen, defaults.api.listen.0);
    assert_eq!(parse(&source).unwrap(), defaults);
    // Uncommenting every default changes nothing.
    let uncommented: String = source
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if rest.contains(" = ")
                    && !rest.contains("peers")
                    && !rest.contains("advertise")
                    && !rest.contains("fw1…")
                    && !rest.contains("fwjoin1…")
                    && !rest.contains(":7102") =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(parse(&uncommented).unwrap(), defaults);
}

#[test]
fn an_empty_file_is_all_defaults() {
    assert_eq!(parse("").unwrap(), Config::default());
}

#[test]
fn an_unknown_key_names_the_line_and_the_valid_keys() {
    let error = parse("[link]\nlisten = \"0.0.0.0:1\"\nlistn = 5\n").unwrap_err();
    assert_eq!(error.location, Some((3, 1)));
    let text = error.to_string();
    assert!(
        text.starts_with("/etc/fogwire.toml:3:1: unknown field `listn`"),
        "{text}"
    );
    assert!(text.contains("`listen`"), "{text}");
    assert!(text.contains("3 | listn = 5"), "{text}");
}

#[test]
fn a_bad_value_names_the_line_and_what_is_valid() {
    let error = parse("[link]\n\nhandshake_timeout_ms = \"soon\"\n").unwrap_err();
    assert_eq!(error.location.map(|(line, _)| line), Some(3));
    assert!(
        error.message.contains("expected a whole number"),
        "{}",
        error.message
    );

    let error = parse("[api]\nlisten = \"0.0.0.0:7101\"\n").unwrap_err();
    assert_eq!(error.location.map(|(line, _)| line), Some(2));
    assert!(error.message.contains("loopback"), "{}", error.message);

    let error = parse("peers = [\"127.0.0.1:7100\"]\n").unwrap_err();
    assert_eq!(error.location.map(|(line, _)| line), Some(1));
    assert!(
        error.message.contains("<node id>@<host>:<port>"),
        "{}",
        error.message
    );
}

#[test]
fn cross_field_errors_point_at_the_key() {
    let error =
        parse("[link]\nidle_timeout_ms = 1000\nkeepalive_interval_ms = 5000\n").unwrap_err();
    assert_eq!(error.location, Some((3, 1)));
    assert!(error.message.contains("must be below"), "{}", error.message);

    let error = parse("[link]\nmax_links = 0\n").unwrap_err();
    assert_eq!(error.location, Some((2, 1)));

    let error = parse("[route]\nadvertise = [\"nowhere\"]\n").unwrap_err();
    assert_eq!(error.location, Some((2, 1)));
    assert!(error.message.contains("host:port"), "{}", error.message);

    let error = parse("[log]\nlevel = \"loud\"\n").unwrap_err();
    assert_eq!(error.location, Some((2, 1)));
    assert!(
        error.message.contains("error, warn, info"),
        "{}",
        error.message
    );
}

#[test]
fn relative_data_dirs_follow_the_config_file() {
    let config = Config::default();
    assert_eq!(
        config.data_dir_for(Path::new("/home/ada/.fogwire/fogwire.toml")),
        PathBuf::from("/home/ada/.fogwire/data")
    );
}

#[test]
fn a_ledger_served_without_genesis_accounts_is_an_error_that_names_the_fix() {
    let error = parse("[ledger]\nserve = true\n").unwrap_err();
    assert_eq!(error.location.map(|(line, _)| line), Some(2));
    assert!(
        error.message.contains("genesis = [{ account"),
        "{}",
        error.message
    );
    let account = fogwire_identity::Keypair::from_seed(&[1; 32]).node_id();
    let config = parse(&format!(
        "[ledger]\nserve = true\ngenesis = [{{ account = \"{account}\", coins = \"10\" }}]\n"
    ))
    .unwrap();
    assert!(config.ledger.serve);
}

#[test]
fn the_admission_shares_and_grace_are_set_from_the_file_and_checked() {
    let config = parse(
        "[link]\nmax_links_per_address = 4\nmax_handshakes_per_address = 2\nsilent_link_grace_ms = 5000\n",
    )
    .unwrap();
    let keypair = std::sync::Arc::new(fogwire_identity::Keypair::from_seed(&[1; 32]));
    let options = fogwire_node::NodeOptions::from_config(&config, keypair);
    assert_eq!(options.limits.slots.per_address, 4);
    assert_eq!(
        options.limits.slots.grace,
        std::time::Duration::from_secs(5)
    );
    assert_eq!(options.limits.handshakes_per_address, 2);
    for bad in [
        "max_links_per_address = 0",
        "max_handshakes_per_address = 0",
        "silent_link_grace_ms = 10",
    ] {
        let error = parse(&format!("[link]\n{bad}\n")).unwrap_err();
        assert_eq!(error.location, Some((2, 1)), "{bad}");
        let key = bad.split(' ').next().unwrap();
        assert!(error.message.contains(key), "{bad}: {}", error.message);
    }
}

#[test]
fn socks_listens_on_loopback_or_a_private_network_and_an_exit_reads_its_lists() {
    let config = parse("[socks]\nlisten = \"192.168.7.2:1080\"\n").unwrap();
    assert_eq!(
        config.socks.config().unwrap().listen,
        "192.168.7.2:1080".parse().unwrap()
    );
    for open in ["0.0.0.0:1080", "203.0.113.9:1080", "[::]:1080"] {
        let error = parse(&format!("[socks]\nlisten = \"{open}\"\n")).unwrap_err();
        assert_eq!(error.location.map(|(line, _)| line), Some(2), "{error}");
        assert!(error.message.contains("open proxy"), "{error}");
    }
    let config = parse(
        "[exit]\nserve = true\nallow = [\"10.1.0.0/16\", \"192.168.7.9\"]\nallow_ports = [443, \"6000-6100\"]\n",
    )
    .unwrap();
    let exit = config.exit.config().unwrap();
    assert_eq!(exit.policy.allow.len(), 2);
    assert_eq!(exit.policy.allow_ports.len(), 2);
    let error = parse("[exit]\nallow = [\"10.1.0.0/99\"]\n").unwrap_err();
    assert!(error.message.contains("is not a network"), "{error}");
}
