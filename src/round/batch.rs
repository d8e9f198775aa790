//! A source batch that several targets of a one-source sync apply: what the source has after
//! one start progress (a progress snapshot per table), read once under one REPEATABLE READ
//! snapshot. The source actor (`actors::source`) shares one read between the targets whose
//! progress is that start, so under steady load the source is read once per round whatever
//! the number of targets (`batch_apply` applies it on one target).
//!
//! A small batch's changed rows travel as text (`small`); a larger one of a sync with several
//! targets as the COPY data its targets' own rounds would read (`batch_copy`), held in memory
//! up to a cap. Either way the source transaction ends right after the read and holds no
//! snapshot while targets apply. A batch that is neither (over the cap or a round's budget, a
//! TRUNCATE, or a key-less table's changes with a single target) says so: each target then runs
//! its own round under its own snapshot (COPY piped from the source, bounded backlog rounds).

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::capture::partitions;
use crate::pg::connect::checkout;
use crate::pg::error::PgError;
use crate::pg::simple;
use crate::pg::txn::ReadTx;
use crate::round::apply_steps::{Scope, TableWork};
use crate::round::batch_copy::{self, Copied};
use crate::round::batch_rows::{self, KeyedChanges};
use crate::round::pending;
use crate::round::plan::{partitioned, TablePlan, Window};
use crate::round::rewind::{self, Horizons};
use crate::round::side::SourceSide;
use crate::round::small::{self, TextChanges};
use crate::round::snapshot::Snapshot;
use crate::round::source_snapshot;

/// What a target asks for: the batch after `prevs` (one per table, parents first).
#[derive(Clone)]
pub struct BatchRequest {
    pub sync: String,
    pub source: SourceSide,
    pub tables: Vec<Arc<TablePlan>>,
    pub prevs: Vec<Snapshot>,
    /// The source identity's SQL (`rewind::Identities::sql`).
    pub id_sql: String,
}

impl BatchRequest {
    /// Whether a read for this request may answer `other` too: the same plans (not only
    /// names: a re-read plan may have other columns) and identity expression, and a start at
    /// or before `other`'s for every table. The read's changes then include every change
    /// `other` needs, and `batch_rows` leaves out those it has seen (a target that fell
    /// behind and the others converge this way).
    pub fn covers(&self, other: &BatchRequest) -> bool {
        self.tables.len() == other.tables.len()
            && (self.tables.iter().zip(&other.tables)).all(|(a, b)| Arc::ptr_eq(a, b))
            && (self.prevs.iter().zip(&other.prevs)).all(|(a, b)| a.within(b))
            && self.id_sql == other.id_sql
    }
}

/// One snapshot-consistent read of the source after a start progress.
pub struct Batch {
    /// The request's start, per table.
    pub(crate) start: Vec<Snapshot>,
    pub(crate) cur: Snapshot,
    /// The source's identity (`rewind`).
    pub(crate) id: Option<String>,
    pub(crate) horizons: Horizons,
    /// Per table (request order): what is pending after the start.
    pub(crate) work: Vec<TableWork>,
    /// Every pending table's changes as text, with their delta rows; None when the batch is
    /// not small.
    pub(crate) changes: Option<Vec<KeyedChanges>>,
    /// A larger batch's COPY reads (`batch_copy`), for targets exactly at its start.
    pub(crate) copied: Option<Copied>,
}

impl Batch {
    /// Targets may apply it: its changes travel as text or as COPY data.
    pub fn shareable(&self) -> bool {
        self.changes.is_some() || self.copied.is_some()
    }

    /// Whether a target whose progress is `prevs` may apply this batch: each is at or after
    /// the batch's start and within its snapshot (the apply moves progress to the snapshot).
    /// COPY data holds every change after the start, so only a target exactly there takes it.
    pub fn serves(&self, prevs: &[Snapshot]) -> bool {
        if self.copied.is_some() {
            return self.start == prevs;
        }
        self.start.len() == prevs.len()
            && (self.start.iter().zip(prevs)).all(|(s, p)| s.within(p) && p.within(&self.cur))
    }

    /// Whether a target at `prevs` would apply rows from it (`batch_share` gives a kept batch
    /// only then). False when the batch is not shareable.
    pub fn brings(&self, prevs: &[Snapshot]) -> bool {
        match (&self.changes, &self.copied) {
            (Some(c), _) => batch_rows::unseen(c, prevs),
            // Only ever built with changes pending (else it would be small).
            (None, Some(_)) => self.start == prevs,
            (None, None) => false,
        }
    }

    /// Whether it holds COPY data (`batch_share` keeps at most one such batch).
    pub fn is_copied(&self) -> bool {
        self.copied.is_some()
    }

    /// What a target at `prevs` (which `serves` accepted) applies: each table's work after
    /// its own progress (which the apply checks) with its own pending counts, and the changes
    /// it has not seen. None when the batch is not small.
    pub(crate) fn for_target(
        &self,
        prevs: &[Snapshot],
    ) -> Option<(Vec<TableWork>, Vec<TextChanges>)> {
        let (changes, pending) = batch_rows::for_target(self.changes.as_ref()?, prevs);
        let work = (self.work.iter().zip(prevs).zip(pending))
            .map(|((w, p), (n, oldest))| TableWork {
                prev: p.clone(),
                window: Window {
                    prev: p.clone(),
                    below: None,
                },
                pending: n,
                oldest,
                truncate: w.truncate,
                // Rows kept after the batch's start: at least the target's (it only decides
                // whether an empty apply moves progress along for the purge).
                retained: w.retained,
            })
            .collect();
        Some((work, changes))
    }

    /// The tables (by display name) with changes: what the next read of this source reads in
    /// its first flight.
    pub fn busy(&self, tables: &[Arc<TablePlan>]) -> Vec<String> {
        (tables.iter().zip(&self.work))
            .filter(|(_, w)| w.pending > 0)
            .map(|(t, _)| t.display.clone())
            .collect()
    }
}

/// How a target asks its source actor for a shared batch; None: read your own (the shared
/// read failed, or the source actor is gone).
pub type ReadShared =
    Arc<dyn Fn(BatchRequest) -> BoxFuture<'static, Option<Arc<Batch>>> + Send + Sync>;

/// Reads the batch after `req.prevs`: the first flight carries the snapshot, the purge
/// horizons, the pending counts, the partitions check and the changes of the `busy` tables
/// (those the last batch found changed); a small batch's other changed tables are read in a
/// second flight, a larger one's COPY data after it when `copy_large` (several targets).
/// The transaction is rolled back before returning.
pub async fn read(req: &BatchRequest, busy: &[String], copy_large: bool) -> Result<Batch, PgError> {
    let src = req.source.name.as_str();
    let client = checkout(&req.source.pool, src).await?;
    let guard = ReadTx::new(&client);
    let stx = guard.client();
    let snapshot_sql =
        source_snapshot::snapshot_sql(ReadTx::BEGIN_RR, src, &req.tables, &req.id_sql);
    let horizons_sql = rewind::horizons_sql(&req.sync);
    let stats = pending::stats_sql(src, &req.tables, &req.prevs);
    let first = tables_to_read(req, |t, _| busy.contains(&t.display));
    let parts = partitioned(&req.tables);
    let (snap, horizons, counts, mut changes, ()) = tokio::try_join!(
        // In statement order: after the first error the later statements of the flight
        // fail with 25P02, and the first error is the one to report.
        biased;
        async {
            (stx.simple_query(&snapshot_sql).await)
                .map_err(|e| PgError::query(src, "begin the source snapshot", e))
        },
        async {
            (stx.simple_query(&horizons_sql).await)
                .map_err(|e| PgError::query(src, "read purge horizons", e))
        },
        async {
            (stx.simple_query(&stats).await)
                .map_err(|e| PgError::query(src, "count pending changes", e))
        },
        async {
            if first.is_empty() {
                return Ok(Vec::new());
            }
            batch_rows::read(stx, src, &first).await
        },
        partitions::check_captured(stx, src, &parts),
    )?;
    let (cur, id) = source_snapshot::snapshot(src, &req.tables, snap)?;
    let counted = pending::parse(src, &req.tables, req.prevs.clone(), counts)?;
    let work: Vec<TableWork> = counted.into_iter().map(|c| c.work).collect();
    let is_small =
        (req.tables.iter().zip(&work)).all(|(t, w)| small::eligible(t, w.pending, w.truncate));
    let changes = if is_small {
        let missing = tables_to_read(req, |_, i| {
            work[i].pending > 0 && !changes.iter().any(|c| c.table == i)
        });
        if !missing.is_empty() {
            changes.extend(batch_rows::read(stx, src, &missing).await?);
        }
        changes.retain(|c| work[c.table].pending > 0);
        changes.sort_by_key(|c| c.table);
        Some(changes)
    } else {
        None
    };
    let copied = if changes.is_none() && copy_large {
        let scope = Scope {
            src,
            tables: &req.tables,
        };
        batch_copy::read(stx, &scope, &work).await?
    } else {
        None
    };
    // Read only: dropping rolls back without waiting for the answer.
    drop(guard);
    Ok(Batch {
        start: req.prevs.clone(),
        cur,
        id,
        horizons: rewind::parse_horizons(&simple::rows(horizons)),
        work,
        changes,
        copied,
    })
}

/// The keyed tables `pick` chooses, each with its window after its start.
fn tables_to_read(
    req: &BatchRequest,
    pick: impl Fn(&TablePlan, usize) -> bool,
) -> Vec<(usize, &TablePlan, Window)> {
    (req.tables.iter().zip(&req.prevs).enumerate())
        .filter(|(i, (t, _))| !t.whole_row && pick(t, *i))
        .map(|(i, (t, prev))| {
            let w = Window {
                prev: prev.clone(),
                below: None,
            };
            (i, t.as_ref(), w)
        })
        .collect()
}
