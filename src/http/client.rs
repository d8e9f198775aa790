//! The CLI's side of the HTTP API: one request to the running daemon.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;

use super::guard::REQUEST_HEADER;
use crate::config::Config;

/// How long the CLI waits for the daemon.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no drover daemon answers on {addr} (daemon.listen): {reason}; is `drover run` running with this config?")]
    Unreachable { addr: SocketAddr, reason: String },
    #[error("the daemon on {addr} did not answer within {secs} s")]
    Timeout { addr: SocketAddr, secs: u64 },
    #[error("{0}")]
    Token(String),
}

/// Sends `method path` to the daemon of `config` (with its API token, when one is set) and
/// returns (status code, body).
pub async fn api(config: &Config, method: &str, path: &str) -> Result<(u16, String), ClientError> {
    let token = config
        .daemon
        .resolve_api_token()
        .map_err(|e| ClientError::Token(e.to_string()))?;
    request(
        config.daemon.listen,
        method,
        path,
        token.as_ref().map(|t| t.expose()),
    )
    .await
}

/// Sends `method path` and returns (status code, body).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), ClientError> {
    tokio::time::timeout(TIMEOUT, request_inner(addr, method, path, token))
        .await
        .map_err(|_| ClientError::Timeout {
            addr,
            secs: TIMEOUT.as_secs(),
        })?
}

async fn request_inner(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), ClientError> {
    let unreachable = |e: &dyn std::fmt::Display| ClientError::Unreachable {
        addr,
        reason: e.to_string(),
    };
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| unreachable(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header(REQUEST_HEADER, "1");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| unreachable(&e))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(&e))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(&e))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
