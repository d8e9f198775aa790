//! `postgresql://` and `postgres://` URIs as libpq parses them: `user:password@` (percent-
//! decoded), one host (a name, an IPv4 address, `[IPv6]`, or a percent-encoded socket
//! directory), `:port`, `/dbname` and `?key=value&...` parameters, all percent-decoded.
//! Several hosts (`h1,h2`) are refused: drover connects to one server per database.

use super::Pairs;
/// The keyword/value pairs of `uri`, in libpq's keyword names; empty parts are left out.
pub(super) fn parse(uri: &str) -> Result<Pairs, String> {
    let rest = ["postgresql://", "postgres://"]
        .iter()
        .find_map(|scheme| uri.strip_prefix(scheme))
        .ok_or("expected a URI starting with postgresql:// or postgres://")?;
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let mut pairs = Vec::new();
    let hostport = match authority.rfind('@') {
        Some(at) => {
            let (user, password) = match authority[..at].split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (&authority[..at], None),
            };
            push(&mut pairs, "user", user)?;
            if let Some(p) = password {
                push(&mut pairs, "password", p)?;
            }
            &authority[at + 1..]
        }
        None => authority,
    };
    host_port(hostport, &mut pairs)?;
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    if let Some(dbname) = path.strip_prefix('/') {
        push(&mut pairs, "dbname", dbname)?;
    }
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = param
            .split_once('=')
            .ok_or_else(|| format!("missing \"=\" in URI parameter {:?}", decode_lossy(param)))?;
        pairs.push((decode(key)?, decode(value)?));
    }
    Ok(pairs)
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn host_port(s: &str, pairs: &mut Pairs) -> Result<(), String> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or("IPv6 host address is missing its closing \"]\"")?;
        if host.is_empty() {
            return Err("IPv6 host address is empty (\"[]\")".into());
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(format!(
                "unexpected {p:?} after the IPv6 host address (expected \":PORT\")"
            ))?),
        };
        (host, port)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.contains(',') || port.is_some_and(|p| p.contains(',')) {
        return Err("several hosts are not supported: give one host per database".into());
    }
    push(pairs, "host", host)?;
    if let Some(port) = port {
        push(pairs, "port", port)?;
    }
    Ok(())
}

fn push(pairs: &mut Pairs, key: &str, raw: &str) -> Result<(), String> {
    let value = decode(raw)?;
    if !value.is_empty() {
        pairs.push((key.to_owned(), value));
    }
    Ok(())
}

/// Percent-decoding; `%00` and malformed escapes are errors, as in libpq.
pub(super) fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("invalid percent-encoded token in {:?}", decode_lossy(s)))?;
            if byte == 0 {
                return Err("forbidden value %00 in percent-encoded value".into());
            }
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-encoded value is not valid UTF-8".into())
}

/// For messages: the text without any password-looking part (never echo a secret).
fn decode_lossy(s: &str) -> String {
    s.chars().take(40).collect()
}
