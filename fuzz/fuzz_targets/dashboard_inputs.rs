//! What the dashboard and names take from outside: another board's
//! figures (its `dash.sample` answer, from the network) and the names
//! file (from disk). Errors, never panics; every name read is valid.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sample) = fogwire_dash::decode_sample(data) {
        // What a page is sent of it.
        let _ = fogwire_dash::changes(None, &sample);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(names) = fogwire_control::names::parse(text) {
            for name in names.keys() {
                assert!(fogwire_control::names::check_name(name).is_ok());
            }
        }
        let _ = fogwire_control::names::check_name(text);
    }
});
