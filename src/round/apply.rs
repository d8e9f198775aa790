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
use std::time::Instant;

use crate::capture::partitions;
use crate::pg::connect::checkout;
use crate::pg::error::PgError;
use crate::pg::simple;
use crate::pg::txn::ReadTx;
use crate::round::apply_steps::{Scope, TableWork};
use crate::round::backlog;
use crate::round::copy_apply::{apply_copy, CopyRound, RowsFrom};
use crate::round::in_place;
use crate::round::input::RoundInput;
pub use crate::round::limits::Limits;
use crate::round::opening::{open_apply, progress_for, Opening};
use crate::round::pending;
use crate::round::plan::{TablePlan, Window};
use crate::round::progress::load_progress;
use crate::round::report::{RoundReport, TableCounts, TargetReport};
use crate::round::rewind;
use crate::round::session::commit_apply;
use crate::round::side::TargetSide;
use crate::round::small;
use crate::round::snapshot::Snapshot;
use crate::round::source_snapshot;
use crate::round::timing::Phases;

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
    report.source_reads += 1;
    let id_sql = input.progress.identity.sql(&*src, src_name).await?;
    // Rolled back when dropped: the round only reads from the source.
    let guard = ReadTx::new(&src);
    let stx = guard.client();
    let (cur, works, mut reads, horizons) = read_source(stx, &mut input, report, &id_sql).await?;
    steps.mark("source_read");
    report.snapshot = Some(cur.clone());
    for ((target, work), read) in input.targets.iter().zip(works).zip(reads.drain(..)) {
        let pass = Pass {
            stx,
            target,
            cur: &cur,
            horizons: &horizons,
        };
        let (tr, done) = one_target(&mut input, pass, work, read, steps).await;
        report.targets.push(tr);
        // The sync purges what every receiver applied (`purge`).
        match done {
            Done::Nothing => {}
            Done::Advanced(upto) => report.advanced.push((target.name.clone(), upto)),
            Done::Rewound => report.rewound = true,
            // The source transaction is unusable after a failed statement.
            Done::SourceFailed => return Ok(()),
        }
    }
    // Read only: dropping rolls back without waiting for the answer.
    drop(guard);
    drop(src);
    Ok(())
}

/// One target's pass of a round, under the round's source transaction.
struct Pass<'a> {
    stx: &'a tokio_postgres::Client,
    target: &'a TargetSide,
    cur: &'a Snapshot,
    horizons: &'a rewind::Horizons,
}

/// How a target's pass ended, beside its report.
pub(crate) enum Done {
    Nothing,
    /// Committed: progress moved to this snapshot.
    Advanced(Snapshot),
    /// Stopped: the source or the target moved backwards.
    Rewound,
    /// A statement on the source failed: the round ends here.
    SourceFailed,
}

async fn one_target(
    input: &mut RoundInput<'_>,
    p: Pass<'_>,
    mut work: Vec<TableWork>,
    read: SmallReads,
    steps: &mut Phases,
) -> (TargetReport, Done) {
    let (src_name, target) = (input.source.name.as_str(), p.target);
    let mut tr = TargetReport {
        target: target.name.clone(),
        result: Ok(false),
        tables: HashMap::new(),
    };
    if let Err(e) = check_rewind(input, target, p.cur, p.horizons) {
        tracing::error!(sync = input.sync, target = %target.name, error = %e.for_log(), "stopped: moved backwards");
        // Re-read next round: a copy or an acknowledgement on the target resumes.
        input.progress.invalidate(src_name, &target.name);
        tr.result = Err(e);
        return (tr, Done::Rewound);
    }
    let needed = work
        .iter()
        .any(|w| w.pending > 0 || w.truncate || (w.retained > 0 && p.cur.xmin() > w.prev.xmin()));
    if !needed {
        return (tr, Done::Nothing);
    }
    let upto = match cut(p.stx, input, target, &mut work, p.cur).await {
        Ok(upto) => upto,
        Err(e) => {
            tr.result = Err(e);
            return (tr, Done::SourceFailed);
        }
    };
    let side = TargetRound {
        target,
        cur: &upto,
        work: &work,
        read,
    };
    tr.result = apply_target(p.stx, input, side, &mut tr.tables, steps).await;
    let done = record(input, target, upto, p.cur, &tr.result);
    (tr, done)
}

/// Where this target's progress moves: the round's snapshot, or a cut below it when the
/// backlog is large (`backlog::bound`; the next round takes the rest).
async fn cut(
    stx: &tokio_postgres::Client,
    input: &RoundInput<'_>,
    target: &TargetSide,
    work: &mut [TableWork],
    cur: &Snapshot,
) -> Result<Snapshot, PgError> {
    let src = input.source.name.as_str();
    if input.progress.unbounded.wanted(src, &target.name) {
        return Ok(cur.clone());
    }
    let scope = Scope {
        src,
        tables: input.tables,
    };
    Ok(match backlog::bound(stx, &scope, work, cur).await? {
        Some(x) => {
            for w in work.iter_mut() {
                w.window.below = Some(x);
            }
            Snapshot::below(x)
        }
        None => cur.clone(),
    })
}

/// Records an apply's result in the cache: the new progress, or a re-read after a failure.
pub(crate) fn record(
    input: &mut RoundInput<'_>,
    target: &TargetSide,
    upto: Snapshot,
    cur: &Snapshot,
    result: &Result<bool, PgError>,
) -> Done {
    let src = input.source.name.as_str();
    let pair = (src, target.name.as_str());
    let bounded = upto != *cur;
    (input.progress.unbounded).record(input.sync, pair, bounded, result);
    if let Err(e) = result {
        // The sync logs and counts it once with the round's other failures.
        tracing::debug!(sync = input.sync, target = %target.name, error = %e, "apply failed, rolled back");
        input.progress.invalidate(src, &target.name);
        return Done::Nothing;
    }
    let id = input.progress.identity.current(src).map(str::to_string);
    for t in input.tables.iter() {
        let p = &mut *input.progress;
        p.set(src, &target.name, &t.display, upto.clone());
        p.identity.record(src, &target.name, &t.display, id.clone());
    }
    Done::Advanced(upto)
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
    let prevs: Vec<Vec<Snapshot>> = (input.targets.iter())
        .map(|target| {
            (input.tables.iter())
                .map(|t| input.progress.get(src, &target.name, &t.display))
                .collect()
        })
        .collect();
    let stats: Vec<String> = (prevs.iter())
        .map(|p| pending::stats_sql(src, input.tables, p))
        .collect();
    let speculative = speculative(input, &prevs);
    // The source's identity (`rewind`) and the tables' column signatures (`signature`) ride
    // in the snapshot's batch.
    let snapshot_sql = source_snapshot::snapshot_sql(ReadTx::BEGIN_RR, src, input.tables, id_sql);
    let horizons_sql = rewind::horizons_sql(input.sync);
    let partitioned = crate::round::plan::partitioned(input.tables);
    let (snap, horizons, counts, reads, ()) = tokio::try_join!(
        // In statement order: after the first error the later statements of the flight
        // fail with 25P02, and the first error is the one to report.
        biased;
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
    let (cur, id) = source_snapshot::snapshot(src, input.tables, snap)?;
    if let Some(id) = id {
        input.progress.identity.set_current(src, id);
    }
    let horizons = rewind::parse_horizons(&simple::rows(horizons));
    let mut works = Vec::with_capacity(prevs.len());
    for (msgs, prevs) in counts.into_iter().zip(prevs) {
        let work = pending::parse(src, input.tables, prevs, msgs)?;
        for w in &work {
            report.note(&w.table, w.pending, w.oldest);
        }
        works.push(work.into_iter().map(|w| w.work).collect::<Vec<_>>());
    }
    for (target, work) in input.targets.iter().zip(&works) {
        let changed = (0..work.len()).filter(|&i| work[i].pending > 0);
        input.progress.busy.changed(&target.name, changed);
    }
    Ok((cur, works, reads, horizons))
}

/// Each target's busy tables, whose changes a small round would carry, read speculatively.
fn speculative<'t>(
    input: &'t RoundInput<'_>,
    prevs: &[Vec<Snapshot>],
) -> Vec<Vec<(usize, &'t TablePlan, Window)>> {
    (input.targets.iter().zip(prevs))
        .map(|(target, p)| {
            (input.progress.busy.tables(&target.name).into_iter())
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
        .collect()
}

/// The round's snapshot, each target's work, the speculative small reads, purge horizons.
type SourceRead = (
    Snapshot,
    Vec<Vec<TableWork>>,
    Vec<SmallReads>,
    rewind::Horizons,
);

/// Stops a target whose source or progress moved backwards (see `rewind`).
pub(crate) fn check_rewind(
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
    let dst = target.name.as_str();
    let mut client = checkout(&target.pool, dst).await?;
    let small =
        (input.tables.iter().zip(work)).all(|(t, w)| small::eligible(t, w.pending, w.truncate));
    if small {
        let ttx = begin(&mut client, dst, steps).await?;
        match apply_small(stx, ttx, input, side, counts, steps).await {
            // Two rows swapping values of a unique index refuse an in-place UPDATE: the COPY
            // path applies that table under a savepoint (`in_place::update_rows`).
            Err(e) if !target.replica_role.is_replica() && in_place::unique_violation(&e) => {
                tracing::info!(sync = input.sync, target = dst, error = %e.for_log(), "small round refused by a unique index: applying it through COPY");
                counts.clear();
            }
            done => return done,
        }
    }
    let ttx = begin(&mut client, dst, steps).await?;
    let side = CopyRound { target, cur, work };
    apply_copy(ttx, input, side, RowsFrom::Source(stx), counts, steps).await
}

pub(crate) async fn begin<'c>(
    client: &'c mut crate::pg::connect::PooledClient<'_>,
    dst: &str,
    steps: &mut Phases,
) -> Result<tokio_postgres::Transaction<'c>, PgError> {
    let ttx = client
        .transaction()
        .await
        .map_err(|e| PgError::query(dst, "begin apply", e))?;
    steps.mark("target_begin");
    Ok(ttx)
}

/// A small round (`small`): the changes read in the first flight (and any other changed
/// table's, read now), applied by `apply_text`.
async fn apply_small(
    stx: &tokio_postgres::Client,
    ttx: tokio_postgres::Transaction<'_>,
    input: &RoundInput<'_>,
    mut side: TargetRound<'_>,
    counts: &mut HashMap<String, TableCounts>,
    steps: &mut Phases,
) -> Result<bool, PgError> {
    let (target, work) = (side.target, side.work);
    let tables = input.tables;
    // Tables the first flight did not read (not busy in the previous round).
    let missing: Vec<(usize, &TablePlan, Window)> = (tables.iter().zip(work).enumerate())
        .filter(|(i, (_, w))| w.pending > 0 && !side.read.iter().any(|c| c.table == *i))
        .map(|(i, (t, w))| (i, t.as_ref(), w.window.clone()))
        .collect();
    if !missing.is_empty() {
        let src = input.source.name.as_str();
        side.read.extend(small::read(stx, src, &missing).await?);
        steps.mark("small_read");
    }
    let changes: Vec<small::TextChanges> = side
        .read
        .into_iter()
        .filter(|c| work[c.table].pending > 0)
        .collect();
    let text = TextRound {
        target,
        cur: side.cur,
        work,
        changes: &changes,
    };
    apply_text(ttx, input, text, counts, steps).await
}

/// A small round's changes for one target, read as text (`small`).
pub(crate) struct TextRound<'a> {
    pub target: &'a TargetSide,
    pub cur: &'a Snapshot,
    pub work: &'a [TableWork],
    /// Only tables with pending changes, in table order.
    pub changes: &'a [small::TextChanges],
}

/// Applies a small round's changes in the flight that opens the apply; its commit is the only
/// other round trip.
pub(crate) async fn apply_text(
    ttx: tokio_postgres::Transaction<'_>,
    input: &RoundInput<'_>,
    text: TextRound<'_>,
    counts: &mut HashMap<String, TableCounts>,
    steps: &mut Phases,
) -> Result<bool, PgError> {
    let (target, work, tables) = (text.target, text.work, input.tables);
    let dst = target.name.as_str();
    for (t, w) in tables.iter().zip(work) {
        counts.entry(t.display.clone()).or_default().pending = w.pending;
    }
    let in_place = !target.replica_role.is_replica();
    let (sql, statements) = small::apply_batch(tables, text.changes, in_place);
    let progress = progress_for(input, target, text.cur);
    let opening = Opening {
        sql: &progress,
        extra: "",
        batch: (!sql.is_empty()).then_some(sql.as_str()),
    };
    let done = open_apply(&ttx, input, target, work, opening).await?;
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
