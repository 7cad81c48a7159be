//! Formatting shared by the commands' human-readable output.

pub use fogwire_demo::format_bytes;

/// `3725` → `1h 2m 5s`.
pub fn format_duration(secs: u64) -> String {
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) => format!("{minutes}m {seconds}s"),
        (0, _, _) => format!("{hours}h {minutes}m {seconds}s"),
        _ => format!("{days}d {hours}h {minutes}m"),
    }
}

/// How long ago a Unix time was, as a duration.
pub fn format_age(since_unix: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_duration(now.saturating_sub(since_unix))
}

/// A progress bar for bytes on standard error (hidden for --json).
pub fn progress_bar(total: u64, hidden: bool) -> indicatif::ProgressBar {
    let bar = if hidden {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// How long ago a Unix time in milliseconds was.
pub fn format_age_ms(since_unix_ms: u64) -> String {
    format_age(since_unix_ms / 1000)
}

/// A node id cut to its first characters, as the tables show it.
pub fn short(id: &str) -> String {
    fogwire_identity::short_form(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(5), "5s");
        assert_eq!(format_duration(65), "1m 5s");
        assert_eq!(format_duration(3725), "1h 2m 5s");
        assert_eq!(format_duration(90_061), "1d 1h 1m");
    }
}
