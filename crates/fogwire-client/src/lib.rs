//! The client of a node's control API (`docs/control-api.md`), as the
//! `fogwire` command uses it: one method per endpoint, the bodies as
//! `fogwire-api`'s types, long operations streamed line by line.
//!
//! Architecture invariant: knows HTTP and `fogwire-api`, nothing of the
//! node or its protocols.

use std::net::SocketAddr;
use std::time::Duration;

use fogwire_api::{
    BlobInfo, ClosedRoute, ConnectRequest, DisconnectResponse, ErrorBody, ExitsReport, FeedInfo,
    FollowRequest, FoundPath, GcRequest, GcResult, GraphNode, HubView, JobCancelled,
    JobFetchRequest, JobFetched, JobInfo, JobLogs, JobResultInfo, JobSubmitRequest, JobSubmitted,
    LedgerAccount, LedgerHistoryLine, LedgerInfo, LedgerOpRequest, LedgerReceipt,
    LedgerSubmitRequest, MarketAskRequest, MarketBidRequest, MarketCancelRequest, MarketDeal,
    MarketEvent, MarketOrder, MarketPosted, OpenedRoute, Peer, PinRequest, PingReport,
    ProvidersReport, ProxyLine, ProxyRequest, PublishRequest, RouteRequest, Routes, RpcCallRequest,
    RpcLine, SendLine, Status, StoreAddRequest, StoreGetRequest, StoreLine, StorePeer, StoreStat,
    TagChange, UnpinRequest, VpnStatus, VpnUpRequest, WorkerInfo,
};
use reqwest::{Method, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Longest a request may take; a connect waits for a handshake. For an
/// answer streamed line by line, the longest silence between lines.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a job submission may take (the hub fetches its inputs; the
/// hub itself gives up after 300 s).
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(330);
/// Longest a feed publication may take: it adds a path first, as long as
/// an add.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(3600);
/// Largest response body (or streamed line) read.
const RESPONSE_BODY_MAX: usize = 64 * 1024 * 1024;

/// A client of a node's control API.
#[derive(Debug, Clone)]
pub struct Client {
    addr: SocketAddr,
    base: String,
    token: String,
    http: reqwest::Client,
}

/// Why a control API request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot reach the node's control API at {addr}: {source}; is `fogwire node` running?")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: reqwest::Error,
    },
    #[error("control API request failed: {0}")]
    Http(#[source] reqwest::Error),
    #[error("the control API did not answer within {} s", .0.as_secs())]
    Timeout(Duration),
    /// The node answered with an error: its status and message.
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("unexpected answer from the control API: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("the control API's answer exceeds {RESPONSE_BODY_MAX} bytes")]
    TooLarge,
    #[error("cannot write the output: {0}")]
    Write(#[source] std::io::Error),
}

impl Client {
    /// A client of the API at `addr` (loopback), presenting `token`.
    pub fn new(addr: SocketAddr, token: &str) -> Self {
        let http = reqwest::Client::builder()
            // The API is on loopback: a proxy from the environment must
            // not see the token.
            .no_proxy()
            .connect_timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            addr,
            base: format!("http://{addr}"),
            token: token.to_owned(),
            http,
        }
    }

    pub async fn status(&self) -> Result<Status, ClientError> {
        self.get("/v1/status", &[]).await
    }

    pub async fn peers(&self) -> Result<Vec<Peer>, ClientError> {
        self.get("/v1/peers", &[]).await
    }

    pub async fn connect(&self, peer: &str) -> Result<Peer, ClientError> {
        let request = ConnectRequest {
            peer: peer.to_owned(),
        };
        self.post("/v1/peers", &request).await
    }

    pub async fn disconnect(&self, node_id: &str) -> Result<DisconnectResponse, ClientError> {
        let path = format!("/v1/peers/{node_id}");
        self.call(Method::DELETE, &path, &[], None::<&()>, REQUEST_TIMEOUT)
            .await
    }

    pub async fn nodes(&self) -> Result<Vec<GraphNode>, ClientError> {
        self.get("/v1/nodes", &[]).await
    }

    /// The names the operator gave nodes.
    pub async fn names(&self) -> Result<Vec<fogwire_api::NodeName>, ClientError> {
        self.get("/v1/names", &[]).await
    }

    /// Gives `node` (an id, a unique start of one, or a name) the name
    /// `name`.
    pub async fn name(&self, name: &str, node: &str) -> Result<fogwire_api::NodeName, ClientError> {
        let request = fogwire_api::NameRequest {
            name: name.to_owned(),
            node: node.to_owned(),
        };
        self.post("/v1/names", &request).await
    }

    /// Forgets the name `name`.
    pub async fn unname(&self, name: &str) -> Result<fogwire_api::NodeName, ClientError> {
        let path = format!("/v1/names/{name}");
        self.call(Method::DELETE, &path, &[], None::<&()>, REQUEST_TIMEOUT)
            .await
    }

    pub async fn find(&self, request: &RouteRequest) -> Result<Vec<FoundPath>, ClientError> {
        self.post("/v1/routes/find", request).await
    }

    pub async fn routes(&self) -> Result<Routes, ClientError> {
        self.get("/v1/routes", &[]).await
    }

    pub async fn open_route(&self, request: &RouteRequest) -> Result<OpenedRoute, ClientError> {
        self.post("/v1/routes", request).await
    }

    pub async fn close_route(&self, id: u64) -> Result<ClosedRoute, ClientError> {
        let path = format!("/v1/routes/{id}");
        self.call(Method::DELETE, &path, &[], None::<&()>, REQUEST_TIMEOUT)
            .await
    }

    pub async fn ping(&self, request: &RouteRequest) -> Result<PingReport, ClientError> {
        // Pings take their time: a request timeout per ping on top.
        let pings = request.count.unwrap_or(4).min(100);
        let per_ping = Duration::from_millis(request.interval_ms.unwrap_or(200).min(10_000))
            + Duration::from_secs(2);
        let timeout = REQUEST_TIMEOUT + per_ping * pings;
        self.call(Method::POST, "/v1/ping", &[], Some(request), timeout)
            .await
    }

    /// Starts a transfer check and calls `on_line` with each line of its
    /// answer as it comes (progress, then the result or an error).
    pub async fn send(
        &self,
        request: &RouteRequest,
        on_line: impl FnMut(SendLine),
    ) -> Result<(), ClientError> {
        self.lines("/v1/routes/send", request, on_line).await
    }

    pub async fn vpn_status(&self) -> Result<VpnStatus, ClientError> {
        self.get("/v1/vpn", &[]).await
    }

    pub async fn vpn_up(&self, request: &VpnUpRequest) -> Result<VpnStatus, ClientError> {
        self.post("/v1/vpn/up", request).await
    }

    pub async fn vpn_down(&self) -> Result<VpnStatus, ClientError> {
        self.post("/v1/vpn/down", &()).await
    }

    /// This board's view of its cluster.
    pub async fn cluster(&self) -> Result<fogwire_api::ClusterStatus, ClientError> {
        self.get("/v1/cluster", &[]).await
    }

    /// Makes a cluster with this board in it.
    pub async fn cluster_init(&self) -> Result<fogwire_api::ClusterCreated, ClientError> {
        self.post("/v1/cluster/init", &()).await
    }

    /// Publishes a manifest's text as the cluster's next version.
    pub async fn cluster_apply(
        &self,
        manifest: String,
    ) -> Result<fogwire_api::ClusterStatus, ClientError> {
        let request = fogwire_api::ClusterApply { manifest };
        self.post("/v1/cluster/apply", &request).await
    }

    /// The join code of this board's cluster.
    pub async fn cluster_join_code(&self) -> Result<fogwire_api::ClusterCreated, ClientError> {
        self.get("/v1/cluster/join-code", &[]).await
    }

    /// Joins the cluster of a join code.
    pub async fn cluster_join(
        &self,
        code: &str,
    ) -> Result<fogwire_api::ClusterStatus, ClientError> {
        let request = fogwire_api::ClusterJoin {
            code: code.to_owned(),
        };
        self.post("/v1/cluster/join", &request).await
    }

    /// Asks another cluster's owner (by the cluster's id) to peer.
    pub async fn cluster_peer(
        &self,
        cluster: &str,
    ) -> Result<fogwire_api::ClusterPeering, ClientError> {
        let request = fogwire_api::ClusterPeer {
            cluster: cluster.to_owned(),
        };
        self.post("/v1/cluster/peer", &request).await
    }

    /// Agrees to another cluster's request to peer.
    pub async fn cluster_peer_accept(
        &self,
        cluster: &str,
    ) -> Result<fogwire_api::ClusterPeering, ClientError> {
        let request = fogwire_api::ClusterPeer {
            cluster: cluster.to_owned(),
        };
        self.post("/v1/cluster/peer/accept", &request).await
    }

    /// The peerings this board knows of.
    pub async fn cluster_peers(&self) -> Result<fogwire_api::ClusterPeerings, ClientError> {
        self.get("/v1/cluster/peers", &[]).await
    }

    /// The exits the network advertises, and this node's exit and proxy.
    pub async fn exits(&self) -> Result<ExitsReport, ClientError> {
        self.get("/v1/exits", &[]).await
    }

    /// Runs a SOCKS proxy on the node for as long as this call lasts;
    /// `on_line` gets its status every second.
    pub async fn proxy(
        &self,
        request: &ProxyRequest,
        on_line: impl FnMut(ProxyLine),
    ) -> Result<(), ClientError> {
        self.lines("/v1/proxy", request, on_line).await
    }

    /// Adds a file on the node's machine to its store, calling `on_line`
    /// with progress and then the result.
    pub async fn store_add(
        &self,
        request: &StoreAddRequest,
        on_line: impl FnMut(StoreLine),
    ) -> Result<(), ClientError> {
        self.lines("/v1/store/add", request, on_line).await
    }

    /// Calls a service of a linked node; `on_line` gets each chunk, then
    /// the end or the error.
    pub async fn rpc_call(
        &self,
        request: &RpcCallRequest,
        on_line: impl FnMut(RpcLine),
    ) -> Result<(), ClientError> {
        self.lines("/v1/rpc/call", request, on_line).await
    }

    /// Writes a blob of the node's store to a file on its machine.
    pub async fn store_get(
        &self,
        request: &StoreGetRequest,
        on_line: impl FnMut(StoreLine),
    ) -> Result<(), ClientError> {
        self.lines("/v1/store/get", request, on_line).await
    }

    /// Submits a job; the hub first fetches its program and inputs from
    /// this node, so this may take as long as that transfer.
    pub async fn job_submit(
        &self,
        request: &JobSubmitRequest,
    ) -> Result<JobSubmitted, ClientError> {
        self.call(Method::POST, "/v1/jobs", &[], Some(request), SUBMIT_TIMEOUT)
            .await
    }

    pub async fn jobs(&self, hub: Option<&str>) -> Result<Vec<JobInfo>, ClientError> {
        self.get("/v1/jobs", &hub_query(hub)).await
    }

    pub async fn job(&self, job: &str, hub: Option<&str>) -> Result<JobInfo, ClientError> {
        self.get(&format!("/v1/jobs/{job}"), &hub_query(hub)).await
    }

    pub async fn job_logs(
        &self,
        job: &str,
        from: u64,
        hub: Option<&str>,
    ) -> Result<JobLogs, ClientError> {
        let mut query = hub_query(hub);
        query.push(("from", from.to_string()));
        self.get(&format!("/v1/jobs/{job}/logs"), &query).await
    }

    pub async fn job_result(
        &self,
        job: &str,
        hub: Option<&str>,
    ) -> Result<JobResultInfo, ClientError> {
        self.get(&format!("/v1/jobs/{job}/result"), &hub_query(hub))
            .await
    }

    pub async fn job_fetch(
        &self,
        job: &str,
        request: &JobFetchRequest,
    ) -> Result<JobFetched, ClientError> {
        self.post(&format!("/v1/jobs/{job}/fetch"), request).await
    }

    pub async fn job_cancel(
        &self,
        job: &str,
        hub: Option<&str>,
    ) -> Result<JobCancelled, ClientError> {
        let path = format!("/v1/jobs/{job}/cancel");
        let query = hub_query(hub);
        self.call(Method::POST, &path, &query, None::<&()>, REQUEST_TIMEOUT)
            .await
    }

    pub async fn hubs(&self) -> Result<Vec<HubView>, ClientError> {
        self.get("/v1/hubs", &[]).await
    }

    /// `side`: `asks` or `bids`.
    pub async fn market_orders(
        &self,
        side: &str,
        hub: Option<&str>,
    ) -> Result<Vec<MarketOrder>, ClientError> {
        self.get(&format!("/v1/market/{side}"), &hub_query(hub))
            .await
    }

    pub async fn market_deals(
        &self,
        hub: Option<&str>,
        limit: u64,
    ) -> Result<Vec<MarketDeal>, ClientError> {
        let mut query = hub_query(hub);
        query.push(("limit", limit.to_string()));
        self.get("/v1/market/deals", &query).await
    }

    pub async fn market_events(
        &self,
        hub: Option<&str>,
        limit: u64,
    ) -> Result<Vec<MarketEvent>, ClientError> {
        let mut query = hub_query(hub);
        query.push(("limit", limit.to_string()));
        self.get("/v1/market/events", &query).await
    }

    pub async fn market_ask(
        &self,
        request: &MarketAskRequest,
    ) -> Result<MarketPosted, ClientError> {
        self.post("/v1/market/ask", request).await
    }

    pub async fn market_bid(
        &self,
        request: &MarketBidRequest,
    ) -> Result<MarketPosted, ClientError> {
        self.post("/v1/market/bid", request).await
    }

    pub async fn market_cancel(&self, request: &MarketCancelRequest) -> Result<bool, ClientError> {
        self.post("/v1/market/cancel", request).await
    }

    pub async fn ledger_info(&self) -> Result<LedgerInfo, ClientError> {
        self.get("/v1/ledger", &[]).await
    }

    /// An account: `me`, a node id, or the unique start of one.
    pub async fn ledger_account(&self, who: &str) -> Result<LedgerAccount, ClientError> {
        self.get(&format!("/v1/ledger/accounts/{who}"), &[]).await
    }

    pub async fn ledger_history(
        &self,
        who: &str,
        before: u64,
        limit: u64,
    ) -> Result<Vec<LedgerHistoryLine>, ClientError> {
        let query = [("before", before.to_string()), ("limit", limit.to_string())];
        self.get(&format!("/v1/ledger/accounts/{who}/history"), &query)
            .await
    }

    /// Has the node sign `request` with its key and send it to the ledger.
    pub async fn ledger_op(&self, request: &LedgerOpRequest) -> Result<LedgerReceipt, ClientError> {
        self.post("/v1/ledger/ops", request).await
    }

    /// Sends a transaction signed elsewhere.
    pub async fn ledger_submit(
        &self,
        request: &LedgerSubmitRequest,
    ) -> Result<LedgerReceipt, ClientError> {
        self.post("/v1/ledger/submit", request).await
    }

    pub async fn workers(&self, hub: Option<&str>) -> Result<Vec<WorkerInfo>, ClientError> {
        self.get("/v1/workers", &hub_query(hub)).await
    }

    pub async fn store_blobs(&self) -> Result<Vec<BlobInfo>, ClientError> {
        self.get("/v1/store/blobs", &[]).await
    }

    pub async fn store_peers(&self) -> Result<Vec<StorePeer>, ClientError> {
        self.get("/v1/store/peers", &[]).await
    }

    /// Who holds `hash` in the network, as its provider-record keepers say.
    pub async fn store_providers(&self, hash: &str) -> Result<ProvidersReport, ClientError> {
        self.get(&format!("/v1/store/providers/{hash}"), &[]).await
    }

    pub async fn store_stat(&self) -> Result<StoreStat, ClientError> {
        self.get("/v1/store/stat", &[]).await
    }

    pub async fn store_pin(&self, request: &PinRequest) -> Result<TagChange, ClientError> {
        self.post("/v1/store/pin", request).await
    }

    pub async fn store_unpin(&self, request: &UnpinRequest) -> Result<TagChange, ClientError> {
        self.post("/v1/store/unpin", request).await
    }

    pub async fn store_gc(&self, request: &GcRequest) -> Result<GcResult, ClientError> {
        self.post("/v1/store/gc", request).await
    }

    /// Sends a message; the answer is the message as queued.
    pub async fn msg_send(
        &self,
        request: &fogwire_api::MsgSendRequest,
    ) -> Result<fogwire_api::MessageView, ClientError> {
        self.post("/v1/msg/send", request).await
    }

    /// Unread messages, oldest first; read unless `peek`.
    pub async fn msg_inbox(
        &self,
        limit: usize,
        peek: bool,
    ) -> Result<Vec<fogwire_api::MessageView>, ClientError> {
        let query = [("limit", limit.to_string()), ("peek", peek.to_string())];
        self.get("/v1/msg/inbox", &query).await
    }

    /// A conversation (or the messages of it that contain `search`),
    /// oldest first; what the peer sent is marked read unless `peek`.
    pub async fn msg_history(
        &self,
        peer: &str,
        search: Option<&str>,
        limit: usize,
        peek: bool,
    ) -> Result<Vec<fogwire_api::MessageView>, ClientError> {
        let mut query = vec![("limit", limit.to_string()), ("peek", peek.to_string())];
        query.extend(search.map(|search| ("search", search.to_owned())));
        self.get(&format!("/v1/msg/history/{peer}"), &query).await
    }

    pub async fn msg_groups(&self) -> Result<Vec<fogwire_api::GroupView>, ClientError> {
        self.get("/v1/msg/groups", &[]).await
    }

    pub async fn msg_group_create(
        &self,
        name: &str,
    ) -> Result<fogwire_api::GroupView, ClientError> {
        let request = fogwire_api::GroupCreateRequest {
            name: name.to_owned(),
        };
        self.post("/v1/msg/groups", &request).await
    }

    /// `change` is `add` or `remove`.
    pub async fn msg_group_member(
        &self,
        group: &str,
        change: &str,
        node: &str,
    ) -> Result<fogwire_api::GroupView, ClientError> {
        let request = fogwire_api::GroupMemberRequest {
            node: node.to_owned(),
        };
        self.post(
            &format!("/v1/msg/groups/{}/{change}", segment(group)),
            &request,
        )
        .await
    }

    pub async fn msg_group_leave(
        &self,
        group: &str,
    ) -> Result<fogwire_api::GroupView, ClientError> {
        self.post(
            &format!("/v1/msg/groups/{}/leave", segment(group)),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn msg_group_send(
        &self,
        group: &str,
        text: &str,
    ) -> Result<fogwire_api::GroupEntryView, ClientError> {
        let request = fogwire_api::GroupSendRequest {
            text: text.to_owned(),
        };
        self.post(&format!("/v1/msg/groups/{}/send", segment(group)), &request)
            .await
    }

    pub async fn msg_group_history(
        &self,
        group: &str,
        limit: usize,
    ) -> Result<Vec<fogwire_api::GroupEntryView>, ClientError> {
        let query = [("limit", limit.to_string())];
        self.get(
            &format!("/v1/msg/groups/{}/history", segment(group)),
            &query,
        )
        .await
    }

    pub async fn msg_contacts(&self) -> Result<Vec<fogwire_api::ContactView>, ClientError> {
        self.get("/v1/msg/contacts", &[]).await
    }

    /// Follows the node's messages: `on_line` gets each line of the live
    /// stream (a message as it changes, or `{"missed": n}`) until it
    /// returns false or the node closes the stream. No timeout: a quiet
    /// conversation is not a stuck node.
    pub async fn msg_follow(
        &self,
        mut on_line: impl FnMut(serde_json::Value) -> bool,
    ) -> Result<(), ClientError> {
        let mut response = within(
            REQUEST_TIMEOUT,
            self.start(Method::GET, "/v1/msg/follow", &[], None::<&()>),
        )
        .await??;
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(ClientError::Http)? {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if !on_line(serde_json::from_slice(&line).map_err(ClientError::Decode)?) {
                    return Ok(());
                }
            }
            if pending.len() > RESPONSE_BODY_MAX {
                return Err(ClientError::TooLarge);
            }
        }
        Ok(())
    }

    pub async fn feeds(&self) -> Result<Vec<FeedInfo>, ClientError> {
        self.get("/v1/feeds", &[]).await
    }

    pub async fn feed(&self, feed: &str) -> Result<FeedInfo, ClientError> {
        self.get(&format!("/v1/feeds/{feed}"), &[]).await
    }

    pub async fn feed_new(&self) -> Result<FeedInfo, ClientError> {
        self.call(Method::POST, "/v1/feeds", &[], None::<&()>, REQUEST_TIMEOUT)
            .await
    }

    pub async fn feed_publish(&self, request: &PublishRequest) -> Result<FeedInfo, ClientError> {
        self.call(
            Method::POST,
            "/v1/feeds/publish",
            &[],
            Some(request),
            PUBLISH_TIMEOUT,
        )
        .await
    }

    pub async fn feed_follow(&self, request: &FollowRequest) -> Result<FeedInfo, ClientError> {
        self.post("/v1/feeds/follow", request).await
    }

    /// The node's metrics in the OpenMetrics text format.
    /// Blob `hash`'s bytes, streamed to `out` as they arrive (fetched from
    /// the node's peers first if it lacks them). Refused, before any byte
    /// is written, when the blob is a tree's directory node and not a
    /// file's bytes.
    pub async fn blob_to(
        &self,
        hash: &str,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<u64, ClientError> {
        use tokio::io::AsyncWriteExt;
        let path = format!("/blobs/{hash}");
        let mut response = self.start(Method::GET, &path, &[], None::<&()>).await?;
        if response.headers().contains_key("x-fogwire-object") {
            return Err(ClientError::Api {
                status: 409,
                message: format!(
                    "{hash} is a directory tree, not a file: restore it into a directory with -o <dir>"
                ),
            });
        }
        let mut written = 0u64;
        while let Some(chunk) = within(REQUEST_TIMEOUT, response.chunk())
            .await?
            .map_err(ClientError::Http)?
        {
            out.write_all(&chunk).await.map_err(ClientError::Write)?;
            written += chunk.len() as u64;
        }
        out.flush().await.map_err(ClientError::Write)?;
        Ok(written)
    }

    /// The first `max` bytes of blob `hash` (fetched from the node's peers
    /// first if it lacks it), and the blob's whole size.
    pub async fn blob_head(&self, hash: &str, max: u64) -> Result<(Vec<u8>, u64), ClientError> {
        let response = self
            .http
            .get(format!("{}/blobs/{hash}", self.base))
            .bearer_auth(&self.token)
            .header(header::RANGE, format!("bytes=0-{}", max.max(1) - 1))
            .send()
            .await
            .map_err(ClientError::Http)?;
        let status = response.status();
        // What a range of an empty blob gets: nothing to show.
        if status == StatusCode::RANGE_NOT_SATISFIABLE {
            return Ok((Vec::new(), 0));
        }
        let total = response
            .headers()
            .get(header::CONTENT_RANGE)
            .and_then(|range| range.to_str().ok())
            .and_then(|range| range.rsplit('/').next()?.parse::<u64>().ok());
        if status != StatusCode::PARTIAL_CONTENT && status != StatusCode::OK {
            return Err(api_error(response).await);
        }
        let body = within(REQUEST_TIMEOUT, read_limited(response)).await??;
        let total = total.unwrap_or(body.len() as u64);
        Ok((body, total))
    }

    pub async fn metrics(&self) -> Result<String, ClientError> {
        let response = self
            .start(Method::GET, "/metrics", &[], None::<&()>)
            .await?;
        let body = within(REQUEST_TIMEOUT, read_limited(response)).await??;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, ClientError> {
        self.call(Method::GET, path, query, None::<&()>, REQUEST_TIMEOUT)
            .await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        self.call(Method::POST, path, &[], Some(body), REQUEST_TIMEOUT)
            .await
    }

    /// One request whose answer is one JSON value, all within `timeout`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&impl Serialize>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        within(timeout, async {
            let response = self.start(method, path, query, body).await?;
            let bytes = read_limited(response).await?;
            serde_json::from_slice(&bytes).map_err(ClientError::Decode)
        })
        .await?
    }

    /// POSTs `body` to `path`, whose answer is one JSON object per line,
    /// and calls `on_line` with each as it comes.
    async fn lines<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        mut on_line: impl FnMut(T),
    ) -> Result<(), ClientError> {
        let mut response = within(
            REQUEST_TIMEOUT,
            self.start(Method::POST, path, &[], Some(body)),
        )
        .await??;
        let mut pending: Vec<u8> = Vec::new();
        // A transfer reports at least every percent; silence this long
        // means the node is stuck.
        while let Some(chunk) = within(REQUEST_TIMEOUT, response.chunk())
            .await?
            .map_err(ClientError::Http)?
        {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                on_line(serde_json::from_slice(&line).map_err(ClientError::Decode)?);
            }
            if pending.len() > RESPONSE_BODY_MAX {
                return Err(ClientError::TooLarge);
            }
        }
        Ok(())
    }

    /// Sends a request; returns the response once its status is OK (an
    /// error response becomes the error it describes).
    async fn start(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&impl Serialize>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .query(query);
        request = match body {
            Some(body) => request.json(body),
            None => request.header(header::CONTENT_TYPE, "application/json"),
        };
        let response = request.send().await.map_err(|source| {
            if source.is_connect() {
                ClientError::Connect {
                    addr: self.addr,
                    source,
                }
            } else {
                ClientError::Http(source)
            }
        })?;
        let status = response.status();
        if status == StatusCode::OK {
            return Ok(response);
        }
        Err(api_error(response).await)
    }
}

/// Runs `work` within `timeout`.
async fn within<T>(timeout: Duration, work: impl Future<Output = T>) -> Result<T, ClientError> {
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ClientError::Timeout(timeout))
}

/// The error an error response describes: its JSON `error`, else its
/// text.
async fn api_error(response: reqwest::Response) -> ClientError {
    let status = response.status().as_u16();
    let body = match read_limited(response).await {
        Ok(body) => body,
        Err(error) => return error,
    };
    let message = serde_json::from_slice::<ErrorBody>(&body)
        .map(|error| error.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
    ClientError::Api { status, message }
}

/// The whole body, refusing one larger than [`RESPONSE_BODY_MAX`].
async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, ClientError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ClientError::Http)? {
        if body.len() + chunk.len() > RESPONSE_BODY_MAX {
            return Err(ClientError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `hub=<hub>` for the query, if a hub is named.
fn hub_query(hub: Option<&str>) -> Vec<(&'static str, String)> {
    hub.map(|hub| ("hub", hub.to_owned())).into_iter().collect()
}

/// `text` as one segment of a path (a group's name may hold anything).
fn segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}
