//! The data directory: private files made once, the API address the CLI
//! finds the node by.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;

use fogwire_node::home::DataDir;

#[test]
fn token_is_made_once_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path().join("data"));
    data.create().unwrap();
    let mode = fs::metadata(data.root()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let token = data.load_or_create_token().unwrap();
    assert_eq!(data.load_or_create_token().unwrap(), token);
    let mode = fs::metadata(data.token_path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn api_addr_round_trips_and_its_absence_says_the_node_is_not_running() {
    // (The CLI adds the command that starts that node: it knows the home.)
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path());
    let error = data.read_api_addr().unwrap_err();
    assert!(
        matches!(error, fogwire_node::home::DataDirError::NotRunning { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("does not seem to be running"),
        "{error}"
    );
    let addr: SocketAddr = "127.0.0.1:7101".parse().unwrap();
    data.write_api_addr(addr).unwrap();
    assert_eq!(data.read_api_addr().unwrap(), addr);
    data.remove_api_addr();
    assert!(data.read_api_addr().is_err());
}
