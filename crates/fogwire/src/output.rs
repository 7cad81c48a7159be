//! Formatting and parsing shared by the commands: sizes (bytesize),
//! durations (humantime), ids' short forms, progress bars.

use std::time::Duration;

use bytesize::ByteSize;

/// `1536` → `1.5 KiB`.
pub fn format_bytes(bytes: u64) -> String {
    ByteSize(bytes).display().iec().to_string()
}

/// Why a text is not a size.
#[derive(Debug, thiserror::Error)]
pub enum SizeError {
    #[error("`{0}` is not a size such as 4096, 512K, 64M, 1.5G or 2GiB")]
    Bad(String),
    #[error("`{0}` is too large")]
    TooLarge(String),
}

/// `64M` → 64 MiB, `1.5G`, `2GiB`, `500kB`; plain digits are bytes. A
/// bare K, M, G or T counts in powers of 1024, as dd and iperf read them;
/// `kB`, `MB`, `GB` in powers of 1000.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim();
    let unit = match unit {
        "K" | "k" | "M" | "m" | "G" | "g" | "T" | "t" => format!("{unit}i"),
        _ => unit.to_owned(),
    };
    let size: ByteSize = format!("{number}{unit}")
        .parse()
        .map_err(|_| SizeError::Bad(text.to_owned()))?;
    if size.0 == u64::MAX {
        return Err(SizeError::TooLarge(text.to_owned()));
    }
    Ok(size.0)
}

/// `3725` seconds → `1h 2m 5s`.
pub fn format_duration(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// How long ago a Unix time was, as a duration.
pub fn format_age(since_unix: u64) -> String {
    format_duration((fogwire_env::unix_ms() / 1000).saturating_sub(since_unix))
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

/// A table in the commands' one style (comfy-table): headers in capitals,
/// no borders, two spaces between columns, each column as wide as its
/// widest cell; the columns listed in `right` (numbers, sizes) align right.
pub struct Table {
    inner: comfy_table::Table,
}

impl Table {
    pub fn new(headers: &[&str], right: &[usize]) -> Self {
        let mut inner = comfy_table::Table::new();
        inner
            .load_preset(comfy_table::presets::NOTHING)
            .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
            .set_header(headers.iter().map(|header| header.to_uppercase()));
        // The preset draws its borders as spaces; without the left border
        // and the column lines, the padding alone separates the columns.
        use comfy_table::TableComponent::*;
        for component in [
            LeftBorder,
            LeftBorderIntersections,
            LeftHeaderIntersection,
            TopLeftCorner,
            BottomLeftCorner,
            VerticalLines,
            MiddleIntersections,
            MiddleHeaderIntersections,
            TopBorderIntersections,
            BottomBorderIntersections,
        ] {
            inner.remove_style(component);
        }
        for (index, column) in inner.column_iter_mut().enumerate() {
            column.set_padding((0, 2));
            if right.contains(&index) {
                column.set_cell_alignment(comfy_table::CellAlignment::Right);
            }
        }
        Self { inner }
    }

    pub fn row<I>(&mut self, cells: I)
    where
        I: IntoIterator,
        I::Item: Into<comfy_table::Cell>,
    {
        self.inner.add_row(cells);
    }

    /// The table's lines, without trailing spaces.
    pub fn render(&self) -> String {
        self.inner.trim_fmt()
    }

    pub fn print(&self) {
        println!("{}", self.render());
    }
}

/// The names the operator gave nodes (`fogwire name`), by node id: read
/// once per command from the node's names file.
static NAMES: std::sync::OnceLock<std::collections::HashMap<String, String>> =
    std::sync::OnceLock::new();

/// Reads the names in `data_dir` for this command's output; a file that
/// cannot be read leaves ids unnamed (the node logs why).
pub fn load_names(data_dir: &std::path::Path) {
    let path = data_dir.join(fogwire_control::names::NAMES_FILE);
    let mut by_id = std::collections::HashMap::new();
    for (name, id) in fogwire_control::names::read(&path).unwrap_or_default() {
        // A node with several names shows the first in order.
        by_id.entry(id.to_string()).or_insert(name);
    }
    let _ = NAMES.set(by_id);
}

/// The name the operator gave node `id`, if any.
pub fn name_of(id: &str) -> Option<&'static str> {
    NAMES.get()?.get(id).map(String::as_str)
}

/// A node id as tables show it: its name if it has one, else its first
/// characters (a hash: its first characters).
pub fn short(id: &str) -> String {
    match name_of(id) {
        Some(name) => name.to_owned(),
        None => fogwire_identity::short_form(id),
    }
}

/// A full node id with its name beside it, if it has one.
pub fn named(id: &str) -> String {
    match name_of(id) {
        Some(name) => format!("{name} ({id})"),
        None => id.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(5), "5s");
        assert_eq!(format_duration(65), "1m 5s");
        assert_eq!(format_duration(3725), "1h 2m 5s");
        assert_eq!(format_duration(90_061), "1day 1h 1m 1s");
    }

    #[test]
    fn sizes_read_and_print_as_people_write_them() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("512K").unwrap(), 512 * 1024);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("500kB").unwrap(), 500_000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5X").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(1000), "1000 B");
        assert_eq!(format_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn tables_align_and_size_columns_to_their_content() {
        let mut table = Table::new(&["node", "bytes"], &[1]);
        table.row(["fw1abc…", "1.5 KiB"]);
        table.row(["fw1a…", "12 B"]);
        assert_eq!(
            table.render(),
            "NODE       BYTES\nfw1abc…  1.5 KiB\nfw1a…       12 B"
        );
    }
}
