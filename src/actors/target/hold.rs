//! `drover retry` on one target: the held groups a request names are retried by the target's
//! next round at once instead of after their backoff. While a round runs it holds the target's
//! `Holds`, so a request arriving then is kept and applied when the round hands them back.

use std::time::Instant;

use actix::prelude::*;

use super::TargetActor;
use crate::round::hold::Holds;
use crate::round::RoundReport;

/// Retry the held groups that have `table` (every held group when None). Answers how many
/// held tables the request covers (0: nothing matching is held).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct RetryHeld {
    pub table: Option<String>,
}

impl TargetActor {
    /// A round ended and gave the holds back: remember what it left held and apply the retry
    /// requests that arrived meanwhile.
    pub(super) fn holds_back(&mut self, mut holds: Holds, report: &RoundReport) {
        self.held_now = report.held.iter().map(|h| h.table.clone()).collect();
        let now = Instant::now();
        for table in self.asked.drain(..) {
            holds.ask(table.as_deref(), now);
        }
        self.holds = Some(holds);
    }

    /// How many of the tables the last round left held a request covers.
    fn covered(&self, table: Option<&str>) -> usize {
        match table {
            None => self.held_now.len(),
            Some(t) => usize::from(self.held_now.iter().any(|h| h == t)),
        }
    }
}

impl Handler<RetryHeld> for TargetActor {
    type Result = usize;

    fn handle(&mut self, msg: RetryHeld, _: &mut Context<Self>) -> usize {
        if let Some(holds) = &mut self.holds {
            return holds.ask(msg.table.as_deref(), Instant::now());
        }
        let n = self.covered(msg.table.as_deref());
        if n > 0 {
            self.asked.push(msg.table);
        }
        n
    }
}
