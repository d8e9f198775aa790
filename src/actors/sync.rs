//! SyncActor: one per sync. Holds the sync's lease (an advisory lock on its first source),
//! prepares table plans, runs rounds on kicks (notifications, the poll timer, `drover kick`),
//! coalesces kicks that arrive during a round into one follow-up round, backs off on errors,
//! and keeps the status that `/status` serves.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;

use crate::actors::database::{DatabaseActor, Kick, Subscribe};
use crate::actors::metrics::{LeaseMetrics, MetricsActor};
use crate::actors::source::SourceActor;
use crate::actors::table::{GetTableStatus, TableActor};
use crate::actors::target::TargetActor;
use crate::metrics::failures::{self, Stage};
use crate::pg::error::PgError;
use crate::pg::Endpoint;
use crate::round::copy::{initial_copy, CopyBoard, CopyMode};
use crate::round::limits::Limits;
use crate::round::progress::ProgressCache;
use crate::round::purge::PurgeDue;
use crate::round::side::TargetSide;
use crate::round::TablePlan;
use crate::status::SyncStatus;
use crate::topology::SyncPlan;

mod first_down;
mod held;
pub mod lanes;
pub mod lease;
mod multi_prep;
mod pause_gate;
mod phase;
mod prepare;
mod report;
mod rounds;
mod schedule;
mod target_prep;
pub use held::RetryHeld;
use lanes::{Lanes, MULTI};
use lease::{Attempt, Lease};
pub use pause_gate::{Retire, SetPaused};
pub use phase::Phase;
use prepare::Prepared;
pub use schedule::{Next, Schedule};

/// Safety-net poll: catches changes whose notification was missed (LISTEN reconnecting).
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often a daemon without the lease tries to take it.
const LEASE_RETRY: Duration = Duration::from_secs(2);

#[derive(Message)]
#[rtype(result = "SyncStatus")]
pub struct GetStatus;

/// Truncate and copy tables (all when empty) into the receive-only databases, between rounds.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ForceCopy(pub Vec<String>);

/// Finish the current round, then stop starting new ones.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// The lease session ended (generation tells stale sessions apart).
#[derive(Message)]
#[rtype(result = "()")]
struct LeaseLost(u64, lease::Ended);

pub struct SyncActor {
    plan: SyncPlan,
    lease_endpoint: Endpoint,
    databases: HashMap<String, Addr<DatabaseActor>>,
    tables: Vec<Addr<TableActor>>,
    metrics: Addr<MetricsActor>,
    prepared: Option<Arc<Prepared>>,
    /// One actor per target of a one-source sync: it runs that target's rounds.
    targets: HashMap<String, Addr<TargetActor>>,
    /// A one-source sync's source actor: its targets share its reads.
    source: Option<Addr<SourceActor>>,
    /// Bumped when plans are read again or tables copied: targets re-read their progress.
    generation: u64,
    /// Counts the sync's readings of its plans (`Prepared::read`).
    plans_read: u64,
    /// Per target (or the one multi-master lane): schedule and status.
    lanes: Lanes,
    /// A multi-master sync's progress (its rounds run here).
    multi_progress: ProgressCache,
    /// Horizons the targets applied, not yet purged on the source.
    purge_due: PurgeDue,
    /// Backoff of failed lease-time steps (prepare, copy).
    setup: Schedule,
    limits: Limits,
    /// The sync's lifecycle on this daemon.
    phase: Phase,
    status: SyncStatus,
    lease: Option<Lease>,
    lease_timeout: Duration,
    lease_generation: u64,
    /// A copy requested through the API, to run when no round is: Some(tables), empty = all.
    forced_copy: Option<Vec<String>>,
    copy_board: CopyBoard,
    /// What the sources' doorbells were last told (see `report_waiting`).
    waiting_reported: Option<bool>,
    stop_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    /// The round gate and stored pause (`pause_gate`).
    gate: crate::pause::Gate,
    /// The newest `drover.ddl_log` id the gate has seen (plans are read again when it moves).
    ddl_mark: Option<i64>,
    /// Multi-master: the lease lost with the first source, rounds going on (`first_down`).
    first_down: first_down::FirstDown,
}

pub struct SyncDeps {
    pub plan: SyncPlan,
    pub lease_endpoint: Endpoint,
    /// `daemon.lease_timeout`.
    pub lease_timeout: Duration,
    pub databases: HashMap<String, Addr<DatabaseActor>>,
    pub tables: Vec<Addr<TableActor>>,
    pub metrics: Addr<MetricsActor>,
    /// `daemon.lock_timeout`, `statement_timeout`, `round_deadline`, `round_pacing`.
    pub limits: Limits,
}

impl SyncActor {
    pub fn new(d: SyncDeps) -> Self {
        let status = SyncStatus {
            name: d.plan.name.clone(),
            state: "starting".into(),
            last_good: None,
            last_bad: None,
            last_error: None,
            last_error_full: None,
            rows_inserted: 0,
            rows_deleted: 0,
            conflicts: 0,
            lag_seconds: 0.0,
            pending_rows: 0,
            lease: "waiting".into(),
            relgroup: d.plan.relgroup.clone(),
            sources: d.plan.sources.clone(),
            targets: d.plan.targets.clone(),
            tables: d.plan.tables.len(),
            rounds: 0,
            last_round_ms: None,
            paused: false,
            paused_by: None,
            paused_at: None,
            pause_reason: None,
            copy: Vec::new(),
            copy_runs: 0,
            lease_holder: None,
            target_states: Vec::new(),
            table_states: Vec::new(),
            clock_offsets: Default::default(),
            warnings: Vec::new(),
        };
        let lanes = if d.plan.sources.len() > 1 {
            Lanes::new([MULTI.to_string()])
        } else {
            Lanes::new(d.plan.receivers_of(&d.plan.sources[0]).map(str::to_string))
                .paced(d.limits.round_pacing)
        };
        let gate = crate::pause::Gate::new(d.lease_endpoint.clone(), &d.plan.name);
        SyncActor {
            gate,
            ddl_mark: None,
            first_down: Default::default(),
            plan: d.plan,
            lease_endpoint: d.lease_endpoint,
            databases: d.databases,
            tables: d.tables,
            metrics: d.metrics,
            prepared: None,
            targets: HashMap::new(),
            source: None,
            generation: 0,
            plans_read: 0,
            lanes,
            multi_progress: ProgressCache::default(),
            purge_due: PurgeDue::default(),
            setup: Schedule::default(),
            limits: d.limits,
            status,
            lease: None,
            lease_timeout: d.lease_timeout,
            lease_generation: 0,
            phase: Phase::Starting,
            forced_copy: None,
            copy_board: CopyBoard::default(),
            waiting_reported: Some(true),
            stop_waiters: Vec::new(),
        }
    }

    fn name(&self) -> &str {
        &self.plan.name
    }

    /// Tries to take the sync's lease (see `lease`); retries while another daemon holds it.
    fn acquire_lease(&mut self, ctx: &mut Context<Self>) {
        if self.phase == Phase::Stopping {
            return;
        }
        self.lease_generation += 1;
        let generation = self.lease_generation;
        let req = lease::Request {
            endpoint: self.lease_endpoint.clone(),
            sync: self.plan.name.clone(),
            key: lease_key(&self.plan.name),
            timeout: self.lease_timeout,
        };
        let me = ctx.address();
        let fut = lease::try_take(req, move |why| me.do_send(LeaseLost(generation, why)));
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok(Attempt::Taken(l)) if generation == act.lease_generation => {
                    act.first_back();
                    tracing::info!(sync = %act.name(), expiry = ?l.expiry, "lease taken: running this sync");
                    act.lease = Some(l);
                    act.status.lease = "held".into();
                    act.status.lease_holder = None;
                    act.lease_metrics(true);
                    act.prepare(ctx);
                    return;
                }
                Ok(Attempt::Taken(_)) => {}
                Ok(Attempt::Busy(holder)) => {
                    tracing::debug!(sync = %act.name(), "lease held by another daemon");
                    act.lease_busy();
                    act.standby(holder);
                }
                Err(e) => {
                    act.lease_failed(&e);
                    act.record_error(Stage::Lease, &e);
                }
            }
            ctx.run_later(LEASE_RETRY, |act, ctx| act.acquire_lease(ctx));
        }));
    }

    /// Another daemon runs this sync: a state, not a fault.
    fn standby(&mut self, holder: Option<crate::status::LeaseHolder>) {
        self.phase = self.phase.standby();
        self.status.state = "standby".into();
        self.status.lease = "waiting".into();
        self.status.lease_holder = holder;
        self.lease_metrics(false);
    }

    fn lease_metrics(&self, held: bool) {
        self.metrics.do_send(LeaseMetrics {
            sync: self.plan.name.clone(),
            held,
        });
    }

    /// Reads server facts and table plans; on success subscribes to kicks and runs a round.
    fn prepare(&mut self, ctx: &mut Context<Self>) {
        // Without the lease, preparing would bump the fencing epoch the holder relies on.
        let skip = matches!(self.phase, Phase::Preparing | Phase::Stopping);
        if skip || self.lease.is_none() {
            return;
        }
        self.phase = Phase::Preparing;
        let inputs = prepare::Inputs {
            plan: self.plan.clone(),
            databases: self.databases.clone(),
            tables: self.tables.clone(),
            former: self.former(),
            term: self.lease_generation,
            targets: self.targets_to_prepare(),
            settled: self.settled(),
        };
        let multi = self.plan.sources.len() > 1;
        let fut = async move {
            if multi {
                multi_prep::prepare_multi(inputs).await
            } else {
                prepare::prepare(inputs).await
            }
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok(mut p) => {
                act.setup = Schedule::default();
                let first = act.prepared.is_none();
                act.plans_read += 1;
                p.read = act.plans_read;
                let unprepared = std::mem::take(&mut p.unprepared);
                let absent = std::mem::take(&mut p.absent);
                act.prepared = Some(Arc::new(p));
                act.phase = act.phase.step_done(true);
                act.forget_progress();
                act.masters_absent(absent);
                if first {
                    act.start_targets();
                    for s in &act.plan.sources {
                        act.databases[s].do_send(Subscribe {
                            sync: act.plan.name.clone(),
                            kicks: ctx.address().recipient(),
                        });
                    }
                    ctx.run_interval(POLL_INTERVAL, |_, ctx| ctx.notify(Kick));
                }
                act.targets_unprepared(unprepared, ctx);
                act.start_copy(ctx);
            }
            Err(e) => {
                act.record_error(Stage::Prepare, &e);
                // No round or copy until plans are read and the fence taken: after a lease
                // change, commits are refused until then.
                act.phase = act.phase.step_done(false);
                let wait = act.setup.failed();
                ctx.run_later(wait, |act, ctx| act.prepare(ctx));
            }
        }));
    }

    /// Runs the initial copy of tables that have none yet (per `initial_copy`), then rounds.
    fn start_copy(&mut self, ctx: &mut Context<Self>) {
        let Some(prepared) = self.prepared.clone() else {
            return;
        };
        if self.lease.is_none() || self.phase != Phase::Running {
            return;
        }
        // A forced copy (`drover copy` against this daemon) replaces the configured mode.
        let forced = self.forced_copy.take();
        // Plans read again while other targets' rounds run: a copy waits for them (a forced
        // one starts when the last ends); the initial copy ran with the first plans.
        if self.lanes.running() {
            match forced {
                Some(f) => self.forced_copy = Some(f),
                None => ctx.notify(Kick),
            }
            return;
        }
        let mode = if forced.is_some() {
            CopyMode::Forced
        } else {
            self.plan.initial_copy
        };
        if mode == CopyMode::Never {
            ctx.notify(Kick);
            return;
        }
        let tables = copy_tables(&prepared.tables, forced.as_deref());
        self.phase = Phase::Copying;
        let sync = self.plan.name.clone();
        let board = self.copy_board.clone();
        // Multi-master: only receive-only databases are copied into, from the first source.
        let sources: Vec<String> = self.plan.sources.clone();
        let fut = async move {
            let targets: Vec<TargetSide> = prepared
                .receivers
                .iter()
                .filter(|r| !sources.contains(&r.name))
                .map(|r| TargetSide {
                    name: r.name.clone(),
                    pool: r.pool.clone(),
                    replica_role: r.replica_role.clone(),
                })
                .collect();
            initial_copy(&sync, &prepared.sources[0], &targets, &tables, mode, &board).await
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.phase = act.phase.step_done(true);
            act.status.copy_runs += 1;
            match res {
                Ok(n) => {
                    act.setup = Schedule::default();
                    if n > 0 {
                        tracing::info!(sync = %act.plan.name, tables = n, "initial copy finished");
                    }
                    act.forget_progress();
                    ctx.notify(Kick);
                }
                Err(e) => {
                    // `initial_copy` logged and counted it.
                    act.mark_bad(&e);
                    // A forced copy is retried like the configured one until it succeeds.
                    if forced.is_some() && act.forced_copy.is_none() {
                        act.forced_copy = forced;
                    }
                    let wait = act.setup.failed();
                    ctx.run_later(wait, |act, ctx| {
                        act.setup.backoff_over();
                        act.start_copy(ctx);
                    });
                }
            }
        }));
    }

    /// Starts one actor per target of a one-source sync.
    fn start_targets(&mut self) {
        if self.plan.sources.len() > 1 {
            return;
        }
        let receivers: Vec<String> = (self.plan.receivers_of(&self.plan.sources[0]))
            .map(str::to_string)
            .collect();
        for t in &receivers {
            let addr = TargetActor::new(self.limits).start();
            self.targets.insert(t.to_string(), addr);
        }
        let (sync, source) = (&self.plan.name, &self.plan.sources[0]);
        let actor = SourceActor::new(sync, source, self.metrics.clone(), receivers.len())
            .with_deadline(self.limits.round_deadline);
        self.source = Some(actor.start());
    }

    /// After new plans or a copy: every target reads its progress again.
    fn forget_progress(&mut self) {
        self.generation += 1;
        self.multi_progress = ProgressCache::default();
    }

    /// Logs and counts a failed attempt (once), and shows it in status.
    fn record_error(&mut self, stage: Stage, e: &PgError) {
        let what = match stage {
            Stage::Lease => "cannot take the sync lease",
            Stage::Prepare => "preparing tables failed",
            Stage::Copy => "initial copy failed",
            _ => "round failed",
        };
        failures::failed(stage, &self.plan.name, e, what);
        self.mark_bad(e);
    }

    fn mark_bad(&mut self, e: &PgError) {
        let msg = e.redacted();
        // Without the lease, failures (a fenced commit, a lease attempt) do not make it bad.
        if self.runs_sync() {
            self.status.state = "bad".into();
        }
        self.status.last_bad = Some(Utc::now());
        self.status.last_error = Some(msg);
        self.status.last_error_full = Some(e.to_string());
    }
}

/// The tables a copy takes: those named (all when none are).
fn copy_tables(tables: &[Arc<TablePlan>], only: Option<&[String]>) -> Vec<Arc<TablePlan>> {
    match only {
        Some(only) if !only.is_empty() => (tables.iter())
            .filter(|t| only.contains(&t.display))
            .cloned()
            .collect(),
        _ => tables.to_vec(),
    }
}

/// The advisory-lock key of a sync: FNV-1a of its name, stable across versions and daemons.
pub fn lease_key(sync: &str) -> i64 {
    crate::pg::advisory::key("drover:sync:", sync)
}

impl Actor for SyncActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.acquire_lease(ctx);
    }
}

impl Handler<ForceCopy> for SyncActor {
    type Result = ();

    fn handle(&mut self, msg: ForceCopy, ctx: &mut Context<Self>) {
        self.forced_copy = Some(msg.0);
        if !self.lanes.running() && self.phase == Phase::Running && self.prepared.is_some() {
            self.start_copy(ctx);
        }
    }
}

impl Handler<LeaseLost> for SyncActor {
    type Result = ();

    fn handle(&mut self, msg: LeaseLost, ctx: &mut Context<Self>) {
        if msg.0 != self.lease_generation || self.lease.is_none() {
            return;
        }
        self.lease_lost(msg.1, ctx);
    }
}

impl Handler<GetStatus> for SyncActor {
    type Result = ResponseFuture<SyncStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        let mut s = self.status.clone();
        s.target_states = self.lanes.statuses();
        s.copy = self.copy_board.lock().expect("copy board lock").clone();
        let asks: Vec<_> = self.tables.iter().map(|t| t.send(GetTableStatus)).collect();
        Box::pin(async move {
            // A table actor that is gone has nothing to show.
            let tables = futures::future::join_all(asks).await;
            s.table_states = tables.into_iter().filter_map(Result::ok).collect();
            s
        })
    }
}

impl Handler<Shutdown> for SyncActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.phase = Phase::Stopping;
        if self.lanes.stop() {
            return Box::pin(async {});
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.stop_waiters.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
