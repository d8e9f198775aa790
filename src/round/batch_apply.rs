//! One target's round from a shared source batch (`batch`): the target asks its source actor
//! for the batch after its progress, and applies it in its own transaction with its progress,
//! exactly as a round with its own read would (the progress check in that transaction keeps
//! it exact: a target whose progress moved meanwhile fails and reads again). A batch that is
//! not small, a target whose progress or source identity is not known yet, a failed shared
//! read, and a small apply a unique index refuses all fall back to the target's own round
//! (`apply::run_round`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::pg::connect::checkout;
use crate::pg::error::PgError;
use crate::round::apply::{self, apply_text, begin, check_rewind, Done, RoundInput, TextRound};
use crate::round::batch::{Batch, BatchRequest, ReadShared};
use crate::round::in_place;
use crate::round::progress::load_progress;
use crate::round::report::{RoundReport, TableCounts, TargetReport};
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
    let id_sql = input.progress.identity.known_sql(src)?;
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

/// Applies a small batch to the input's one target; false when the target must run a round
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
    if !batch.serves(&prevs) {
        return false;
    }
    let Some((work, changes)) = batch.for_target(&prevs) else {
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
        let text = TextRound {
            target,
            cur,
            work: &work,
            changes: &changes,
        };
        tr.result = apply_one(input, text, &mut tr.tables, steps).await;
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
    text: TextRound<'_>,
    counts: &mut HashMap<String, TableCounts>,
    steps: &mut Phases,
) -> Result<bool, PgError> {
    let dst = text.target.name.as_str();
    let mut client = checkout(&text.target.pool, dst).await?;
    let ttx = begin(&mut client, dst, steps).await?;
    apply_text(ttx, input, text, counts, steps).await
}
