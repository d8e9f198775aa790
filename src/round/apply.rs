//! Runs one round from one source to its targets.
//!
//! Source side: a REPEATABLE READ READ ONLY transaction whose first statement reads the
//! snapshot `cur`; every table's pending keys and rows are read inside it, so the whole round
//! is one consistent picture. Target side, per target, one transaction: lock and check the
//! progress rows (a second daemon or a stale cache aborts here instead of applying twice) and
//! set them to `cur`, TRUNCATE where the source truncated, load pending keys into a temp table,
//! delete them (children first), COPY the current rows in (parents first), commit. Where FKs
//! are live (no replica mode) rows are updated in place instead (`in_place`).
//! A failure on one target rolls back that target only; the others go on.
//!
//! Round trips are what a small round costs (each is ~0.1 ms on loopback, and a round runs
//! every few ms under steady load): small queries go as text in one flight, and every
//! statement is prepared up front in one pipelined flight per side (a COPY named by text costs
//! a prepare round trip of its own).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_postgres::SimpleQueryMessage;

use crate::capture::partitions;
use crate::pg::connect::checkout;
use crate::pg::copy::{pipe, CopyEnd};
use crate::pg::error::PgError;
use crate::pg::facts::ReplicaRole;
use crate::pg::ident::quote_literal;
use crate::pg::simple;
use crate::pg::txn::ReadTx;
use crate::pg::Pool;
use crate::round::in_place;
pub use crate::round::limits::Limits;
use crate::round::plan::{TablePlan, Window};
use crate::round::rewind;
use crate::round::signature;
use crate::round::small;
use crate::round::snapshot::{ProgressCache, Snapshot};
use crate::round::timing::Phases;

#[derive(Clone)]
pub struct SourceSide {
    pub name: String,
    pub pool: Pool,
}

#[derive(Clone)]
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
    pub limits: &'a Limits,
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
    /// Targets whose progress this round moved, and to where: the purge's input.
    pub advanced: Vec<(String, Snapshot)>,
    /// A target moved backwards: horizons collected for the purge must be dropped.
    pub rewound: bool,
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
    let mut steps = Phases::default();
    let sync = input.sync;
    if let Err(e) = round_inner(input, &mut report, &mut steps).await {
        report.source_error = Some(e);
    }
    report.duration = started.elapsed();
    steps.log(sync);
    report
}

async fn round_inner(
    mut input: RoundInput<'_>,
    report: &mut RoundReport,
    steps: &mut Phases,
) -> Result<(), PgError> {
    let src_name = input.source.name.as_str();
    // Targets whose progress is not cached are read first (outside the source snapshot).
    for target in input.targets {
        if !input.progress.is_loaded(src_name, &target.name) {
            load_progress(input.sync, src_name, target, input.progress).await?;
        }
    }
    let src = checkout(&input.source.pool, src_name).await?;
    let id_sql = input.progress.identity.sql(&*src, src_name).await?;
    // Rolled back when dropped: the round only reads from the source.
    let guard = ReadTx::new(&src);
    let stx = guard.client();
    let (cur, works, mut reads, horizons) = read_source(stx, &mut input, report, &id_sql).await?;
    steps.mark("source_read");
    report.snapshot = Some(cur.clone());

    let mut advanced = Vec::new();
    let mut rewound = false;
    for ((target, work), read) in input.targets.iter().zip(works).zip(reads.drain(..)) {
        let mut tr = TargetReport {
            target: target.name.clone(),
            result: Ok(false),
            tables: HashMap::new(),
        };
        if let Err(e) = check_rewind(&input, target, &cur, &horizons) {
            tracing::error!(sync = input.sync, target = %target.name, error = %e.for_log(), "stopped: moved backwards");
            // Re-read next round: a copy or an acknowledgement on the target resumes.
            input.progress.invalidate(src_name, &target.name);
            tr.result = Err(e);
            report.targets.push(tr);
            rewound = true;
            continue;
        }
        let needed = work
            .iter()
            .any(|w| w.pending > 0 || w.truncate || (w.retained > 0 && cur.xmin() > w.prev.xmin()));
        if needed {
            let mut work = work;
            // A large backlog is applied in bounded rounds: progress moves to a cut below
            // which everything is committed, and the next round takes the rest.
            let whole = input.progress.unbounded.wanted(src_name, &target.name);
            let cut = if whole {
                Ok(None)
            } else {
                bound(stx, &input, &work, &cur).await
            };
            let upto = match cut {
                Ok(Some(x)) => {
                    for w in work.iter_mut() {
                        w.window.below = Some(x);
                    }
                    Snapshot::below(x)
                }
                Ok(None) => cur.clone(),
                Err(e) => {
                    // The source transaction is unusable after a failed statement.
                    tr.result = Err(e);
                    report.targets.push(tr);
                    return Ok(());
                }
            };
            let side = TargetRound {
                target,
                cur: &upto,
                work: &work,
                read,
            };
            tr.result = apply_target(stx, &input, side, &mut tr.tables, steps).await;
            let pair = (src_name, target.name.as_str());
            let bounded = upto != cur;
            (input.progress.unbounded).record(input.sync, pair, bounded, &tr.result);
            match &tr.result {
                Ok(_) => {
                    let id = input
                        .progress
                        .identity
                        .current(src_name)
                        .map(str::to_string);
                    for t in input.tables.iter() {
                        input
                            .progress
                            .set(src_name, &target.name, &t.display, upto.clone());
                        let p = &mut input.progress.identity;
                        p.record(src_name, &target.name, &t.display, id.clone());
                    }
                    advanced.push((target.name.clone(), upto));
                }
                Err(e) => {
                    // The sync logs and counts it once with the round's other failures.
                    tracing::debug!(sync = input.sync, target = %target.name, error = %e, "apply failed, rolled back");
                    input.progress.invalidate(src_name, &target.name);
                }
            }
        }
        report.targets.push(tr);
    }
    // Read only: dropping rolls back without waiting for the answer.
    drop(guard);
    drop(src);
    // The sync purges what every receiver applied (`purge`).
    report.advanced = advanced;
    report.rewound = rewound;
    Ok(())
}

/// What one target's small round would apply, read in the first flight (`small`): per keyed
/// table, its index and its changes.
type SmallReads = Vec<small::TextChanges>;

/// Opens the source transaction and reads, in one round trip (the queries are pipelined), the
/// round's snapshot, what each table has pending for each target, and each target's changes
/// as a small round would apply them (used only if the counts say the round is small).
async fn read_source(
    stx: &tokio_postgres::Client,
    input: &mut RoundInput<'_>,
    report: &mut RoundReport,
    id_sql: &str,
) -> Result<SourceRead, PgError> {
    let src = input.source.name.as_str();
    let prevs: Vec<Vec<Snapshot>> = input
        .targets
        .iter()
        .map(|target| {
            input
                .tables
                .iter()
                .map(|t| input.progress.get(src, &target.name, &t.display))
                .collect()
        })
        .collect();
    let stats: Vec<String> = prevs.iter().map(|p| stats_sql(input, p)).collect();
    // Each target's busy tables, whose changes a small round would carry, read speculatively.
    let speculative: Vec<Vec<(usize, &TablePlan, Window)>> = input
        .targets
        .iter()
        .zip(&prevs)
        .map(|(target, p)| {
            input
                .progress
                .busy
                .tables(&target.name)
                .into_iter()
                .filter_map(|i| {
                    let t = input.tables.get(i)?;
                    let w = Window {
                        prev: p[i].clone(),
                        below: None,
                    };
                    (!t.whole_row).then_some((i, t.as_ref(), w))
                })
                .collect()
        })
        .collect();
    // The source's identity (`rewind`) and the tables' column signatures (`signature`) ride
    // in the snapshot's batch.
    let snapshot_sql = signature::snapshot_sql(ReadTx::BEGIN_RR, src, input.tables, id_sql);
    let horizons_sql = rewind::horizons_sql(input.sync);
    let partitioned = crate::round::plan::partitioned(input.tables);
    let (snap, horizons, counts, reads, ()) = tokio::try_join!(
        async {
            stx.simple_query(&snapshot_sql)
                .await
                .map_err(|e| PgError::query(src, "begin the source snapshot", e))
        },
        async {
            stx.simple_query(&horizons_sql)
                .await
                .map_err(|e| PgError::query(src, "read purge horizons", e))
        },
        futures::future::try_join_all(stats.iter().map(|sql| async move {
            stx.simple_query(sql)
                .await
                .map_err(|e| PgError::query(src, "count pending changes", e))
        })),
        futures::future::try_join_all(speculative.iter().map(|tables| async move {
            if tables.is_empty() {
                return Ok(Vec::new());
            }
            small::read(stx, src, tables).await
        })),
        // Refuses the round while a partition is not captured (`capture::partitions`).
        partitions::check_captured(stx, src, &partitioned),
    )?;
    let (cur, id) = signature::snapshot(src, input.tables, snap)?;
    if let Some(id) = id {
        input.progress.identity.set_current(src, id);
    }
    let horizons = rewind::parse_horizons(&simple::rows(horizons));
    let mut works = Vec::with_capacity(prevs.len());
    for (msgs, prevs) in counts.into_iter().zip(prevs) {
        let rows = simple::rows(msgs);
        if rows.len() != input.tables.len() {
            return Err(PgError::setup(
                src,
                format!(
                    "pending counts: {} rows for {} tables",
                    rows.len(),
                    input.tables.len()
                ),
            ));
        }
        let mut out = Vec::with_capacity(rows.len());
        for (i, ((row, prev), t)) in rows.iter().zip(prevs).zip(input.tables.iter()).enumerate() {
            if simple::get::<usize>(row, 0) != Some(i) {
                return Err(PgError::setup(src, "pending counts arrived out of order"));
            }
            let w = TableWork {
                window: Window {
                    prev: prev.clone(),
                    below: None,
                },
                prev,
                pending: simple::get(row, 1).unwrap_or(0),
                oldest: simple::get::<f64>(row, 2)
                    .and_then(|e| DateTime::from_timestamp_micros((e * 1e6) as i64)),
                truncate: simple::get_bool(row, 3),
                retained: simple::get(row, 4).unwrap_or(0),
            };
            let p = report.pending.entry(t.display.clone()).or_default();
            *p = (*p).max(w.pending);
            if let Some(o) = w.oldest {
                report.oldest_pending = Some(report.oldest_pending.map_or(o, |x| x.min(o)));
            }
            out.push(w);
        }
        works.push(out);
    }
    for (target, work) in input.targets.iter().zip(&works) {
        let changed = (0..work.len()).filter(|&i| work[i].pending > 0);
        input.progress.busy.changed(&target.name, changed);
    }
    Ok((cur, works, reads, horizons))
}

/// The round's snapshot, each target's work, the speculative small reads, purge horizons.
type SourceRead = (
    Snapshot,
    Vec<Vec<TableWork>>,
    Vec<SmallReads>,
    rewind::Horizons,
);

/// Stops a target whose source or progress moved backwards (see `rewind`).
fn check_rewind(
    input: &RoundInput<'_>,
    target: &TargetSide,
    cur: &Snapshot,
    horizons: &rewind::Horizons,
) -> Result<(), PgError> {
    let src = input.source.name.as_str();
    let check = rewind::Check {
        sync: input.sync,
        source: src,
        target: &target.name,
        cur,
        identities: &input.progress.identity,
        horizons,
    };
    let tables = input.tables.iter().map(|t| {
        let prev = input.progress.get(src, &target.name, &t.display);
        (t.display.as_str(), prev)
    });
    rewind::check_target(&check, tables)
}

/// Counts what each table has pending after `prevs` (one per table): one statement per table
/// in one text batch, each row numbered. (One UNION ALL query costs more to plan, and under a
/// Parallel Append returns its rows in any order.)
fn stats_sql(input: &RoundInput<'_>, prevs: &[Snapshot]) -> String {
    let src = input.source.name.as_str();
    input
        .tables
        .iter()
        .zip(prevs)
        .enumerate()
        .map(|(i, (t, p))| {
            format!(
                "SELECT {i} AS i, s.* FROM ({}) AS s;\n",
                t.stats_sql(src, p)
            )
        })
        .collect()
}

/// Most delta rows of one table one round applies; a larger backlog is split into rounds.
const ROUND_BUDGET: u64 = 100_000;

/// The transaction-id cut that keeps this round within `ROUND_BUDGET` rows per table, or None
/// to apply everything visible in `cur`. The cut is valid only at or below `cur.xmin()`
/// (nothing below it still running) and at or above every `prev.xmax()` (it must not go back).
async fn bound(
    stx: &tokio_postgres::Client,
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
            "SELECT table_name, snapshot, source_identity FROM drover.progress WHERE sync = $1 AND source = $2",
            &[&sync, &source],
        )
        .await
        .map_err(|e| {
            PgError::query(&target.name, "read progress (has this version's drover install run?)", e)
        })?;
    for r in rows {
        let table: String = r.get(0);
        let snap: String = r.get(1);
        cache
            .identity
            .record(source, &target.name, &table, r.get(2));
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

/// One target's part of a round: what it applies, up to which snapshot.
struct TargetRound<'a> {
    target: &'a TargetSide,
    cur: &'a Snapshot,
    work: &'a [TableWork],
    /// The changes read for a small round.
    read: SmallReads,
}

async fn apply_target(
    stx: &tokio_postgres::Client,
    input: &RoundInput<'_>,
    side: TargetRound<'_>,
    counts: &mut HashMap<String, TableCounts>,
    steps: &mut Phases,
) -> Result<bool, PgError> {
    let (target, cur, work) = (side.target, side.cur, side.work);
    let src = input.source.name.as_str();
    let dst = target.name.as_str();
    let mut client = checkout(&target.pool, dst).await?;
    let tables = input.tables;
    if tables
        .iter()
        .zip(work)
        .all(|(t, w)| small::eligible(t, w.pending, w.truncate))
    {
        let ttx = client
            .transaction()
            .await
            .map_err(|e| PgError::query(dst, "begin apply", e))?;
        steps.mark("target_begin");
        let mut side = side;
        let missing: Vec<(usize, &TablePlan, Window)> = tables
            .iter()
            .zip(work)
            .enumerate()
            .filter(|(i, (_, w))| w.pending > 0 && !side.read.iter().any(|c| c.table == *i))
            .map(|(i, (t, w))| (i, t.as_ref(), w.window.clone()))
            .collect();
        if !missing.is_empty() {
            side.read.extend(small::read(stx, src, &missing).await?);
            steps.mark("small_read");
        }
        match apply_small(ttx, input, side, counts, steps).await {
            // Two rows swapping values of a unique index refuse an in-place UPDATE: the COPY
            // path applies that table under a savepoint (`in_place::update_rows`).
            Err(e) if !target.replica_role.is_replica() && in_place::unique_violation(&e) => {
                tracing::info!(sync = input.sync, target = dst, error = %e.for_log(), "small round refused by a unique index: applying it through COPY");
                counts.clear();
            }
            done => return done,
        }
    }
    let ttx = client
        .transaction()
        .await
        .map_err(|e| PgError::query(dst, "begin apply", e))?;
    steps.mark("target_begin");
    let plan = ApplySteps::new(input, target, work);
    // One flight: the session setup, the progress lock, check and update (a failed check
    // rolls the update back), and every statement the round runs, prepared on both sides.
    let progress = progress_sql(input, target, cur);
    let (opened, tstmts, sstmts) = tokio::join!(
        open_apply(
            &ttx,
            input,
            target,
            work,
            &progress,
            &plan.temp_tables,
            None
        ),
        futures::future::try_join_all(plan.target_sql.iter().map(|q| ttx.prepare(q))),
        futures::future::try_join_all(plan.source_sql.iter().map(|q| stx.prepare(q))),
    );
    opened?;
    let tstmts = tstmts.map_err(|e| PgError::query(dst, "prepare the apply statements", e))?;
    let sstmts = sstmts.map_err(|e| PgError::query(src, "prepare the read statements", e))?;
    steps.mark("target_setup");

    // TRUNCATE, changed keys (and rows, in place) into temp tables, deletes: children first.
    let pipes = Pipes {
        stx,
        src,
        ttx: ttx.client(),
        dst,
    };
    for ((t, w), s) in tables.iter().zip(work).zip(&plan.tables).rev() {
        let c = counts.entry(t.display.clone()).or_default();
        c.pending = w.pending;
        if w.truncate {
            empty_table(&ttx, dst, t).await?;
            c.truncated = true;
            continue;
        }
        let (Some(out), Some(into), Some(delete)) = (s.gone_out, s.gone_in, s.delete) else {
            continue;
        };
        let what = if t.whole_row {
            "gone rows"
        } else {
            "changed keys"
        };
        let what = format!("copy {what} of {}", t.display);
        let gone = pipes.run(&sstmts[out], &tstmts[into], &what).await?;
        if let (Some(out), Some(into)) = (s.rows_out, s.rows_temp) {
            let what = format!("copy changed rows of {}", t.display);
            pipes.run(&sstmts[out], &tstmts[into], &what).await?;
        }
        if gone > 0 {
            // Real row counts for the planner (see `session_settings`).
            ttx.batch_execute(&s.analyze).await.map_err(|e| {
                PgError::query(dst, format!("analyze the changes of {}", t.display), e)
            })?;
            c.deleted = ttx.execute(&tstmts[delete], &[]).await.map_err(|e| {
                PgError::query(dst, format!("delete changed rows of {}", t.display), e)
            })?;
        }
    }
    steps.mark("target_deletes");
    // Rows: parents first. Updated rows count as inserted (no updated counter).
    for (t, s) in tables.iter().zip(&plan.tables) {
        let c = counts.entry(t.display.clone()).or_default();
        if let Some(u) = s.update {
            c.inserted += in_place::update_rows(&ttx, dst, t, &tstmts[u]).await?;
        }
        if let Some(i) = s.insert {
            c.inserted += ttx.execute(&tstmts[i], &[]).await.map_err(|e| {
                PgError::query(dst, format!("insert changed rows of {}", t.display), e)
            })?;
        }
        let (Some(out), Some(into)) = (s.rows_out, s.rows_in) else {
            continue;
        };
        let what = format!("copy changed rows of {}", t.display);
        c.inserted += pipes.run(&sstmts[out], &tstmts[into], &what).await?;
    }
    steps.mark("target_rows");
    commit_apply(ttx, &target.replica_role, dst).await?;
    steps.mark("target_commit");
    Ok(true)
}

/// A small round (`small`): the changes read in the first flight, applied in the flight that
/// opens the apply; its commit is the only other round trip.
async fn apply_small(
    ttx: tokio_postgres::Transaction<'_>,
    input: &RoundInput<'_>,
    side: TargetRound<'_>,
    counts: &mut HashMap<String, TableCounts>,
    steps: &mut Phases,
) -> Result<bool, PgError> {
    let (target, work) = (side.target, side.work);
    let dst = target.name.as_str();
    let tables = input.tables;
    let changes: Vec<small::TextChanges> = side
        .read
        .into_iter()
        .filter(|c| work[c.table].pending > 0)
        .collect();
    for (t, w) in tables.iter().zip(work) {
        counts.entry(t.display.clone()).or_default().pending = w.pending;
    }
    let in_place = !target.replica_role.is_replica();
    let (sql, statements) = small::apply_batch(tables, &changes, in_place);
    let progress = progress_sql(input, target, side.cur);
    let batch = (!sql.is_empty()).then_some(sql.as_str());
    let done = open_apply(&ttx, input, target, work, &progress, "", batch).await?;
    for ((table, delete), n) in statements.into_iter().zip(small::affected(&done)) {
        let c = counts.entry(tables[table].display.clone()).or_default();
        // Updated rows count as inserted (status and metrics have no updated counter).
        if delete {
            c.deleted += n;
        } else {
            c.inserted += n;
        }
    }
    steps.mark("small_apply");
    commit_apply(ttx, &target.replica_role, dst).await?;
    steps.mark("target_commit");
    Ok(true)
}

/// The statements that open an apply, sent in one flight in this order: the session settings,
/// the progress lock (its rows are what `check_progress` reads: a helper function named by
/// `replica_role` returns a row of its own) and the progress update.
struct ProgressSql {
    session: String,
    lock: String,
    update: String,
}

fn progress_sql(input: &RoundInput<'_>, target: &TargetSide, cur: &Snapshot) -> ProgressSql {
    let (sync, source) = (quote_literal(input.sync), quote_literal(&input.source.name));
    let names: Vec<String> = input
        .tables
        .iter()
        .map(|t| quote_literal(&t.display))
        .collect();
    ProgressSql {
        // No wait for the WAL flush (the purge waits instead: see `purge`).
        session: session_settings(
            input.sync,
            &target.replica_role,
            &[
                input.limits.settings(),
                vec![("synchronous_commit", "off".to_string())],
            ]
            .concat(),
        ),
        lock: format!(
            "SELECT table_name, snapshot FROM drover.progress WHERE sync = {sync} AND source = {source} FOR UPDATE"
        ),
        update: format!(
            "UPDATE drover.progress SET snapshot = {snap}, applied_at = now(){identity} \
             WHERE sync = {sync} AND source = {source} AND table_name IN ({names})",
            snap = quote_literal(cur.as_str()),
            names = names.join(", "),
            identity = match input.progress.identity.current(&input.source.name) {
                Some(id) => format!(", source_identity = {}", quote_literal(id)),
                None => String::new(),
            },
        ),
    }
}

/// Sends the session setup (with `extra` statements), the progress lock, the update and then
/// `batch`, if any, in one flight; checks the locked progress against the cache (a mismatch
/// fails the apply, and the rollback undoes the batch too). Returns the batch's answer.
async fn open_apply(
    ttx: &tokio_postgres::Transaction<'_>,
    input: &RoundInput<'_>,
    target: &TargetSide,
    work: &[TableWork],
    sql: &ProgressSql,
    extra: &str,
    batch: Option<&str>,
) -> Result<Vec<SimpleQueryMessage>, PgError> {
    let dst = target.name.as_str();
    let setup = format!("{}\n{extra}", sql.session);
    let what = |e| PgError::query(dst, "lock and record progress", e);
    let (_, locked, _, done) = tokio::try_join!(
        async { ttx.simple_query(&setup).await.map_err(what) },
        async { ttx.simple_query(&sql.lock).await.map_err(what) },
        async { ttx.simple_query(&sql.update).await.map_err(what) },
        async {
            match batch {
                Some(b) => ttx
                    .simple_query(b)
                    .await
                    .map_err(|e| PgError::query(dst, "apply changed rows", e)),
                None => Ok(Vec::new()),
            }
        }
    )?;
    check_progress(&simple::rows(locked), input, target, work)?;
    Ok(done)
}

/// The source and target of a round's COPY pipes.
struct Pipes<'a> {
    stx: &'a tokio_postgres::Client,
    src: &'a str,
    ttx: &'a tokio_postgres::Client,
    dst: &'a str,
}

impl Pipes<'_> {
    async fn run(
        &self,
        out: &tokio_postgres::Statement,
        into: &tokio_postgres::Statement,
        what: &str,
    ) -> Result<u64, PgError> {
        pipe(
            CopyEnd {
                tx: self.stx,
                database: self.src,
                sql: out,
            },
            CopyEnd {
                tx: self.ttx,
                database: self.dst,
                sql: into,
            },
            what,
        )
        .await
    }
}

/// Indexes into the statements prepared for one table's apply.
#[derive(Default)]
struct TableSteps {
    /// Source: the changed keys (or gone row images); target: where they go; the delete.
    gone_out: Option<usize>,
    gone_in: Option<usize>,
    delete: Option<usize>,
    /// Source: the current rows; target: the COPY that stores them, into the table or (in
    /// place) into the rows temp table.
    rows_out: Option<usize>,
    rows_in: Option<usize>,
    rows_temp: Option<usize>,
    /// In place: the update and insert from the rows temp table.
    update: Option<usize>,
    insert: Option<usize>,
    /// ANALYZE of the loaded temp tables, before the delete.
    analyze: String,
}

/// Everything one target's apply sends, built before the first query so that it can be sent
/// in one flight.
struct ApplySteps {
    /// The temp tables of the round (created before its statements are prepared).
    temp_tables: String,
    source_sql: Vec<String>,
    target_sql: Vec<String>,
    tables: Vec<TableSteps>,
}

fn push(v: &mut Vec<String>, q: String) -> Option<usize> {
    v.push(q);
    Some(v.len() - 1)
}

impl ApplySteps {
    fn new(input: &RoundInput<'_>, target: &TargetSide, work: &[TableWork]) -> ApplySteps {
        let mut steps = ApplySteps {
            temp_tables: String::new(),
            source_sql: Vec::new(),
            target_sql: Vec::new(),
            tables: Vec::with_capacity(work.len()),
        };
        let in_place = !target.replica_role.is_replica();
        for (t, w) in input.tables.iter().zip(work) {
            let s = if w.truncate {
                TableSteps {
                    rows_out: push(&mut steps.source_sql, t.all_rows_out()),
                    rows_in: push(&mut steps.target_sql, t.rows_in()),
                    ..TableSteps::default()
                }
            } else if w.pending == 0 {
                TableSteps::default()
            } else if t.whole_row {
                steps.images(input, target, t, &w.window)
            } else {
                steps.keyed(input, target, t, &w.window, in_place)
            };
            steps.tables.push(s);
        }
        steps
    }

    /// A key-less table: delete the gone images, insert the new ones.
    fn images(
        &mut self,
        input: &RoundInput<'_>,
        target: &TargetSide,
        t: &TablePlan,
        w: &Window,
    ) -> TableSteps {
        let (src, dst) = (input.source.name.as_str(), target.name.as_str());
        self.temp_tables
            .push_str(&format!("{};\n", t.create_temp_images(dst)));
        TableSteps {
            gone_out: push(&mut self.source_sql, t.images_gone_out(src, w)),
            gone_in: push(&mut self.target_sql, t.images_in(dst)),
            delete: push(&mut self.target_sql, t.delete_images(dst)),
            rows_out: push(&mut self.source_sql, t.images_new_out(src, w)),
            rows_in: push(&mut self.target_sql, t.rows_in()),
            analyze: format!("ANALYZE {};", t.temp_name("img", dst)),
            ..TableSteps::default()
        }
    }

    /// A keyed table: delete every changed key and insert the current rows, or `in_place`
    /// (see `in_place`) delete only the keys gone on the source and update or insert the rest.
    fn keyed(
        &mut self,
        input: &RoundInput<'_>,
        target: &TargetSide,
        t: &TablePlan,
        w: &Window,
        in_place: bool,
    ) -> TableSteps {
        let (src, dst) = (input.source.name.as_str(), target.name.as_str());
        self.temp_tables
            .push_str(&format!("{};\n", t.create_temp_keys(dst)));
        let mut s = TableSteps {
            gone_out: push(&mut self.source_sql, t.keys_out(src, w)),
            gone_in: push(&mut self.target_sql, t.keys_in(dst)),
            rows_out: push(&mut self.source_sql, t.rows_out(src, w)),
            ..TableSteps::default()
        };
        if in_place {
            self.temp_tables
                .push_str(&format!("{};\n", t.create_temp_rows(dst)));
            let from = t.temp_rows_from(dst);
            s.delete = push(&mut self.target_sql, t.delete_gone(dst));
            s.rows_temp = push(&mut self.target_sql, t.rows_in_temp(dst));
            s.update = t
                .update_from(&from)
                .and_then(|u| push(&mut self.target_sql, u));
            s.insert = push(&mut self.target_sql, t.insert_new(&from));
            s.analyze = t.analyze_temp(dst);
        } else {
            s.delete = push(&mut self.target_sql, t.delete_keys(dst));
            s.rows_in = push(&mut self.target_sql, t.rows_in());
            s.analyze = format!("ANALYZE {};", t.temp_name("keys", dst));
        }
        s
    }
}

/// Opens an apply (or copy) transaction's session state: the loop guard and the replica role.
pub(crate) fn apply_session(sync: &str, role: &ReplicaRole) -> String {
    session_settings(sync, role, &[])
}

/// `apply_session` under a round's time limits (multi-master applies).
pub(crate) fn limited_session(sync: &str, role: &ReplicaRole, limits: &Limits) -> String {
    session_settings(sync, role, &limits.settings())
}

/// `apply_session` with `extra` transaction-local settings: one statement (each statement of a
/// round costs the server a parse and a plan), plus the replica-role helper when one is named.
fn session_settings(sync: &str, role: &ReplicaRole, extra: &[(&str, String)]) -> String {
    // No planner switches: the COPY path ANALYZEs its temp tables once loaded and the small
    // path's VALUES lists carry exact counts, so a delete by key is a nested loop over the key
    // index when few keys changed, and a hash join where there is no index or many keys.
    // The loop guard's value is the database's secret, read on the server: it never
    // travels, nor shows in statement text (see `capture::secret`).
    let mut calls = vec![crate::capture::secret::SET_ORIGIN.to_string()];
    let mut settings = vec![("drover.sync", sync.to_string())];
    if *role == ReplicaRole::Set {
        settings.push(("session_replication_role", "replica".to_string()));
    }
    settings.extend_from_slice(extra);
    calls.extend(settings.iter().map(|(k, v)| {
        format!(
            "set_config({}, {}, true)",
            quote_literal(k),
            quote_literal(v.as_str())
        )
    }));
    let helper = match role {
        ReplicaRole::Set => String::new(),
        other => other.begin_sql(),
    };
    format!("SELECT {}; {helper}", calls.join(", "))
}

/// How `empty_table` emptied a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Emptied {
    /// TRUNCATE of a plain table: a COPY in the same transaction may use FREEZE.
    Truncated,
    /// TRUNCATE of a partitioned table (COPY FREEZE refuses those), or DELETE.
    Other,
}

/// Empties a target table: TRUNCATE, or DELETE when a foreign key references it (PostgreSQL
/// refuses to truncate a referenced table; in replica mode the DELETE skips the FK checks).
pub(crate) async fn empty_table(
    ttx: &tokio_postgres::Transaction<'_>,
    dst: &str,
    t: &TablePlan,
) -> Result<Emptied, PgError> {
    let purpose = format!("empty {}", t.display);
    let row = ttx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE contype = 'f' \
             AND confrelid = $1::text::regclass AND conrelid <> confrelid), \
             (SELECT relkind = 'r' FROM pg_class WHERE oid = $1::text::regclass)",
            &[&t.quoted],
        )
        .await
        .map_err(|e| PgError::query(dst, &purpose, e))?;
    let (referenced, plain): (bool, bool) = (row.get(0), row.get(1));
    let (sql, how) = if referenced {
        (format!("DELETE FROM {}", t.quoted), Emptied::Other)
    } else if plain {
        (t.truncate(), Emptied::Truncated)
    } else {
        (t.truncate(), Emptied::Other)
    };
    ttx.batch_execute(&sql)
        .await
        .map_err(|e| PgError::query(dst, &purpose, e))?;
    Ok(how)
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
    super::fence::check(&ttx, db).await?;
    ttx.commit()
        .await
        .map_err(|e| PgError::query(db, "commit apply", e))
}

/// Checks the progress rows locked at the start of the apply against the cache: if another
/// daemon applied meanwhile, this round stops before writing anything (the rollback also undoes
/// the progress update sent with the lock).
fn check_progress(
    rows: &[tokio_postgres::SimpleQueryRow],
    input: &RoundInput<'_>,
    target: &TargetSide,
    work: &[TableWork],
) -> Result<(), PgError> {
    let dst = target.name.as_str();
    let found: HashMap<&str, &str> = rows
        .iter()
        .filter_map(|r| Some((r.get(0)?, r.get(1)?)))
        .collect();
    for (t, w) in input.tables.iter().zip(work) {
        match found.get(t.display.as_str()) {
            None => {
                return Err(PgError::setup(
                    dst,
                    format!("no progress row for table {} of sync {}: run drover install", t.display, input.sync),
                ))
            }
            Some(s) if *s != w.prev.as_str() => {
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
