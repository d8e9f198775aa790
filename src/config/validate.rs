//! Second stage of loading: from raw, shape-checked sections to the
//! [`super::model`] types, checking meaning: required keys, value syntax
//! (`listen`, `sslmode`, table names), references between sections,
//! duplicates, and that no two syncs write the same table into the same
//! database. Every problem is recorded with its dotted key; nothing stops at
//! the first one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::model::{
    Config, Daemon, Database, Relgroup, Secret, SyncConfig, DEFAULT_LISTEN, DEFAULT_PORT,
    DEFAULT_SSLMODE,
};
use super::raw::{Entry, RawConfig, RawDaemon, RawDatabase, RawRelgroup, RawSync};
use super::strict::{Str, StrList};
use super::{suggest, Problems};
use crate::pg::ident::TableName;
use crate::pg::tls::SslMode;

/// How many table names a conflict message lists before "and N more".
const MAX_TABLES_SHOWN: usize = 5;

/// Checks `raw` and builds the [`Config`]; `None` if anything is wrong (then
/// `problems` says what), possibly along with problems found earlier.
pub(super) fn validate(raw: RawConfig, path: &Path, problems: &mut Problems) -> Option<Config> {
    let daemon = match &raw.daemon {
        Some(entry) => daemon(entry, problems),
        None => Some(Daemon::default()),
    };
    let databases = build_all(&raw.databases, "databases", problems, database);
    let relgroups = build_all(&raw.relgroups, "relgroups", problems, relgroup);
    let ctx = Names {
        databases: raw.databases.keys().map(String::as_str).collect(),
        relgroups: raw.relgroups.keys().map(String::as_str).collect(),
    };
    let syncs = build_all(&raw.syncs, "syncs", problems, |p, name, e, pr| {
        sync(p, name, e, &ctx, pr)
    });
    check_write_conflicts(&syncs, &relgroups, problems);
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

fn daemon(entry: &Entry<RawDaemon>, problems: &mut Problems) -> Option<Daemon> {
    let listen = match &entry.raw.listen {
        None => DEFAULT_LISTEN,
        Some(Str(s)) => match s.trim().parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                problems.push(
                    "daemon.listen",
                    format!("{s:?} is not a socket address: expected IP:PORT, e.g. 127.0.0.1:9187 or [::1]:9187 (host names are not resolved)"),
                );
                return None;
            }
        },
    };
    Some(Daemon { listen })
}

fn database(
    path: &str,
    _name: &str,
    entry: &Entry<RawDatabase>,
    problems: &mut Problems,
) -> Option<Database> {
    let raw = &entry.raw;
    let host = required(path, entry, "host", raw.host.as_ref(), problems);
    let host = non_empty(path, "host", host, problems);
    let dbname = required(path, entry, "dbname", raw.dbname.as_ref(), problems);
    let dbname = non_empty(path, "dbname", dbname, problems);
    let user = required(path, entry, "user", raw.user.as_ref(), problems);
    let user = non_empty(path, "user", user, problems);
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
        if var.is_empty() || var.contains(['=', '\0']) {
            problems.push(
                format!("{path}.password_env"),
                format!("{var:?} is not a valid environment variable name"),
            );
            ok = false;
        }
        if password.is_some() {
            problems.push(
                format!("{path}.password_env"),
                "set either password or password_env, not both",
            );
            ok = false;
        }
    }

    let sslmode = match &raw.sslmode {
        None => Some(DEFAULT_SSLMODE),
        Some(Str(s)) => match parse_sslmode(s) {
            Ok(mode) => Some(mode),
            Err(why) => {
                problems.push(format!("{path}.sslmode"), why);
                None
            }
        },
    };
    let sslrootcert = match &raw.sslrootcert {
        None => None,
        Some(Str(s)) if s.trim().is_empty() => {
            problems.push(format!("{path}.sslrootcert"), "must not be empty");
            ok = false;
            None
        }
        Some(Str(s)) => {
            if sslmode == Some(SslMode::Disable) {
                problems.push(
                    format!("{path}.sslrootcert"),
                    "is set but sslmode is \"disable\", so no certificate would be checked: remove it or use sslmode \"verify-full\"",
                );
                ok = false;
            }
            Some(PathBuf::from(s))
        }
    };

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
        sslmode: sslmode?,
        sslrootcert,
    })
}

/// Parses an `sslmode` value with [`SslMode`]'s own serde names, so the list
/// of accepted values is whatever the TLS module defines.
fn parse_sslmode(s: &str) -> Result<SslMode, String> {
    let de = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s);
    SslMode::deserialize(de).map_err(|e| {
        let e = e.to_string();
        match e.split_once(", expected ") {
            Some((_, expected)) => format!("invalid sslmode {s:?}, expected {expected}"),
            None => format!("invalid sslmode {s:?}: {e}"),
        }
    })
}

fn relgroup(
    path: &str,
    _name: &str,
    entry: &Entry<RawRelgroup>,
    problems: &mut Problems,
) -> Option<Relgroup> {
    let StrList(list) = required(path, entry, "tables", entry.raw.tables.as_ref(), problems)?;
    if list.is_empty() {
        problems.push(format!("{path}.tables"), "must list at least one table");
        return None;
    }
    let mut tables = Vec::new();
    let mut seen: BTreeMap<TableName, (usize, &str)> = BTreeMap::new();
    let mut ok = true;
    for (i, text) in list.iter().enumerate() {
        let key = format!("{path}.tables[{i}]");
        match TableName::parse(text) {
            Err(e) => {
                problems.push(key, e);
                ok = false;
            }
            Ok(table) => {
                if let Some((j, first)) = seen.get(&table) {
                    let also = if first == text {
                        format!("tables[{j}]")
                    } else {
                        format!("tables[{j}] as {first:?}")
                    };
                    problems.push(key, format!("table {table} is listed twice (also {also})"));
                    ok = false;
                } else {
                    seen.insert(table.clone(), (i, text));
                    tables.push(table);
                }
            }
        }
    }
    ok.then_some(Relgroup { tables })
}

fn sync(
    path: &str,
    _name: &str,
    entry: &Entry<RawSync>,
    names: &Names<'_>,
    problems: &mut Problems,
) -> Option<SyncConfig> {
    let raw = &entry.raw;
    let mut ok = true;
    let relgroup = required(path, entry, "relgroup", raw.relgroup.as_ref(), problems);
    let relgroup = non_empty(path, "relgroup", relgroup, problems);
    if let Some(g) = &relgroup {
        if !names.relgroups.contains(g.as_str()) {
            problems.push(
                format!("{path}.relgroup"),
                not_found("relgroup", g, &names.relgroups),
            );
            ok = false;
        }
    }
    let sources = required(path, entry, "sources", raw.sources.as_ref(), problems);
    if let Some(StrList(list)) = sources {
        if list.is_empty() {
            problems.push(format!("{path}.sources"), "must list at least one database");
            ok = false;
        }
    }
    let targets = raw.targets.clone().unwrap_or_default();
    let sources = sources.cloned();

    // Every listed database: defined, listed once, in one role.
    let empty = StrList::default();
    let mut seen: BTreeMap<&str, String> = BTreeMap::new();
    for (field, list) in [
        ("sources", sources.as_ref().unwrap_or(&empty)),
        ("targets", &targets),
    ] {
        for (i, db) in list.0.iter().enumerate() {
            let key = format!("{path}.{field}[{i}]");
            if !names.databases.contains(db.as_str()) {
                problems.push(&key, not_found("database", db, &names.databases));
                ok = false;
            }
            match seen.get(db.as_str()) {
                Some(first) if first.starts_with(field) => {
                    problems.push(
                        &key,
                        format!("database {db:?} is listed twice (also {first})"),
                    );
                    ok = false;
                }
                Some(first) => {
                    problems.push(
                        &key,
                        format!("database {db:?} is both a source and a target ({first})"),
                    );
                    ok = false;
                }
                None => {
                    seen.insert(db, format!("{field}[{i}]"));
                }
            }
        }
    }
    if sources.as_ref().is_some_and(|s| !s.0.is_empty()) && seen.len() < 2 {
        let dbs: Vec<String> = seen.keys().map(|d| format!("{d:?}")).collect();
        problems.push(
            path,
            format!(
                "a sync needs at least two distinct databases among sources and targets, found {}: {}",
                seen.len(),
                dbs.join(", ")
            ),
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    Some(SyncConfig {
        relgroup: relgroup?,
        sources: sources?.0,
        targets: targets.0,
    })
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

/// Two syncs must not write the same table into the same database: their
/// changes would race with no conflict resolution between them. A sync
/// writes into its targets, and into its sources when it has several
/// (multi-master). Reported once per pair of syncs and database, on the
/// later sync.
fn check_write_conflicts(
    syncs: &BTreeMap<String, Option<SyncConfig>>,
    relgroups: &BTreeMap<String, Option<Relgroup>>,
    problems: &mut Problems,
) {
    // (database, table) -> first sync writing it.
    let mut writers: BTreeMap<(&str, &TableName), &str> = BTreeMap::new();
    for (name, sync) in syncs {
        let Some(sync) = sync else { continue };
        let Some(Some(group)) = relgroups.get(&sync.relgroup) else {
            continue;
        };
        for db in sync.written_databases() {
            // Other sync -> tables both write into `db`.
            let mut clashes: BTreeMap<&str, Vec<&TableName>> = BTreeMap::new();
            for table in &group.tables {
                match writers.get(&(db, table)) {
                    Some(&other) if other != name.as_str() => {
                        clashes.entry(other).or_default().push(table);
                    }
                    Some(_) => {}
                    None => {
                        writers.insert((db, table), name);
                    }
                }
            }
            for (other, tables) in clashes {
                let key = field_of(name, sync, db);
                let mut shown: Vec<String> = tables
                    .iter()
                    .take(MAX_TABLES_SHOWN)
                    .map(|t| t.to_string())
                    .collect();
                if tables.len() > MAX_TABLES_SHOWN {
                    shown.push(format!("and {} more", tables.len() - MAX_TABLES_SHOWN));
                }
                problems.push(
                    key,
                    format!(
                        "syncs {other:?} and {name:?} both write into database {db:?} the same table{}: {}",
                        if tables.len() == 1 { "" } else { "s" },
                        shown.join(", ")
                    ),
                );
            }
        }
    }
}

/// Dotted key where `db` appears in `sync` (as a target, else as a source).
fn field_of(name: &str, sync: &SyncConfig, db: &str) -> String {
    if let Some(i) = sync.targets.iter().position(|t| t == db) {
        format!("syncs.{name}.targets[{i}]")
    } else if let Some(i) = sync.sources.iter().position(|s| s == db) {
        format!("syncs.{name}.sources[{i}]")
    } else {
        format!("syncs.{name}")
    }
}
