//! The one short form of every id and hash fogwire prints (node ids
//! `fw1…`, feed ids `fwfeed1…`, cluster ids `fwcluster1…`, blob hashes, job ids, ledger accounts):
//! its prefix, then [`SHORT_CHARS`] characters, then `…`.
//!
//! A short form is not unique, but it is accepted back as a prefix
//! wherever an id or hash is taken ([`prefix_of`] drops the `…`), and the
//! taker refuses a prefix that matches more than one.

/// Characters of an id shown in its short form, after its prefix.
pub const SHORT_CHARS: usize = 12;

/// The prefixes of fogwire's printed ids (longest first).
const PREFIXES: [&str; 3] = ["fwcluster1", "fwfeed1", "fw1"];

/// The short form of an id or hash printed as `full`.
pub fn short_form(full: &str) -> String {
    let prefix = PREFIXES
        .iter()
        .find(|prefix| full.starts_with(**prefix))
        .map_or(0, |prefix| prefix.len());
    match full.char_indices().nth(prefix + SHORT_CHARS) {
        Some((end, _)) => format!("{}…", &full[..end]),
        None => full.to_owned(),
    }
}

/// What to match as a prefix in `text` typed by a user: without a short
/// form's trailing `…` (or `...`), trimmed.
pub fn prefix_of(text: &str) -> &str {
    let text = text.trim();
    text.strip_suffix('…')
        .or_else(|| text.strip_suffix("..."))
        .unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_length_after_each_prefix_and_accepted_back() {
        let hash = "9280f3a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f8384";
        assert_eq!(short_form(hash), "9280f3a1b2c3…");
        let node = "fw1qqs9x7ejtd4fmsdl6w3l8g2rjp9tkh8kc3fq7hdx5m9d2hs8y4q0sd9wz2t";
        assert_eq!(short_form(node), "fw1qqs9x7ejtd4f…");
        let feed = "fwfeed1qqs9x7ejtd4fmsdl6w3l8g2rjp9tkh8kc3fq7hdx5m9d2hs8y4q0s";
        assert_eq!(short_form(feed), "fwfeed1qqs9x7ejtd4f…");
        assert_eq!(short_form("42"), "42");
        for full in [hash, node, feed] {
            assert!(full.starts_with(prefix_of(&short_form(full))));
        }
        assert_eq!(prefix_of(" 9280f3... "), "9280f3");
    }
}
