//! The doorbell of one source database: whether its capture triggers should NOTIFY.
//!
//! A notifying transaction takes a database-wide lock at commit, so notifying writers commit
//! (and flush WAL) one at a time: about a tenth of pgbench's TPS on a 2-core machine. drover
//! needs a notification only to wake a daemon that waits; while a sync runs rounds back to
//! back it finds new changes without one. So the LISTEN session holds an advisory lock (the
//! bell, `capture::sql::DOORBELL_KEY`) only while some subscribed sync waits, and the
//! triggers notify only while it is held.
//!
//! The hand-over is exact: a writer whose statement ran before the bell was taken did not
//! notify. Such a transaction holds a transaction id that is in progress in the snapshot read
//! together with the lock, so once every id of that snapshot's in-progress list has ended, one
//! more round sees all of them (`Doorbell::acquired` → settle → kick).
//!
//! This module is the state machine; `DatabaseActor` runs its queries on the LISTEN session.

use std::collections::HashMap;
use std::time::Duration;

use crate::capture::sql::DOORBELL_KEY;

/// First pause before checking that the writers of the take-over snapshot have ended; it
/// doubles up to the safety poll's interval.
pub const SETTLE_FIRST: Duration = Duration::from_millis(1);
pub const SETTLE_MAX: Duration = Duration::from_secs(1);
/// How often to retry taking a bell that another daemon holds.
pub const CONTENDED_RETRY: Duration = Duration::from_millis(100);

/// The LISTEN session's lock wait limit: writers hold the bell's shared lock for microseconds
/// (a try-lock right away let go), which would make a try-lock fail now and then; waiting out
/// longer than this means another daemon holds it.
pub const LOCK_TIMEOUT_SQL: &str = "SET lock_timeout = '50ms'";

/// Takes the bell (waiting out writers' momentary shared locks) and reads the snapshot that
/// bounds the writers who did not notify.
pub fn acquire_sql() -> String {
    let (a, b) = DOORBELL_KEY;
    format!("SELECT pg_advisory_lock({a}, {b}), txid_current_snapshot()::text")
}

/// The acquire query failed because the lock is taken (`lock_not_available`).
pub fn contended(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
}

/// Releases the bell (the LISTEN session holds no other advisory lock).
pub const RELEASE_SQL: &str = "SELECT pg_advisory_unlock_all()";

/// True once no transaction id of `$1` is still in progress.
pub const SETTLED_SQL: &str =
    "SELECT NOT EXISTS (SELECT 1 FROM txid_snapshot_xip(txid_current_snapshot()) AS x \
     WHERE x = ANY($1::bigint[]))";

/// The in-progress transaction ids of a `txid_current_snapshot()` text (`xmin:xmax:xip,...`).
pub fn in_progress(snapshot: &str) -> Vec<i64> {
    snapshot
        .splitn(3, ':')
        .nth(2)
        .unwrap_or("")
        .split(',')
        .filter_map(|x| x.parse().ok())
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bell {
    /// Not held (no LISTEN session, or every subscribed sync is busy).
    Released,
    /// A query taking or releasing it is running.
    Changing,
    /// Held: writers notify.
    Held,
    /// Another session (another daemon) holds it; retried every `CONTENDED_RETRY`.
    Contended,
}

/// What the actor should do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Acquire,
    Release,
}

#[derive(Debug)]
pub struct Doorbell {
    /// Subscribed syncs and whether each waits for changes.
    waiting: HashMap<String, bool>,
    pub bell: Bell,
    /// Whether a LISTEN session is up.
    session: bool,
    /// Bumped whenever the bell is released or the session changes: stale settle checks stop.
    pub generation: u64,
}

impl Default for Doorbell {
    fn default() -> Self {
        Doorbell {
            waiting: HashMap::new(),
            bell: Bell::Released,
            session: false,
            generation: 0,
        }
    }
}

impl Doorbell {
    fn wanted(&self) -> bool {
        self.waiting.values().any(|w| *w)
    }

    fn next(&mut self) -> Action {
        if !self.session {
            return Action::None;
        }
        match (self.bell, self.wanted()) {
            (Bell::Released, true) => {
                self.bell = Bell::Changing;
                Action::Acquire
            }
            (Bell::Held, false) => {
                self.bell = Bell::Changing;
                self.generation += 1;
                Action::Release
            }
            _ => Action::None,
        }
    }

    /// A sync subscribed: it starts out waiting.
    pub fn subscribe(&mut self, sync: &str) -> Action {
        self.waiting.insert(sync.to_string(), true);
        self.next()
    }

    /// A sync reports whether it waits for changes (false while it runs rounds back to back).
    pub fn set_waiting(&mut self, sync: &str, waiting: bool) -> Action {
        self.waiting.insert(sync.to_string(), waiting);
        self.next()
    }

    /// A LISTEN session is up (a new session holds nothing).
    pub fn session_up(&mut self) -> Action {
        self.session = true;
        self.bell = Bell::Released;
        self.generation += 1;
        self.next()
    }

    pub fn session_lost(&mut self) {
        self.session = false;
        self.bell = Bell::Released;
        self.generation += 1;
    }

    /// The acquire query answered: `got` the lock or not. On `Acquire`/`Release` the actor
    /// queries again; after taking it, the caller settles and kicks (unless released again).
    pub fn acquired(&mut self, got: bool) -> Action {
        if !self.session {
            return Action::None;
        }
        self.bell = if got { Bell::Held } else { Bell::Contended };
        self.next()
    }

    /// The release query answered.
    pub fn released(&mut self) -> Action {
        if !self.session {
            return Action::None;
        }
        self.bell = Bell::Released;
        self.next()
    }

    /// The contended retry timer fired.
    pub fn retry(&mut self) -> Action {
        if self.bell == Bell::Contended {
            self.bell = Bell::Released;
        }
        self.next()
    }

    /// A query on the session failed: the session is going away (it is reconnected).
    pub fn failed(&mut self) {
        self.bell = Bell::Released;
        self.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_while_some_sync_waits() {
        let mut d = Doorbell::default();
        assert_eq!(d.subscribe("a"), Action::None, "no session yet");
        assert_eq!(d.session_up(), Action::Acquire);
        assert_eq!(d.acquired(true), Action::None);
        assert_eq!(d.bell, Bell::Held);
        assert_eq!(d.subscribe("b"), Action::None);
        assert_eq!(d.set_waiting("a", false), Action::None, "b still waits");
        let g = d.generation;
        assert_eq!(d.set_waiting("b", false), Action::Release);
        assert!(d.generation > g, "pending settle checks stop");
        assert_eq!(d.set_waiting("b", true), Action::None, "release in flight");
        assert_eq!(d.released(), Action::Acquire, "wanted again meanwhile");
        assert_eq!(d.acquired(true), Action::None);
        assert_eq!(d.bell, Bell::Held);
    }

    #[test]
    fn contended_bell_is_retried_and_lost_sessions_reset() {
        let mut d = Doorbell::default();
        d.subscribe("a");
        assert_eq!(d.session_up(), Action::Acquire);
        assert_eq!(d.acquired(false), Action::None);
        assert_eq!(d.bell, Bell::Contended);
        assert_eq!(d.retry(), Action::Acquire);
        d.session_lost();
        assert_eq!(
            d.acquired(true),
            Action::None,
            "answer from the old session"
        );
        assert_eq!(d.bell, Bell::Released);
        assert_eq!(d.session_up(), Action::Acquire);
        assert_eq!(d.acquired(true), Action::None);
        assert_eq!(d.set_waiting("a", false), Action::Release);
        d.failed();
        assert_eq!(d.bell, Bell::Released);
    }

    #[test]
    fn in_progress_ids_of_a_snapshot() {
        assert_eq!(in_progress("10:20:12,15"), vec![12, 15]);
        assert!(in_progress("10:10:").is_empty());
        assert!(in_progress("garbage").is_empty());
    }
}
