//! One target's round from a shared source batch (`batch`): the target asks its source actor
//! for the batch after its progress, and applies it in its own transaction with its progress,
//! exactly as a round with its own read would (the progress check in that transaction keeps
//! it exact: a target whose progress moved meanwhile fails and reads again). A small batch is
//! applied as text (`apply_text`), a larger one through COPY from the data read once
//! (`copy_apply`). A batch that is neither, a target whose progress is not known yet, a failed
//! shared read, and a small apply a unique index refuses all fall back to the target's own
//! round (`apply::run_round`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::pg::connect::checkout;
use crate::pg::error::PgError;
use crate::round::apply::{self, apply_text, begin, check_rewind, Done, TextRound};
use crate::round::apply_steps::TableWork;
use crate::round::batch::{Batch, BatchRequest, ReadShared};
use crate::round::copy_apply::{apply_copy, CopyRound, RowsFrom};
use crate::round::in_place;
use crate::round::input::RoundInput;
use crate::round::progress::load_progress;
use crate::round::report::{RoundReport, TableCounts, TargetReport};
use crate::round::small::TextChanges;
use crate::round::snapshot::Snapshot;
use crate::round::timing::Phases;

/// A round for the input's one target from a shared batch, or its own round when no shared
/// batch fits.
pub async fn run_round(mut input: RoundInput<'_>, shared: &ReadShared) -> RoundReport {
    let started = Instant::now();
    if let Some(batch) = ask(&mut input, shared).await {
        let mut report = RoundReport::empty();
        let mut steps = Phases::default();
        if apply_batch(&mut input, &mut report, &mut steps, &batch).await {
            report.duration = started.elapsed();
            steps.log(input.sync);
            return report;
        }
    }
    apply::run_round(input).await
}

/// The shared batch after this target's progress; None when the target reads its own.
async fn ask(input: &mut RoundInput<'_>, shared: &ReadShared) -> Option<Arc<Batch>> {
    let [target] = input.targets else {
        return None;
    };
    let src = input.source.name.as_str();
    if !input.progress.is_loaded(src, &target.name) {
        // A failure is reported by the round of its own that follows.
        load_progress(input.sync, src, target, input.progress)
            .await
            .ok()?;
    }
    let id_sql = match input.progress.identity.known_sql(src) {
        Some(sql) => sql,
        // Asked once per source, so that a target's first round can share a read too (a
        // backlog found at start is the largest batch there is).
        None => {
            let client = checkout(&input.source.pool, src).await.ok()?;
            input.progress.identity.sql(&*client, src).await.ok()?
        }
    };
    let prevs = (input.tables.iter())
        .map(|t| input.progress.get(src, &target.name, &t.display))
        .collect();
    let req = BatchRequest {
        sync: input.sync.to_string(),
        source: input.source.clone(),
        tables: input.tables.to_vec(),
        prevs,
        id_sql,
    };
    shared(req).await
}

/// What one target applies of a shared batch.
enum Shared<'b> {
    Text(Vec<TextChanges>),
    Copied(&'b [Vec<bytes::Bytes>]),
}

/// This target's work and share of `batch`, or None when it runs a round of its own.
fn share_of<'b>(batch: &'b Batch, prevs: &[Snapshot]) -> Option<(Vec<TableWork>, Shared<'b>)> {
    if !batch.serves(prevs) {
        return None;
    }
    if let Some((work, changes)) = batch.for_target(prevs) {
        return Some((work, Shared::Text(changes)));
    }
    let copied = batch.copied.as_ref()?;
    Some((batch.work.clone(), Shared::Copied(&copied.reads)))
}

/// Applies a shared batch to the input's one target; false when the target must run a round
/// of its own instead (nothing of this attempt stays).
async fn apply_batch(
    input: &mut RoundInput<'_>,
    report: &mut RoundReport,
    steps: &mut Phases,
    batch: &Batch,
) -> bool {
    let [target] = input.targets else {
        return false;
    };
    let src = input.source.name.as_str();
    let prevs: Vec<_> = (input.tables.iter())
        .map(|t| input.progress.get(src, &target.name, &t.display))
        .collect();
    let Some((work, shared)) = share_of(batch, &prevs) else {
        return false;
    };
    if let Some(id) = &batch.id {
        input.progress.identity.set_current(src, id.clone());
    }
    for (t, w) in input.tables.iter().zip(&work) {
        report.note(&t.display, w.pending, w.oldest);
    }
    let changed = (0..work.len()).filter(|&i| work[i].pending > 0);
    input.progress.busy.changed(&target.name, changed);
    let cur = &batch.cur;
    report.snapshot = Some(cur.clone());
    let mut tr = TargetReport {
        target: target.name.clone(),
        result: Ok(false),
        tables: HashMap::new(),
    };
    if let Err(e) = check_rewind(input, target, cur, &batch.horizons) {
        tracing::error!(sync = input.sync, target = %target.name, error = %e.for_log(), "stopped: moved backwards");
        // Re-read next round: a copy or an acknowledgement on the target resumes.
        input.progress.invalidate(src, &target.name);
        tr.result = Err(e);
        report.targets.push(tr);
        report.rewound = true;
        return true;
    }
    let needed =
        (work.iter()).any(|w| w.pending > 0 || (w.retained > 0 && cur.xmin() > w.prev.xmin()));
    if needed {
        tr.result = apply_one(input, (&work, cur), shared, &mut tr.tables, steps).await;
        if let Err(e) = &tr.result {
            // Two rows swapping values of a unique index: the target's own round applies the
            // table through COPY (`in_place::update_rows`).
            if !target.replica_role.is_replica() && in_place::unique_violation(e) {
                return false;
            }
        }
        if let Done::Advanced(upto) = apply::record(input, target, cur.clone(), cur, &tr.result) {
            report.advanced.push((target.name.clone(), upto));
        }
    }
    report.targets.push(tr);
    true
}

/// One transaction on the target: the batch's rows and the progress, together.
async fn apply_one(
    input: &RoundInput<'_>,
    (work, cur): (&[TableWork], &Snapshot),
    shared: Shared<'_>,
    counts: &mut HashMap<String, TableCounts>,
    steps: &mut Phases,
) -> Result<bool, PgError> {
    let target = &input.targets[0];
    let dst = target.name.as_str();
    let mut client = checkout(&target.pool, dst).await?;
    let ttx = begin(&mut client, dst, steps).await?;
    match shared {
        Shared::Text(changes) => {
            let text = TextRound {
                target,
                cur,
                work,
                changes: &changes,
            };
            apply_text(ttx, input, text, counts, steps).await
        }
        Shared::Copied(reads) => {
            let side = CopyRound { target, cur, work };
            apply_copy(ttx, input, side, RowsFrom::Copied(reads), counts, steps).await
        }
    }
}
