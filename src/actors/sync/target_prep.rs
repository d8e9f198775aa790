//! Targets of a one-source sync prepared on their own. The sync's plans are read with the
//! targets that answer; a target that does not is `failing` in its lane's status and its lane
//! retries with backoff: the retry prepares it (facts, table checks, eviction of a former
//! holder's sessions, its fencing epoch) and copies into it per `initial_copy` instead of a
//! round, then its rounds catch up. The other targets run meanwhile.

use std::sync::Arc;

use actix::prelude::*;

use super::prepare::{self, Prepared, ReadyTarget};
use super::{Next, SyncActor};
use crate::metrics::failures::Stage;
use crate::pg::error::PgError;
use crate::round::copy::initial_copy;
use crate::round::evict;

/// Why a target's preparation step failed.
enum StepError {
    Prepare(PgError),
    /// `initial_copy` logged and counted it.
    Copy(PgError),
}

impl SyncActor {
    /// The lease's former holder, whose sessions are ended on each receiver it is prepared.
    pub(super) fn former(&self) -> Option<evict::Former> {
        let instance = self.lease.as_ref().and_then(|l| l.former.clone())?;
        Some(evict::Former {
            instance,
            lease_timeout: self.lease_timeout,
        })
    }

    /// The targets a reading of the plans prepares with the sync: all of them the first time
    /// (their initial copy then runs as one); later readings (a resume, a `drover ddl`, a
    /// schema error, a new lease) prepare each target in its lane, so a target that is down
    /// holds up no other.
    pub(super) fn targets_to_prepare(&self) -> Vec<String> {
        if self.plan.sources.len() > 1 || self.prepared.is_some() {
            return Vec::new();
        }
        (self.plan.receivers_of(&self.plan.sources[0]))
            .map(str::to_string)
            .collect()
    }

    /// Targets the plans were read without: each is failing and retried by its lane.
    pub(super) fn targets_unprepared(
        &mut self,
        unprepared: Vec<(String, PgError)>,
        ctx: &mut Context<Self>,
    ) {
        for (target, e) in unprepared {
            self.record_error(Stage::Prepare, &e);
            // A round of it still runs: its end schedules what comes next.
            if self.lanes.is_running(&target) {
                continue;
            }
            if let Next::After(wait) = self.lanes.unprepared(&target, &e) {
                ctx.run_later(wait, move |act, ctx| {
                    act.lanes.backoff_over(&target);
                    act.kick_lane(target, ctx);
                });
            }
        }
        self.report_waiting();
    }

    /// Instead of a round for a target that is not prepared: prepares it, copies into it, and
    /// adds it to the plans. Its lane is running meanwhile (kicks coalesce, Shutdown waits,
    /// and no other copy starts).
    pub(super) fn prepare_lane(
        &mut self,
        lane: String,
        prepared: Arc<Prepared>,
        ctx: &mut Context<Self>,
    ) {
        let inputs = prepare::TargetInputs {
            sync: self.plan.name.clone(),
            name: lane.clone(),
            database: self.databases[&lane].clone(),
            tables: self.tables.clone(),
            former: self.former(),
            term: self.lease_generation,
        };
        let (sync, mode, board) = (
            self.plan.name.clone(),
            self.plan.initial_copy,
            self.copy_board.clone(),
        );
        let read = prepared.read;
        let fut = async move {
            let ready = (prepare::prepare_target(inputs).await).map_err(StepError::Prepare)?;
            let tables = prepare::add_target(&prepared.tables, &ready);
            let targets = std::slice::from_ref(&ready.side);
            let source = &prepared.sources[0];
            let copied = initial_copy(&sync, source, targets, &tables, mode, &board)
                .await
                .map_err(StepError::Copy)?;
            Ok((ready, copied))
        };
        ctx.spawn(
            fut.into_actor(self)
                .map(move |res, act, ctx| act.lane_prepared(lane, read, res, ctx)),
        );
    }

    fn lane_prepared(
        &mut self,
        lane: String,
        read: u64,
        res: Result<(ReadyTarget, usize), StepError>,
        ctx: &mut Context<Self>,
    ) {
        self.leave_gate(ctx);
        let next = match res {
            Ok((ready, copied)) => {
                let current = self.prepared.clone();
                // Plans read again meanwhile: the next step prepares it against them.
                if let Some(p) = current.filter(|p| p.read == read && self.lease.is_some()) {
                    if copied > 0 {
                        self.status.copy_runs += 1;
                        tracing::info!(sync = %self.plan.name, target = %lane, tables = copied, "initial copy finished");
                    }
                    tracing::info!(sync = %self.plan.name, target = %lane, "target prepared: its rounds start");
                    self.prepared = Some(Arc::new(p.with_target(&ready)));
                    self.forget_progress();
                }
                self.lanes.prepared(&lane)
            }
            Err(StepError::Prepare(e)) => {
                self.record_error(Stage::Prepare, &e);
                self.lanes.unprepared(&lane, &e)
            }
            Err(StepError::Copy(e)) => {
                self.mark_bad(&e);
                self.lanes.unprepared(&lane, &e)
            }
        };
        self.report_waiting();
        self.after_lane(lane, next, false, ctx);
    }
}
