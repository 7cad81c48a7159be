use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use crate::api::{
    BlobInfo, ClosedRoute, ConnectRequest, DisconnectResponse, ErrorBody, FeedInfo, FollowRequest,
    FoundPath, GcRequest, GcResult, GraphNode, JobCancelled, JobFetchRequest, JobFetched, JobInfo,
    JobLogs, JobResultInfo, JobSubmitRequest, JobSubmitted, OpenedRoute, Peer, PinRequest,
    PingReport, PublishRequest, RouteRequest, Routes, RpcCallRequest, RpcLine, SendLine, Status,
    StoreAddRequest, StoreGetRequest, StoreLine, StorePeer, StoreStat, TagChange, UnpinRequest,
    WorkerInfo,
};
use crate::home::{ApiToken, DataDir, DataDirError};

/// Longest a request may take; a connect waits for a handshake.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a job submission may take (the hub fetches its inputs; the
/// hub itself gives up after 300 s).
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(330);
/// Largest response body read.
const RESPONSE_BODY_MAX: usize = 64 * 1024 * 1024;

/// A client of a node's control API.
#[derive(Debug, Clone)]
pub struct Client {
    addr: SocketAddr,
    token: ApiToken,
}

/// Why a control API request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("cannot reach the node's control API at {addr}: {source}; is `fogwire node` running?")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("control API request failed: {0}")]
    Http(String),
    #[error("the control API did not answer within {} s", REQUEST_TIMEOUT.as_secs())]
    Timeout,
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("unexpected answer from the control API: {0}")]
    Decode(String),
}

fn encode(request: &impl serde::Serialize) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(request).map_err(|e| ClientError::Decode(e.to_string()))
}

impl Client {
    pub fn new(addr: SocketAddr, token: ApiToken) -> Self {
        Self { addr, token }
    }

    /// A client for the node whose data directory is `data_dir`.
    pub fn from_data_dir(data_dir: &DataDir) -> Result<Self, ClientError> {
        let addr = data_dir.read_api_addr()?;
        let token = data_dir.read_token()?;
        Ok(Self::new(addr, token))
    }

    pub async fn status(&self) -> Result<Status, ClientError> {
        self.json(Method::GET, "/v1/status", None).await
    }

    pub async fn peers(&self) -> Result<Vec<Peer>, ClientError> {
        self.json(Method::GET, "/v1/peers", None).await
    }

    pub async fn connect(&self, peer: &str) -> Result<Peer, ClientError> {
        let body = serde_json::to_vec(&ConnectRequest {
            peer: peer.to_owned(),
        })
        .map_err(|e| ClientError::Decode(e.to_string()))?;
        self.json(Method::POST, "/v1/peers", Some(body)).await
    }

    pub async fn disconnect(&self, node_id: &str) -> Result<DisconnectResponse, ClientError> {
        let path = format!("/v1/peers/{node_id}");
        self.json(Method::DELETE, &path, None).await
    }

    pub async fn nodes(&self) -> Result<Vec<GraphNode>, ClientError> {
        self.json(Method::GET, "/v1/nodes", None).await
    }

    pub async fn find(&self, request: &RouteRequest) -> Result<Vec<FoundPath>, ClientError> {
        self.json(Method::POST, "/v1/routes/find", Some(encode(request)?))
            .await
    }

    pub async fn routes(&self) -> Result<Routes, ClientError> {
        self.json(Method::GET, "/v1/routes", None).await
    }

    pub async fn open_route(&self, request: &RouteRequest) -> Result<OpenedRoute, ClientError> {
        self.json(Method::POST, "/v1/routes", Some(encode(request)?))
            .await
    }

    pub async fn close_route(&self, id: u64) -> Result<ClosedRoute, ClientError> {
        self.json(Method::DELETE, &format!("/v1/routes/{id}"), None)
            .await
    }

    pub async fn ping(&self, request: &RouteRequest) -> Result<PingReport, ClientError> {
        // Pings take their time: a request timeout per ping on top.
        let pings = u64::from(request.count.unwrap_or(4).min(100));
        let per_ping = Duration::from_millis(request.interval_ms.unwrap_or(200).min(10_000))
            + Duration::from_secs(2);
        let timeout = REQUEST_TIMEOUT + per_ping * pings as u32;
        let body = tokio::time::timeout(
            timeout,
            self.request_inner(Method::POST, "/v1/ping", Some(encode(request)?)),
        )
        .await
        .map_err(|_| ClientError::Timeout)??;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Starts a transfer check and calls `on_line` with each line of its
    /// answer as it comes (progress, then the result or an error).
    pub async fn send(
        &self,
        request: &RouteRequest,
        on_line: impl FnMut(SendLine),
    ) -> Result<(), ClientError> {
        self.lines("/v1/routes/send", encode(request)?, on_line)
            .await
    }

    /// Adds a file on the node's machine to its store, calling `on_line`
    /// with progress and then the result.
    pub async fn store_add(
        &self,
        request: &StoreAddRequest,
        on_line: impl FnMut(StoreLine),
    ) -> Result<(), ClientError> {
        self.lines("/v1/store/add", encode(request)?, on_line).await
    }

    /// Calls a service of a linked node; `on_line` gets each chunk, then
    /// the end or the error.
    pub async fn rpc_call(
        &self,
        request: &RpcCallRequest,
        on_line: impl FnMut(RpcLine),
    ) -> Result<(), ClientError> {
        self.lines("/v1/rpc/call", encode(request)?, on_line).await
    }

    /// Writes a blob of the node's store to a file on its machine.
    pub async fn store_get(
        &self,
        request: &StoreGetRequest,
        on_line: impl FnMut(StoreLine),
    ) -> Result<(), ClientError> {
        self.lines("/v1/store/get", encode(request)?, on_line).await
    }

    /// Submits a job; the hub first fetches its program and inputs from
    /// this node, so this may take as long as that transfer.
    pub async fn job_submit(
        &self,
        request: &JobSubmitRequest,
    ) -> Result<JobSubmitted, ClientError> {
        let body = tokio::time::timeout(
            SUBMIT_TIMEOUT,
            self.request_inner(Method::POST, "/v1/jobs", Some(encode(request)?)),
        )
        .await
        .map_err(|_| ClientError::Timeout)??;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn jobs(&self, hub: Option<&str>) -> Result<Vec<JobInfo>, ClientError> {
        self.json(Method::GET, &with_hub("/v1/jobs", hub), None)
            .await
    }

    pub async fn job(&self, job: &str, hub: Option<&str>) -> Result<JobInfo, ClientError> {
        self.json(
            Method::GET,
            &with_hub(&format!("/v1/jobs/{job}"), hub),
            None,
        )
        .await
    }

    pub async fn job_logs(
        &self,
        job: &str,
        from: u64,
        hub: Option<&str>,
    ) -> Result<JobLogs, ClientError> {
        let path = with_hub(&format!("/v1/jobs/{job}/logs?from={from}"), hub);
        self.json(Method::GET, &path, None).await
    }

    pub async fn job_result(
        &self,
        job: &str,
        hub: Option<&str>,
    ) -> Result<JobResultInfo, ClientError> {
        self.json(
            Method::GET,
            &with_hub(&format!("/v1/jobs/{job}/result"), hub),
            None,
        )
        .await
    }

    pub async fn job_fetch(
        &self,
        job: &str,
        request: &JobFetchRequest,
    ) -> Result<JobFetched, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/jobs/{job}/fetch"),
            Some(encode(request)?),
        )
        .await
    }

    pub async fn job_cancel(
        &self,
        job: &str,
        hub: Option<&str>,
    ) -> Result<JobCancelled, ClientError> {
        self.json(
            Method::POST,
            &with_hub(&format!("/v1/jobs/{job}/cancel"), hub),
            None,
        )
        .await
    }

    pub async fn hubs(&self) -> Result<Vec<crate::agent::HubView>, ClientError> {
        self.json(Method::GET, "/v1/hubs", None).await
    }

    pub async fn market_orders(
        &self,
        side: &str,
        hub: Option<&str>,
    ) -> Result<Vec<crate::api::MarketOrder>, ClientError> {
        self.json(
            Method::GET,
            &with_hub(&format!("/v1/market/{side}"), hub),
            None,
        )
        .await
    }

    pub async fn market_deals(
        &self,
        hub: Option<&str>,
        limit: u64,
    ) -> Result<Vec<crate::api::MarketDeal>, ClientError> {
        self.json(
            Method::GET,
            &with_hub(&format!("/v1/market/deals?limit={limit}"), hub),
            None,
        )
        .await
    }

    pub async fn market_events(
        &self,
        hub: Option<&str>,
        limit: u64,
    ) -> Result<Vec<crate::api::MarketEvent>, ClientError> {
        self.json(
            Method::GET,
            &with_hub(&format!("/v1/market/events?limit={limit}"), hub),
            None,
        )
        .await
    }

    pub async fn market_ask(
        &self,
        request: &crate::api::MarketAskRequest,
    ) -> Result<crate::api::MarketPosted, ClientError> {
        self.json(Method::POST, "/v1/market/ask", Some(encode(request)?))
            .await
    }

    pub async fn market_bid(
        &self,
        request: &crate::api::MarketBidRequest,
    ) -> Result<crate::api::MarketPosted, ClientError> {
        self.json(Method::POST, "/v1/market/bid", Some(encode(request)?))
            .await
    }

    pub async fn market_cancel(
        &self,
        request: &crate::api::MarketCancelRequest,
    ) -> Result<bool, ClientError> {
        self.json(Method::POST, "/v1/market/cancel", Some(encode(request)?))
            .await
    }

    pub async fn ledger_info(&self) -> Result<crate::api::LedgerInfo, ClientError> {
        self.json(Method::GET, "/v1/ledger", None).await
    }

    /// An account: `me`, a node id, or the unique start of one.
    pub async fn ledger_account(
        &self,
        who: &str,
    ) -> Result<crate::api::LedgerAccount, ClientError> {
        self.json(Method::GET, &format!("/v1/ledger/accounts/{who}"), None)
            .await
    }

    pub async fn ledger_history(
        &self,
        who: &str,
        before: u64,
        limit: u64,
    ) -> Result<Vec<crate::api::LedgerHistoryLine>, ClientError> {
        self.json(
            Method::GET,
            &format!("/v1/ledger/accounts/{who}/history?before={before}&limit={limit}"),
            None,
        )
        .await
    }

    /// Has the node sign `request` with its key and send it to the ledger.
    pub async fn ledger_op(
        &self,
        request: &crate::api::LedgerOpRequest,
    ) -> Result<crate::api::LedgerReceipt, ClientError> {
        self.json(Method::POST, "/v1/ledger/ops", Some(encode(request)?))
            .await
    }

    /// Sends a transaction signed elsewhere.
    pub async fn ledger_submit(
        &self,
        request: &crate::api::LedgerSubmitRequest,
    ) -> Result<crate::api::LedgerReceipt, ClientError> {
        self.json(Method::POST, "/v1/ledger/submit", Some(encode(request)?))
            .await
    }

    pub async fn workers(&self, hub: Option<&str>) -> Result<Vec<WorkerInfo>, ClientError> {
        self.json(Method::GET, &with_hub("/v1/workers", hub), None)
            .await
    }

    pub async fn store_blobs(&self) -> Result<Vec<BlobInfo>, ClientError> {
        self.json(Method::GET, "/v1/store/blobs", None).await
    }

    pub async fn store_peers(&self) -> Result<Vec<StorePeer>, ClientError> {
        self.json(Method::GET, "/v1/store/peers", None).await
    }

    pub async fn store_stat(&self) -> Result<StoreStat, ClientError> {
        self.json(Method::GET, "/v1/store/stat", None).await
    }

    pub async fn store_pin(&self, request: &PinRequest) -> Result<TagChange, ClientError> {
        self.json(Method::POST, "/v1/store/pin", Some(encode(request)?))
            .await
    }

    pub async fn store_unpin(&self, request: &UnpinRequest) -> Result<TagChange, ClientError> {
        self.json(Method::POST, "/v1/store/unpin", Some(encode(request)?))
            .await
    }

    pub async fn store_gc(&self, request: &GcRequest) -> Result<GcResult, ClientError> {
        self.json(Method::POST, "/v1/store/gc", Some(encode(request)?))
            .await
    }

    /// POSTs `body` to `path`, whose answer is one JSON object per line,
    /// and calls `on_line` with each as it comes.
    async fn lines<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
        mut on_line: impl FnMut(T),
    ) -> Result<(), ClientError> {
        let response =
            tokio::time::timeout(REQUEST_TIMEOUT, self.start(Method::POST, path, Some(body)))
                .await
                .map_err(|_| ClientError::Timeout)??;
        let mut body = response.into_body();
        let mut pending: Vec<u8> = Vec::new();
        loop {
            // A transfer reports at least every percent; silence this long
            // means the node is stuck.
            let frame = tokio::time::timeout(REQUEST_TIMEOUT, body.frame())
                .await
                .map_err(|_| ClientError::Timeout)?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            if pending.len() > RESPONSE_BODY_MAX {
                return Err(ClientError::Decode("answer line too long".into()));
            }
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let parsed: T = serde_json::from_slice(&line)
                    .map_err(|e| ClientError::Decode(e.to_string()))?;
                on_line(parsed);
            }
        }
        Ok(())
    }

    pub async fn feeds(&self) -> Result<Vec<FeedInfo>, ClientError> {
        self.json(Method::GET, "/v1/feeds", None).await
    }

    pub async fn feed(&self, feed: &str) -> Result<FeedInfo, ClientError> {
        self.json(Method::GET, &format!("/v1/feeds/{feed}"), None)
            .await
    }

    pub async fn feed_new(&self) -> Result<FeedInfo, ClientError> {
        self.json(Method::POST, "/v1/feeds", None).await
    }

    pub async fn feed_publish(&self, request: &PublishRequest) -> Result<FeedInfo, ClientError> {
        // Publishing a path adds it first: as long as an add.
        let body = encode(request)?;
        tokio::time::timeout(
            REQUEST_TIMEOUT * 60,
            self.request_inner(Method::POST, "/v1/feeds/publish", Some(body)),
        )
        .await
        .map_err(|_| ClientError::Timeout)?
        .and_then(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
        })
    }

    pub async fn feed_follow(&self, request: &FollowRequest) -> Result<FeedInfo, ClientError> {
        self.json(Method::POST, "/v1/feeds/follow", Some(encode(request)?))
            .await
    }

    pub async fn metrics(&self) -> Result<String, ClientError> {
        let body = self.request(Method::GET, "/metrics", None).await?;
        String::from_utf8(body.to_vec()).map_err(|e| ClientError::Decode(e.to_string()))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let body = self.request(method, path, body).await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.request_inner(method, path, body))
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    async fn request_inner(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let response = self.start(method, path, body).await?;
        Limited::new(response.into_body(), RESPONSE_BODY_MAX)
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))
            .map(|collected| collected.to_bytes())
    }

    /// Sends a request; returns the response once its status is OK (an
    /// error response becomes the error it describes).
    async fn start(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let http = |error: &dyn std::fmt::Display| ClientError::Http(error.to_string());
        let stream =
            TcpStream::connect(self.addr)
                .await
                .map_err(|source| ClientError::Connect {
                    addr: self.addr,
                    source,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(&e))?;
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.addr.to_string())
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.token.as_str()),
            )
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| http(&e))?;
        let response = sender.send_request(request).await.map_err(|e| http(&e))?;
        let status = response.status();
        if status == StatusCode::OK {
            return Ok(response);
        }
        let body = Limited::new(response.into_body(), RESPONSE_BODY_MAX)
            .collect()
            .await
            .map_err(|e| http(&*e))?
            .to_bytes();
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|error| error.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        Err(ClientError::Api {
            status: status.as_u16(),
            message,
        })
    }
}

/// `path` with `hub=<hub>` added to its query.
fn with_hub(path: &str, hub: Option<&str>) -> String {
    match hub {
        Some(hub) if path.contains('?') => format!("{path}&hub={hub}"),
        Some(hub) => format!("{path}?hub={hub}"),
        None => path.to_owned(),
    }
}
