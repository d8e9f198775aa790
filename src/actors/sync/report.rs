//! What a finished round means for the sync's status and metrics: plain functions over the
//! round's report, tested without an actor system.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::lanes::Outcome;
use crate::actors::metrics::RoundMetrics;
use crate::pg::error::PgError;
use crate::round::{clock, RoundReport, TablePlan};
use crate::status::SyncStatus;
use crate::topology::SyncPlan;

/// Age in seconds at `now` of the oldest change the round found pending (0 when none).
pub fn lag(report: &RoundReport, now: DateTime<Utc>) -> f64 {
    report
        .oldest_pending
        .map(|o| (now - o).num_milliseconds().max(0) as f64 / 1000.0)
        .unwrap_or(0.0)
}

/// The lane's view of a round. A good round's lag is how old its oldest change was when it
/// landed; a failed round's, how old the oldest change waiting is now.
pub fn outcome(report: &RoundReport, now: DateTime<Utc>) -> Outcome {
    let (inserted, deleted) = report.rows();
    let good = report.ok();
    // Progress moved to a cut below the round's snapshot: more of the backlog is waiting.
    let behind = report
        .advanced
        .iter()
        .any(|(_, s)| report.snapshot.as_ref().is_some_and(|cur| cur != s));
    // Multi-master: only unreachable databases failed; the others' round ran.
    let partial = !good
        && report.source_error.is_none()
        && !report.left_out.is_empty()
        && (report.targets.iter()).all(|t| t.result.is_ok() || report.left_out.contains(&t.target));
    Outcome {
        good,
        partial,
        moved: inserted + deleted > 0,
        behind,
        lag: lag(report, now),
        pending: report.pending.values().sum(),
        error: report.first_error().map(|e| (e.redacted(), e.to_string())),
        now,
        elapsed: report.duration,
    }
}

/// Whether the plans are re-read before the next round: only after a schema error
/// (`ErrorKind::needs_reprepare`).
pub fn needs_reprepare(report: &RoundReport) -> bool {
    report.first_error().is_some_and(PgError::needs_reprepare)
}

/// Every error of a round: the source's, then each target's. Databases a multi-master round
/// left out as unreachable are not counted again every round (`multi_down` logs them once).
pub fn errors(report: &RoundReport) -> impl Iterator<Item = &PgError> {
    (report.source_error.iter()).chain(
        (report.targets.iter())
            .filter(|t| !report.left_out.contains(&t.target))
            .filter_map(|t| t.result.as_ref().err()),
    )
}

/// The clocks a multi-master round measured: the status keeps each master's last offset and
/// warns of those off by more than a second.
pub fn clocks(status: &mut SyncStatus, report: &RoundReport) {
    if report.clock_offsets.is_empty() {
        return;
    }
    let offsets = &mut status.clock_offsets;
    offsets.extend(report.clock_offsets.iter().map(|(d, o)| (d.clone(), *o)));
    status.warnings.retain(|w| !clock::is_clock_warning(w));
    status.warnings.extend(clock::warnings(offsets));
}

/// The metrics of one round, and per table (by index in `tables`) the rows it applied.
pub fn metrics(
    plan: &SyncPlan,
    tables: &[Arc<TablePlan>],
    report: &RoundReport,
    lag: f64,
) -> (RoundMetrics, Vec<(usize, u64, u64)>) {
    let strategies = plan.strategies();
    let mut m = RoundMetrics {
        sync: plan.name.clone(),
        source: plan.sources.join(","),
        conflicts: report
            .conflicts
            .iter()
            .map(|c| {
                let winner = c.winner.clone().unwrap_or_else(|| "none".into());
                (
                    c.table.clone(),
                    strategies.for_table(&c.table).as_str().to_string(),
                    winner,
                )
            })
            .collect(),
        good: report.ok(),
        clock_offsets: (report.clock_offsets.iter())
            .map(|(d, o)| (d.clone(), *o))
            .collect(),
        duration_secs: report.duration.as_secs_f64(),
        source_reads: report.source_reads,
        ..Default::default()
    };
    let mut applied = Vec::new();
    for (i, t) in tables.iter().enumerate() {
        let (mut ti, mut td) = (0, 0);
        for tr in &report.targets {
            if let (Ok(true), Some(c)) = (&tr.result, tr.tables.get(&t.display)) {
                ti += c.inserted;
                td += c.deleted;
                m.rows
                    .push((t.display.clone(), tr.target.clone(), c.inserted, c.deleted));
            }
        }
        if ti + td > 0 {
            applied.push((i, ti, td));
        }
        let pending = report.pending.get(&t.display).copied().unwrap_or(0);
        m.pending.push((t.display.clone(), pending));
    }
    for tr in &report.targets {
        m.lag.push((tr.target.clone(), lag));
        m.targets.push((tr.target.clone(), tr.result.is_ok()));
    }
    (m, applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round::snapshot::Snapshot;
    use crate::round::TargetReport;

    fn report(target_ok: bool) -> RoundReport {
        report_with((!target_ok).then(|| PgError::install("t1", "no progress row")))
    }

    fn report_with(error: Option<PgError>) -> RoundReport {
        let mut r = RoundReport::empty();
        r.snapshot = Snapshot::parse("10:12:");
        r.pending.insert("public.t".into(), 5);
        r.oldest_pending = Some(Utc::now() - chrono::Duration::seconds(3));
        r.targets.push(TargetReport {
            target: "t1".into(),
            result: error.map_or(Ok(true), Err),
            tables: Default::default(),
        });
        r
    }

    #[test]
    fn outcome_of_good_bounded_and_failed_rounds() {
        let now = Utc::now();
        let mut r = report(true);
        r.advanced
            .push(("t1".into(), Snapshot::parse("10:12:").unwrap()));
        let o = outcome(&r, now);
        assert!(o.good && !o.behind && o.error.is_none());
        assert!(o.lag >= 2.9, "{}", o.lag);
        r.advanced[0].1 = Snapshot::below(8);
        assert!(
            outcome(&r, now).behind,
            "progress below the round's snapshot"
        );
        let bad = report(false);
        let o = outcome(&bad, now);
        assert!(!o.good);
        assert_eq!(o.pending, 5);
        assert!(o.error.unwrap().0.contains("no progress row"));
        assert!(
            !needs_reprepare(&bad),
            "drover install is needed, not new plans"
        );
        assert_eq!(errors(&bad).count(), 1);
    }

    #[test]
    fn only_a_schema_error_re_reads_the_plans() {
        let fenced = PgError::concurrency(
            "t1",
            "sync s: this daemon no longer holds the lease (another daemon took it over)",
        );
        let r = report_with(Some(fenced));
        assert!(
            !needs_reprepare(&r),
            "re-preparing would take the fence back"
        );
        assert_eq!(r.first_error().unwrap().kind().as_str(), "concurrency");
        let changed = PgError::schema("t1", "table public.t differs from database \"s\"");
        assert!(needs_reprepare(&report_with(Some(changed))));
    }
}
