//! One target's round around its held tables (`hold`): a round over the tables not held; if
//! the target refuses a table's rows for a data reason, that table's FK group is held and the
//! round is run again at once without it (the failed one rolled back, so nothing of it
//! stayed). Then each held group whose retry is due runs a round of its own; one that commits
//! is released. Holds and releases are written to `drover.apply_errors` on the target in
//! short transactions of their own.
//!
//! A data error that names no table (a batch whose text the target cannot even convert to its
//! encoding) is found by running each group alone once; an error no group alone reproduces
//! holds nothing: the round fails as before and is retried with backoff.

use std::sync::Arc;
use std::time::Instant;

use crate::capture::apply_errors::{self, ErrorRow};
use crate::metrics::failures::{self, Stage};
use crate::pg::error::PgError;
use crate::round::apply::run_round;
use crate::round::batch::ReadShared;
use crate::round::batch_apply;
use crate::round::hold::{attribute, cause_of, is_data_error, Cause, Groups, Holds};
use crate::round::input::RoundInput;
use crate::round::limits::Limits;
use crate::round::plan::TablePlan;
use crate::round::progress::ProgressCache;
use crate::round::report::{RoundReport, TargetReport};
use crate::round::side::{SourceSide, TargetSide};

/// What one target's round reads and writes.
pub struct HeldInput<'a> {
    pub sync: &'a str,
    pub source: &'a SourceSide,
    pub target: &'a TargetSide,
    /// Parents first.
    pub tables: &'a [Arc<TablePlan>],
    pub progress: &'a mut ProgressCache,
    pub limits: &'a Limits,
    /// The source actor's shared reads (`batch`); None: every round reads its own.
    pub shared: Option<&'a ReadShared>,
}

/// Runs the target's round without its held tables, then the retries that are due.
pub async fn run(mut input: HeldInput<'_>, holds: &mut Holds) -> RoundReport {
    let groups = Groups::new(input.tables);
    holds.keep_only(input.tables);
    let mut report = main_round(&mut input, holds, &groups).await;
    // Retries only beside a round that went through: a failing target retries nothing.
    if report.ok() {
        for cause in holds.due(Instant::now()) {
            let r = retry(&mut input, holds, &groups, &cause).await;
            merge(&mut report, r);
        }
    }
    if holds.rows_stale {
        holds.rows_stale = false;
        let still = holds.held_tables(&groups);
        let t = input.target;
        if let Err(e) = apply_errors::clear(&t.pool, &t.name, input.sync, &still).await {
            let what =
                "could not clear released holds in drover.apply_errors (run drover install?)";
            failures::failed(Stage::Round, input.sync, &e, what);
        }
    }
    report.held = holds.list(&groups);
    report
}

/// A round over `tables` for the input's target.
async fn round_of(input: &mut HeldInput<'_>, tables: &[Arc<TablePlan>]) -> RoundReport {
    let round = RoundInput {
        sync: input.sync,
        source: input.source,
        targets: std::slice::from_ref(input.target),
        tables,
        progress: &mut *input.progress,
        limits: input.limits,
    };
    match input.shared {
        Some(shared) => batch_apply::run_round(round, shared).await,
        None => run_round(round).await,
    }
}

/// The target's error in a round's report.
fn target_error(r: &RoundReport) -> Option<&PgError> {
    r.targets.first().and_then(|t| t.result.as_ref().err())
}

/// The target refused the rows (not a source's error inside the target's pass).
fn refused(input: &HeldInput<'_>, e: &PgError) -> bool {
    is_data_error(e) && e.database() == input.target.name
}

/// A bounded round refused by a constraint: `backlog` makes the next one unbounded, which
/// may well pass. Not a reason to hold anything.
fn bounded_refusal(input: &HeldInput<'_>, was_unbounded: bool) -> bool {
    let (src, dst) = (&input.source.name, &input.target.name);
    !was_unbounded && input.progress.unbounded.wanted(src, dst)
}

/// The tables not held, run again without each group the target refuses.
async fn main_round(input: &mut HeldInput<'_>, holds: &mut Holds, groups: &Groups) -> RoundReport {
    // Every group can be held once, and a bounded refusal costs one more attempt.
    let mut attempts = input.tables.len() + 2;
    let mut extra = Vec::new();
    loop {
        let held = holds.held_tables(groups);
        let active: Vec<Arc<TablePlan>> = (input.tables.iter())
            .filter(|t| !held.contains(&t.display))
            .cloned()
            .collect();
        if active.is_empty() {
            return merged(nothing_to_do(input.target), extra);
        }
        let was_unbounded = unbounded(input);
        let r = round_of(input, &active).await;
        attempts -= 1;
        let Some(e) = target_error(&r) else {
            return merged(r, extra);
        };
        if attempts == 0 || !refused(input, e) {
            return merged(r, extra);
        }
        if bounded_refusal(input, was_unbounded) {
            continue;
        }
        let cause = match attribute(e, &active, groups) {
            Some(i) => cause_of(e, &active[i].display),
            // No table named (a batch the server could not even read): each group alone finds
            // the refused one; the others commit on the way.
            None => match probe(input, &active, groups, &mut extra).await {
                Some(cause) => cause,
                None => return merged(r, extra),
            },
        };
        hold_group(input, holds, groups, e, cause).await;
    }
}

/// Holds `cause.table`'s group: logged and counted as a failure, recorded on the target.
async fn hold_group(
    input: &HeldInput<'_>,
    holds: &mut Holds,
    groups: &Groups,
    e: &PgError,
    cause: Cause,
) {
    let group = groups.of(&cause.table);
    let what = format!(
        "table {} held on database \"{}\" with its foreign-key group ({}): the target refused its rows; \
         the other tables go on; fix the row (status and drover.apply_errors name it), then drover retry",
        cause.table,
        input.target.name,
        group.join(", ")
    );
    failures::failed(Stage::Round, input.sync, e, &what);
    holds.hold(cause.clone(), group.clone(), Instant::now());
    record(input, &cause, &group).await;
}

/// Runs each group of `active` alone until one fails with a data error: that group's cause.
/// Groups that commit on the way add their reports to `extra`.
async fn probe(
    input: &mut HeldInput<'_>,
    active: &[Arc<TablePlan>],
    groups: &Groups,
    extra: &mut Vec<RoundReport>,
) -> Option<Cause> {
    let mut seen: Vec<String> = Vec::new();
    for t in active {
        if seen.contains(&t.display) {
            continue;
        }
        let names = groups.of(&t.display);
        seen.extend(names.iter().cloned());
        let tables: Vec<Arc<TablePlan>> = (active.iter())
            .filter(|x| names.contains(&x.display))
            .cloned()
            .collect();
        let r = round_of(input, &tables).await;
        match target_error(&r) {
            None => extra.push(r),
            Some(e) if refused(input, e) => {
                let i = attribute(e, &tables, groups).unwrap_or(0);
                return Some(cause_of(e, &tables[i].display));
            }
            Some(_) => return None,
        }
    }
    None
}

/// `r` with the reports of groups that committed while probing.
fn merged(mut r: RoundReport, extra: Vec<RoundReport>) -> RoundReport {
    for x in extra {
        merge(&mut r, x);
    }
    r
}

fn unbounded(input: &HeldInput<'_>) -> bool {
    (input.progress.unbounded).wanted(&input.source.name, &input.target.name)
}

/// A round for a held group alone: released when it commits, held longer when refused again.
async fn retry(
    input: &mut HeldInput<'_>,
    holds: &mut Holds,
    groups: &Groups,
    cause_table: &str,
) -> RoundReport {
    let names = holds.group_of(cause_table, groups);
    let tables: Vec<Arc<TablePlan>> = (input.tables.iter())
        .filter(|t| names.contains(&t.display))
        .cloned()
        .collect();
    if tables.is_empty() {
        holds.release(cause_table);
        return nothing_to_do(input.target);
    }
    let was_unbounded = unbounded(input);
    let r = round_of(input, &tables).await;
    let now = Instant::now();
    match target_error(&r) {
        None if r.source_error.is_none() => {
            tracing::info!(sync = input.sync, target = %input.target.name, tables = %names.join(", "), "held tables applied: hold released");
            holds.release(cause_table);
        }
        Some(e) if refused(input, e) && !bounded_refusal(input, was_unbounded) => {
            let i = attribute(e, &tables, groups).unwrap_or(0);
            let cause = cause_of(e, &tables[i].display);
            failures::failed(Stage::Round, input.sync, e, "held tables refused again");
            // A refusal in another table of the group keeps the hold under its first cause.
            let cause = Cause {
                table: cause_table.to_string(),
                ..cause
            };
            holds.hold(cause.clone(), names.clone(), now);
            record(input, &cause, &names).await;
        }
        _ => holds.postpone(cause_table, now),
    }
    r
}

/// Writes the group's rows to `drover.apply_errors` (the round's transaction has failed).
async fn record(input: &HeldInput<'_>, cause: &Cause, group: &[String]) {
    let held_with = format!(
        "held with {} (linked by a foreign key): {}",
        cause.table, cause.error
    );
    let rows: Vec<ErrorRow> = group
        .iter()
        .map(|t| {
            let own = *t == cause.table;
            ErrorRow {
                sync: input.sync,
                table: t,
                target: &input.target.name,
                sqlstate: &cause.sqlstate,
                error: if own { &cause.error } else { &held_with },
                keys: if own { cause.keys.as_deref() } else { None },
            }
        })
        .collect();
    let t = input.target;
    if let Err(e) = apply_errors::record(&t.pool, &t.name, &rows).await {
        let what = "could not record a held table in drover.apply_errors (run drover install?)";
        failures::failed(Stage::Round, input.sync, &e, what);
    }
}

/// Every table is held: a round with nothing to apply, which is not a failure.
fn nothing_to_do(target: &TargetSide) -> RoundReport {
    let mut r = RoundReport::empty();
    r.targets.push(TargetReport {
        target: target.name.clone(),
        result: Ok(false),
        tables: Default::default(),
    });
    r
}

/// Adds a retry's report to the round's: its counts when it committed, its pending rows, and
/// the target for the purge when it moved progress.
fn merge(into: &mut RoundReport, r: RoundReport) {
    for (table, n) in &r.pending {
        into.note(table, *n, None);
    }
    if let Some(o) = r.oldest_pending {
        into.oldest_pending = Some(into.oldest_pending.map_or(o, |x| x.min(o)));
    }
    let (Some(main), Some(extra)) = (into.targets.first_mut(), r.targets.into_iter().next()) else {
        return;
    };
    match (&main.result, extra.result) {
        (Ok(a), Ok(b)) => {
            main.result = Ok(*a || b);
            main.tables.extend(extra.tables);
        }
        // A target that fails a retry for another reason fails the round (it is retried).
        (Ok(_), Err(e)) if !is_data_error(&e) => main.result = Err(e),
        _ => {}
    }
    if let Some((target, snap)) = r.advanced.into_iter().next() {
        // The purge reads what the target durably applied per table; the snapshot here only
        // says whether the round was cut (`behind`), so the main round's stands for both.
        if !into.advanced.iter().any(|(t, _)| *t == target) {
            let snap = into.snapshot.clone().unwrap_or(snap);
            into.advanced.push((target, snap));
        }
    }
    into.rewound |= r.rewound;
    into.source_reads += r.source_reads;
    into.duration += r.duration;
}
