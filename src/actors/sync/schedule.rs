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
    /// `daemon.round_pacing`: the longest wait before the next round of a saturated lane;
    /// zero turns pacing off (and is the default: multi-master rounds and setup steps).
    pub pacing: Duration,
    /// A paced round is due (`Next::Paced`): kicks wait for it instead of starting one.
    pub paced: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Start another round now.
    Now,
    /// Rounds run back to back: start the next after this pause, so that it carries the
    /// changes of the pause too and the fixed cost of a round is paid less often.
    Paced(Duration),
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
        // A paced round is due: it reads what this kick announces.
        if self.stopping || self.in_backoff || self.paced {
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

    /// A round ended after `elapsed`. A round that moved rows is followed by one more, which
    /// finds nothing new or advances progress far enough for the purge to empty the delta
    /// tables; once rounds run back to back, that one is paced (`pace`).
    pub fn finished(&mut self, good: bool, moved_rows: bool, elapsed: Duration) -> Next {
        self.running = false;
        if self.stopping {
            return Next::Stop;
        }
        if !good {
            // A failure ends a run of productive rounds: after the retry, pacing waits
            // until the lane is saturated again.
            self.productive = 0;
            return Next::After(self.failed());
        }
        self.failures = 0;
        self.productive = if moved_rows { self.productive + 1 } else { 0 };
        if self.dirty || moved_rows {
            self.pace(elapsed)
        } else {
            Next::Idle
        }
    }

    /// The next round of a lane whose rounds run back to back (`saturated`) waits as long as
    /// the last one took, at most `pacing` (as PgQ's ticker batches events): on a busy source
    /// each round then carries more rows and the per-round cost (statements, snapshots, one
    /// commit per target) is paid less often, while the lag grows by at most one round's
    /// time. A lane that is not saturated (an idle lane's first rounds after a kick) goes on
    /// at once, so lag at low rates does not grow; so does a zero `elapsed` (`Lanes::finished`
    /// passes zero for a round bounded by a backlog).
    fn pace(&mut self, elapsed: Duration) -> Next {
        let wait = elapsed.min(self.pacing);
        if !self.saturated() || wait.is_zero() {
            return Next::Now;
        }
        self.paced = true;
        Next::Paced(wait)
    }

    /// The pause before a paced round is over: the round may start.
    pub fn pace_over(&mut self) {
        self.paced = false;
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

    const MS: Duration = Duration::from_millis(1);

    fn paced(pacing: u64) -> Schedule {
        Schedule {
            pacing: Duration::from_millis(pacing),
            ..Schedule::default()
        }
    }

    /// Two productive rounds: the lane is saturated.
    fn saturate(s: &mut Schedule) {
        for _ in 0..2 {
            assert!(s.kicked());
            s.started();
            let next = s.finished(true, true, MS);
            s.pace_over();
            assert!(matches!(next, Next::Now | Next::Paced(_)), "{next:?}");
        }
    }

    #[test]
    fn an_idle_lane_starts_at_once_and_its_first_follow_ups_are_not_paced() {
        let mut s = paced(20);
        assert!(s.kicked(), "an idle lane starts on a kick");
        s.started();
        let ms = Duration::from_millis(5);
        assert_eq!(
            s.finished(true, true, ms),
            Next::Now,
            "not yet back to back"
        );
        s.started();
        assert_eq!(s.finished(true, false, ms), Next::Idle);
        assert!(s.kicked(), "idle again: a kick starts a round at once");
    }

    #[test]
    fn back_to_back_rounds_wait_as_long_as_the_last_took_at_most_the_pacing() {
        let mut s = paced(20);
        saturate(&mut s);
        s.started();
        let short = Duration::from_millis(3);
        assert_eq!(s.finished(true, true, short), Next::Paced(short));
        s.pace_over();
        s.started();
        let long = Duration::from_millis(250);
        assert_eq!(
            s.finished(true, true, long),
            Next::Paced(Duration::from_millis(20))
        );
        // A kick pending on a saturated lane is paced the same way.
        s.pace_over();
        s.started();
        assert!(!s.kicked());
        assert_eq!(s.finished(true, true, short), Next::Paced(short));
    }

    #[test]
    fn kicks_during_the_pause_start_no_round() {
        let mut s = paced(20);
        saturate(&mut s);
        s.started();
        assert_eq!(s.finished(true, true, MS), Next::Paced(MS));
        assert!(!s.kicked(), "the paced round reads what the kick announces");
        assert!(!s.kicked());
        s.pace_over();
        assert!(s.kicked(), "the paced round starts");
        s.started();
        assert!(!s.kicked(), "and is the only one running");
    }

    #[test]
    fn zero_pacing_runs_back_to_back_rounds_at_once() {
        let mut s = paced(0);
        saturate(&mut s);
        s.started();
        assert_eq!(s.finished(true, true, Duration::from_secs(1)), Next::Now);
        assert!(s.saturated());
        assert!(!s.paced);
    }

    #[test]
    fn failures_back_off_as_without_pacing() {
        let mut s = paced(20);
        saturate(&mut s);
        s.started();
        assert_eq!(
            s.finished(false, false, MS),
            Next::After(Duration::from_millis(500))
        );
        assert!(!s.paced);
        s.backoff_over();
        assert!(s.kicked());
        s.started();
        assert_eq!(
            s.finished(true, true, MS),
            Next::Now,
            "saturated anew first"
        );
    }

    #[test]
    fn stop_during_the_pause_starts_nothing() {
        let mut s = paced(20);
        saturate(&mut s);
        s.started();
        assert_eq!(s.finished(true, true, MS), Next::Paced(MS));
        s.stopping = true;
        s.pace_over();
        assert!(!s.kicked(), "no round once stopping");
        assert!(!s.running);
    }

    #[test]
    fn kicks_during_a_round_coalesce_into_one_follow_up() {
        let mut s = Schedule::default();
        assert!(s.kicked());
        s.started();
        assert!(!s.kicked());
        assert!(!s.kicked());
        assert_eq!(s.finished(true, false, MS), Next::Now);
        s.started();
        assert_eq!(s.finished(true, false, MS), Next::Idle);
    }

    #[test]
    fn failures_back_off_and_cap() {
        let mut s = Schedule::default();
        s.started();
        assert_eq!(
            s.finished(false, false, MS),
            Next::After(Duration::from_millis(500))
        );
        assert!(!s.kicked(), "no round during backoff");
        s.backoff_over();
        s.started();
        assert_eq!(
            s.finished(false, false, MS),
            Next::After(Duration::from_secs(1))
        );
        for _ in 0..20 {
            s.failed();
        }
        assert_eq!(s.failed(), BACKOFF_MAX);
        s.backoff_over();
        s.started();
        assert_eq!(s.finished(true, true, MS), Next::Now);
        assert_eq!(s.failures, 0);
    }

    #[test]
    fn back_to_back_productive_rounds_saturate() {
        let mut s = Schedule::default();
        s.started();
        s.finished(true, true, MS);
        assert!(!s.saturated(), "a notification's own round");
        s.started();
        s.finished(true, true, MS);
        assert!(s.saturated());
        s.started();
        assert_eq!(s.finished(true, false, MS), Next::Idle);
        assert!(!s.saturated());
    }

    #[test]
    fn stopping_refuses_new_rounds() {
        let mut s = Schedule::default();
        s.started();
        s.stopping = true;
        assert!(!s.kicked());
        assert_eq!(s.finished(true, true, MS), Next::Stop);
    }
}
