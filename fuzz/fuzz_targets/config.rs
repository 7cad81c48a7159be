//! The node's configuration file and peer addresses: errors, never panics,
//! and every error has a location inside the file.
#![no_main]

use std::path::Path;

use fogwire_node::{Config, PeerAddr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = Config::parse(Path::new("fuzz.toml"), text) {
        let _ = error.to_string();
        if let Some((line, _)) = error.location {
            assert!(line >= 1 && line <= text.lines().count().max(1) + 1);
        }
    }
    let _ = text.parse::<PeerAddr>();
});
