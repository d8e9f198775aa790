//! SyncActor: one per sync. Holds the sync's lease (an advisory lock on its first source),
//! prepares table plans, runs rounds on kicks (notifications, the poll timer, `drover kick`),
//! coalesces kicks that arrive during a round into one follow-up round, backs off on errors,
//! and keeps the status that `/status` serves.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;

use crate::actors::database::{DatabaseActor, DbHandle, GetHandle, Kick, Subscribe, Waiting};
use crate::actors::metrics::{LeaseMetrics, MetricsActor, RoundMetrics};
use crate::actors::table::{Applied, Prepare, TableActor};
use crate::metrics::failures::{self, Stage};
use crate::pg::error::{ErrorKind, PgError};
use crate::pg::Endpoint;
use crate::round::apply::{SourceSide, TargetSide};
use crate::round::copy::{initial_copy, CopyBoard, CopyMode};
use crate::round::multi::{run_multi_round, MultiInput};
use crate::round::plan::fk_order;
use crate::round::sequences as seq;
use crate::round::snapshot::ProgressCache;
use crate::round::{evict, fence};
use crate::round::{run_round, RoundInput, RoundReport, TablePlan};
use crate::status::SyncStatus;
use crate::topology::SyncPlan;

pub mod lease;
mod pause_gate;
mod schedule;
use lease::{Attempt, Lease};
pub use pause_gate::{Retire, SetPaused};
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
struct LeaseLost(u64);

/// Everything a round needs, built once the lease is held.
struct Prepared {
    sources: Vec<SourceSide>,
    /// Databases that receive: with one source, every other database; with several
    /// (multi-master), every database of the sync.
    receivers: Vec<TargetSide>,
    tables: Vec<Arc<TablePlan>>,
}

pub struct SyncActor {
    plan: SyncPlan,
    lease_endpoint: Endpoint,
    databases: HashMap<String, Addr<DatabaseActor>>,
    tables: Vec<Addr<TableActor>>,
    metrics: Addr<MetricsActor>,
    prepared: Option<Arc<Prepared>>,
    progress: ProgressCache,
    schedule: Schedule,
    status: SyncStatus,
    lease: Option<Lease>,
    lease_timeout: Duration,
    lease_generation: u64,
    preparing: bool,
    /// An initial copy is running: no rounds until it ends.
    copying: bool,
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
}

pub struct SyncDeps {
    pub plan: SyncPlan,
    pub lease_endpoint: Endpoint,
    /// `daemon.lease_timeout`.
    pub lease_timeout: Duration,
    pub databases: HashMap<String, Addr<DatabaseActor>>,
    pub tables: Vec<Addr<TableActor>>,
    pub metrics: Addr<MetricsActor>,
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
        };
        let gate = crate::pause::Gate::new(d.lease_endpoint.clone(), &d.plan.name);
        SyncActor {
            plan: d.plan,
            lease_endpoint: d.lease_endpoint,
            databases: d.databases,
            tables: d.tables,
            metrics: d.metrics,
            prepared: None,
            progress: ProgressCache::default(),
            schedule: Schedule::default(),
            status,
            lease: None,
            lease_timeout: d.lease_timeout,
            lease_generation: 0,
            preparing: false,
            copying: false,
            forced_copy: None,
            copy_board: CopyBoard::default(),
            waiting_reported: Some(true),
            stop_waiters: Vec::new(),
            gate,
            ddl_mark: None,
        }
    }

    fn name(&self) -> &str {
        &self.plan.name
    }

    /// Tries to take the sync's lease (see `lease`); retries while another daemon holds it.
    fn acquire_lease(&mut self, ctx: &mut Context<Self>) {
        if self.schedule.stopping {
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
        let fut = lease::try_take(req, move || me.do_send(LeaseLost(generation)));
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok(Attempt::Taken(l)) if generation == act.lease_generation => {
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
                    act.standby(holder);
                }
                Err(e) => act.record_error(Stage::Lease, &e),
            }
            ctx.run_later(LEASE_RETRY, |act, ctx| act.acquire_lease(ctx));
        }));
    }

    /// Another daemon runs this sync: a state, not a fault.
    fn standby(&mut self, holder: Option<crate::status::LeaseHolder>) {
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
        if self.preparing || self.lease.is_none() {
            return;
        }
        self.preparing = true;
        let plan = self.plan.clone();
        let dbs = self.databases.clone();
        let tables = self.tables.clone();
        let former = self.lease.as_ref().and_then(|l| l.former.clone());
        let former = former.map(|instance| evict::Former {
            instance,
            lease_timeout: self.lease_timeout,
        });
        let fut = async move {
            // Databases, then tables, are read concurrently: a daemon starts its first round
            // sooner (catch-up after a stop is timed from the start).
            let handles: HashMap<String, DbHandle> =
                futures::future::try_join_all(plan.databases().map(|db| {
                    let addr = dbs[db].clone();
                    async move {
                        let h = addr.send(GetHandle).await.map_err(|e| {
                            PgError::setup(db, format!("database actor gone: {e}"))
                        })??;
                        Ok::<_, PgError>((db.to_string(), h))
                    }
                }))
                .await?
                .into_iter()
                .collect();
            let multi = plan.sources.len() > 1;
            let source_handles: Vec<DbHandle> =
                plan.sources.iter().map(|d| handles[d].clone()).collect();
            let receive_only: Vec<DbHandle> =
                plan.targets.iter().map(|d| handles[d].clone()).collect();
            let first = &plan.sources[0];
            let plans: Vec<TablePlan> = futures::future::try_join_all(tables.iter().map(|t| {
                let msg = Prepare {
                    sources: source_handles.clone(),
                    targets: receive_only.clone(),
                };
                async move {
                    let p = t
                        .send(msg)
                        .await
                        .map_err(|e| PgError::setup(first, format!("table actor gone: {e}")))??;
                    Ok::<_, PgError>((*p).clone())
                }
            }))
            .await?;
            let ordered = fk_order(plans).into_iter().map(Arc::new).collect();
            let sync = plan.name.clone();
            let receivers: Vec<&str> = if multi {
                plan.databases().collect()
            } else {
                plan.receivers_of(first).collect()
            };
            let prepared = Prepared {
                sources: source_handles
                    .iter()
                    .map(|h| SourceSide {
                        name: h.name.clone(),
                        pool: h.pool.clone(),
                    })
                    .collect(),
                receivers: receivers
                    .iter()
                    .map(|d| TargetSide {
                        name: d.to_string(),
                        pool: handles[*d].pool.clone(),
                        replica_role: handles[*d].facts.replica_role.clone(),
                    })
                    .collect(),
                tables: ordered,
            };
            // A former holder frozen mid-transaction would hold the locks our rounds need.
            if let Some(f) = &former {
                evict::end_former_sessions(&sync, f, &prepared.receivers).await;
            }
            // Before the first commit under this lease: a former holder's commits now fail.
            fence::take_over(&sync, &prepared.receivers).await?;
            Ok::<_, PgError>(prepared)
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            act.preparing = false;
            match res {
                Ok(p) => {
                    act.schedule.backoff_over();
                    let first = act.prepared.is_none();
                    act.prepared = Some(Arc::new(p));
                    act.progress = ProgressCache::default();
                    if first {
                        for s in &act.plan.sources {
                            act.databases[s].do_send(Subscribe {
                                sync: act.plan.name.clone(),
                                kicks: ctx.address().recipient(),
                            });
                        }
                        ctx.run_interval(POLL_INTERVAL, |_, ctx| ctx.notify(Kick));
                    }
                    act.start_copy(ctx);
                }
                Err(e) => {
                    act.record_error(Stage::Prepare, &e);
                    let wait = act.schedule.failed();
                    ctx.run_later(wait, |act, ctx| act.prepare(ctx));
                }
            }
        }));
    }

    /// Runs the initial copy of tables that have none yet (per `initial_copy`), then rounds.
    fn start_copy(&mut self, ctx: &mut Context<Self>) {
        let Some(prepared) = self.prepared.clone() else {
            return;
        };
        if self.lease.is_none() {
            return;
        }
        // A forced copy (`drover copy` against this daemon) replaces the configured mode.
        let forced = self.forced_copy.take();
        let mode = if forced.is_some() {
            CopyMode::Forced
        } else {
            self.plan.initial_copy
        };
        if mode == CopyMode::Never {
            ctx.notify(Kick);
            return;
        }
        let tables: Vec<Arc<TablePlan>> = match &forced {
            Some(only) if !only.is_empty() => prepared
                .tables
                .iter()
                .filter(|t| only.contains(&t.display))
                .cloned()
                .collect(),
            _ => prepared.tables.clone(),
        };
        self.copying = true;
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
            act.copying = false;
            act.status.copy_runs += 1;
            match res {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(sync = %act.plan.name, tables = n, "initial copy finished");
                    }
                    act.progress = ProgressCache::default();
                    ctx.notify(Kick);
                }
                Err(e) => {
                    // `initial_copy` logged and counted it.
                    act.mark_bad(&e);
                    // A forced copy is retried like the configured one until it succeeds.
                    if forced.is_some() && act.forced_copy.is_none() {
                        act.forced_copy = forced;
                    }
                    let wait = act.schedule.failed();
                    ctx.run_later(wait, |act, ctx| {
                        act.schedule.backoff_over();
                        act.start_copy(ctx);
                    });
                }
            }
        }));
    }

    fn start_round(&mut self, ctx: &mut Context<Self>) {
        let Some(prepared) = self.prepared.clone() else {
            return;
        };
        self.schedule.started();
        let mut cache = std::mem::take(&mut self.progress);
        let sync = self.plan.name.clone();
        let strategy = self.plan.strategies();
        let sequences = self.plan.sequences.clone();
        let fut = async move {
            let report = if prepared.sources.len() == 1 {
                let mut report = run_round(RoundInput {
                    sync: &sync,
                    source: &prepared.sources[0],
                    targets: &prepared.receivers,
                    tables: &prepared.tables,
                    progress: &mut cache,
                })
                .await;
                if report.ok() {
                    let sent = &mut cache.sequences;
                    if let Err(e) =
                        seq::sync(&prepared.sources[0], &prepared.receivers, &sequences, sent).await
                    {
                        report.source_error = Some(e);
                    }
                }
                report
            } else {
                run_multi_round(MultiInput {
                    sync: &sync,
                    sources: &prepared.sources,
                    databases: &prepared.receivers,
                    tables: &prepared.tables,
                    progress: &mut cache,
                    strategy: &strategy,
                })
                .await
            };
            (report, cache)
        };
        ctx.spawn(fut.into_actor(self).map(|(report, cache), act, ctx| {
            act.progress = cache;
            act.round_done(report, ctx);
        }));
    }

    fn round_done(&mut self, report: RoundReport, ctx: &mut Context<Self>) {
        self.leave_gate(ctx);
        let (inserted, deleted) = report.rows();
        let now = Utc::now();
        let good = report.ok();
        self.status.rounds += 1;
        self.status.rows_inserted += inserted;
        self.status.rows_deleted += deleted;
        self.status.last_round_ms = Some(report.duration.as_secs_f64() * 1000.0);
        let pending: u64 = report.pending.values().sum();
        let lag = report
            .oldest_pending
            .map(|o| (now - o).num_milliseconds().max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        // A good round: how old its oldest change was when it landed (0 when nothing was
        // pending). A failed round: how old the oldest change waiting is now.
        self.status.lag_seconds = lag;
        self.status.pending_rows = if good { 0 } else { pending };
        self.status.conflicts += report.conflicts.len() as u64;
        let strategies = self.plan.strategies();
        let mut m = RoundMetrics {
            sync: self.plan.name.clone(),
            source: self.plan.sources.join(","),
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
            good,
            duration_secs: report.duration.as_secs_f64(),
            ..Default::default()
        };
        if let Some(p) = &self.prepared {
            for (i, t) in p.tables.iter().enumerate() {
                let mut ti = 0;
                let mut td = 0;
                for tr in &report.targets {
                    if let (Ok(true), Some(c)) = (&tr.result, tr.tables.get(&t.display)) {
                        ti += c.inserted;
                        td += c.deleted;
                        m.rows
                            .push((t.display.clone(), tr.target.clone(), c.inserted, c.deleted));
                    }
                }
                if ti + td > 0 {
                    if let Some(a) = self.tables.get(i) {
                        a.do_send(Applied {
                            inserted: ti,
                            deleted: td,
                        });
                    }
                }
                m.pending.push((
                    t.display.clone(),
                    report.pending.get(&t.display).copied().unwrap_or(0),
                ));
            }
            for tr in &report.targets {
                m.lag.push((tr.target.clone(), lag));
            }
        }
        if good {
            self.status.state = "good".into();
            self.status.last_good = Some(now);
            m.last_good_unix = Some(now.timestamp_millis() as f64 / 1000.0);
            if inserted + deleted > 0 {
                tracing::info!(sync = %self.plan.name, inserted, deleted, elapsed_ms = report.duration.as_millis() as u64, "round applied changes");
            }
        } else {
            self.round_failed(&report);
        }
        let reprepare = report
            .first_error()
            .is_some_and(|e| matches!(e.kind(), ErrorKind::Schema));
        self.metrics.do_send(m);

        let next = self.schedule.finished(good, inserted + deleted > 0);
        self.report_waiting();
        if self.forced_copy.is_some() && !matches!(next, Next::Stop) {
            self.start_copy(ctx);
            return;
        }
        match next {
            Next::Stop => {
                for w in self.stop_waiters.drain(..) {
                    let _ = w.send(());
                }
            }
            Next::Now => ctx.notify(Kick),
            Next::After(wait) => {
                ctx.run_later(wait, move |act, ctx| {
                    act.schedule.backoff_over();
                    if reprepare {
                        act.prepare(ctx);
                    } else {
                        ctx.notify(Kick);
                    }
                });
            }
            Next::Idle => {}
        }
    }

    /// Tells the sources' doorbells whether this sync waits for notifications: not while
    /// rounds keep finding changes back to back (`Schedule::saturated`).
    fn report_waiting(&mut self) {
        let waiting = !self.schedule.saturated();
        if self.waiting_reported == Some(waiting) {
            return;
        }
        self.waiting_reported = Some(waiting);
        for s in &self.plan.sources {
            self.databases[s].do_send(Waiting {
                sync: self.plan.name.clone(),
                waiting,
            });
        }
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

    /// A failed round: each database that failed is one failure; status shows the first.
    fn round_failed(&mut self, report: &RoundReport) {
        let errors = report
            .source_error
            .iter()
            .chain((report.targets.iter()).filter_map(|t| t.result.as_ref().err()));
        for e in errors {
            failures::failed(
                Stage::Round,
                &self.plan.name,
                e,
                "round failed, rolled back",
            );
        }
        if let Some(e) = report.first_error() {
            self.mark_bad(e);
        }
    }

    fn mark_bad(&mut self, e: &PgError) {
        let msg = e.redacted();
        // Without the lease, failures (a fenced commit, a lease attempt) do not make it bad.
        if self.lease.is_some() {
            self.status.state = "bad".into();
        }
        self.status.last_bad = Some(Utc::now());
        self.status.last_error = Some(msg);
        self.status.last_error_full = Some(e.to_string());
    }
}

/// The advisory-lock key of a sync: FNV-1a of its name, stable across versions and daemons.
pub fn lease_key(sync: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "drover:sync:".bytes().chain(sync.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

impl Actor for SyncActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.acquire_lease(ctx);
    }
}

impl Handler<Kick> for SyncActor {
    type Result = ();

    fn handle(&mut self, _: Kick, ctx: &mut Context<Self>) {
        // No round while plans are read again (after a schema error): it would use the old ones.
        // The stored pause is checked at each round start (`pause_gate`).
        if self.prepared.is_none() || self.preparing || self.lease.is_none() || self.copying {
            return;
        }
        if self.schedule.kicked() {
            self.gated_start(ctx);
        }
    }
}

impl Handler<ForceCopy> for SyncActor {
    type Result = ();

    fn handle(&mut self, msg: ForceCopy, ctx: &mut Context<Self>) {
        self.forced_copy = Some(msg.0);
        if !self.schedule.running && !self.copying && self.prepared.is_some() {
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
        tracing::warn!(sync = %self.plan.name, "lease session lost: standing by until the lease is back");
        fence::lost(&self.plan.name);
        self.lease = None;
        self.standby(None);
        ctx.run_later(LEASE_RETRY, |act, ctx| act.acquire_lease(ctx));
    }
}

impl Handler<GetStatus> for SyncActor {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        let mut s = self.status.clone();
        s.copy = self.copy_board.lock().expect("copy board lock").clone();
        MessageResult(s)
    }
}

impl Handler<Shutdown> for SyncActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.schedule.stopping = true;
        if !self.schedule.running {
            return Box::pin(async {});
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.stop_waiters.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
