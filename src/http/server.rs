//! HTTP/1.1 server on hyper, running inside the actix System (single thread, so handlers may
//! hold actor addresses and `Rc`s). Routes: GET /metrics, /status[?sync=], /health;
//! POST /syncs/{name}/kick|pause|resume|copy[?table=T].

use std::convert::Infallible;
use std::rc::Rc;

use actix::Addr;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::actors::database::Kick;
use crate::actors::sync::{ForceCopy, GetStatus, SetPaused, SyncActor};
use crate::config::Secret;
use crate::status::StatusDoc;

pub struct Routes {
    pub syncs: Vec<(String, Addr<SyncActor>)>,
    pub metrics: PrometheusHandle,
    /// When set, POST endpoints require `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
}

/// Whether the request carries the API token (compared in constant time).
fn authorized(routes: &Routes, req: &Request<Incoming>) -> bool {
    let Some(token) = &routes.token else {
        return true;
    };
    let Some(given) = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.expose().as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn serve(listener: tokio::net::TcpListener, routes: Routes) {
    let routes = Rc::new(routes);
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                continue;
            }
        };
        let routes = routes.clone();
        actix_rt::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let routes = routes.clone();
                async move { Ok::<_, Infallible>(route(&routes, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

async fn route(routes: &Routes, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if req.method() == Method::POST && !authorized(routes, &req) {
        return reply(
            StatusCode::UNAUTHORIZED,
            "text/plain",
            "missing or wrong Authorization: Bearer token (daemon.api_token)\n",
        );
    }
    match (req.method(), segments.as_slice()) {
        (&Method::GET, ["metrics"]) => {
            crate::metrics::process::update();
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                routes.metrics.render(),
            )
        }
        (&Method::GET, ["status"]) => {
            let only = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("sync="))
                .map(percent_decode);
            let doc = status(routes, only.as_deref()).await;
            if only.is_some() && doc.syncs.is_empty() {
                return reply(StatusCode::NOT_FOUND, "text/plain", "no such sync\n");
            }
            let body = serde_json::to_vec(&doc).unwrap_or_default();
            reply(StatusCode::OK, "application/json", body)
        }
        (&Method::GET, ["health"]) => {
            let doc = status(routes, None).await;
            let bad: Vec<&str> = doc
                .syncs
                .iter()
                .filter(|s| s.state == "bad")
                .map(|s| s.name.as_str())
                .collect();
            let body = if bad.is_empty() {
                "ok\n".to_string()
            } else {
                format!("ok; bad syncs: {}\n", bad.join(", "))
            };
            reply(StatusCode::OK, "text/plain", body)
        }
        (&Method::POST, ["syncs", name, "copy"]) => {
            let name = percent_decode(name);
            let Some((_, addr)) = routes.syncs.iter().find(|(n, _)| *n == name) else {
                return reply(StatusCode::NOT_FOUND, "text/plain", "no such sync\n");
            };
            let tables: Vec<String> = query
                .split('&')
                .filter_map(|kv| kv.strip_prefix("table="))
                .map(percent_decode)
                .collect();
            addr.do_send(ForceCopy(tables));
            reply(StatusCode::ACCEPTED, "text/plain", "copy scheduled\n")
        }
        (&Method::POST, ["syncs", name, action @ ("kick" | "pause" | "resume")]) => {
            let name = percent_decode(name);
            let Some((_, addr)) = routes.syncs.iter().find(|(n, _)| *n == name) else {
                return reply(StatusCode::NOT_FOUND, "text/plain", "no such sync\n");
            };
            match *action {
                "kick" => addr.do_send(Kick),
                "pause" => addr.do_send(SetPaused(true)),
                _ => addr.do_send(SetPaused(false)),
            }
            let done = match *action {
                "kick" => "kicked",
                "pause" => "paused",
                _ => "resumed",
            };
            reply(StatusCode::ACCEPTED, "text/plain", format!("{done}\n"))
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

async fn status(routes: &Routes, only: Option<&str>) -> StatusDoc {
    let mut syncs = Vec::new();
    for (name, addr) in &routes.syncs {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        if let Ok(s) = addr.send(GetStatus).await {
            syncs.push(s);
        }
    }
    StatusDoc { syncs }
}

/// Decodes %XX escapes (sync names may hold any character).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes everything but unreserved characters.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_round_trip() {
        for s in ["legacy_to_new", "a b/c%d", "ü\"x"] {
            assert_eq!(percent_decode(&percent_encode(s)), s);
        }
    }
}
