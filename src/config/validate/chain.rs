//! Chains: a database that receives a table from one sync and is a source of the same table
//! in another (a -> b -> c). The first sync applies on b with its capture silenced
//! (`session_replication_role` or the `drover.origin` guard), so those changes would never
//! reach c: refused here, so `check` and `run` report it before anything runs. A multi-master
//! sync (several sources in one sync) is not a chain: it ships every source's own changes.

use std::collections::BTreeMap;

use super::super::model::{Relgroup, SyncConfig};
use super::super::Problems;
use super::sync::MAX_TABLES_SHOWN;
use crate::pg::ident::TableName;

/// Reports, on each source of a sync, the tables another sync writes into that database.
pub(super) fn check_chains(
    syncs: &BTreeMap<String, Option<SyncConfig>>,
    relgroups: &BTreeMap<String, Option<Relgroup>>,
    problems: &mut Problems,
) {
    let tables_of = |sync: &SyncConfig| match relgroups.get(&sync.relgroup) {
        Some(Some(group)) => Some(&group.tables),
        _ => None,
    };
    let valid = || syncs.iter().filter_map(|(n, s)| Some((n, s.as_ref()?)));
    for (name, sync) in valid() {
        let Some(sent) = tables_of(sync) else {
            continue;
        };
        for (i, db) in sync.sources.iter().enumerate() {
            for (other, feeder) in valid().filter(|(n, _)| *n != name) {
                if !feeder.written_databases().any(|w| w == db) {
                    continue;
                }
                let Some(received) = tables_of(feeder) else {
                    continue;
                };
                let both: Vec<&TableName> = sent.iter().filter(|t| received.contains(t)).collect();
                // Two syncs writing one table into one database are refused already
                // (`sync::check_write_conflicts`); a chain on top of that adds nothing.
                let rivals = sync
                    .written_databases()
                    .any(|w| feeder.written_databases().any(|f| f == w));
                if !both.is_empty() && !rivals {
                    problems.push(
                        format!("syncs.{name}.sources[{i}]"),
                        message(db, other, name, &both),
                    );
                }
            }
        }
    }
}

fn message(db: &str, feeder: &str, sync: &str, tables: &[&TableName]) -> String {
    let mut shown: Vec<String> = tables
        .iter()
        .take(MAX_TABLES_SHOWN)
        .map(|t| t.to_string())
        .collect();
    if tables.len() > MAX_TABLES_SHOWN {
        shown.push(format!("and {} more", tables.len() - MAX_TABLES_SHOWN));
    }
    let (noun, owner) = if tables.len() == 1 {
        ("table", "its")
    } else {
        ("tables", "their")
    };
    format!(
        "database {db:?} receives {noun} {} from sync {feeder:?} and is {owner} source in sync \
         {sync:?}: what {feeder:?} applies on {db:?} is not captured again and would stop there; \
         cascading replication (a chain a -> b -> c) is not supported (there is no makedelta \
         option as in Bucardo): replicate from the original source instead (list the next \
         database as a target of {feeder:?}), or join the databases in one multi-master sync",
        shown.join(", ")
    )
}
