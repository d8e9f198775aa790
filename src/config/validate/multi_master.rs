//! Multi-master settings: `[syncs.NAME.table_strategy]` (per-table conflict
//! strategies) and, across sections, that every table it names is in the
//! sync's relgroup and that an interleaving relgroup's `sequence_step`
//! leaves a residue for every master.

use std::collections::BTreeMap;

use super::relgroup::toml_key;
use super::Problems;
use crate::config::choices::{parse_choice, ConflictStrategy, SequenceMode};
use crate::config::model::{Relgroup, SyncConfig};
use crate::config::raw::{Entry, RawSync};
use crate::pg::ident::TableName;

/// `[syncs.NAME.table_strategy]`: each table parsed and given once, each
/// value a strategy. Returns the good entries, and whether all were good
/// (the map itself broken counts as bad). Whether the tables are the
/// relgroup's is checked in [`check_tables`], once relgroups are built.
pub(super) fn table_strategy(
    path: &str,
    entry: &Entry<RawSync>,
    problems: &mut Problems,
) -> (BTreeMap<TableName, ConflictStrategy>, bool) {
    let Some(raw) = &entry.raw.table_strategy else {
        return (BTreeMap::new(), !entry.broken.contains("table_strategy"));
    };
    let mut out = BTreeMap::new();
    let mut spelled: BTreeMap<TableName, &str> = BTreeMap::new();
    let mut ok = true;
    for (text, value) in raw {
        let key = format!("{path}.table_strategy.{}", toml_key(text));
        let strategy = parse_choice::<ConflictStrategy>(&value.0)
            .map_err(|why| problems.push(&key, why))
            .ok();
        let table = match TableName::parse(text) {
            Ok(t) => t,
            Err(e) => {
                problems.push(&key, e);
                ok = false;
                continue;
            }
        };
        if let Some(first) = spelled.get(&table) {
            problems.push(
                &key,
                format!(
                    "table {table} is given twice (also as table_strategy.{})",
                    toml_key(first)
                ),
            );
            ok = false;
            continue;
        }
        spelled.insert(table.clone(), text);
        match strategy {
            Some(s) => {
                out.insert(table, s);
            }
            None => ok = false,
        }
    }
    (out, ok)
}

/// The syncs that loaded, each with its relgroup, when that loaded too.
fn with_relgroups<'a>(
    syncs: &'a BTreeMap<String, Option<SyncConfig>>,
    relgroups: &'a BTreeMap<String, Option<Relgroup>>,
) -> impl Iterator<Item = (&'a String, &'a SyncConfig, &'a Relgroup)> {
    syncs.iter().filter_map(|(name, sync)| {
        let sync = sync.as_ref()?;
        let group = relgroups.get(&sync.relgroup)?.as_ref()?;
        Some((name, sync, group))
    })
}

/// Every `table_strategy` table is one of the relgroup's tables.
pub(super) fn check_tables(
    syncs: &BTreeMap<String, Option<SyncConfig>>,
    relgroups: &BTreeMap<String, Option<Relgroup>>,
    problems: &mut Problems,
) {
    for (name, sync, group) in with_relgroups(syncs, relgroups) {
        for table in sync.table_strategy.keys() {
            if !group.tables.contains(table) {
                problems.push(
                    format!("syncs.{name}.table_strategy.{}", toml_key(&table.to_string())),
                    format!(
                        "table {table} is not in relgroup {:?}'s tables: add it there or remove this entry",
                        sync.relgroup
                    ),
                );
            }
        }
    }
}

/// An interleaving relgroup's `sequence_step` is at least the number of
/// masters of every multi-master sync replicating it.
pub(super) fn check_sequence_steps(
    syncs: &BTreeMap<String, Option<SyncConfig>>,
    relgroups: &BTreeMap<String, Option<Relgroup>>,
    problems: &mut Problems,
) {
    for (name, sync, group) in with_relgroups(syncs, relgroups) {
        let masters = sync.sources.len() as i64;
        match group.sequence_step {
            Some(step) if group.sequence_mode == SequenceMode::Interleave && masters > step => {
                problems.push(
                    format!("relgroups.{}.sequence_step", sync.relgroup),
                    format!(
                        "{step} is less than the {masters} masters of sync {name:?}: each master needs its own residue; set sequence_step to at least {masters}"
                    ),
                );
            }
            _ => {}
        }
    }
}
