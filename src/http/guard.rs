//! Who may use which endpoint: the checks every request passes before routing. They keep a
//! hostile web page (cross-site "simple" POSTs, foreign `Origin`s, DNS rebinding through a
//! foreign `Host`) and callers without the token (when one is set) away from actions and, with
//! `daemon.api_token_for_reads`, from reads.

use std::net::IpAddr;

use hyper::{HeaderMap, Method, StatusCode};

use crate::config::Secret;

/// The header the CLI sends on POST; a browser cannot add it to a cross-site request without
/// a CORS preflight, which this API never grants.
pub const REQUEST_HEADER: &str = "x-drover-request";

/// What the guard knows about the listener.
pub struct Policy {
    /// `daemon.api_token` (resolved): POST endpoints require it.
    pub token: Option<Secret>,
    /// `daemon.api_token_for_reads`: every endpoint but `/health` requires the token.
    pub for_reads: bool,
    /// `daemon.listen` is a loopback address: `Host` must name loopback too.
    pub loopback: bool,
}

/// A request the guard refuses: status and a message that names the fix.
pub type Refusal = (StatusCode, String);

/// Checks a request; on success, whether it carried the token (then it may see row data).
pub fn check(
    policy: &Policy,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<bool, Refusal> {
    let host = header(headers, "host");
    if policy.loopback {
        if let Some(h) = host.filter(|h| !loopback_host(h)) {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("Host {h:?} is not a loopback name: this daemon listens on loopback; use localhost, 127.0.0.1 or [::1]\n"),
            ));
        }
    }
    if let Some(origin) = header(headers, "origin") {
        let same = host.is_some_and(|h| origin.eq_ignore_ascii_case(&format!("http://{h}")));
        if !same {
            return Err((
                StatusCode::FORBIDDEN,
                format!(
                    "requests from origin {origin:?} are refused: the API serves no web pages\n"
                ),
            ));
        }
    }
    let trusted = carries_token(policy, headers);
    if *method == Method::POST {
        if policy.token.is_some() && !trusted {
            return Err(unauthorized("daemon.api_token"));
        }
        if policy.token.is_none() && !deliberate(headers) {
            return Err((
                StatusCode::FORBIDDEN,
                "POST needs the header `X-Drover-Request: 1` (or Content-Type: application/json), which a browser cannot send cross-site; `drover` sends it\n".into(),
            ));
        }
    } else if policy.for_reads && path != "/health" && !trusted {
        return Err(unauthorized("daemon.api_token_for_reads"));
    }
    Ok(trusted)
}

fn unauthorized(key: &str) -> Refusal {
    (
        StatusCode::UNAUTHORIZED,
        format!("missing or wrong Authorization: Bearer token ({key})\n"),
    )
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap_or("(not text)"))
}

/// A header no cross-site simple request can carry: ours, or a JSON content type.
fn deliberate(headers: &HeaderMap) -> bool {
    let json = header(headers, "content-type").is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    });
    json || header(headers, REQUEST_HEADER).is_some_and(|v| v.trim() == "1")
}

/// Whether the request carries the API token (compared in constant time).
fn carries_token(policy: &Policy, headers: &HeaderMap) -> bool {
    let Some(token) = &policy.token else {
        return false;
    };
    let Some(given) = header(headers, "authorization").and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.expose().as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `localhost`, or a loopback IP literal (`[::1]` bracketed), with or without `:port`.
pub fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, "")) => ip,
            Some((ip, port)) if port_ok(port) => ip,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port_ok(&format!(":{port}")) => name,
            Some(_) => return false,
            None => host,
        }
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

fn port_ok(colon_port: &str) -> bool {
    colon_port
        .strip_prefix(':')
        .is_some_and(|p| p.parse::<u16>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "localhost",
            "LOCALHOST:9187",
            "127.0.0.1",
            "127.0.0.1:9187",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:9187",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9187",
            "localhost.evil.example",
            "10.0.0.1:9187",
            "[::2]:9187",
            "[::1]x",
            "127.0.0.1:port",
            "::1",
            "",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn post_needs_a_deliberate_header_without_a_token() {
        let open = Policy {
            token: None,
            for_reads: false,
            loopback: true,
        };
        let post = |h: &[(&'static str, &str)]| check(&open, &Method::POST, "/x", &headers(h));
        assert_eq!(post(&[]).unwrap_err().0, StatusCode::FORBIDDEN);
        let form = ("content-type", "application/x-www-form-urlencoded");
        assert_eq!(post(&[form]).unwrap_err().0, StatusCode::FORBIDDEN);
        assert_eq!(post(&[("x-drover-request", "1")]), Ok(false));
        assert_eq!(
            post(&[("content-type", "application/json; charset=utf-8")]),
            Ok(false)
        );
        let cross = [("x-drover-request", "1"), ("origin", "http://evil.example")];
        assert_eq!(post(&cross).unwrap_err().0, StatusCode::FORBIDDEN);
        let same = [
            ("x-drover-request", "1"),
            ("host", "127.0.0.1:9187"),
            ("origin", "http://127.0.0.1:9187"),
        ];
        assert_eq!(post(&same), Ok(false));
    }
}
