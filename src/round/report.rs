//! What a round reports: per target, what it committed or why it failed; per table, what was
//! pending; the snapshot progress moved to; conflicts resolved (multi-master).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::pg::error::PgError;
use crate::round::snapshot::Snapshot;

/// Per-table counts of one target's apply.
#[derive(Debug, Default, Clone)]
pub struct TableCounts {
    pub inserted: u64,
    pub deleted: u64,
    pub pending: u64,
    pub truncated: bool,
    /// Multi-master: conflicts this database's apply decided (`local_newer`), counted with
    /// the round's once the apply commits.
    pub late_conflicts: Vec<ConflictRecord>,
}

#[derive(Debug)]
pub struct TargetReport {
    pub target: String,
    /// Ok(true) when the target committed, Ok(false) when it had nothing to do.
    pub result: Result<bool, PgError>,
    pub tables: HashMap<String, TableCounts>,
}

impl TargetReport {
    /// The conflicts its apply decided (`TableCounts::late_conflicts`), taken out.
    pub fn take_late_conflicts(&mut self) -> Vec<ConflictRecord> {
        (self.tables.values_mut())
            .flat_map(|c| std::mem::take(&mut c.late_conflicts))
            .collect()
    }
}

#[derive(Debug)]
pub struct RoundReport {
    pub snapshot: Option<Snapshot>,
    pub targets: Vec<TargetReport>,
    /// Pending delta rows per table as the round found them (largest over targets).
    pub pending: HashMap<String, u64>,
    /// Oldest change not yet applied to some target when the round started.
    pub oldest_pending: Option<DateTime<Utc>>,
    pub duration: Duration,
    /// Set when the round could not even read the source.
    pub source_error: Option<PgError>,
    /// Conflicts resolved (multi-master rounds): those the round gathered, then those the
    /// applies that committed decided.
    pub conflicts: Vec<ConflictRecord>,
    /// Targets whose progress this round moved, and to where: the purge's input.
    pub advanced: Vec<(String, Snapshot)>,
    /// A target moved backwards: horizons collected for the purge must be dropped.
    pub rewound: bool,
    /// Multi-master: unreachable databases this round left out (the others ran).
    pub left_out: Vec<String>,
    /// Multi-master: masters missing from the plans that answer again (`multi_down`): the
    /// plans are read again with them.
    pub rejoin: Vec<String>,
    /// One-source rounds: the target's tables held after this round (`hold`).
    pub held: Vec<crate::round::hold::HeldTable>,
    /// Multi-master: each master's clock offset from the daemon's, in seconds (`clock`).
    pub clock_offsets: BTreeMap<String, f64>,
    /// Source transactions this round opened to read its changes (a shared batch is counted
    /// by the source actor that read it).
    pub source_reads: u64,
}

impl RoundReport {
    pub fn empty() -> RoundReport {
        RoundReport {
            snapshot: None,
            targets: Vec::new(),
            pending: HashMap::new(),
            oldest_pending: None,
            duration: Duration::ZERO,
            source_error: None,
            conflicts: Vec::new(),
            advanced: Vec::new(),
            rewound: false,
            left_out: Vec::new(),
            rejoin: Vec::new(),
            held: Vec::new(),
            source_reads: 0,
            clock_offsets: BTreeMap::new(),
        }
    }

    /// Rows committed: a target whose apply rolled back counts none.
    pub fn rows(&self) -> (u64, u64) {
        self.targets
            .iter()
            .filter(|t| t.result.is_ok())
            .flat_map(|t| t.tables.values())
            .fold((0, 0), |(i, d), c| (i + c.inserted, d + c.deleted))
    }

    pub fn ok(&self) -> bool {
        self.source_error.is_none() && self.targets.iter().all(|t| t.result.is_ok())
    }

    /// A table's pending rows and oldest change as one target's count found them.
    pub fn note(&mut self, table: &str, pending: u64, oldest: Option<DateTime<Utc>>) {
        let p = self.pending.entry(table.to_string()).or_default();
        *p = (*p).max(pending);
        if let Some(o) = oldest {
            self.oldest_pending = Some(self.oldest_pending.map_or(o, |x| x.min(o)));
        }
    }

    /// Keeps the conflicts logged on some database involved whose apply committed (`committed`):
    /// one the round decided but logged nowhere is decided again by a later round.
    pub fn keep_logged_conflicts(&mut self, committed: &[String]) {
        (self.conflicts).retain(|c| c.involved.iter().any(|d| committed.contains(d)));
    }

    /// Nothing was pending for any table when the round read the source.
    pub fn idle(&self) -> bool {
        self.pending.values().all(|p| *p == 0)
    }

    pub fn first_error(&self) -> Option<&PgError> {
        self.source_error
            .as_ref()
            .or_else(|| self.targets.iter().find_map(|t| t.result.as_ref().err()))
    }
}

/// A resolved conflict, for the log and the counters.
#[derive(Debug, Clone)]
pub struct ConflictRecord {
    pub table: String,
    pub key: serde_json::Value,
    pub winner: Option<String>,
    pub involved: Vec<String>,
    pub versions: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflict_counts_once_logged_on_a_database_that_committed() {
        let conflict = |involved: &[&str]| ConflictRecord {
            table: "public.t".into(),
            key: serde_json::json!({"id": 1}),
            winner: Some("a".into()),
            involved: involved.iter().map(|s| s.to_string()).collect(),
            versions: serde_json::Value::Null,
        };
        let mut r = RoundReport::empty();
        r.conflicts = vec![conflict(&["a", "b"]), conflict(&["b", "c"])];
        r.keep_logged_conflicts(&["a".to_string()]);
        assert_eq!(r.conflicts.len(), 1);
        assert_eq!(r.conflicts[0].involved, ["a", "b"]);
    }
}
