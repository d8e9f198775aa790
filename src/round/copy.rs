//! Initial copy: fills a target table from one consistent source snapshot and sets its progress
//! to exactly that snapshot in the same target transaction, so deltas continue from there with
//! nothing lost or applied twice, even under live writes.
//!
//! One session on the source exports its snapshot (`pg_export_snapshot()`); each table is copied
//! by a worker session that adopts it (`SET TRANSACTION SNAPSHOT`), tables in parallel. A crash
//! before the target commits leaves the table's progress untouched ("not copied").

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, IsolationLevel, Transaction};

use crate::capture::sql::NOTHING_APPLIED;
use crate::metrics::failures::{self, Stage};
use crate::pg::connect::checkout;
use crate::pg::copy::forward;
use crate::pg::error::PgError;
use crate::pg::ident::quote_literal;
use crate::round::copy_method::{self, CopyMethod};
use crate::round::in_place;
use crate::round::indexes;
use crate::round::plan::TablePlan;
use crate::round::rewind;
use crate::round::session::{apply_session, commit_apply, empty_table, Emptied};
use crate::round::side::{SourceSide, TargetSide};

/// Tables copied at the same time (each holds a source and a target session).
const PARALLEL: usize = 2;

/// The sync's `initial_copy` setting, or a forced copy from `drover copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMode {
    Never,
    IfEmpty,
    Always,
    /// `drover copy`: truncate and copy even when progress exists.
    Forced,
}

/// Progress of one (target, table) copy, shown in `status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CopyStatus {
    pub target: String,
    pub table: String,
    /// "copying" | "done" | "skipped (target not empty)" | "failed"
    pub state: String,
    pub rows_copied: u64,
    /// The planner's estimate of the source table's rows (pg_class.reltuples).
    pub rows_total: u64,
}

pub type CopyBoard = Arc<Mutex<Vec<CopyStatus>>>;

struct Job<'a> {
    table: &'a TablePlan,
    target: &'a TargetSide,
}

/// Copies every (target, table) that needs it under `mode`; returns how many were copied.
/// Every failure is logged and counted here, once (a table's in `copy_one`).
pub async fn initial_copy(
    sync: &str,
    source: &SourceSide,
    targets: &[TargetSide],
    tables: &[Arc<TablePlan>],
    mode: CopyMode,
    board: &CopyBoard,
) -> Result<usize, PgError> {
    let mut table_failed = false;
    let result = copy_all(
        sync,
        source,
        targets,
        tables,
        mode,
        board,
        &mut table_failed,
    )
    .await;
    if let Err(e) = &result {
        if !table_failed {
            failures::failed(Stage::Copy, sync, e, "initial copy failed");
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn copy_all(
    sync: &str,
    source: &SourceSide,
    targets: &[TargetSide],
    tables: &[Arc<TablePlan>],
    mode: CopyMode,
    board: &CopyBoard,
    table_failed: &mut bool,
) -> Result<usize, PgError> {
    if mode == CopyMode::Never {
        return Ok(0);
    }
    let mut jobs = Vec::new();
    for target in targets {
        let undecided = undecided(sync, &source.name, target, mode).await?;
        for t in tables {
            if mode == CopyMode::Forced || undecided.contains(&t.display) {
                jobs.push(Job { table: t, target });
            }
        }
    }
    if jobs.is_empty() {
        return Ok(0);
    }
    let src = source.name.as_str();
    let mut exporter = checkout(&source.pool, src).await?;
    // Recorded with the copied progress: the rounds after it check the source against it.
    let identity = rewind::read_identity(&*exporter, src).await?;
    let etx = exporter
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| PgError::query(src, "begin the copy snapshot", e))?;
    let row = etx
        .query_one(
            "SELECT txid_current_snapshot()::text, pg_export_snapshot()",
            &[],
        )
        .await
        .map_err(|e| PgError::query(src, "export the copy snapshot", e))?;
    let (cur, exported): (String, String) = (row.get(0), row.get(1));
    tracing::info!(
        sync,
        source = src,
        tables = jobs.len(),
        "initial copy starting"
    );

    let run = CopyRun {
        sync,
        source,
        cur: &cur,
        identity: &identity,
        exported: &exported,
        mode,
        board,
    };
    let results: Vec<Result<bool, PgError>> = futures::stream::iter(jobs.iter())
        .map(|job| copy_one(&run, job))
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    etx.commit().await.ok();
    let mut copied = 0;
    for r in results {
        match r {
            Ok(true) => copied += 1,
            Ok(false) => {}
            Err(e) => {
                *table_failed = true;
                return Err(e);
            }
        }
    }
    Ok(copied)
}

/// Tables of this (sync, source, target) whose copy has not been decided yet: nothing applied
/// and no copy decision recorded.
async fn undecided(
    sync: &str,
    source: &str,
    target: &TargetSide,
    mode: CopyMode,
) -> Result<Vec<String>, PgError> {
    if mode == CopyMode::Forced {
        return Ok(Vec::new());
    }
    let client = checkout(&target.pool, &target.name).await?;
    let rows = client
        .query(
            "SELECT table_name FROM drover.progress WHERE sync = $1 AND source = $2 \
             AND snapshot = $3 AND initial_copy IS NULL",
            &[&sync, &source, &NOTHING_APPLIED],
        )
        .await
        .map_err(|e| {
            PgError::query(&target.name, "read copy state (has drover install run?)", e)
        })?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

fn set_board(board: &CopyBoard, target: &str, table: &str, f: impl FnOnce(&mut CopyStatus)) {
    let mut b = board.lock().expect("copy board lock");
    let i = match b
        .iter()
        .position(|c| c.target == target && c.table == table)
    {
        Some(i) => i,
        None => {
            b.push(CopyStatus {
                target: target.into(),
                table: table.into(),
                state: "copying".into(),
                rows_copied: 0,
                rows_total: 0,
            });
            b.len() - 1
        }
    };
    f(&mut b[i]);
}

/// What every table copy of one run shares.
#[derive(Clone, Copy)]
struct CopyRun<'a> {
    sync: &'a str,
    source: &'a SourceSide,
    /// The exported snapshot as progress text, and its id for `SET TRANSACTION SNAPSHOT`.
    cur: &'a str,
    exported: &'a str,
    /// The source's identity (see `rewind`).
    identity: &'a str,
    mode: CopyMode,
    board: &'a CopyBoard,
}

/// Copies one table to one target; Ok(false) when skipped (if-empty and not empty).
async fn copy_one(run: &CopyRun<'_>, job: &Job<'_>) -> Result<bool, PgError> {
    let (sync, board) = (run.sync, run.board);
    let (dst, t) = (job.target.name.as_str(), job.table);
    let result = copy_inner(run, job).await;
    let state = match &result {
        Ok(true) => "done",
        Ok(false) => "skipped (target not empty)",
        Err(_) => "failed",
    };
    set_board(board, dst, &t.display, |c| c.state = state.into());
    if let Err(e) = &result {
        let what = format!(
            "initial copy of {} from {} failed, rolled back",
            t.display, run.source.name
        );
        failures::failed(Stage::Copy, sync, e, &what);
    }
    result
}

async fn copy_inner(run: &CopyRun<'_>, job: &Job<'_>) -> Result<bool, PgError> {
    let CopyRun {
        sync,
        source,
        exported,
        mode,
        board,
        ..
    } = *run;
    let (src, dst, t) = (source.name.as_str(), job.target.name.as_str(), job.table);
    let mut sclient = checkout(&source.pool, src).await?;
    let stx = sclient
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| PgError::query(src, "begin copy", e))?;
    let total = adopt_snapshot(&stx, src, exported, t).await?;
    set_board(board, dst, &t.display, |c| {
        c.state = "copying".into();
        c.rows_copied = 0;
        c.rows_total = total as u64;
    });

    let mut tclient = checkout(&job.target.pool, dst).await?;
    let ttx = tclient
        .transaction()
        .await
        .map_err(|e| PgError::query(dst, "begin copy", e))?;
    let setup = apply_session(sync, &job.target.replica_role);
    ttx.batch_execute(&setup)
        .await
        .map_err(|e| PgError::query(dst, "mark the copy session as drover's", e))?;
    let snap = lock_progress(&ttx, (sync, src, dst), t).await?;
    if mode != CopyMode::Forced && snap != NOTHING_APPLIED {
        return Ok(false);
    }
    if in_place_wanted(&ttx, mode, job).await? {
        return copy_referenced(stx.client(), ttx, run, job).await;
    }
    let method = copy_method::decide(&ttx, dst, &t.quoted, total).await?;
    let rebuild_indexes = method == CopyMethod::RebuildIndexes;
    if let CopyMethod::IndexesInPlace(why) = &method {
        tracing::debug!(sync, target = dst, table = %t.display, why, "copy loads with indexes in place");
    }
    let Some(emptied) = empty_for_load(&ttx, run, job, rebuild_indexes).await? else {
        commit_apply(ttx, &job.target.replica_role, dst).await?;
        return Ok(false);
    };
    // The table is empty now (truncated, or found empty): large loads rebuild indexes after.
    let rebuild = if rebuild_indexes {
        indexes::drop_for_load(&ttx, dst, t).await?
    } else {
        Vec::new()
    };
    let into = if emptied == Some(Emptied::Truncated) {
        t.rows_in_frozen()
    } else {
        t.rows_in()
    };
    let started = std::time::Instant::now();
    let rows = stream_rows(stx.client(), src, ttx.client(), dst, t, &into, board).await?;
    let loaded = started.elapsed();
    indexes::rebuild(&ttx, dst, t, &rebuild).await?;
    record_done(&ttx, run, dst, &t.display).await?;
    commit_apply(ttx, &job.target.replica_role, dst).await?;
    log_loaded(
        (sync, dst, &t.display),
        rows,
        loaded,
        started.elapsed() - loaded,
    );
    Ok(true)
}

/// Where FKs are live, emptying a referenced table would cascade to (or be refused by) its
/// children: such a table is made equal to the source in place instead.
async fn in_place_wanted(
    ttx: &Transaction<'_>,
    mode: CopyMode,
    job: &Job<'_>,
) -> Result<bool, PgError> {
    let (dst, t) = (job.target.name.as_str(), job.table);
    if mode == CopyMode::IfEmpty || job.target.replica_role.is_replica() || t.whole_row {
        return Ok(false);
    }
    in_place::referenced(ttx, dst, t).await
}

/// Copies a referenced table in place (`in_place_wanted`) and commits.
async fn copy_referenced(
    stx: &Client,
    ttx: Transaction<'_>,
    run: &CopyRun<'_>,
    job: &Job<'_>,
) -> Result<bool, PgError> {
    let (src, dst, t) = (
        run.source.name.as_str(),
        job.target.name.as_str(),
        job.table,
    );
    let rows = copy_in_place(stx, src, &ttx, dst, t, run.board).await?;
    record_done(&ttx, run, dst, &t.display).await?;
    commit_apply(ttx, &job.target.replica_role, dst).await?;
    tracing::info!(sync = run.sync, target = dst, table = %t.display, rows, "initial copy done in place (foreign keys reference the table)");
    Ok(true)
}

fn log_loaded((sync, dst, table): (&str, &str, &str), rows: u64, load: Duration, idx: Duration) {
    let (load_ms, indexes_ms) = (load.as_millis() as u64, idx.as_millis() as u64);
    tracing::info!(
        sync,
        target = dst,
        table,
        rows,
        load_ms,
        indexes_ms,
        "initial copy done"
    );
}

/// Adopts the copy's exported snapshot; returns the table's estimated row count there.
async fn adopt_snapshot(
    stx: &Transaction<'_>,
    src: &str,
    exported: &str,
    t: &TablePlan,
) -> Result<f64, PgError> {
    let adopt = format!("SET TRANSACTION SNAPSHOT {}", quote_literal(exported));
    (stx.batch_execute(&adopt).await)
        .map_err(|e| PgError::query(src, "adopt the copy snapshot", e))?;
    let sql = format!(
        "SELECT greatest(reltuples, 0)::float8 FROM pg_class WHERE oid = {}::regclass",
        quote_literal(&t.quoted)
    );
    let row = (stx.query_one(&sql, &[]).await)
        .map_err(|e| PgError::query(src, "estimate table size", e))?;
    Ok(row.get(0))
}

/// Locks the table's progress row, which locks out rounds of a running daemon until this
/// copy commits; returns it.
async fn lock_progress(
    ttx: &Transaction<'_>,
    (sync, src, dst): (&str, &str, &str),
    t: &TablePlan,
) -> Result<String, PgError> {
    let snap: Option<String> = ttx
        .query_opt(
            "SELECT snapshot FROM drover.progress WHERE sync = $1 AND source = $2 AND table_name = $3 FOR UPDATE",
            &[&sync, &src, &t.display.as_str()],
        )
        .await
        .map_err(|e| PgError::query(dst, "lock progress", e))?
        .map(|r| r.get(0));
    snap.ok_or_else(|| {
        let msg = format!(
            "no progress row for {} of sync {sync}: run drover install",
            t.display
        );
        PgError::install(dst, msg)
    })
}

/// Empties the target table for the load. `if-empty` only checks that it is empty (and then
/// truncates it when indexes are rebuilt: the load may use FREEZE, and the index drop locks
/// it as exclusively anyway). None: not empty, so not copied (recorded as skipped).
async fn empty_for_load(
    ttx: &Transaction<'_>,
    run: &CopyRun<'_>,
    job: &Job<'_>,
    rebuild_indexes: bool,
) -> Result<Option<Option<Emptied>>, PgError> {
    let (sync, src) = (run.sync, run.source.name.as_str());
    let (dst, t) = (job.target.name.as_str(), job.table);
    if run.mode != CopyMode::IfEmpty {
        return Ok(Some(Some(empty_table(ttx, dst, t).await?)));
    }
    let sql = format!("SELECT NOT EXISTS (SELECT 1 FROM {})", t.quoted);
    let empty: bool = (ttx.query_one(&sql, &[]).await)
        .map_err(|e| PgError::query(dst, format!("check whether {} is empty", t.display), e))?
        .get(0);
    if !empty {
        tracing::warn!(sync, target = dst, table = %t.display, "initial_copy = \"if-empty\": target table is not empty, not copied; changes since install will be applied");
        let why = "skipped: target not empty";
        record(ttx, sync, src, dst, &t.display, None, why).await?;
        return Ok(None);
    }
    if rebuild_indexes {
        return Ok(Some(Some(empty_table(ttx, dst, t).await?)));
    }
    Ok(Some(None))
}

/// Loads the source's rows into the session temp table `temp_rows`, then deletes, updates and
/// inserts so that the table equals them (`in_place::sync_from_temp`).
async fn copy_in_place(
    from: &Client,
    src: &str,
    ttx: &tokio_postgres::Transaction<'_>,
    dst: &str,
    t: &TablePlan,
    board: &CopyBoard,
) -> Result<u64, PgError> {
    let purpose = format!("copy {} in place", t.display);
    ttx.batch_execute(&t.create_temp_rows(dst))
        .await
        .map_err(|e| PgError::query(dst, &purpose, e))?;
    let into = t.rows_in_temp(dst);
    let rows = stream_rows(from, src, ttx.client(), dst, t, &into, board).await?;
    ttx.batch_execute(&in_place::sync_from_temp(t, dst))
        .await
        .map_err(|e| PgError::query(dst, &purpose, e))?;
    Ok(rows)
}

/// COPY out of the source, into the target (`into`), counting rows.
async fn stream_rows(
    from: &Client,
    src: &str,
    to: &Client,
    dst: &str,
    t: &TablePlan,
    into: &str,
    board: &CopyBoard,
) -> Result<u64, PgError> {
    let purpose = format!("copy {}", t.display);
    let out = from
        .copy_out(&t.all_rows_out())
        .await
        .map_err(|e| PgError::query(src, &purpose, e))?;
    let sink = to
        .copy_in::<_, bytes::Bytes>(into)
        .await
        .map_err(|e| PgError::query(dst, &purpose, e))?;
    let stored = forward(out, sink, |n| {
        set_board(board, dst, &t.display, |c| c.rows_copied = n)
    })
    .await
    .map_err(|e| e.into_pg(src, dst, &purpose))?;
    set_board(board, dst, &t.display, |c| c.rows_copied = stored);
    Ok(stored)
}

/// Records a finished copy: progress moves to the run's snapshot and source identity.
async fn record_done(
    ttx: &tokio_postgres::Transaction<'_>,
    run: &CopyRun<'_>,
    dst: &str,
    table: &str,
) -> Result<(), PgError> {
    let copied = Some((run.cur, run.identity));
    record(ttx, run.sync, &run.source.name, dst, table, copied, "done").await
}

/// Records the copy decision; with a snapshot, progress moves to it, together with the
/// source's identity at that snapshot (see `rewind`).
async fn record(
    ttx: &tokio_postgres::Transaction<'_>,
    sync: &str,
    src: &str,
    dst: &str,
    table: &str,
    copied: Option<(&str, &str)>,
    decision: &str,
) -> Result<(), PgError> {
    let (snapshot, identity) = (copied.map(|c| c.0), copied.map(|c| c.1));
    ttx.execute(
        "UPDATE drover.progress SET snapshot = coalesce($1, snapshot), initial_copy = $2, \
         applied_at = CASE WHEN $1 IS NULL THEN applied_at ELSE now() END, \
         source_identity = coalesce($6, source_identity) \
         WHERE sync = $3 AND source = $4 AND table_name = $5",
        &[&snapshot, &decision, &sync, &src, &table, &identity],
    )
    .await
    .map_err(|e| PgError::query(dst, "record the copy", e))?;
    Ok(())
}
