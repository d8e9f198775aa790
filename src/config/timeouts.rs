//! The round's time limits, `daemon.lock_timeout`, `daemon.statement_timeout`
//! and `daemon.round_deadline`, and the pause between back-to-back rounds,
//! `daemon.round_pacing`: their defaults, and the values apply sessions give
//! PostgreSQL. Parsed and checked in `validate::timeouts`.

use std::time::Duration;

use super::model::Daemon;

/// Default `daemon.lock_timeout`: a target whose table is locked (a long
/// `ALTER TABLE`, an open `LOCK TABLE`) fails its round after this and is
/// retried, instead of waiting behind the lock for as long as it is held.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Default `daemon.statement_timeout`: far above any healthy statement of a
/// round (a big batch applies in seconds), below the round deadline.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Default `daemon.round_deadline`: bounds how long one round, and so the
/// source snapshot it reads under, may stay open.
pub const DEFAULT_ROUND_DEADLINE: Duration = Duration::from_secs(15 * 60);

/// Default `daemon.round_pacing`. Under steady load a target's rounds run back
/// to back (about 300 a second at 1,400 TPS on 2 cores, 4-5 transactions and
/// about 15 statements each: docs/performance.md), and the per-round cost
/// competes with the source for CPU. The next round then waits as long as the
/// last one took, at most this: a round of a few milliseconds waits a few
/// milliseconds (about half as many rounds, each twice as big), while a long
/// round (a backlog) waits no more than 20ms, so the lag grows by at most one
/// round's time and never by more than 20ms. An idle target is not paced.
pub const DEFAULT_ROUND_PACING: Duration = Duration::from_millis(20);

impl Daemon {
    /// The value for `SET lock_timeout` in an apply session, e.g. `10000ms`.
    pub fn lock_timeout_setting(&self) -> String {
        setting(Some(self.lock_timeout))
    }

    /// The value for `SET statement_timeout`: `0` (PostgreSQL's "off") when
    /// `daemon.statement_timeout = "0"`, else milliseconds, e.g. `600000ms`.
    pub fn statement_timeout_setting(&self) -> String {
        setting(self.statement_timeout)
    }
}

fn setting(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{}ms", d.as_millis()),
        None => "0".to_owned(),
    }
}
