//! libpq's connection conventions for `[databases.NAME]`: a `url` (`postgresql://...`) or a
//! `conninfo` string, a `service` from `pg_service.conf`, and the `PGHOST`-style environment,
//! each filling the connection keys the entry leaves unset.
//!
//! Precedence, highest first: the key itself (from the file or its `DROVER__...` override),
//! then `url`/`conninfo`, then the service file, then libpq's environment variables, then
//! drover's default. Service before environment is libpq's own order ("a service file
//! setting overrides the corresponding environment variable"), see [`LAYER_ORDER`].
//! Values taken here are checked by `validate` like the keys themselves; a problem with one
//! names where it came from.

mod conninfo;
mod service;
#[cfg(test)]
mod tests;
mod url;

use std::fmt;
use std::path::PathBuf;

use super::raw::{Entry, RawConfig, RawDatabase};
use super::strict::{Int, SecretStr, Str};
use super::{env_var_for, Problems};

/// Keyword/value pairs from a url, conninfo string or service section, in order.
pub(super) type Pairs = Vec<(String, String)>;

/// Reads one environment variable; injected so that tests need not touch the process's.
pub(super) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, as a [`Lookup`] (unset, empty and non-UTF-8 count as unset).
pub(super) fn process_env(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

/// The connection keys libpq's sources may fill, with libpq's environment variable for each.
pub(super) const SETTINGS: &[(&str, &str)] = &[
    ("host", "PGHOST"),
    ("port", "PGPORT"),
    ("dbname", "PGDATABASE"),
    ("user", "PGUSER"),
    ("password", "PGPASSWORD"),
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("channel_binding", "PGCHANNELBINDING"),
    ("application_name", "PGAPPNAME"),
];

/// Keys drover itself defaults when no source sets them.
const DEFAULTED: &[&str] = &["port", "sslmode", "channel_binding"];

/// Kinds of lower layers, in precedence order. libpq puts the service file above the
/// environment; swapping the last two here is the one change to reverse that.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layer {
    Url,
    Service,
    Env,
}
const LAYER_ORDER: [Layer; 3] = [Layer::Url, Layer::Service, Layer::Env];

/// Where one connection setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The key in the file (`host`).
    Key(String),
    /// drover's override variable (`DROVER__DATABASES__A__HOST`).
    DroverEnv(String),
    /// The variable named by `password_env`.
    PasswordEnv(String),
    /// The `url` or `conninfo` key.
    Url(&'static str),
    /// A `pg_service.conf` section.
    Service { name: String, file: PathBuf },
    /// A libpq environment variable (`PGHOST`).
    Env(&'static str),
    /// drover's default.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Key(k) => write!(f, "key {k}"),
            Source::DroverEnv(v) => write!(f, "env {v}"),
            Source::PasswordEnv(v) => write!(f, "env {v} (password_env)"),
            Source::Url(k) => write!(f, "{k}"),
            Source::Service { name, file } => write!(f, "service {name} ({})", file.display()),
            Source::Env(v) => write!(f, "{v}"),
            Source::Default => write!(f, "default"),
        }
    }
}

/// Where each connection setting of one database came from, for `drover check`. Holds no
/// values: printing it never shows the password.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectionSources {
    /// Setting name and its source, in [`SETTINGS`] order; unset optional settings are absent.
    pub settings: Vec<(&'static str, Source)>,
    /// The lower layers consulted, e.g. `url`, `service x (/etc/pg_service.conf)`.
    pub layers: Vec<String>,
}

impl ConnectionSources {
    /// One line per setting: `host: PGHOST`, `password: found (service x (FILE))`.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .settings
            .iter()
            .map(|(key, source)| match *key {
                "password" => format!("password: found ({source})"),
                _ => format!("{key}: {source}"),
            })
            .collect();
        if !self.settings.iter().any(|(k, _)| *k == "password") {
            lines.push(
                "password: none in the configuration (~/.pgpass or PGPASSFILE is tried when connecting)"
                    .into(),
            );
        }
        lines
    }

    /// The message for a connection key no source set: every place looked in.
    pub(super) fn missing(&self, path: &str, key: &str) -> String {
        let mut looked = vec![format!("key {key}"), env_var_for(&format!("{path}.{key}"))];
        looked.extend(self.layers.iter().cloned());
        looked.extend(env_of(key).map(str::to_owned));
        format!(
            "missing required key {key:?}: no value in any source (looked in: {})",
            looked.join(", ")
        )
    }
}

fn env_of(key: &str) -> Option<&'static str> {
    SETTINGS.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// Fills every database entry's unset connection keys from its lower layers.
pub(super) fn fill(raw: &mut RawConfig, problems: &mut Problems, env: Lookup) {
    for (name, entry) in raw.databases.iter_mut() {
        if !entry.invalid {
            fill_entry(&format!("databases.{name}"), entry, problems, env);
        }
    }
}

/// One lower layer: its kind, how a value from it is described, its pairs.
struct Found {
    layer: Layer,
    source: Source,
    pairs: Pairs,
}

fn fill_entry(path: &str, entry: &mut Entry<RawDatabase>, problems: &mut Problems, env: Lookup) {
    let mut found = Vec::new();
    let url = url_layer(path, &entry.raw, problems);
    let service = service_name(path, entry, url.as_ref(), problems, env);
    found.extend(url);
    if let Some((name, named_by)) = service {
        match service::find(&name, env) {
            Ok(s) => found.push(Found {
                layer: Layer::Service,
                source: Source::Service { name, file: s.file },
                pairs: checked(path, "service", &s.pairs, problems),
            }),
            Err(why) => problems.push(format!("{path}.service"), format!("{why}{named_by}")),
        }
    }
    for (key, var) in SETTINGS {
        if let Some(value) = env(var) {
            found.push(Found {
                layer: Layer::Env,
                source: Source::Env(var),
                pairs: vec![((*key).to_owned(), value)],
            });
        }
    }
    found.sort_by_key(|f| LAYER_ORDER.iter().position(|l| *l == f.layer));
    let mut sources = ConnectionSources {
        layers: found
            .iter()
            .filter(|f| f.layer != Layer::Env)
            .map(|f| f.source.to_string())
            .collect(),
        ..ConnectionSources::default()
    };
    for (key, _) in SETTINGS {
        if let Some(source) = explicit(path, entry, key, problems) {
            sources.settings.push((key, source));
            continue;
        }
        let from = found.iter().find_map(|f| {
            let (_, v) = f.pairs.iter().rev().find(|(k, _)| k == key)?;
            Some((v.clone(), f.source.clone()))
        });
        match from {
            Some((value, source)) => {
                set(path, &mut entry.raw, key, value, &source, problems);
                problems
                    .origins
                    .insert(format!("{path}.{key}"), source.to_string());
                sources.settings.push((key, source));
            }
            None if DEFAULTED.contains(key) => sources.settings.push((key, Source::Default)),
            None => {}
        }
    }
    drop_unused_certs(path, &mut entry.raw, &mut sources, problems);
    entry.raw.sources = sources;
}

/// With `sslmode = disable` libpq ignores certificate files; drover refuses them when set
/// as keys, but one from `PGSSLROOTCERT` or a service is dropped, as libpq would.
fn drop_unused_certs(
    path: &str,
    raw: &mut RawDatabase,
    sources: &mut ConnectionSources,
    problems: &mut Problems,
) {
    if raw.sslmode.as_ref().map(|s| s.0.as_str()) != Some("disable") {
        return;
    }
    sources.settings.retain(|(key, source)| {
        let filled = !matches!(source, Source::Key(_) | Source::DroverEnv(_));
        let cert = matches!(*key, "sslrootcert" | "sslcert" | "sslkey");
        if filled && cert {
            match *key {
                "sslrootcert" => raw.sslrootcert = None,
                "sslcert" => raw.sslcert = None,
                _ => raw.sslkey = None,
            }
            problems.origins.remove(&format!("{path}.{key}"));
        }
        !(filled && cert)
    });
}

/// The source of `key` when the entry sets it itself (or a broken value was reported).
fn explicit(
    path: &str,
    entry: &Entry<RawDatabase>,
    key: &str,
    problems: &Problems,
) -> Option<Source> {
    let raw = &entry.raw;
    if key == "password" {
        if let Some(var) = &raw.password_env {
            return Some(Source::PasswordEnv(var.0.clone()));
        }
    }
    if !is_set(raw, key) && !entry.broken.contains(key) {
        return None;
    }
    let dotted = format!("{path}.{key}");
    Some(match problems.env_keys.contains(&dotted) {
        true => Source::DroverEnv(env_var_for(&dotted)),
        false => Source::Key(key.to_owned()),
    })
}

/// `url` or `conninfo`, parsed; problems reported under the key.
fn url_layer(path: &str, raw: &RawDatabase, problems: &mut Problems) -> Option<Found> {
    let (key, text) = match (&raw.url, &raw.conninfo) {
        (Some(_), Some(_)) => {
            problems.push(
                format!("{path}.conninfo"),
                "set either url or conninfo, not both",
            );
            return None;
        }
        (Some(Str(u)), None) => ("url", u),
        (None, Some(Str(c))) => ("conninfo", c),
        (None, None) => return None,
    };
    let parsed = match key {
        "url" => url::parse(text),
        _ => conninfo::parse(text),
    };
    match parsed {
        Ok(pairs) => Some(Found {
            layer: Layer::Url,
            source: Source::Url(key),
            pairs: checked(path, key, &pairs, problems),
        }),
        Err(why) => {
            problems.push(format!("{path}.{key}"), why);
            None
        }
    }
}

/// The service to read and, for messages, what named it: `service`, else the url's
/// `service=`, else `PGSERVICE`.
fn service_name(
    path: &str,
    entry: &Entry<RawDatabase>,
    url: Option<&Found>,
    problems: &mut Problems,
    env: Lookup,
) -> Option<(String, String)> {
    if let Some(Str(name)) = &entry.raw.service {
        if name.trim().is_empty() {
            problems.push(format!("{path}.service"), "must not be empty");
            return None;
        }
        return Some((name.clone(), String::new()));
    }
    let from_url = url.and_then(|u| {
        let (_, v) = u.pairs.iter().find(|(k, _)| k == "service")?;
        Some((v.clone(), format!(" (service named by {})", u.source)))
    });
    from_url.or_else(|| Some((env("PGSERVICE")?, " (service named by PGSERVICE)".into())))
}

/// `pairs` without unsupported keywords, each reported under `key` (never echoing a value).
fn checked(
    path: &str,
    key: &str,
    pairs: &[(String, String)],
    problems: &mut Problems,
) -> Vec<(String, String)> {
    let known: Vec<&str> = SETTINGS.iter().map(|(k, _)| *k).collect();
    pairs
        .iter()
        .filter(|(k, _)| {
            let ok = known.contains(&k.as_str()) || (k == "service" && key != "service");
            if !ok {
                problems.push(
                    format!("{path}.{key}"),
                    format!(
                        "unsupported connection parameter {k:?} (drover takes: {}{})",
                        known.join(", "),
                        if key == "service" { "" } else { ", service" }
                    ),
                );
            }
            ok
        })
        .cloned()
        .collect()
}

fn is_set(raw: &RawDatabase, key: &str) -> bool {
    match key {
        "host" => raw.host.is_some(),
        "port" => raw.port.is_some(),
        "dbname" => raw.dbname.is_some(),
        "user" => raw.user.is_some(),
        "password" => raw.password.is_some(),
        "sslmode" => raw.sslmode.is_some(),
        "sslrootcert" => raw.sslrootcert.is_some(),
        "sslcert" => raw.sslcert.is_some(),
        "sslkey" => raw.sslkey.is_some(),
        "channel_binding" => raw.channel_binding.is_some(),
        _ => raw.application_name.is_some(),
    }
}

/// Stores a value from a lower layer in the raw entry, to be checked like the key itself.
fn set(
    path: &str,
    raw: &mut RawDatabase,
    key: &str,
    value: String,
    from: &Source,
    problems: &mut Problems,
) {
    let s = Some(Str(value.clone()));
    match key {
        "host" => raw.host = s,
        "port" => match value.trim().parse::<i64>() {
            Ok(n) => raw.port = Some(Int(n)),
            Err(_) => problems.push(
                format!("{path}.port"),
                format!("{value:?} is not a port number (taken from {from})"),
            ),
        },
        "dbname" => raw.dbname = s,
        "user" => raw.user = s,
        "password" => raw.password = Some(SecretStr(value)),
        "sslmode" => raw.sslmode = s,
        "sslrootcert" => raw.sslrootcert = s,
        "sslcert" => raw.sslcert = s,
        "sslkey" => raw.sslkey = s,
        "channel_binding" => raw.channel_binding = s,
        _ => raw.application_name = s,
    }
}
