//! `POST /syncs/{name}/retry[?table=T][&target=D]`: the held tables (`round::hold`) of a sync
//! are retried at once instead of after their backoff. 202 with how many held tables that
//! covers; 409 when none is held there; 404 for a target the sync does not have. `/health`
//! names the syncs that hold tables.

use actix::Addr;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

use super::server::percent_decode;
use crate::actors::sync::{RetryHeld, SyncActor};
use crate::status::StatusDoc;

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

/// The value of `key=` in a query string, decoded.
fn param(query: &str, key: &str) -> Option<String> {
    (query.split('&'))
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .map(percent_decode)
}

pub(super) async fn route(addr: &Addr<SyncActor>, query: &str) -> Response<Full<Bytes>> {
    let msg = RetryHeld {
        table: param(query, "table"),
        target: param(query, "target"),
    };
    match addr.send(msg).await {
        Ok(Ok(0)) => reply(
            StatusCode::CONFLICT,
            "no held table matches: nothing to retry\n".into(),
        ),
        Ok(Ok(n)) => reply(
            StatusCode::ACCEPTED,
            format!("retrying {n} held table(s) now\n"),
        ),
        Ok(Err(e)) => reply(StatusCode::NOT_FOUND, format!("{e}\n")),
        Err(e) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the sync did not answer: {e}\n"),
        ),
    }
}

/// For `/health`: `; held tables in syncs: a, b` when some target holds tables back (the sync
/// itself is good: its other tables replicate), else nothing.
pub fn held_syncs(doc: &StatusDoc) -> String {
    let held: Vec<&str> = (doc.syncs.iter())
        .filter(|s| s.target_states.iter().any(|t| !t.held.is_empty()))
        .map(|s| s.name.as_str())
        .collect();
    if held.is_empty() {
        return String::new();
    }
    format!("; held tables in syncs: {}", held.join(", "))
}

#[cfg(test)]
mod tests {
    use super::param;

    #[test]
    fn params_are_decoded_and_exact() {
        let q = "target=t%201&table=public.a";
        assert_eq!(param(q, "table").as_deref(), Some("public.a"));
        assert_eq!(param(q, "target").as_deref(), Some("t 1"));
        assert_eq!(param("tables=x", "table"), None);
    }
}
