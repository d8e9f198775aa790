//! When a sync runs its next round: the plain state machine behind SyncActor, testable
//! without an actor system.

use std::time::Duration;

/// First pause after a failed round; doubles per consecutive failure.
const BACKOFF_START: Duration = Duration::from_millis(500);
/// Longest pause between retries of a failing sync.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct Schedule {
    pub running: bool,
    /// A kick arrived while a round ran: run again right after it.
    pub dirty: bool,
    pub failures: u32,
    pub in_backoff: bool,
    pub stopping: bool,
    /// Consecutive good rounds that moved rows.
    pub productive: u32,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Start another round now.
    Now,
    /// Retry after a pause.
    After(Duration),
    /// Wait for the next kick.
    Idle,
    /// Shutting down: tell waiters.
    Stop,
}

impl Schedule {
    /// A kick arrived; true when a round should start now.
    pub fn kicked(&mut self) -> bool {
        if self.stopping || self.in_backoff {
            return false;
        }
        if self.running {
            self.dirty = true;
            return false;
        }
        true
    }

    pub fn started(&mut self) {
        self.running = true;
        self.dirty = false;
    }

    /// A round ended. A round that moved rows is followed by one more, which finds nothing
    /// new or advances progress far enough for the purge to empty the delta tables.
    pub fn finished(&mut self, good: bool, moved_rows: bool) -> Next {
        self.running = false;
        if self.stopping {
            return Next::Stop;
        }
        if !good {
            return Next::After(self.failed());
        }
        self.failures = 0;
        self.productive = if moved_rows { self.productive + 1 } else { 0 };
        if self.dirty || moved_rows {
            Next::Now
        } else {
            Next::Idle
        }
    }

    /// Rounds keep finding changes: the next one starts right away, so change notifications
    /// are not needed (one productive round is usually a notification's own round).
    pub fn saturated(&self) -> bool {
        self.productive >= 2
    }

    /// Counts a failure and returns the pause before the retry.
    pub fn failed(&mut self) -> Duration {
        self.failures += 1;
        self.in_backoff = true;
        let factor = 1u32 << self.failures.saturating_sub(1).min(10);
        (BACKOFF_START * factor).min(BACKOFF_MAX)
    }

    pub fn backoff_over(&mut self) {
        self.in_backoff = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kicks_during_a_round_coalesce_into_one_follow_up() {
        let mut s = Schedule::default();
        assert!(s.kicked());
        s.started();
        assert!(!s.kicked());
        assert!(!s.kicked());
        assert_eq!(s.finished(true, false), Next::Now);
        s.started();
        assert_eq!(s.finished(true, false), Next::Idle);
    }

    #[test]
    fn failures_back_off_and_cap() {
        let mut s = Schedule::default();
        s.started();
        assert_eq!(
            s.finished(false, false),
            Next::After(Duration::from_millis(500))
        );
        assert!(!s.kicked(), "no round during backoff");
        s.backoff_over();
        s.started();
        assert_eq!(
            s.finished(false, false),
            Next::After(Duration::from_secs(1))
        );
        for _ in 0..20 {
            s.failed();
        }
        assert_eq!(s.failed(), BACKOFF_MAX);
        s.backoff_over();
        s.started();
        assert_eq!(s.finished(true, true), Next::Now);
        assert_eq!(s.failures, 0);
    }

    #[test]
    fn back_to_back_productive_rounds_saturate() {
        let mut s = Schedule::default();
        s.started();
        s.finished(true, true);
        assert!(!s.saturated(), "a notification's own round");
        s.started();
        s.finished(true, true);
        assert!(s.saturated());
        s.started();
        assert_eq!(s.finished(true, false), Next::Idle);
        assert!(!s.saturated());
    }

    #[test]
    fn stopping_refuses_new_rounds() {
        let mut s = Schedule::default();
        s.started();
        s.stopping = true;
        assert!(!s.kicked());
        assert_eq!(s.finished(true, true), Next::Stop);
    }
}
