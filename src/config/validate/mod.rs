//! Second stage of loading: from raw, shape-checked sections to the
//! [`super::model`] types, checking meaning: required keys, value syntax
//! (`listen`, `sslmode`, table names, the fixed-choice keys), references
//! between sections, duplicates, and that no two syncs write the same table
//! into the same database. Every problem is recorded with its dotted key;
//! nothing stops at the first one. `[daemon]` and `[databases.NAME]` are
//! checked here, relgroups in [`relgroup`], syncs in [`sync`].

mod chain;
mod multi_master;
mod relgroup;
mod sync;
mod timeouts;
mod tls;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;

use super::choices::{
    parse_choice, Choice, ReplicaRoleConfig, DEFAULT_LOG_FORMAT, DEFAULT_REPLICA_ROLE,
};
use super::model::{Config, Daemon, Database, Secret, DEFAULT_LISTEN, DEFAULT_PORT};
use super::raw::{Entry, RawConfig, RawDaemon, RawDatabase};
use super::strict::Str;
use super::{suggest, Problems};

/// Checks `raw` and builds the [`Config`]; `None` if anything is wrong (then
/// `problems` says what), possibly along with problems found earlier.
pub(super) fn validate(raw: RawConfig, path: &Path, problems: &mut Problems) -> Option<Config> {
    let daemon = match &raw.daemon {
        Some(entry) => daemon(entry, problems),
        None => Some(Daemon::default()),
    };
    let databases = build_all(&raw.databases, "databases", problems, database);
    let relgroups = build_all(&raw.relgroups, "relgroups", problems, relgroup::relgroup);
    let ctx = Names {
        databases: raw.databases.keys().map(String::as_str).collect(),
        relgroups: raw.relgroups.keys().map(String::as_str).collect(),
    };
    let syncs = build_all(&raw.syncs, "syncs", problems, |p, name, e, pr| {
        sync::sync(p, name, e, &ctx, pr)
    });
    sync::check_write_conflicts(&syncs, &relgroups, problems);
    multi_master::check_tables(&syncs, &relgroups, problems);
    multi_master::check_sequence_steps(&syncs, &relgroups, problems);
    chain::check_chains(&syncs, &relgroups, problems);
    Some(Config {
        path: path.to_owned(),
        daemon: daemon?,
        databases: complete(databases)?,
        relgroups: complete(relgroups)?,
        syncs: complete(syncs)?,
    })
}

/// Names defined in the file, valid or not (a reference to a broken entry is
/// not reported again as "no such ...").
struct Names<'a> {
    databases: BTreeSet<&'a str>,
    relgroups: BTreeSet<&'a str>,
}

fn build_all<'a, T: Default, M>(
    entries: &'a BTreeMap<String, Entry<T>>,
    section: &str,
    problems: &mut Problems,
    mut build: impl FnMut(&str, &str, &'a Entry<T>, &mut Problems) -> Option<M>,
) -> BTreeMap<String, Option<M>> {
    entries
        .iter()
        .map(|(name, entry)| {
            let path = format!("{section}.{name}");
            let built = if entry.invalid {
                None
            } else {
                build(&path, name, entry, problems)
            };
            (name.clone(), built)
        })
        .collect()
}

fn complete<M>(map: BTreeMap<String, Option<M>>) -> Option<BTreeMap<String, M>> {
    map.into_iter().map(|(k, v)| Some((k, v?))).collect()
}

/// A required key: reports it if absent (and not already reported as
/// broken).
fn required<'a, T, V>(
    path: &str,
    entry: &Entry<T>,
    key: &str,
    value: Option<&'a V>,
    problems: &mut Problems,
) -> Option<&'a V> {
    if value.is_none() && !entry.broken.contains(key) {
        let mut msg = format!("missing required key {key:?}");
        if entry.env_only {
            msg.push_str(&format!(
                " ({path} is set only by environment variables: is its name misspelt?)"
            ));
        }
        problems.push(format!("{path}.{key}"), msg);
    }
    value
}

/// A string that must not be empty.
fn non_empty(
    path: &str,
    key: &str,
    value: Option<&Str>,
    problems: &mut Problems,
) -> Option<String> {
    let s = &value?.0;
    if s.trim().is_empty() {
        problems.push(format!("{path}.{key}"), "must not be empty");
        return None;
    }
    Some(s.clone())
}

/// An optional fixed-choice key: its default when absent (but `None` when
/// present with the wrong type, already reported).
fn choice<T: Choice, R>(
    path: &str,
    entry: &Entry<R>,
    value: Option<&Str>,
    default: T,
    problems: &mut Problems,
) -> Option<T> {
    match value {
        None if entry.broken.contains(T::KEY) => None,
        None => Some(default),
        Some(Str(s)) => parse_choice(s)
            .map_err(|why| problems.push(format!("{path}.{}", T::KEY), why))
            .ok(),
    }
}

/// An environment variable name given as a key's value (`password_env`):
/// reports it if unusable.
fn env_var_name(path: &str, key: &str, var: &str, problems: &mut Problems) -> bool {
    let ok = !var.is_empty() && !var.contains(['=', '\0']);
    if !ok {
        problems.push(
            format!("{path}.{key}"),
            format!("{var:?} is not a valid environment variable name"),
        );
    }
    ok
}

fn daemon(entry: &Entry<RawDaemon>, problems: &mut Problems) -> Option<Daemon> {
    let raw = &entry.raw;
    let listen = listen_address(raw.listen.as_ref(), problems);
    let access = api_access(entry, listen, problems);
    let log_format = choice(
        "daemon",
        entry,
        raw.log_format.as_ref(),
        DEFAULT_LOG_FORMAT,
        problems,
    );
    let lease_timeout = timeouts::lease_timeout(raw.lease_timeout.as_ref(), problems);
    let round = timeouts::round_limits(raw, problems);
    let round_pacing = timeouts::round_pacing(raw.round_pacing.as_ref(), problems);
    let access = access?;
    Some(Daemon {
        listen: listen?,
        api_token: access.api_token,
        api_token_env: access.api_token_env,
        api_token_for_reads: access.api_token_for_reads,
        log_format: log_format?,
        lease_timeout: lease_timeout?,
        lock_timeout: round?.lock_timeout,
        statement_timeout: round?.statement_timeout,
        round_deadline: round?.round_deadline,
        round_pacing: round_pacing?,
        auto_install: raw.auto_install.is_some_and(|b| b.0),
    })
}

/// `daemon.listen`, defaulting to loopback; host names are refused, not resolved.
fn listen_address(listen: Option<&Str>, problems: &mut Problems) -> Option<SocketAddr> {
    match listen {
        None => Some(DEFAULT_LISTEN),
        Some(Str(s)) => match s.trim().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                problems.push(
                    "daemon.listen",
                    format!("{s:?} is not a socket address: expected IP:PORT, e.g. 127.0.0.1:9187 or [::1]:9187 (host names are not resolved)"),
                );
                None
            }
        },
    }
}

/// The `[daemon]` keys guarding the HTTP API.
struct ApiAccess {
    api_token: Option<Secret>,
    api_token_env: Option<String>,
    api_token_for_reads: bool,
}

/// The API token keys: at most one of `api_token` and `api_token_env`, and one of them
/// whenever `listen` is not loopback or reads must carry the token.
fn api_access(
    entry: &Entry<RawDaemon>,
    listen: Option<SocketAddr>,
    problems: &mut Problems,
) -> Option<ApiAccess> {
    let raw = &entry.raw;
    let mut ok = true;
    let api_token = raw.api_token.as_ref().map(|t| Secret::new(t.0.clone()));
    if api_token
        .as_ref()
        .is_some_and(|t| t.expose().trim().is_empty())
    {
        problems.push("daemon.api_token", "must not be empty");
        ok = false;
    }
    let api_token_env = raw.api_token_env.as_ref().map(|v| v.0.clone());
    if let Some(var) = &api_token_env {
        ok &= env_var_name("daemon", "api_token_env", var, problems);
        if api_token.is_some() {
            problems.push(
                "daemon.api_token_env",
                "set either api_token or api_token_env, not both",
            );
            ok = false;
        }
    }
    // A token key that failed its type check was still meant to be given.
    let token_given = api_token.is_some()
        || api_token_env.is_some()
        || entry.broken.contains("api_token")
        || entry.broken.contains("api_token_env");
    if let Some(addr) = listen {
        // An IPv4-mapped IPv6 loopback ([::ffff:127.0.0.1]) is loopback too.
        if !addr.ip().to_canonical().is_loopback() && !token_given {
            problems.push(
                "daemon.api_token",
                format!(
                    "api_token or api_token_env is required because listen = \"{addr}\" is not a loopback address: without a token the POST endpoints (such as /syncs/NAME/kick) would be open to the network"
                ),
            );
            ok = false;
        }
    }
    let api_token_for_reads = raw.api_token_for_reads.is_some_and(|b| b.0);
    if api_token_for_reads && !token_given {
        problems.push(
            "daemon.api_token_for_reads",
            "needs a token: set daemon.api_token or daemon.api_token_env, or remove api_token_for_reads",
        );
        ok = false;
    }
    ok.then_some(ApiAccess {
        api_token,
        api_token_env,
        api_token_for_reads,
    })
}

fn database(
    path: &str,
    _name: &str,
    entry: &Entry<RawDatabase>,
    problems: &mut Problems,
) -> Option<Database> {
    let raw = &entry.raw;
    let host = connection_key(path, entry, "host", raw.host.as_ref(), problems);
    let dbname = connection_key(path, entry, "dbname", raw.dbname.as_ref(), problems);
    let user = connection_key(path, entry, "user", raw.user.as_ref(), problems);
    let mut ok = true;

    let port = match raw.port {
        None => Some(DEFAULT_PORT),
        Some(p) => match u16::try_from(p.0) {
            Ok(port) if port != 0 => Some(port),
            _ => {
                problems.push(
                    format!("{path}.port"),
                    format!("port {} is out of range (1-65535)", p.0),
                );
                None
            }
        },
    };

    let password = raw.password.as_ref().map(|p| Secret::new(p.0.clone()));
    let password_env = raw.password_env.as_ref().map(|v| v.0.clone());
    if let Some(var) = &password_env {
        ok &= env_var_name(path, "password_env", var, problems);
        if password.is_some() {
            problems.push(
                format!("{path}.password_env"),
                "set either password or password_env, not both",
            );
            ok = false;
        }
    }

    let tls = tls::tls_keys(path, raw, problems);
    ok &= tls.is_some();

    let replica_role = match &raw.replica_role {
        None => Some(DEFAULT_REPLICA_ROLE),
        Some(Str(s)) => ReplicaRoleConfig::parse(s)
            .map_err(|why| problems.push(format!("{path}.replica_role"), why))
            .ok(),
    };

    let tls = tls?;
    if !ok {
        return None;
    }
    Some(Database {
        host: host?,
        port: port?,
        dbname: dbname?,
        user: user?,
        password,
        password_env,
        sslmode: tls.sslmode,
        sslrootcert: tls.sslrootcert,
        sslcert: tls.sslcert,
        sslkey: tls.sslkey,
        channel_binding: tls.channel_binding,
        replica_role: replica_role?,
        application_name: raw.application_name.as_ref().map(|s| s.0.clone()),
        sources: raw.sources.clone(),
    })
}

/// `host`, `dbname`, `user`: required after every libpq source was tried; the message
/// lists where drover looked.
fn connection_key(
    path: &str,
    entry: &Entry<RawDatabase>,
    key: &str,
    value: Option<&Str>,
    problems: &mut Problems,
) -> Option<String> {
    if value.is_none() && !entry.broken.contains(key) {
        let mut msg = entry.raw.sources.missing(path, key);
        if entry.env_only {
            msg.push_str(&format!(
                " ({path} is set only by environment variables: is its name misspelt?)"
            ));
        }
        problems.push(format!("{path}.{key}"), msg);
    }
    non_empty(path, key, value, problems)
}

fn not_found(what: &str, name: &str, known: &BTreeSet<&str>) -> String {
    let mut msg = format!("no {what} named {name:?}");
    match suggest(name, known.iter().copied()) {
        Some(s) => msg.push_str(&format!(" (did you mean {s:?}?)")),
        None if known.is_empty() => msg.push_str(" (none is defined)"),
        None => {
            let list: Vec<String> = known.iter().map(|k| format!("{k:?}")).collect();
            msg.push_str(&format!(" (defined: {})", list.join(", ")));
        }
    }
    msg
}
