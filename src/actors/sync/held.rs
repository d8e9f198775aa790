//! SyncActor's side of held tables (`round::hold`): each target's held tables go into its
//! status and `drover_table_held` after its round, and `drover retry` is passed to the
//! targets it names, whose lanes are then kicked.

use actix::prelude::*;

use super::SyncActor;
use crate::actors::metrics::HeldMetrics;
use crate::actors::target::RetryHeld as TargetRetry;
use crate::round::RoundReport;

/// `POST /syncs/{name}/retry`: retry held tables now, on `target` (all when None), those whose
/// foreign-key group has `table` (all when None). Answers how many held tables that covers, or
/// why the request names nothing.
#[derive(Message)]
#[rtype(result = "Result<usize, String>")]
pub struct RetryHeld {
    pub table: Option<String>,
    pub target: Option<String>,
}

impl SyncActor {
    /// A one-source lane's round ended: its held tables into status and the metric (every
    /// table of the sync, so the series exist at 0 before anything is held).
    pub(super) fn note_held(&mut self, lane: &str, report: &RoundReport) {
        if !self.targets.contains_key(lane) {
            return;
        }
        // A table refused anew is the sync's last error too (the round itself went through).
        if let Some((short, full)) = self.lanes.set_held(lane, &report.held) {
            self.status.last_error = Some(short);
            self.status.last_error_full = Some(full);
        }
        let Some(p) = &self.prepared else { return };
        let tables = (p.tables.iter())
            .map(|t| {
                let held = report.held.iter().any(|h| h.table == t.display);
                (t.display.clone(), held)
            })
            .collect();
        self.metrics.do_send(HeldMetrics {
            sync: self.plan.name.clone(),
            target: lane.to_string(),
            tables,
        });
    }
}

impl Handler<RetryHeld> for SyncActor {
    type Result = ResponseActFuture<Self, Result<usize, String>>;

    fn handle(&mut self, msg: RetryHeld, _: &mut Context<Self>) -> Self::Result {
        let sync = self.plan.name.clone();
        if let Some(t) = &msg.target {
            if !self.targets.contains_key(t) {
                let err = format!("sync {sync} has no one-source target named {t:?}");
                return Box::pin(async move { Err(err) }.into_actor(self));
            }
        }
        let addrs: Vec<(String, Addr<crate::actors::target::TargetActor>)> = (self.targets.iter())
            .filter(|(n, _)| msg.target.as_ref().map_or(true, |t| t == *n))
            .map(|(n, a)| (n.clone(), a.clone()))
            .collect();
        let table = msg.table;
        let asks = async move {
            let mut covered = Vec::new();
            for (name, addr) in addrs {
                let n = addr
                    .send(TargetRetry {
                        table: table.clone(),
                    })
                    .await
                    .unwrap_or(0);
                covered.push((name, n));
            }
            covered
        };
        Box::pin(asks.into_actor(self).map(|covered, act, ctx| {
            let mut total = 0;
            for (lane, n) in covered {
                total += n;
                if n > 0 {
                    act.kick_lane(lane, ctx);
                }
            }
            Ok(total)
        }))
    }
}
