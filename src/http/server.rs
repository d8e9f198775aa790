//! HTTP/1.1 server on hyper, running inside the actix System (single thread, so handlers may
//! hold actor addresses and `Rc`s). Routes: GET /metrics, /status[?sync=], /health;
//! POST /syncs/{name}/kick|pause|resume|copy[?table=T]|retry[?table=T&target=D], /reload. Every
//! request passes [`guard::check`]
//! first; the accept loop and its limits live in [`super::listener`].

use actix::{Addr, Recipient};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;

use super::guard::{self, Policy};
use super::listener::{BODY_READ_TIMEOUT, MAX_BODY_BYTES};
use crate::actors::database::Kick;
use crate::actors::metrics::{CollectProcess, MetricsActor};
use crate::actors::reload::{Reload, SyncList};
use crate::actors::sync::{ForceCopy, GetStatus, SetPaused, SyncActor};
use crate::status::StatusDoc;

pub struct Routes {
    /// The running syncs (a reload changes them).
    pub syncs: SyncList,
    /// Where `POST /reload` goes.
    pub reload: Option<Recipient<Reload>>,
    pub metrics: PrometheusHandle,
    /// Collects the process metrics before each render.
    pub metrics_actor: Addr<MetricsActor>,
    /// Token, read-token mode and loopback: see [`guard::check`].
    pub policy: Policy,
}

pub(super) fn reply(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

pub(super) async fn route(routes: &Routes, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (method, trusted) = match admit(routes, req).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    match (&method, segments.as_slice()) {
        (&Method::GET, ["metrics"]) => metrics(routes).await,
        (&Method::GET, ["status"]) => status_route(routes, &query, trusted).await,
        (&Method::GET, ["health"]) => health(routes).await,
        (&Method::POST, ["syncs", name, "copy"]) => {
            let name = percent_decode(name);
            let Some(addr) = find(routes, &name) else {
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
        (&Method::POST, ["syncs", name, "retry"]) => {
            let name = percent_decode(name);
            let Some(addr) = find(routes, &name) else {
                return reply(StatusCode::NOT_FOUND, "text/plain", "no such sync\n");
            };
            crate::http::retry::route(&addr, &query).await
        }
        (&Method::POST, ["syncs", name, action @ ("kick" | "pause" | "resume")]) => {
            let name = percent_decode(name);
            let Some(addr) = find(routes, &name) else {
                return reply(StatusCode::NOT_FOUND, "text/plain", "no such sync\n");
            };
            sync_action(&addr, action).await
        }
        (&Method::POST, ["reload"]) => super::reload::reload(routes).await,
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// `GET /metrics`: the Prometheus text.
async fn metrics(routes: &Routes) -> Response<Full<Bytes>> {
    // The metrics actor is the recorder's writer; a stopped one leaves the last values.
    let _ = routes.metrics_actor.send(CollectProcess).await;
    reply(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        routes.metrics.render(),
    )
}

/// `GET /status[?sync=NAME]`: the status document, of one sync if asked.
async fn status_route(routes: &Routes, query: &str, trusted: bool) -> Response<Full<Bytes>> {
    let only = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("sync="))
        .map(percent_decode);
    let doc = status(routes, only.as_deref(), trusted).await;
    if only.is_some() && doc.syncs.is_empty() {
        return reply(StatusCode::NOT_FOUND, "text/plain", "no such sync\n");
    }
    let body = serde_json::to_vec(&doc).unwrap_or_default();
    reply(StatusCode::OK, "application/json", body)
}

/// `GET /health`: always 200 while the daemon answers; names bad and held syncs.
async fn health(routes: &Routes) -> Response<Full<Bytes>> {
    let doc = status(routes, None, false).await;
    let bad: Vec<&str> = doc
        .syncs
        .iter()
        .filter(|s| s.state == "bad")
        .map(|s| s.name.as_str())
        .collect();
    let mut body = if bad.is_empty() {
        "ok".to_string()
    } else {
        format!("ok; bad syncs: {}", bad.join(", "))
    };
    body.push_str(&crate::http::retry::held_syncs(&doc));
    body.push('\n');
    reply(StatusCode::OK, "text/plain", body)
}

/// `POST /syncs/NAME/{kick,pause,resume}`.
async fn sync_action(addr: &Addr<SyncActor>, action: &str) -> Response<Full<Bytes>> {
    if action == "kick" {
        addr.do_send(Kick);
    } else if let Err(e) = set_paused(addr, action == "pause").await {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("{e}\n"),
        );
    }
    let done = match action {
        "kick" => "kicked",
        "pause" => "paused",
        _ => "resumed",
    };
    reply(StatusCode::ACCEPTED, "text/plain", format!("{done}\n"))
}

fn find(routes: &Routes, name: &str) -> Option<Addr<SyncActor>> {
    let syncs = routes.syncs.borrow();
    syncs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, a)| a.clone())
}

/// Stores (or deletes) the sync's pause through its actor; an error names the cause.
async fn set_paused(addr: &Addr<SyncActor>, paused: bool) -> Result<(), String> {
    addr.send(SetPaused(paused))
        .await
        .map_err(|e| format!("sync actor gone: {e}"))?
}

/// Passes the request through [`guard::check`] and reads its body (no endpoint takes one)
/// within the size and time limits: its method, and whether it carried the token.
async fn admit(
    routes: &Routes,
    req: Request<Incoming>,
) -> Result<(Method, bool), Response<Full<Bytes>>> {
    let trusted = guard::check(
        &routes.policy,
        req.method(),
        req.uri().path(),
        req.headers(),
    )
    .map_err(|(code, message)| reply(code, "text/plain", message))?;
    let method = req.method().clone();
    let body = Limited::new(req.into_body(), MAX_BODY_BYTES).collect();
    match tokio::time::timeout(BODY_READ_TIMEOUT, body).await {
        Ok(Ok(_)) => Ok((method, trusted)),
        Ok(Err(_)) => Err(reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text/plain",
            format!("request body over {MAX_BODY_BYTES} bytes\n"),
        )),
        Err(_) => Err(reply(
            StatusCode::REQUEST_TIMEOUT,
            "text/plain",
            "request body too slow\n",
        )),
    }
}

/// The status of every sync (or `only` one); error texts in full only for `trusted` callers.
async fn status(routes: &Routes, only: Option<&str>, trusted: bool) -> StatusDoc {
    let mut syncs = Vec::new();
    let running = routes.syncs.borrow().clone();
    for (name, addr) in &running {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        if let Ok(s) = addr.send(GetStatus).await {
            syncs.push(s.for_reader(trusted));
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
