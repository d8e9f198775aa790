//! `[syncs.NAME]`: references to databases and the relgroup, each
//! database in one role, the conflict strategy with its `priority` list,
//! `initial_copy`; then, across syncs, that no two write the same table into
//! the same database.

use std::collections::BTreeMap;

use super::multi_master::table_strategy;
use super::relgroup::toml_key;
use super::{choice, non_empty, not_found, required, Names, Problems};
use crate::config::choices::{ConflictStrategy, DEFAULT_CONFLICT_STRATEGY, DEFAULT_INITIAL_COPY};
use crate::config::model::{Relgroup, SyncConfig};
use crate::config::raw::{Entry, RawSync};
use crate::config::strict::StrList;
use crate::pg::ident::TableName;

/// How many table names a conflict message lists before "and N more".
pub(super) const MAX_TABLES_SHOWN: usize = 5;

pub(super) fn sync(
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

    ok &= database_roles(path, sources.as_ref(), &targets, names, problems);
    let conflict_strategy = choice(
        path,
        entry,
        raw.conflict_strategy.as_ref(),
        DEFAULT_CONFLICT_STRATEGY,
        problems,
    );
    let (table_strategy, strategies_ok) = table_strategy(path, entry, problems);
    let priority = priority(
        path,
        entry,
        conflict_strategy,
        (&table_strategy, strategies_ok),
        sources.as_ref(),
        &targets,
        problems,
    );
    let initial_copy = choice(
        path,
        entry,
        raw.initial_copy.as_ref(),
        DEFAULT_INITIAL_COPY,
        problems,
    );
    if !ok || !strategies_ok {
        return None;
    }
    Some(SyncConfig {
        relgroup: relgroup?,
        sources: sources?.0,
        targets: targets.0,
        conflict_strategy: conflict_strategy?,
        priority: priority?,
        initial_copy: initial_copy?,
        table_strategy,
    })
}

/// `priority`: required (non-empty) with the `priority` strategy, for the
/// sync or for a table (`table_strategy`), and not allowed without; every
/// entry one of `sources`, each once. Not checked against a strategy or
/// sources that are themselves broken.
fn priority(
    path: &str,
    entry: &Entry<RawSync>,
    strategy: Option<ConflictStrategy>,
    (tables, tables_ok): (&BTreeMap<TableName, ConflictStrategy>, bool),
    sources: Option<&StrList>,
    targets: &StrList,
    problems: &mut Problems,
) -> Option<Vec<String>> {
    let key = format!("{path}.priority");
    let given = entry.raw.priority.as_ref();
    if entry.broken.contains("priority") {
        return None;
    }
    // The first table whose strategy is `priority`, if any.
    let by_table = tables
        .iter()
        .find(|(_, s)| **s == ConflictStrategy::Priority)
        .map(|(t, _)| t);
    match (strategy, given) {
        (None, _) => return None,
        (Some(s), None) if s != ConflictStrategy::Priority => {
            if let Some(table) = by_table {
                problems.push(
                    format!("{path}.table_strategy.{}", toml_key(&table.to_string())),
                    "\"priority\" needs the sync's priority list: add priority = [...] to this sync, the sources in order of precedence, first wins",
                );
                return None;
            }
            return Some(Vec::new());
        }
        (Some(ConflictStrategy::Priority), None) => {
            problems.push(
                key,
                "missing required key \"priority\": conflict_strategy = \"priority\" needs the sources in order of precedence, first wins",
            );
            return None;
        }
        (Some(ConflictStrategy::Priority), Some(StrList(list))) if list.is_empty() => {
            problems.push(key, "must list at least one source");
            return None;
        }
        (Some(ConflictStrategy::Priority), Some(_)) => {}
        (Some(_), None) => return Some(Vec::new()),
        (Some(_), Some(StrList(list))) if list.is_empty() && by_table.is_some() => {
            problems.push(key, "must list at least one source");
            return None;
        }
        // Used by a table's strategy, or maybe by one that is broken (already reported).
        (Some(_), Some(_)) if by_table.is_some() || !tables_ok => {}
        (Some(other), Some(_)) => {
            problems.push(
                key,
                format!(
                    "is only used with conflict_strategy = \"priority\" (this sync's is {:?}) or a table_strategy of \"priority\": remove it or set conflict_strategy = \"priority\"",
                    other.as_str()
                ),
            );
            return None;
        }
    }
    let list = &given?.0;
    priority_entries(&key, list, sources, targets, problems).then(|| list.clone())
}

/// Every database listed in `sources` and `targets`: defined, listed once, in one role; and
/// at least two distinct ones once sources are given. False if any of that fails.
fn database_roles(
    path: &str,
    sources: Option<&StrList>,
    targets: &StrList,
    names: &Names<'_>,
    problems: &mut Problems,
) -> bool {
    let mut ok = true;
    let empty = StrList::default();
    let mut seen: BTreeMap<&str, String> = BTreeMap::new();
    for (field, list) in [("sources", sources.unwrap_or(&empty)), ("targets", targets)] {
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
    if sources.is_some_and(|s| !s.0.is_empty()) && seen.len() < 2 {
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
    ok
}

/// Each `priority` entry: listed once, and one of the sync's sources (when those are valid).
fn priority_entries(
    key: &str,
    list: &[String],
    sources: Option<&StrList>,
    targets: &StrList,
    problems: &mut Problems,
) -> bool {
    let mut ok = true;
    for (i, db) in list.iter().enumerate() {
        let key = format!("{key}[{i}]");
        if let Some(j) = list[..i].iter().position(|d| d == db) {
            problems.push(
                key,
                format!("database {db:?} is listed twice (also priority[{j}])"),
            );
            ok = false;
            continue;
        }
        let Some(StrList(sources)) = sources else {
            continue;
        };
        if !sources.contains(db) {
            let why = if targets.0.contains(db) {
                "it is a target, and only sources' changes can conflict".to_owned()
            } else {
                let listed: Vec<String> = sources.iter().map(|s| format!("{s:?}")).collect();
                format!("sources: {}", listed.join(", "))
            };
            problems.push(key, format!("{db:?} is not a source of this sync ({why})"));
            ok = false;
        }
    }
    ok
}

/// Two syncs must not write the same table (or sequence) into the same
/// database: their changes would race with no conflict resolution between
/// them. A sync
/// writes into its targets, and into its sources when it has several
/// (multi-master). Reported once per pair of syncs and database, on the
/// later sync.
pub(super) fn check_write_conflicts(
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
            for table in group.tables.iter().chain(&group.sequences) {
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
                // "relation" (PostgreSQL's word) once sequences are involved.
                let noun = if tables.iter().any(|t| group.sequences.contains(t)) {
                    "relation"
                } else {
                    "table"
                };
                problems.push(
                    key,
                    format!(
                        "syncs {other:?} and {name:?} both write into database {db:?} the same {noun}{}: {}",
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
