//! The dashboard's page: HTML, CSS and a script with a hand-drawn canvas
//! chart, compiled into the binary. Nothing is fetched from elsewhere.

/// A file of the page and its Content-Type.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub body: &'static str,
    pub content_type: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";

/// This board's figures (`/dash/`).
pub const BOARD: Asset = Asset {
    body: include_str!("../assets/board.html"),
    content_type: HTML,
};

/// Every board of the cluster side by side (`/dash/box`).
pub const BOX: Asset = Asset {
    body: include_str!("../assets/box.html"),
    content_type: HTML,
};

pub const SCRIPT: Asset = Asset {
    body: include_str!("../assets/dash.js"),
    content_type: "text/javascript; charset=utf-8",
};

pub const STYLE: Asset = Asset {
    body: include_str!("../assets/dash.css"),
    content_type: "text/css; charset=utf-8",
};

/// What the pages may load: their own files and their own event stream,
/// nothing else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";
