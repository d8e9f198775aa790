//! SyncActor's rounds: fan-out of kicks to its lanes (one TargetActor per target of a
//! one-source sync; the multi-master round runs here), and the bookkeeping when a lane's
//! round ends: status, metrics, purge, what the lane does next.

use std::sync::Arc;

use actix::prelude::*;
use chrono::Utc;

use super::lanes::MULTI;
use super::report;
use super::{Next, Phase, SyncActor};
use crate::actors::database::Kick;
use crate::actors::source::SourceActor;
use crate::actors::table::Applied;
use crate::actors::target::RunRound;
use crate::metrics::failures::{self, Stage};
use crate::round::multi::{run_multi_round, MultiInput};
use crate::round::progress::ProgressCache;
use crate::round::purge;
use crate::round::RoundReport;

/// How soon the plans are read again for a master that answers again.
const REJOIN_NOW: std::time::Duration = std::time::Duration::from_millis(10);

impl SyncActor {
    /// No round while plans are read again (after a schema error: it would use the old ones),
    /// while tables are copied or a copy waits (unless the first source it copies from is
    /// down: then it waits for the lease), or without the lease. The stored pause is checked
    /// by the round gate at each round start (`pause_gate`).
    pub(super) fn may_run(&self) -> bool {
        self.phase == Phase::Running
            && self.prepared.is_some()
            && self.runs_sync()
            && (self.forced_copy.is_none() || self.first_down.away())
    }

    /// A kick for every lane: each starts a round unless one runs or it backs off.
    pub(super) fn kick_all(&mut self, ctx: &mut Context<Self>) {
        if !self.may_run() {
            return;
        }
        for lane in self.lanes.kicked() {
            self.gated_start(lane, ctx);
        }
    }

    /// A kick for one lane (its last round asked for another, or its backoff is over).
    pub(super) fn kick_lane(&mut self, lane: String, ctx: &mut Context<Self>) {
        if self.may_run() && self.lanes.kick(&lane) {
            self.gated_start(lane, ctx);
        }
    }

    pub(super) fn start_lane(&mut self, lane: String, ctx: &mut Context<Self>) {
        let Some(prepared) = self.prepared.clone() else {
            return;
        };
        if lane == MULTI {
            return self.start_multi(ctx);
        }
        let Some(mut l) = prepared.lane(&self.plan, &lane) else {
            return self.prepare_lane(lane, prepared, ctx);
        };
        l.shared = self.source.clone().map(SourceActor::reader);
        let Some(addr) = self.targets.get(&lane) else {
            return;
        };
        let msg = RunRound {
            lane: Arc::new(l),
            generation: self.generation,
        };
        let fut = addr.send(msg);
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            let report = res.unwrap_or_else(|e| {
                let mut r = RoundReport::empty();
                let msg = format!("target actor gone: {e}");
                r.source_error = Some(crate::pg::error::PgError::internal(&lane, msg));
                r
            });
            act.lane_done(lane, report, ctx);
        }));
    }

    /// A multi-master round: every database in one round, as before target actors.
    fn start_multi(&mut self, ctx: &mut Context<Self>) {
        let Some(prepared) = self.prepared.clone() else {
            return;
        };
        let mut cache = std::mem::take(&mut self.multi_progress);
        let (sync, strategy, limits) =
            (self.plan.name.clone(), self.plan.strategies(), self.limits);
        let fut = async move {
            let round = run_multi_round(MultiInput {
                sync: &sync,
                sources: &prepared.sources,
                databases: &prepared.receivers,
                tables: &prepared.tables,
                progress: &mut cache,
                strategy: &strategy,
                limits: &limits,
            });
            let report = match tokio::time::timeout(limits.round_deadline, round).await {
                Ok(r) => r,
                Err(_) => {
                    cache = ProgressCache::default();
                    let mut r = RoundReport::empty();
                    r.source_error = Some(crate::pg::error::PgError::Deadline {
                        database: prepared.sources[0].name.clone(),
                        secs: limits.round_deadline.as_secs(),
                    });
                    r
                }
            };
            (report, cache)
        };
        ctx.spawn(fut.into_actor(self).map(|(report, cache), act, ctx| {
            act.multi_progress = cache;
            act.lane_done(MULTI.to_string(), report, ctx);
        }));
    }

    fn lane_done(&mut self, lane: String, report: RoundReport, ctx: &mut Context<Self>) {
        self.round_left_gate(&lane, ctx);
        let now = Utc::now();
        let outcome = report::outcome(&report, now);
        let (inserted, deleted) = report.rows();
        self.status.rounds += 1;
        self.status.rows_inserted += inserted;
        self.status.rows_deleted += deleted;
        self.status.last_round_ms = Some(report.duration.as_secs_f64() * 1000.0);
        self.status.conflicts += report.conflicts.len() as u64;
        report::clocks(&mut self.status, &report);
        let next = self.lanes.finished(&lane, &outcome);
        self.note_held(&lane, &report);
        self.status.lag_seconds = self.lanes.lag();
        self.status.pending_rows = self.lanes.pending();
        self.purge(&report);
        if outcome.good {
            if inserted + deleted > 0 {
                tracing::info!(sync = %self.plan.name, target = %lane, inserted, deleted, elapsed_ms = report.duration.as_millis() as u64, "round applied changes");
            }
        } else {
            self.round_failed(&report);
        }
        let all_good = self.lanes.all_good();
        if all_good && self.runs_sync() {
            self.status.state = "good".into();
        }
        if all_good && outcome.good {
            self.status.last_good = Some(now);
        }
        self.send_metrics(&report, outcome.lag, all_good);
        let reprepare = report::needs_reprepare(&report) || !report.rejoin.is_empty();
        // A master back from before the plans were read: read them with it next.
        let next = match next {
            Next::Now | Next::Idle if !report.rejoin.is_empty() => Next::After(REJOIN_NOW),
            next => next,
        };
        self.report_waiting();
        self.after_lane(lane, next, reprepare, ctx);
    }

    /// What a lane does after its round: another now or after a pause, a retry later, or
    /// nothing.
    pub(super) fn after_lane(
        &mut self,
        lane: String,
        next: Next,
        reprepare: bool,
        ctx: &mut Context<Self>,
    ) {
        if !self.lanes.running() {
            if self.phase == Phase::Stopping {
                for w in self.stop_waiters.drain(..) {
                    let _ = w.send(());
                }
                return;
            }
            if self.forced_copy.is_some() {
                self.start_copy(ctx);
            }
        }
        match next {
            Next::Stop | Next::Idle => {}
            Next::Now => self.kick_lane(lane, ctx),
            // The paced round starts unless the sync stopped, paused or lost its lease
            // meanwhile (`kick_lane` asks `may_run` and the lane's schedule again).
            Next::Paced(wait) => {
                ctx.run_later(wait, move |act, ctx| {
                    act.lanes.pace_over(&lane);
                    act.kick_lane(lane, ctx);
                });
            }
            Next::After(wait) => {
                ctx.run_later(wait, move |act, ctx| {
                    act.lanes.backoff_over(&lane);
                    if reprepare {
                        act.prepare(ctx);
                    } else {
                        act.kick_lane(lane, ctx);
                    }
                });
            }
        }
    }

    fn send_metrics(&mut self, report: &RoundReport, lag: f64, all_good: bool) {
        let Some(p) = &self.prepared else { return };
        let (mut m, applied) = report::metrics(&self.plan, &p.tables, report, lag);
        m.sync_good = all_good;
        if all_good {
            m.last_good_unix = self
                .status
                .last_good
                .map(|t| t.timestamp_millis() as f64 / 1000.0);
        }
        for (i, inserted, deleted) in applied {
            if let Some(a) = self.tables.get(i) {
                a.do_send(Applied { inserted, deleted });
            }
        }
        self.metrics.do_send(m);
    }

    /// Purges, beside the rounds, what every receiver has durably applied (`purge`).
    fn purge(&mut self, report: &RoundReport) {
        let Some(p) = &self.prepared else { return };
        if p.sources.len() != 1 {
            return; // Multi-master rounds purge as they go.
        }
        if report.rewound {
            self.purge_due.clear();
        }
        let Some(due) = self
            .purge_due
            .take_due(report.advanced.clone(), report.idle())
        else {
            return;
        };
        let source = &p.sources[0];
        self.purge_due.start(
            due,
            purge::Background {
                source: source.pool.clone(),
                source_name: source.name.clone(),
                sync: self.plan.name.clone(),
                targets: (p.receivers.iter())
                    .map(|t| (t.name.clone(), t.pool.clone()))
                    .collect(),
                tables: p.tables.clone(),
            },
        );
    }

    /// A failed round: each database that failed is one failure; status shows the first.
    fn round_failed(&mut self, report: &RoundReport) {
        for e in report::errors(report) {
            let what = "round failed, rolled back";
            failures::failed(Stage::Round, &self.plan.name, e, what);
        }
        if let Some(e) = report.first_error() {
            self.mark_bad(e);
        }
    }

    /// Tells the sources' doorbells whether this sync waits for notifications (`Lanes::waiting`).
    pub(super) fn report_waiting(&mut self) {
        let waiting = self.lanes.waiting();
        if self.waiting_reported == Some(waiting) {
            return;
        }
        self.waiting_reported = Some(waiting);
        for s in &self.plan.sources {
            self.databases[s].do_send(crate::actors::database::Waiting {
                sync: self.plan.name.clone(),
                waiting,
            });
        }
    }
}

impl Handler<Kick> for SyncActor {
    type Result = ();

    fn handle(&mut self, _: Kick, ctx: &mut Context<Self>) {
        self.kick_all(ctx);
    }
}
