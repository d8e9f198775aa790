//! TargetActor: one per (sync, target) of a one-source sync. It owns the target's apply
//! session state (its progress cache: progress rows, sent sequence values, backlog and
//! small-round memory) and runs that target's rounds when its SyncActor asks, each under its
//! own source snapshot and within the round deadline (`round::target`). Targets of a sync run
//! their rounds concurrently: a locked or dead target only falls behind itself. It also owns
//! the target's held tables (`round::hold`; `drover retry` in `hold`).

mod hold;
pub use hold::RetryHeld;

use std::sync::Arc;

use actix::prelude::*;

use crate::round::hold::Holds;
use crate::round::limits::Limits;
use crate::round::progress::ProgressCache;
use crate::round::target::{run_target_round, Lane};
use crate::round::RoundReport;

/// Run one round for this target. `generation` changes when the sync re-read its plans or
/// copied tables: the target then forgets its cached progress and reads it again.
#[derive(Message)]
#[rtype(result = "RoundReport")]
pub struct RunRound {
    pub lane: Arc<Lane>,
    pub generation: u64,
}

pub struct TargetActor {
    limits: Limits,
    /// None while a round runs (the round holds it).
    progress: Option<ProgressCache>,
    generation: u64,
    /// None while a round runs (the round holds it); kept across generations.
    holds: Option<Holds>,
    /// `drover retry` requests that arrived during a round: (table or all).
    asked: Vec<Option<String>>,
    /// Tables held after the last round (what a retry request matches while a round runs).
    held_now: Vec<String>,
}

impl TargetActor {
    pub fn new(limits: Limits) -> TargetActor {
        TargetActor {
            limits,
            progress: Some(ProgressCache::default()),
            generation: 0,
            holds: Some(Holds::default()),
            asked: Vec::new(),
            held_now: Vec::new(),
        }
    }
}

impl Actor for TargetActor {
    type Context = Context<Self>;
}

impl Handler<RunRound> for TargetActor {
    type Result = ResponseActFuture<Self, RoundReport>;

    fn handle(&mut self, msg: RunRound, _: &mut Context<Self>) -> Self::Result {
        let stale = msg.generation != self.generation;
        self.generation = msg.generation;
        let mut cache = match self.progress.take() {
            Some(c) if !stale => c,
            _ => ProgressCache::default(),
        };
        let limits = self.limits;
        let mut holds = self.holds.take().unwrap_or_default();
        let round = async move {
            let report = run_target_round(&msg.lane, &mut cache, &limits, &mut holds).await;
            (report, cache, holds, msg.generation)
        };
        Box::pin(
            round
                .into_actor(self)
                .map(|(report, cache, holds, generation), act, _| {
                    if generation == act.generation {
                        act.progress = Some(cache);
                    }
                    act.holds_back(holds, &report);
                    report
                }),
        )
    }
}
