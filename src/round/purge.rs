//! Trimming delta tables: a delta row is done once every receiver of every sync reading that
//! table has applied it, i.e. its xid is below the smallest horizon (progress xmin) recorded in
//! `drover.consumers`. Receivers' progress lives on the receivers; the source keeps this copy
//! (written after they commit, so it may lag, which only delays purging).
//!
//! One-source rounds commit on targets without waiting for the WAL flush (as PostgreSQL's own
//! subscriptions do), so a target that crashes may lose its last rounds, progress included.
//! Their delta rows must still be there: before purging, the purge commits a transaction with
//! an xid under `synchronous_commit = on` on each target, which flushes (and, with synchronous
//! standbys, replicates) every WAL record before it, and reads in that transaction the progress
//! the target has: that durable progress, not what a round reported (a target that crashed
//! and restarted before the barrier no longer has it), becomes the horizon. The purge runs
//! beside the rounds, not between them, so a slow flush delays only the purge.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::failures::{self, Stage};
use crate::pg::connect::checkout;
use crate::pg::error::PgError;
use crate::pg::ident::quote_literal;
use crate::pg::Pool;
use crate::round::plan::TablePlan;
use crate::round::snapshot::Snapshot;

/// Least time between two purges of a sync while changes keep coming.
const PURGE_EVERY: Duration = Duration::from_millis(250);

/// Horizons waiting to be purged. A purge after every round would add a write transaction to
/// each round, and under steady load rounds come every few milliseconds: horizons are
/// collected and purged at most every `PURGE_EVERY`, and at once when a round finds nothing
/// pending (so the delta tables drain when the writes stop).
#[derive(Debug, Default)]
pub struct PurgeDue {
    last: Option<Instant>,
    due: Vec<(String, Snapshot)>,
    /// A background purge is running: the next waits for it.
    running: Arc<AtomicBool>,
}

impl PurgeDue {
    /// Adds the targets a round advanced; returns what to purge now, if anything.
    pub fn take_due(
        &mut self,
        advanced: Vec<(String, Snapshot)>,
        idle: bool,
    ) -> Option<Vec<(String, Snapshot)>> {
        for (target, snap) in advanced {
            self.due.retain(|(t, _)| *t != target);
            self.due.push((target, snap));
        }
        let now = Instant::now();
        let timely = self
            .last
            .map_or(true, |l| now.duration_since(l) >= PURGE_EVERY);
        if self.due.is_empty() || !(idle || timely) || self.running.load(Ordering::Acquire) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.due))
    }

    /// Forgets collected horizons: a source that moved back must not be purged with them.
    pub fn clear(&mut self) {
        self.due.clear();
    }
}

/// What a background purge needs.
pub struct Background {
    pub source: Pool,
    pub source_name: String,
    pub sync: String,
    /// Every target of the round: name and pool.
    pub targets: Vec<(String, Pool)>,
    pub tables: Vec<Arc<TablePlan>>,
}

impl PurgeDue {
    /// Flushes the targets' WAL, then purges up to what each of them durably applied, beside
    /// the rounds. Failures are logged: the next purge covers the same rows.
    pub fn start(&self, due: Vec<(String, Snapshot)>, bg: Background) {
        let running = self.running.clone();
        running.store(true, Ordering::Release);
        tokio::task::spawn_local(async move {
            let result = async {
                let mut horizons = Vec::new();
                for (target, _) in &due {
                    if let Some((name, pool)) = bg.targets.iter().find(|(n, _)| n == target) {
                        let durable = flush_barrier(pool, name, &bg.sync, &bg.source_name).await?;
                        horizons.extend(durable);
                    }
                }
                after_round(&bg.source, &bg.source_name, &bg.sync, &horizons, &bg.tables).await
            }
            .await;
            if let Err(e) = result {
                let what = "purge failed; the next one retries";
                failures::failed(Stage::Purge, &bg.sync, &e, what);
            }
            running.store(false, Ordering::Release);
        });
    }
}

/// A receiver's applied horizon for one table: delta rows below `xmin` are done for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Horizon {
    pub target: String,
    pub table: String,
    pub xmin: i64,
}

impl Horizon {
    /// The horizons of every table of a round that `target` applied up to `snap`.
    pub fn all(target: &str, snap: &Snapshot, tables: &[Arc<TablePlan>]) -> Vec<Horizon> {
        tables
            .iter()
            .map(|t| Horizon {
                target: target.to_string(),
                table: t.display.clone(),
                xmin: snap.xmin(),
            })
            .collect()
    }
}

/// Waits until every transaction the target committed so far is flushed to disk, and returns
/// the progress that is therefore durable there. The round that reported a horizon may be
/// lost all the same: the target may have crashed and restarted between its commit and this
/// barrier (a pool reconnects), and crash recovery drops an unflushed commit. The progress
/// this transaction sees was committed before it, so its commit's flush covers it: that, not
/// what the round reported, is what may be purged.
async fn flush_barrier(
    pool: &Pool,
    target: &str,
    sync: &str,
    source: &str,
) -> Result<Vec<Horizon>, PgError> {
    let client = checkout(pool, target).await?;
    // A transaction that only took an xid writes no WAL before its commit record, and
    // PostgreSQL then commits it asynchronously whatever synchronous_commit says: the
    // barrier must write. Touching the progress rows writes WAL and reads them in one step
    // (the row lock waits for an apply in flight, which its own timeouts bound).
    let sql = format!(
        "SELECT set_config('synchronous_commit', 'on', true); \
         SELECT set_config('lock_timeout', '10s', true); \
         UPDATE drover.progress SET applied_at = applied_at WHERE sync = {} AND source = {} \
         RETURNING table_name, snapshot;",
        quote_literal(sync),
        quote_literal(source)
    );
    let answer = client
        .simple_query(&sql)
        .await
        .map_err(|e| PgError::query(target, "flush the target's WAL before purging", e))?;
    // The rows of the last statement: the settings answer one column each.
    Ok(crate::pg::simple::rows(answer)
        .iter()
        .filter(|r| r.len() == 2)
        .filter_map(|r| {
            let snap = Snapshot::parse(r.get(1)?)?;
            Some(Horizon {
                target: target.to_string(),
                table: r.get(0)?.to_string(),
                xmin: snap.xmin(),
            })
        })
        .collect())
}

/// Records that each target applied each table up to its horizon and deletes what no one
/// needs.
pub async fn after_round(
    pool: &Pool,
    source: &str,
    sync: &str,
    horizons: &[Horizon],
    tables: &[Arc<TablePlan>],
) -> Result<(), PgError> {
    // Losing this commit in a crash only brings back rows that every receiver already has
    // (progress filters them): no need to wait for its WAL flush.
    let mut sql = String::from("SELECT set_config('synchronous_commit', 'off', true);\n");
    let sync_l = quote_literal(sync);
    for h in horizons {
        if !tables.iter().any(|t| t.display == h.table) {
            continue;
        }
        sql.push_str(&format!(
            "UPDATE drover.consumers SET horizon = {x}, updated_at = now() WHERE sync = {sync_l} \
             AND target = {} AND table_name = {} AND horizon < {x};\n",
            quote_literal(&h.target),
            quote_literal(&h.table),
            x = h.xmin,
        ));
    }
    for t in tables {
        sql.push_str(&format!(
            "DELETE FROM {d} WHERE drover_xid < (SELECT coalesce(min(horizon), 0) FROM drover.consumers WHERE table_name = {n});\n",
            d = t.deltas[source],
            n = quote_literal(&t.display)
        ));
    }
    let client = checkout(pool, source).await?;
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| PgError::query(source, "purge applied delta rows", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(x: i64) -> Snapshot {
        Snapshot::below(x)
    }

    #[test]
    fn purges_are_spaced_but_drain_when_idle() {
        let mut p = PurgeDue::default();
        let first = p.take_due(vec![("t".into(), snap(5))], false).unwrap();
        assert_eq!(first, vec![("t".to_string(), snap(5))]);
        assert!(p.take_due(vec![("t".into(), snap(6))], false).is_none());
        assert!(p.take_due(vec![("t".into(), snap(7))], false).is_none());
        let idle = p.take_due(vec![], true).unwrap();
        assert_eq!(
            idle,
            vec![("t".to_string(), snap(7))],
            "latest horizon only"
        );
        assert!(p.take_due(vec![], true).is_none(), "nothing due");
    }
}
