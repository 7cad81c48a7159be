//! How browsers get in, and `[web]`: the read-only listener for others.
//!
//! On the control API, a browser trades the token for a cookie once:
//! `fogwire dashboard` prints a link to `/dash/login?token=…`, which sets
//! an HttpOnly, SameSite=Strict cookie and goes on to `/dash/`. The cookie
//! is accepted for GET and HEAD only, so it reads and never changes
//! anything.
//!
//! `[web]` serves, with no token, only what the operator switched on (the
//! dashboard, the gateway, `/metrics`), answers nothing but GET and HEAD,
//! and holds each client address (an IPv6 client's /64) to a request rate
//! with a burst; past it the answer is 429 with `Retry-After`. It has its
//! own connection bound and its own dashboard streams, so its clients can
//! never take the operator's.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::ControlError;
use crate::config::WebSection;
use crate::server::{ApiState, ClientAddr, error};

/// The cookie a browser keeps the token in.
pub(crate) const COOKIE: &str = "fogwire_token";
/// How long the browser keeps it: 30 days.
const COOKIE_MAX_AGE_SECS: u64 = 30 * 24 * 3600;
/// Requests `[web]` serves at once; more wait.
const WEB_REQUESTS_AT_ONCE: usize = 64;
/// Dashboard streams one client address may hold open on `[web]`.
pub(crate) const STREAMS_PER_CLIENT: usize = 2;
/// How often the per-client rate table forgets quiet clients.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// Binds `[web]`'s listener, on any address the operator chose.
pub async fn bind_web(addr: SocketAddr) -> Result<TcpListener, ControlError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ControlError::WebListen { addr, source })
}

/// The token in a request's cookie, if it has one.
pub(crate) fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then(|| value.trim_matches('"').to_owned())
        })
}

/// Whether the request is a browser's, asking for a page.
pub(crate) fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// What a browser without the token sees.
pub(crate) fn sign_in_page() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'"),
        ],
        "<!doctype html><meta charset=\"utf-8\"><title>fogwire: sign in</title>\
         <h1>This node's pages need its API token</h1>\
         <p>On the node's machine, run <code>fogwire dashboard</code> and open the link it \
         prints: the browser then keeps the token in a cookie.</p>\
         <p>To show the dashboard to a local network without a token, set <code>[web] \
         listen</code> in the node's configuration (read-only; see the README).</p>",
    )
        .into_response()
}

/// `GET /dash/login?token=…`: the token for a cookie, then the dashboard.
pub(crate) async fn login(State(state): State<Arc<ApiState>>, RawQuery(raw): RawQuery) -> Response {
    match crate::jobs::query(&raw, "token") {
        Some(token) if state.token.matches(&token) => {
            let cookie = format!(
                "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={COOKIE_MAX_AGE_SECS}"
            );
            let mut response = axum::response::Redirect::to("/dash/").into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        _ => sign_in_page(),
    }
}

/// The key a client is limited by: its address, or an IPv6 client's /64
/// (one host usually holds a whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

type Limiter = governor::DefaultKeyedRateLimiter<IpAddr>;

/// Dashboard streams open per client address (on `[web]`, where clients
/// need no token): so a few clients that open streams and never read
/// cannot hold every slot.
#[derive(Debug, Default)]
pub(crate) struct ClientStreams {
    open: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
}

/// One stream's place in [`ClientStreams`], given back when it ends.
#[derive(Debug)]
pub(crate) struct ClientStream {
    streams: Arc<ClientStreams>,
    key: IpAddr,
}

impl ClientStreams {
    fn open(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<IpAddr, usize>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A place for one more stream from `client`, unless it holds
    /// [`STREAMS_PER_CLIENT`] already.
    pub(crate) fn enter(self: &Arc<Self>, client: IpAddr) -> Option<ClientStream> {
        let key = client_key(client);
        let mut open = self.open();
        let count = open.entry(key).or_default();
        if *count >= STREAMS_PER_CLIENT {
            return None;
        }
        *count += 1;
        Some(ClientStream {
            streams: self.clone(),
            key,
        })
    }
}

impl Drop for ClientStream {
    fn drop(&mut self) {
        let mut open = self.streams.open();
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

async fn limit(State(limiter): State<Arc<Limiter>>, request: Request, next: Next) -> Response {
    let key = request
        .extensions()
        .get::<ClientAddr>()
        .map(|client| client_key(client.0.ip()));
    if let Some(key) = key
        && limiter.check_key(&key).is_err()
    {
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests from this address: wait a second",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    next.run(request).await
}

/// `[web]`'s routes: what `section` switched on, read-only, rate-limited.
pub(crate) fn router(state: Arc<ApiState>, section: &WebSection) -> Router {
    let mut router = Router::new();
    if section.dashboard {
        router = router.merge(crate::dash::routes());
    }
    if section.gateway {
        router = router.merge(crate::site::routes());
    }
    if section.metrics {
        router = router.route("/metrics", get(crate::metrics::metrics));
    }
    let quota = governor::Quota::per_second(
        NonZeroU32::new(section.requests_per_second).unwrap_or(NonZeroU32::MIN),
    )
    .allow_burst(NonZeroU32::new(section.burst).unwrap_or(NonZeroU32::MIN));
    let limiter: Arc<Limiter> = Arc::new(governor::RateLimiter::keyed(quota));
    let forget = Arc::downgrade(&limiter);
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(FORGET_EVERY) => {}
                () = shutdown.cancelled() => return,
            }
            let Some(limiter) = forget.upgrade() else {
                return;
            };
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    });
    router
        .fallback(not_served)
        .layer(middleware::from_fn_with_state(limiter, limit))
        .layer(tower::limit::ConcurrencyLimitLayer::new(
            WEB_REQUESTS_AT_ONCE,
        ))
        .with_state(state)
}

async fn not_served() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not served here: this listener serves only what the node's [web] section switches on",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; fogwire_token=abc ; b=2"),
        );
        assert_eq!(cookie_token(&headers).as_deref(), Some("abc"));
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("fogwire_tokenx=abc"),
        );
        assert_eq!(cookie_token(&headers), None);
        assert_eq!(cookie_token(&HeaderMap::new()), None);
    }

    #[test]
    fn an_ipv6_client_is_limited_by_its_64() {
        let a: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
