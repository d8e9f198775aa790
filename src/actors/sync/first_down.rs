//! A multi-master sync goes on while its first source is down. That master holds the sync's
//! lease (`lease`) and round gate (`pause_gate`), so losing it used to stop every master. Now,
//! when the lease session of a multi-master sync ends (not by a heartbeat finding the row
//! taken over), the daemon tries at once to take the lease again:
//! - taken: it runs on as before (plans read again under the new term);
//! - busy: another daemon holds it: fenced and standing by, as with any lost lease;
//! - a connection error: the first source is down. The daemon keeps running the rounds among
//!   the masters it reaches, the first source left out like any down master
//!   (`round::multi_down`), and tries the lease again every `LEASE_RETRY` with the same three
//!   outcomes (any other error keeps it away too).
//!
//! Why it is safe: no daemon that cannot reach the first source can take the lease; one that
//! can, takes it and bumps the fencing epoch on every receiver it prepares before its first
//! commit, so this daemon's commits there are refused (`round::fence`). Meanwhile this daemon
//! keeps the fence of its last term and bumps no epoch itself (it reads no plans until it
//! holds the lease again), so it cannot fence out a daemon that holds the lease. A frozen
//! holder whose session the server ended finds the first source reachable when it resumes: it
//! either takes the lease again (nobody else did) or finds it busy and stands by.
//!
//! While away, rounds start without the gate: the stored pause cannot be read, so the last
//! state seen holds (a paused sync stays paused), and no `pause`, `ddl` or `copy` command can
//! reach the first source either. A daemon starting while the first source is down still
//! cannot take the lease, so it runs nothing until that master answers.

use std::collections::HashSet;
use std::time::Instant;

use actix::prelude::*;

use super::lease::Ended;
use super::{Phase, SyncActor, LEASE_RETRY};
use crate::pg::error::{ErrorKind, PgError};
use crate::round::fence;

/// Where the lease stands when its session ended on a multi-master sync.
#[derive(Debug, Default)]
pub struct FirstDown {
    state: State,
    /// Lanes whose running round started without the gate (their end releases no hold).
    gateless: HashSet<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Held, or not held in the ordinary way.
    #[default]
    Ordinary,
    /// The session ended: taking the lease again tells whether the first source is down.
    Checking,
    /// The first source cannot be reached: rounds go on without it.
    Away(Instant),
}

impl FirstDown {
    pub fn away(&self) -> bool {
        matches!(self.state, State::Away(_))
    }
}

impl SyncActor {
    /// The lease session ended. A multi-master sync with plans checks at once whether the
    /// first source is down; anything else stands by as before.
    pub(super) fn lease_lost(&mut self, ended: Ended, ctx: &mut Context<Self>) {
        self.lease = None;
        let multi = self.plan.sources.len() > 1;
        if multi && ended == Ended::SessionLost && self.prepared.is_some() {
            tracing::warn!(sync = %self.plan.name, "lease session lost: taking the lease again to learn whether the first source is down");
            self.first_down.state = State::Checking;
            return self.acquire_lease(ctx);
        }
        tracing::warn!(sync = %self.plan.name, "lease session lost: standing by until the lease is back");
        self.lease_gone(None);
        ctx.run_later(LEASE_RETRY, |act, ctx| act.acquire_lease(ctx));
    }

    /// Whether this daemon runs the sync's rounds: it holds the lease, or held it and only
    /// the first source is gone.
    pub(super) fn runs_sync(&self) -> bool {
        self.lease.is_some() || self.first_down.away()
    }

    /// The lease was taken: rounds pass the gate again.
    pub(super) fn first_back(&mut self) {
        if let State::Away(since) = self.first_down.state {
            let secs = since.elapsed().as_secs();
            tracing::info!(sync = %self.plan.name, secs, "first source reachable again: lease taken, reading the plans with it");
        }
        self.ordinary();
    }

    fn ordinary(&mut self) {
        self.first_down.state = State::Ordinary;
        self.status
            .warnings
            .retain(|w| !w.starts_with(WARNING_START));
    }

    /// Another daemon holds the lease: a daemon that held it commits nothing from now on.
    pub(super) fn lease_busy(&mut self) {
        if self.first_down.state != State::Ordinary {
            tracing::warn!(sync = %self.plan.name, "lease taken by another daemon while this one held it: standing by");
            self.ordinary();
            fence::lost(&self.plan.name);
        }
    }

    /// Taking the lease failed with `e`: the first source is down when it is a connection
    /// error right after the session ended; once away, any failure keeps the daemon away.
    pub(super) fn lease_failed(&mut self, e: &PgError) {
        match self.first_down.state {
            State::Ordinary | State::Away(_) => {}
            State::Checking if e.kind() == ErrorKind::Connection => {
                tracing::warn!(sync = %self.plan.name, database = %e.database(), "first source unreachable: the other masters go on; the lease is retried every 2 s");
                self.first_down.state = State::Away(Instant::now());
                let warning = format!(
                    "{WARNING_START} {:?} cannot be reached, so the lease held on it is not: \
                     the rounds go on among the masters that answer, the last pause state seen \
                     holds, and the lease is taken again once it answers",
                    e.database()
                );
                self.status.warnings.push(warning);
            }
            State::Checking => {
                tracing::warn!(sync = %self.plan.name, "lease session lost: standing by until the lease is back");
                self.ordinary();
                self.lease_gone(None);
            }
        }
    }

    /// No lease any more: nothing commits, and another daemon runs the sync.
    fn lease_gone(&mut self, holder: Option<crate::status::LeaseHolder>) {
        fence::lost(&self.plan.name);
        self.standby(holder);
    }

    /// Starts `lane`'s round without the gate (the first source is down), under the last
    /// pause state seen.
    pub(super) fn gateless_start(&mut self, lane: String, ctx: &mut Context<Self>) {
        if self.status.paused || self.phase == Phase::Stopping {
            self.gate_closed(&lane);
            if self.status.paused && !self.lanes.running() {
                self.status.state = "paused".into();
            }
            return;
        }
        self.first_down.gateless.insert(lane.clone());
        self.start_lane(lane, ctx);
    }

    /// `lane`'s round ended: it releases its hold on the gate, if it took one.
    pub(super) fn round_left_gate(&mut self, lane: &str, ctx: &mut Context<Self>) {
        if !self.first_down.gateless.remove(lane) {
            self.leave_gate(ctx);
        }
    }
}

/// How the warning about a down first source starts (it is removed by that).
const WARNING_START: &str = "lease: the first source";
