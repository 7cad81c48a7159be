use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use crate::api::{ConnectRequest, DisconnectResponse, ErrorBody, Peer, Status};
use crate::home::{ApiToken, DataDir, DataDirError};

/// Longest a request may take; a connect waits for a handshake.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
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
        let body = Limited::new(response.into_body(), RESPONSE_BODY_MAX)
            .collect()
            .await
            .map_err(|e| http(&*e))?
            .to_bytes();
        if status == StatusCode::OK {
            return Ok(body);
        }
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|error| error.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        Err(ClientError::Api {
            status: status.as_u16(),
            message,
        })
    }
}
