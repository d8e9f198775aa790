//! The stored pause as the SyncActor sees it: every round start passes the round gate
//! (`crate::pause::Gate`), which reads `drover.sync_pause` and, when the sync is not paused,
//! holds the gate's shared lock until the round ends, so `drover ddl` can wait for it. Also
//! the pause/resume messages of the HTTP API (which write the row too) and `Retire`, which
//! stops the actor after its current round (a reload removing or changing the sync).

use actix::prelude::*;

use super::{Phase, SyncActor};
use crate::actors::database::{Kick, Waiting};
use crate::metrics::failures::Stage;
use crate::pause::{self, GateView, Pause};

/// Pause (true) or resume (false) a sync: stores (or deletes) the row in `drover.sync_pause`
/// and checks it at once. A paused sync runs no rounds; its changes wait in the delta tables.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct SetPaused(pub bool);

/// Finish the current round, then stop the actor (its lease and sessions end with it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

impl SyncActor {
    /// Starts `lane`'s round unless the sync is paused; plans are read again first when a
    /// `drover ddl` ran (or the sync was resumed) since the last check. The lane is already
    /// marked running, so kicks meanwhile coalesce and Shutdown waits.
    pub(super) fn gated_start(&mut self, lane: String, ctx: &mut Context<Self>) {
        if self.first_down.away() {
            return self.gateless_start(lane, ctx);
        }
        let gate = self.gate.clone();
        let fut = async move { gate.enter().await };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| match res {
            Ok(view) => act.gate_passed(lane, view, ctx),
            Err(e) => {
                // The 1 s poll kicks again; the lane is not running meanwhile.
                act.gate_closed(&lane);
                act.record_error(Stage::Round, &e);
            }
        }));
    }

    fn gate_passed(&mut self, lane: String, view: GateView, ctx: &mut Context<Self>) {
        let was_paused = self.status.paused;
        let moved = self.ddl_mark.is_some_and(|m| m != view.ddl_mark);
        self.ddl_mark = Some(view.ddl_mark);
        if view.pause.is_some() || self.phase == Phase::Stopping {
            self.gate_closed(&lane);
            self.show_pause(view.pause);
            return;
        }
        self.show_pause(None);
        if moved || was_paused {
            // Columns may have changed while paused: read the plans before the next round.
            self.gate_closed(&lane);
            self.leave_gate(ctx);
            self.prepare(ctx);
            return;
        }
        self.start_lane(lane, ctx);
    }

    /// No round runs for `lane` after all: release Shutdown's waiters when none runs.
    pub(super) fn gate_closed(&mut self, lane: &str) {
        self.lanes.closed(lane);
        if self.phase == Phase::Stopping && !self.lanes.running() {
            for w in self.stop_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    /// A round ended: release its hold on the gate.
    pub(super) fn leave_gate(&mut self, ctx: &mut Context<Self>) {
        let gate = self.gate.clone();
        ctx.spawn(async move { gate.leave().await }.into_actor(self));
    }

    fn show_pause(&mut self, pause: Option<Pause>) {
        let paused = pause.is_some();
        if self.status.paused != paused {
            let reason = pause.as_ref().map(|p| p.reason.as_str()).unwrap_or("");
            tracing::info!(sync = %self.plan.name, reason, "sync {}", if paused { "paused" } else { "resumed" });
        }
        self.status.paused = paused;
        self.status.paused_by = pause.as_ref().map(|p| p.by.clone());
        self.status.paused_at = pause.as_ref().map(|p| p.at);
        self.status.pause_reason = pause.map(|p| p.reason);
        if paused && !self.lanes.running() {
            self.status.state = "paused".into();
        } else if !paused && self.status.state == "paused" {
            self.status.state = "starting".into();
        }
    }
}

impl Handler<SetPaused> for SyncActor {
    type Result = ResponseActFuture<Self, Result<(), String>>;

    fn handle(&mut self, msg: SetPaused, _: &mut Context<Self>) -> Self::Result {
        let endpoint = self.lease_endpoint.clone();
        let sync = self.plan.name.clone();
        let fut = async move {
            let db = endpoint.name.clone();
            let client = endpoint.connect("pause").await?;
            if msg.0 {
                let by = pause::who("drover API");
                return Ok(Some(pause::write(&client, &db, &sync, &by, "").await?));
            }
            pause::delete(&client, &db, &sync).await?;
            Ok::<_, crate::pg::error::PgError>(None)
        };
        Box::pin(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok(stored) => {
                // Shown at once; a resume shows at the next round start, which also reads
                // the table plans again (columns may have changed while paused).
                if stored.is_some() {
                    act.show_pause(stored);
                }
                ctx.notify(Kick);
                Ok(())
            }
            Err(e) => {
                let msg = e.redacted();
                tracing::warn!(sync = %act.plan.name, error = %msg, "cannot store the pause");
                Err(msg)
            }
        }))
    }
}

impl Handler<Retire> for SyncActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Retire, _: &mut Context<Self>) -> Self::Result {
        self.phase = Phase::Stopping;
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.lanes.stop() {
            let _ = tx.send(());
        } else {
            self.stop_waiters.push(tx);
        }
        Box::pin(
            async move {
                let _ = rx.await;
            }
            .into_actor(self)
            .map(|_, act, ctx| {
                // Its sources' doorbells stop counting it as a sync that waits for changes.
                for s in &act.plan.sources {
                    act.databases[s].do_send(Waiting {
                        sync: act.plan.name.clone(),
                        waiting: false,
                    });
                }
                tracing::info!(sync = %act.plan.name, "sync stopped (config reloaded)");
                ctx.stop();
            }),
        )
    }
}
