//! Runs one round from one source to its targets.
//!
//! Source side: a REPEATABLE READ READ ONLY transaction whose first statement reads the
//! snapshot `cur`; every table's pending keys and rows are read inside it, so the whole round
//! is one consistent picture. Target side, per target, one transaction: lock and check the
//! progress rows (a second daemon or a stale cache aborts here instead of applying twice),
//! TRUNCATE where the source truncated, load pending keys into a temp table, delete them
//! (children first), COPY the current rows in (parents first), set progress to `cur`, commit.
//! A failure on one target rolls back that target only; the others go on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_postgres::IsolationLevel;

use crate::pg::connect::checkout;
use crate::pg::copy::{pipe, CopyEnd};
use crate::pg::error::PgError;
use crate::pg::facts::ReplicaRole;
use crate::pg::ident::quote_literal;
use crate::pg::Pool;
use crate::round::plan::{TablePlan, Window};
use crate::round::purge;
use crate::round::snapshot::{ProgressCache, Snapshot};

pub struct SourceSide {
    pub name: String,
    pub pool: Pool,
}

pub struct TargetSide {
    pub name: String,
    pub pool: Pool,
    pub replica_role: ReplicaRole,
}

/// Everything a round reads; the progress cache is updated in place.
pub struct RoundInput<'a> {
    pub sync: &'a str,
    pub source: &'a SourceSide,
    pub targets: &'a [TargetSide],
    /// Parents before children.
    pub tables: &'a [Arc<TablePlan>],
    pub progress: &'a mut ProgressCache,
}

/// Per-table counts of one target's apply.
#[derive(Debug, Default, Clone)]
pub struct TableCounts {
    pub inserted: u64,
    pub deleted: u64,
    pub pending: u64,
    pub truncated: bool,
}

#[derive(Debug)]
pub struct TargetReport {
    pub target: String,
    /// Ok(true) when the target committed, Ok(false) when it had nothing to do.
    pub result: Result<bool, PgError>,
    pub tables: HashMap<String, TableCounts>,
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
    /// Conflicts resolved (multi-master rounds).
    pub conflicts: Vec<crate::round::multi::ConflictRecord>,
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
        }
    }

    pub fn rows(&self) -> (u64, u64) {
        self.targets
            .iter()
            .flat_map(|t| t.tables.values())
            .fold((0, 0), |(i, d), c| (i + c.inserted, d + c.deleted))
    }

    pub fn ok(&self) -> bool {
        self.source_error.is_none() && self.targets.iter().all(|t| t.result.is_ok())
    }

    pub fn first_error(&self) -> Option<&PgError> {
        self.source_error
            .as_ref()
            .or_else(|| self.targets.iter().find_map(|t| t.result.as_ref().err()))
    }
}

/// What one table needs on one target this round.
struct TableWork {
    prev: Snapshot,
    /// What this round applies: after `prev`, bounded when the backlog is split.
    window: Window,
    pending: u64,
    oldest: Option<DateTime<Utc>>,
    truncate: bool,
    retained: i64,
}

pub async fn run_round(input: RoundInput<'_>) -> RoundReport {
    let started = Instant::now();
    let mut report = RoundReport::empty();
    if let Err(e) = round_inner(input, &mut report).await {
        report.source_error = Some(e);
    }
    report.duration = started.elapsed();
    report
}

async fn round_inner(input: RoundInput<'_>, report: &mut RoundReport) -> Result<(), PgError> {
    let src_name = input.source.name.as_str();
    // Targets whose progress is not cached are read first (outside the source snapshot).
    for target in input.targets {
        if !input.progress.is_loaded(src_name, &target.name) {
            load_progress(input.sync, src_name, target, input.progress).await?;
        }
    }
    let mut src = checkout(&input.source.pool, src_name).await?;
    let stx = src
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| PgError::query(src_name, "begin the source snapshot", e))?;
    let cur: String = stx
        .query_one("SELECT txid_current_snapshot()::text", &[])
        .await
        .map_err(|e| PgError::query(src_name, "read the source snapshot", e))?
        .get(0);
    let cur = Snapshot::parse(&cur)
        .ok_or_else(|| PgError::setup(src_name, format!("unexpected snapshot text {cur:?}")))?;
    report.snapshot = Some(cur.clone());

    let mut advanced = Vec::new();
    for target in input.targets {
        let mut tr = TargetReport {
            target: target.name.clone(),
            result: Ok(false),
            tables: HashMap::new(),
        };
        let work = match table_work(&stx, &input, target, report).await {
            Ok(w) => w,
            Err(e) => {
                // The source transaction is unusable after a failed statement.
                tr.result = Err(e);
                report.targets.push(tr);
                return Ok(());
            }
        };
        let needed = work
            .iter()
            .any(|w| w.pending > 0 || w.truncate || (w.retained > 0 && cur.xmin() > w.prev.xmin()));
        if needed {
            let mut work = work;
            // A large backlog is applied in bounded rounds: progress moves to a cut below
            // which everything is committed, and the next round takes the rest.
            let upto = match bound(&stx, &input, &work, &cur).await {
                Ok(Some(x)) => {
                    for w in work.iter_mut() {
                        w.window.below = Some(x);
                    }
                    Snapshot::below(x)
                }
                Ok(None) => cur.clone(),
                Err(e) => {
                    tr.result = Err(e);
                    report.targets.push(tr);
                    return Ok(());
                }
            };
            tr.result = apply_target(&stx, &input, target, &upto, &work, &mut tr.tables).await;
            match &tr.result {
                Ok(_) => {
                    for t in input.tables.iter() {
                        input
                            .progress
                            .set(src_name, &target.name, &t.display, upto.clone());
                    }
                    advanced.push((target.name.clone(), upto));
                }
                Err(e) => {
                    tracing::warn!(sync = input.sync, target = %target.name, error = %e, "apply failed, rolled back");
                    input.progress.invalidate(src_name, &target.name);
                }
            }
        }
        report.targets.push(tr);
    }
    stx.commit().await.ok();
    drop(src);
    if !advanced.is_empty() {
        purge::after_round(
            &input.source.pool,
            src_name,
            input.sync,
            &advanced,
            input.tables,
        )
        .await?;
    }
    Ok(())
}

/// Most delta rows of one table one round applies; a larger backlog is split into rounds.
const ROUND_BUDGET: u64 = 100_000;

/// The transaction-id cut that keeps this round within `ROUND_BUDGET` rows per table, or None
/// to apply everything visible in `cur`. The cut is valid only at or below `cur.xmin()`
/// (nothing below it still running) and at or above every `prev.xmax()` (it must not go back).
async fn bound(
    stx: &tokio_postgres::Transaction<'_>,
    input: &RoundInput<'_>,
    work: &[TableWork],
    cur: &Snapshot,
) -> Result<Option<i64>, PgError> {
    if work.iter().all(|w| w.pending <= ROUND_BUDGET || w.truncate) {
        return Ok(None);
    }
    let src = input.source.name.as_str();
    let mut cut = i64::MAX;
    for (t, w) in input.tables.iter().zip(work) {
        if w.pending <= ROUND_BUDGET || w.truncate {
            continue;
        }
        let row = stx
            .query_opt(&t.budget_xid_sql(src, &w.prev, ROUND_BUDGET), &[])
            .await
            .map_err(|e| PgError::query(src, format!("split the backlog of {}", t.display), e))?;
        if let Some(r) = row {
            // Include that row's whole transaction: a cut must always move forward, even
            // when one transaction wrote more rows than the budget.
            cut = cut.min(r.get::<_, i64>(0) + 1);
        }
    }
    let lower = work.iter().map(|w| w.prev.xmax()).max().unwrap_or(0);
    let cut = cut.max(lower);
    Ok((cut < cur.xmin()).then_some(cut))
}

/// Reads a target's progress rows for this sync and source into the cache.
pub(crate) async fn load_progress(
    sync: &str,
    source: &str,
    target: &TargetSide,
    cache: &mut ProgressCache,
) -> Result<(), PgError> {
    let client = checkout(&target.pool, &target.name).await?;
    let rows = client
        .query(
            "SELECT table_name, snapshot FROM drover.progress WHERE sync = $1 AND source = $2",
            &[&sync, &source],
        )
        .await
        .map_err(|e| PgError::query(&target.name, "read progress (has drover install run?)", e))?;
    for r in rows {
        let table: String = r.get(0);
        let snap: String = r.get(1);
        let snap = Snapshot::parse(&snap).ok_or_else(|| {
            PgError::setup(
                &target.name,
                format!("drover.progress holds a bad snapshot {snap:?} for {table}"),
            )
        })?;
        cache.set(source, &target.name, &table, snap);
    }
    cache.mark_loaded(source, &target.name, true);
    Ok(())
}

/// Counts what each table has pending for one target, in one round trip.
async fn table_work(
    stx: &tokio_postgres::Transaction<'_>,
    input: &RoundInput<'_>,
    target: &TargetSide,
    report: &mut RoundReport,
) -> Result<Vec<TableWork>, PgError> {
    let src = input.source.name.as_str();
    let prevs: Vec<Snapshot> = input
        .tables
        .iter()
        .map(|t| input.progress.get(src, &target.name, &t.display))
        .collect();
    // UNION ALL keeps no order: once the delta tables grow, the planner picks a Parallel
    // Append, whose rows arrive in any order. Number the branches and sort them back, or one
    // table's counts land on another (its changes skipped, then purged).
    let branches = input
        .tables
        .iter()
        .zip(&prevs)
        .enumerate()
        .map(|(i, (t, p))| format!("(SELECT {i} AS i, s.* FROM ({}) AS s)", t.stats_sql(src, p)))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let sql = format!("SELECT * FROM ({branches}) AS u ORDER BY i");
    let rows = stx
        .query(&sql, &[])
        .await
        .map_err(|e| PgError::query(src, "count pending changes", e))?;
    let mut out = Vec::with_capacity(rows.len());
    for ((row, prev), t) in rows.into_iter().zip(prevs).zip(input.tables.iter()) {
        let w = TableWork {
            window: Window {
                prev: prev.clone(),
                below: None,
            },
            prev,
            pending: row.get::<_, i64>(1) as u64,
            oldest: row.get(2),
            truncate: row.get(3),
            retained: row.get(4),
        };
        let p = report.pending.entry(t.display.clone()).or_default();
        *p = (*p).max(w.pending);
        if let Some(o) = w.oldest {
            report.oldest_pending = Some(report.oldest_pending.map_or(o, |x| x.min(o)));
        }
        out.push(w);
    }
    Ok(out)
}

async fn apply_target(
    stx: &tokio_postgres::Transaction<'_>,
    input: &RoundInput<'_>,
    target: &TargetSide,
    cur: &Snapshot,
    work: &[TableWork],
    counts: &mut HashMap<String, TableCounts>,
) -> Result<bool, PgError> {
    let src = input.source.name.as_str();
    let dst = target.name.as_str();
    let mut client = checkout(&target.pool, dst).await?;
    let ttx = client
        .transaction()
        .await
        .map_err(|e| PgError::query(dst, "begin apply", e))?;
    let setup = apply_session(input.sync, &target.replica_role);
    ttx.batch_execute(&setup)
        .await
        .map_err(|e| PgError::query(dst, "mark the apply session as drover's", e))?;
    check_progress(&ttx, input, target, work).await?;

    let tables = input.tables;
    // TRUNCATE and key deletes: children first.
    for (t, w) in tables.iter().zip(work).rev() {
        let c = counts.entry(t.display.clone()).or_default();
        c.pending = w.pending;
        if w.truncate {
            empty_table(&ttx, dst, t).await?;
            c.truncated = true;
        } else if w.pending > 0 && t.whole_row {
            ttx.batch_execute(&t.create_temp_images(dst))
                .await
                .map_err(|e| {
                    PgError::query(dst, format!("create the image table of {}", t.display), e)
                })?;
            let out = t.images_gone_out(src, &w.window);
            let gone = pipe(
                CopyEnd {
                    tx: stx.client(),
                    database: src,
                    sql: &out,
                },
                CopyEnd {
                    tx: ttx.client(),
                    database: dst,
                    sql: &t.images_in(dst),
                },
                &format!("copy gone rows of {}", t.display),
            )
            .await?;
            if gone > 0 {
                c.deleted = ttx.execute(&t.delete_images(dst), &[]).await.map_err(|e| {
                    PgError::query(dst, format!("delete gone rows of {}", t.display), e)
                })?;
            }
        } else if w.pending > 0 {
            ttx.batch_execute(&t.create_temp_keys(dst))
                .await
                .map_err(|e| {
                    PgError::query(dst, format!("create the key table of {}", t.display), e)
                })?;
            let keys_out = t.keys_out(src, &w.window);
            let keys_in = t.keys_in(dst);
            pipe(
                CopyEnd {
                    tx: stx.client(),
                    database: src,
                    sql: &keys_out,
                },
                CopyEnd {
                    tx: ttx.client(),
                    database: dst,
                    sql: &keys_in,
                },
                &format!("copy changed keys of {}", t.display),
            )
            .await?;
            c.deleted = ttx.execute(&t.delete_keys(dst), &[]).await.map_err(|e| {
                PgError::query(dst, format!("delete changed rows of {}", t.display), e)
            })?;
        }
    }
    // Rows: parents first.
    for (t, w) in tables.iter().zip(work) {
        let rows_out = if w.truncate {
            t.all_rows_out()
        } else if w.pending > 0 && t.whole_row {
            t.images_new_out(src, &w.window)
        } else if w.pending > 0 {
            t.rows_out(src, &w.window)
        } else {
            continue;
        };
        let rows_in = t.rows_in();
        let n = pipe(
            CopyEnd {
                tx: stx.client(),
                database: src,
                sql: &rows_out,
            },
            CopyEnd {
                tx: ttx.client(),
                database: dst,
                sql: &rows_in,
            },
            &format!("copy changed rows of {}", t.display),
        )
        .await?;
        counts.entry(t.display.clone()).or_default().inserted = n;
    }
    let names: Vec<&str> = tables.iter().map(|t| t.display.as_str()).collect();
    ttx.execute(
        "UPDATE drover.progress SET snapshot = $1, applied_at = now() \
         WHERE sync = $2 AND source = $3 AND table_name = ANY($4)",
        &[&cur.as_str(), &input.sync, &src, &names],
    )
    .await
    .map_err(|e| PgError::query(dst, "record progress", e))?;
    commit_apply(ttx, &target.replica_role, dst).await?;
    Ok(true)
}

/// Opens an apply (or copy) transaction's session state: the loop guard, the replica role, and
/// the planner settings deletes need.
pub(crate) fn apply_session(sync: &str, role: &ReplicaRole) -> String {
    // The key temp table is never analyzed, so the planner guesses ~2500 rows and hashes the
    // whole target table for every delete; a nested loop over the primary key index costs
    // O(keys) instead of O(table).
    format!(
        "SET LOCAL drover.origin = {}; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; {}",
        quote_literal(sync),
        role.begin_sql()
    )
}

/// Empties a target table: TRUNCATE, or DELETE when a foreign key references it (PostgreSQL
/// refuses to truncate a referenced table; in replica mode the DELETE skips the FK checks).
pub(crate) async fn empty_table(
    ttx: &tokio_postgres::Transaction<'_>,
    dst: &str,
    t: &TablePlan,
) -> Result<(), PgError> {
    let purpose = format!("empty {}", t.display);
    let referenced: bool = ttx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE contype = 'f' \
             AND confrelid = $1::text::regclass AND conrelid <> confrelid)",
            &[&t.quoted],
        )
        .await
        .map_err(|e| PgError::query(dst, &purpose, e))?
        .get(0);
    let sql = if referenced {
        format!("DELETE FROM {}", t.quoted)
    } else {
        t.truncate()
    };
    ttx.batch_execute(&sql)
        .await
        .map_err(|e| PgError::query(dst, &purpose, e))
}

/// Commits an apply (or copy) transaction, first putting a helper-set replica role back.
pub(crate) async fn commit_apply(
    ttx: tokio_postgres::Transaction<'_>,
    role: &ReplicaRole,
    db: &str,
) -> Result<(), PgError> {
    if let Some(end) = role.end_sql() {
        ttx.batch_execute(&end)
            .await
            .map_err(|e| PgError::query(db, "reset session_replication_role", e))?;
    }
    ttx.commit()
        .await
        .map_err(|e| PgError::query(db, "commit apply", e))
}

/// Locks this sync's progress rows on the target and checks they still say what the cache
/// says: if another daemon applied meanwhile, this round stops before writing anything.
async fn check_progress(
    ttx: &tokio_postgres::Transaction<'_>,
    input: &RoundInput<'_>,
    target: &TargetSide,
    work: &[TableWork],
) -> Result<(), PgError> {
    let src = input.source.name.as_str();
    let dst = target.name.as_str();
    let rows = ttx
        .query(
            "SELECT table_name, snapshot FROM drover.progress WHERE sync = $1 AND source = $2 FOR UPDATE",
            &[&input.sync, &src],
        )
        .await
        .map_err(|e| PgError::query(dst, "lock progress", e))?;
    let found: HashMap<String, String> = rows.into_iter().map(|r| (r.get(0), r.get(1))).collect();
    for (t, w) in input.tables.iter().zip(work) {
        match found.get(&t.display) {
            None => {
                return Err(PgError::setup(
                    dst,
                    format!("no progress row for table {} of sync {}: run drover install", t.display, input.sync),
                ))
            }
            Some(s) if s != w.prev.as_str() => {
                return Err(PgError::setup(
                    dst,
                    format!(
                        "progress of table {} moved under this daemon (another daemon running this sync?): will re-read",
                        t.display
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}
