//! The replication topology derived from the config: for each sync, its tables and which
//! databases send and receive. Install, check and the daemon all read the same picture.

use crate::config::{Config, ConflictStrategy, InitialCopy};
use crate::pg::ident::TableName;
use crate::round::copy::CopyMode;
use crate::round::resolve::Strategy;

#[derive(Debug, Clone, PartialEq)]
pub struct SyncPlan {
    pub name: String,
    pub relgroup: String,
    pub tables: Vec<TableName>,
    /// Sequences whose values follow the source (one-source syncs).
    pub sequences: Vec<TableName>,
    /// Key columns named in the config (`[relgroups.X.keys]`), for tables without a usable key.
    pub keys: std::collections::BTreeMap<TableName, Vec<String>>,
    /// Masters: their changes are captured and shipped.
    pub sources: Vec<String>,
    /// Receive-only databases.
    pub targets: Vec<String>,
    /// How multi-master conflicts are decided.
    pub strategy: Strategy,
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
}

/// The syncs of a validated config, in name order.
pub fn syncs(config: &Config) -> Vec<SyncPlan> {
    config
        .syncs
        .iter()
        .map(|(name, s)| SyncPlan {
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
            sources: s.sources.clone(),
            targets: s.targets.clone(),
            strategy: match s.conflict_strategy {
                ConflictStrategy::Latest => Strategy::Latest,
                ConflictStrategy::Priority => Strategy::Priority(s.priority.clone()),
                ConflictStrategy::Abort => Strategy::Abort,
                ConflictStrategy::Skip => Strategy::Skip,
            },
            initial_copy: match s.initial_copy {
                InitialCopy::Never => CopyMode::Never,
                InitialCopy::IfEmpty => CopyMode::IfEmpty,
                InitialCopy::Always => CopyMode::Always,
            },
        })
        .collect()
}
