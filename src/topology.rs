//! The replication topology derived from the config: for each sync, its tables and which
//! databases send and receive. Install, check and the daemon all read the same picture.

use std::collections::BTreeMap;

use crate::config::{Config, ConflictStrategy, InitialCopy, SequenceMode};
use crate::pg::ident::TableName;
use crate::round::copy::CopyMode;
use crate::round::resolve::{Strategies, Strategy};

#[derive(Debug, Clone, PartialEq)]
pub struct SyncPlan {
    pub name: String,
    pub relgroup: String,
    pub tables: Vec<TableName>,
    /// Sequences whose values follow the source (one-source syncs).
    pub sequences: Vec<TableName>,
    /// Key columns named in the config (`[relgroups.X.keys]`), for tables without a usable key.
    pub keys: std::collections::BTreeMap<TableName, Vec<String>>,
    /// Columns whose changes are sent as increments (`[relgroups.X.delta_columns]`).
    pub delta_columns: BTreeMap<TableName, Vec<String>>,
    /// Masters: their changes are captured and shipped.
    pub sources: Vec<String>,
    /// Receive-only databases.
    pub targets: Vec<String>,
    /// How multi-master conflicts are decided (`conflict_strategy`).
    pub strategy: Strategy,
    /// Per-table overrides of `strategy` (`table_strategy`).
    pub table_strategy: BTreeMap<TableName, Strategy>,
    /// `sequence_mode` of the relgroup.
    pub sequence_mode: SequenceMode,
    /// With `interleave`: the `INCREMENT BY` of every master's sequences (the relgroup's
    /// `sequence_step`, else the number of masters).
    pub sequence_step: i64,
    /// Whether receive-only tables start with a copy from the first source.
    pub initial_copy: CopyMode,
}

impl SyncPlan {
    /// Every database of the sync, sources first.
    pub fn databases(&self) -> impl Iterator<Item = &str> {
        self.sources
            .iter()
            .chain(self.targets.iter())
            .map(String::as_str)
    }

    /// The databases that receive `source`'s changes: all others of the sync.
    pub fn receivers_of<'a>(&'a self, source: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.databases().filter(move |d| *d != source)
    }

    /// The sources whose changes `db` receives.
    pub fn senders_to<'a>(&'a self, db: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.sources
            .iter()
            .map(String::as_str)
            .filter(move |s| *s != db)
    }

    pub fn is_source(&self, db: &str) -> bool {
        self.sources.iter().any(|s| s == db)
    }

    /// The configured key of a table, if any.
    pub fn key_of(&self, table: &TableName) -> Option<&[String]> {
        self.keys.get(table).map(Vec::as_slice)
    }

    pub fn involves(&self, db: &str) -> bool {
        self.databases().any(|d| d == db)
    }

    /// The strategy deciding conflicts on `table`.
    pub fn strategy_for(&self, table: &TableName) -> &Strategy {
        self.table_strategy.get(table).unwrap_or(&self.strategy)
    }

    /// Every table's strategy, for the round.
    pub fn strategies(&self) -> Strategies {
        Strategies {
            default: self.strategy.clone(),
            tables: self
                .table_strategy
                .iter()
                .map(|(t, s)| (t.to_string(), s.clone()))
                .collect(),
        }
    }

    /// Whether the masters' sequences are interleaved (not copied between masters).
    pub fn interleaves(&self) -> bool {
        self.sequence_mode == SequenceMode::Interleave && self.sources.len() > 1
    }
}

fn strategy(s: ConflictStrategy, priority: &[String]) -> Strategy {
    match s {
        ConflictStrategy::Latest => Strategy::Latest,
        ConflictStrategy::Priority => Strategy::Priority(priority.to_vec()),
        ConflictStrategy::Abort => Strategy::Abort,
        ConflictStrategy::Skip => Strategy::Skip,
    }
}

/// The syncs of a validated config, in name order.
pub fn syncs(config: &Config) -> Vec<SyncPlan> {
    config
        .syncs
        .iter()
        .map(|(name, s)| (name, s, config.relgroups.get(&s.relgroup)))
        .map(|(name, s, group)| SyncPlan {
            name: name.clone(),
            relgroup: s.relgroup.clone(),
            tables: config
                .relgroups
                .get(&s.relgroup)
                .map(|r| r.tables.clone())
                .unwrap_or_default(),
            sequences: config
                .relgroups
                .get(&s.relgroup)
                .map(|r| r.sequences.clone())
                .unwrap_or_default(),
            keys: config
                .relgroups
                .get(&s.relgroup)
                .map(|r| r.keys.clone())
                .unwrap_or_default(),
            delta_columns: group.map(|r| r.delta_columns.clone()).unwrap_or_default(),
            sources: s.sources.clone(),
            targets: s.targets.clone(),
            strategy: strategy(s.conflict_strategy, &s.priority),
            table_strategy: s
                .table_strategy
                .iter()
                .map(|(t, c)| (t.clone(), strategy(*c, &s.priority)))
                .collect(),
            sequence_mode: group.map_or(SequenceMode::Follow, |r| r.sequence_mode),
            sequence_step: group
                .and_then(|r| r.sequence_step)
                .unwrap_or(s.sources.len() as i64),
            initial_copy: match s.initial_copy {
                InitialCopy::Never => CopyMode::Never,
                InitialCopy::IfEmpty => CopyMode::IfEmpty,
                InitialCopy::Always => CopyMode::Always,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_table_strategies_and_interleaving() {
        let text = r#"
            [databases.a]
            host = "h"
            dbname = "a"
            user = "u"
            [databases.b]
            host = "h"
            dbname = "b"
            user = "u"
            [relgroups.g]
            tables = ["t1", "t2"]
            sequences = ["s"]
            sequence_mode = "interleave"
            [syncs.mm]
            relgroup = "g"
            sources = ["a", "b"]
            priority = ["b"]
            [syncs.mm.table_strategy]
            t2 = "priority"
        "#;
        let config = crate::config::load_from_str(text, std::path::Path::new("t.toml")).unwrap();
        let plan = &syncs(&config)[0];
        let (t1, t2) = (
            TableName::new("public", "t1"),
            TableName::new("public", "t2"),
        );
        assert_eq!(plan.strategy_for(&t1), &Strategy::Latest);
        assert_eq!(
            plan.strategy_for(&t2),
            &Strategy::Priority(vec!["b".into()])
        );
        let all = plan.strategies();
        assert_eq!(all.for_table("public.t2"), plan.strategy_for(&t2));
        assert_eq!(all.for_table("public.t1"), &Strategy::Latest);
        assert!(plan.interleaves());
        assert_eq!(plan.sequence_step, 2);
    }
}
