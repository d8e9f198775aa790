//! A sync's lanes: one per target of a one-source sync (each target runs its own rounds, so a
//! locked or dead one falls behind alone), or one lane for a multi-master sync's rounds. Each
//! lane has its schedule and its status; the sync's status is their aggregate. Plain structs,
//! driven by unit tests without an actor system.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::schedule::{Next, Schedule};
use crate::pg::error::PgError;
use crate::status::TargetStatus;

/// The lane of a multi-master sync: one round spans every database.
pub const MULTI: &str = "*";

/// A round that left out unreachable databases runs again after this, changes or not.
const PARTIAL_RETRY: Duration = Duration::from_secs(1);

/// What a finished round of one lane says, as the bookkeeping needs it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub good: bool,
    /// Not good only because unreachable databases were left out (`multi_down`): the lane
    /// shows the error but keeps its pace, and retries them every `PARTIAL_RETRY`.
    pub partial: bool,
    /// The round committed rows.
    pub moved: bool,
    /// Good, but applied only a bounded part of the backlog (`backlog`).
    pub behind: bool,
    /// Age of the oldest change the round found pending.
    pub lag: f64,
    pub pending: u64,
    /// (redacted, full) text of the round's first error.
    pub error: Option<(String, String)>,
    pub now: DateTime<Utc>,
    /// How long the round took: the pause before a paced next round (`Schedule::pace`).
    pub elapsed: Duration,
}

#[derive(Debug)]
struct Lane {
    schedule: Schedule,
    status: TargetStatus,
}

#[derive(Debug, Default)]
pub struct Lanes {
    lanes: Vec<Lane>,
}

impl Lanes {
    pub fn new<I: IntoIterator<Item = String>>(names: I) -> Lanes {
        let lanes = names
            .into_iter()
            .map(|target| Lane {
                schedule: Schedule::default(),
                status: TargetStatus {
                    target,
                    state: "starting".into(),
                    ..TargetStatus::default()
                },
            })
            .collect();
        Lanes { lanes }
    }

    /// Paces every lane's back-to-back rounds by `daemon.round_pacing` (`Schedule::pace`).
    /// One-source syncs only: a multi-master sync's lane is not paced.
    pub fn paced(mut self, pacing: Duration) -> Lanes {
        for l in &mut self.lanes {
            l.schedule.pacing = pacing;
        }
        self
    }

    fn lane(&mut self, name: &str) -> Option<&mut Lane> {
        self.lanes.iter_mut().find(|l| l.status.target == name)
    }

    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// A kick: the lanes that start a round now (the others coalesce it into a follow-up).
    pub fn kicked(&mut self) -> Vec<String> {
        let mut start = Vec::new();
        for l in &mut self.lanes {
            if l.schedule.kicked() {
                l.schedule.started();
                start.push(l.status.target.clone());
            }
        }
        start
    }

    /// A kick for one lane (its previous round asked for another): true when it starts now.
    pub fn kick(&mut self, name: &str) -> bool {
        let Some(l) = self.lane(name) else {
            return false;
        };
        let now = l.schedule.kicked();
        if now {
            l.schedule.started();
        }
        now
    }

    /// The gate refused a lane's round (paused, or plans to read again): it is not running.
    pub fn closed(&mut self, name: &str) {
        if let Some(l) = self.lane(name) {
            l.schedule.running = false;
            l.schedule.dirty = false;
        }
    }

    /// `name`'s round (or preparation) is running.
    pub fn is_running(&self, name: &str) -> bool {
        (self.lanes.iter()).any(|l| l.status.target == name && l.schedule.running)
    }

    /// A lane's target could not be prepared: it is failing with that error and retries
    /// after a pause.
    pub fn unprepared(&mut self, name: &str, e: &PgError) -> Next {
        let Some(l) = self.lane(name) else {
            return Next::Idle;
        };
        l.schedule.running = false;
        l.status.state = "failing".into();
        l.status.last_error = Some(e.redacted());
        l.status.last_error_full = Some(e.to_string());
        if l.schedule.stopping {
            return Next::Stop;
        }
        Next::After(l.schedule.failed())
    }

    /// A lane's target was prepared: its rounds start.
    pub fn prepared(&mut self, name: &str) -> Next {
        let Some(l) = self.lane(name) else {
            return Next::Idle;
        };
        l.schedule.running = false;
        if l.schedule.stopping {
            return Next::Stop;
        }
        Next::Now
    }

    /// Some lane's round is running.
    pub fn running(&self) -> bool {
        self.lanes.iter().any(|l| l.schedule.running)
    }

    /// A lane's round ended: updates its status and returns what the lane does next.
    pub fn finished(&mut self, name: &str, o: &Outcome) -> Next {
        let Some(l) = self.lane(name) else {
            return Next::Idle;
        };
        let s = &mut l.status;
        s.rounds += 1;
        s.lag_seconds = o.lag;
        s.pending_rows = if o.good { 0 } else { o.pending };
        if o.good {
            s.state = if o.behind { "behind" } else { "ok" }.into();
            s.last_good = Some(o.now);
        } else {
            s.state = "failing".into();
            if let Some((short, full)) = &o.error {
                s.last_error = Some(short.clone());
                s.last_error_full = Some(full.clone());
            }
        }
        if o.partial {
            return match l.schedule.finished(true, o.moved, o.elapsed) {
                Next::Idle => Next::After(PARTIAL_RETRY),
                next => next,
            };
        }
        // A bounded round left at least a full batch waiting: a pause would not make the
        // next round bigger, only the backlog's catch-up slower.
        let pause = if o.behind { Duration::ZERO } else { o.elapsed };
        l.schedule.finished(o.good, o.moved, pause)
    }

    /// The lane's held tables after its round (`round::hold`). A good lane with held tables
    /// is "held": its other tables replicate. Returns the error of a table refused anew (held
    /// now, or refused again by a retry), which also becomes the lane's last error.
    pub fn set_held(
        &mut self,
        name: &str,
        held: &[crate::round::hold::HeldTable],
    ) -> Option<(String, String)> {
        let l = self.lane(name)?;
        let old = std::mem::replace(&mut l.status.held, held.to_vec());
        if !held.is_empty() && l.status.state != "failing" {
            l.status.state = "held".into();
        }
        let fresh = held.iter().find(|h| {
            h.held_with.is_none() && !old.iter().any(|o| o.table == h.table && o.count == h.count)
        })?;
        let error = |e: &str| format!("table {} held on {name}: {e}", fresh.table);
        let (short, full) = (error(&fresh.error), error(&fresh.error_full));
        l.status.last_error = Some(short.clone());
        l.status.last_error_full = Some(full.clone());
        Some((short, full))
    }

    pub fn backoff_over(&mut self, name: &str) {
        if let Some(l) = self.lane(name) {
            l.schedule.backoff_over();
        }
    }

    /// The pause before `name`'s paced round is over (`Next::Paced`): a kick starts it.
    pub fn pace_over(&mut self, name: &str) {
        if let Some(l) = self.lane(name) {
            l.schedule.pace_over();
        }
    }

    /// Stop starting rounds; returns true when none runs any more.
    pub fn stop(&mut self) -> bool {
        for l in &mut self.lanes {
            l.schedule.stopping = true;
        }
        !self.running()
    }

    /// No lane is failing (lanes that have not run yet do not count).
    pub fn all_good(&self) -> bool {
        self.lanes.iter().all(|l| l.status.state != "failing")
    }

    /// The largest lag over lanes: the sync is as far behind as its slowest target.
    pub fn lag(&self) -> f64 {
        self.lanes
            .iter()
            .map(|l| l.status.lag_seconds)
            .fold(0.0, f64::max)
    }

    pub fn pending(&self) -> u64 {
        self.lanes
            .iter()
            .map(|l| l.status.pending_rows)
            .max()
            .unwrap_or(0)
    }

    /// Whether the sources' doorbells should ring: not while every lane either runs rounds back
    /// to back (`Schedule::saturated`) or waits out a failure (its retry is timed).
    pub fn waiting(&self) -> bool {
        !self
            .lanes
            .iter()
            .all(|l| l.schedule.saturated() || l.schedule.in_backoff)
    }

    pub fn statuses(&self) -> Vec<TargetStatus> {
        self.lanes.iter().map(|l| l.status.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(good: bool) -> Outcome {
        Outcome {
            good,
            partial: false,
            moved: good,
            behind: false,
            lag: if good { 0.5 } else { 7.0 },
            pending: 40,
            error: (!good).then(|| ("locked".to_string(), "locked (detail)".to_string())),
            now: Utc::now(),
            elapsed: Duration::from_millis(4),
        }
    }

    /// Two productive rounds of `name`: the second ends saturated, its follow-up paced.
    fn run_back_to_back(l: &mut Lanes, name: &str) -> Next {
        assert!(l.kick(name));
        assert_eq!(l.finished(name, &outcome(true)), Next::Now);
        assert!(l.kick(name));
        l.finished(name, &outcome(true))
    }

    #[test]
    fn a_saturated_lane_is_paced_alone_and_kicks_do_not_start_it_twice() {
        let ms = Duration::from_millis(20);
        let mut l = Lanes::new(["a".to_string(), "b".to_string()]).paced(ms);
        let four = Duration::from_millis(4);
        assert_eq!(run_back_to_back(&mut l, "a"), Next::Paced(four));
        assert!(!l.is_running("a"));
        assert_eq!(
            l.kicked(),
            vec!["b"],
            "idle b starts at once, paced a waits"
        );
        assert!(!l.kick("a"), "no second round on a during its pause");
        l.pace_over("a");
        assert!(l.kick("a") && l.is_running("a"), "the paced round starts");
        assert!(!l.kick("a"), "once");
        assert!(l.kicked().is_empty());
    }

    #[test]
    fn a_lane_catching_up_a_backlog_is_not_paced() {
        let mut l = Lanes::new(["a".to_string()]).paced(Duration::from_millis(20));
        let mut behind = outcome(true);
        behind.behind = true;
        for _ in 0..3 {
            assert!(l.kick("a"));
            assert_eq!(l.finished("a", &behind), Next::Now);
        }
        assert!(l.kick("a"));
        assert!(matches!(l.finished("a", &outcome(true)), Next::Paced(_)));
    }

    #[test]
    fn stop_during_a_pause_ends_at_once_and_starts_nothing() {
        let mut l = Lanes::new(["a".to_string()]).paced(Duration::from_millis(20));
        assert!(matches!(run_back_to_back(&mut l, "a"), Next::Paced(_)));
        assert!(l.stop(), "a pausing lane runs no round");
        l.pace_over("a");
        assert!(!l.kick("a"));
        assert!(!l.running());
    }

    #[test]
    fn unpaced_lanes_and_failures_go_on_as_before() {
        let mut l = Lanes::new([MULTI.to_string()]);
        assert_eq!(run_back_to_back(&mut l, MULTI), Next::Now, "multi-master");
        let mut l = Lanes::new(["a".to_string()]).paced(Duration::ZERO);
        assert_eq!(run_back_to_back(&mut l, "a"), Next::Now, "round_pacing = 0");
        let mut l = Lanes::new(["a".to_string()]).paced(Duration::from_millis(20));
        assert!(matches!(run_back_to_back(&mut l, "a"), Next::Paced(_)));
        l.pace_over("a");
        assert!(l.kick("a"));
        assert_eq!(
            l.finished("a", &outcome(false)),
            Next::After(Duration::from_millis(500)),
            "the usual backoff"
        );
    }

    #[test]
    fn a_failing_lane_backs_off_alone() {
        let mut l = Lanes::new(["a".to_string(), "b".to_string()]);
        assert_eq!(l.kicked(), vec!["a", "b"]);
        assert!(matches!(l.finished("b", &outcome(false)), Next::After(_)));
        assert_eq!(l.finished("a", &outcome(true)), Next::Now, "moved rows");
        // A kick now starts only the healthy lane: the failing one waits for its retry.
        assert_eq!(l.kicked(), vec!["a"]);
        assert!(!l.all_good());
        assert_eq!(l.lag(), 7.0);
        assert_eq!(l.pending(), 40);
        let st = l.statuses();
        assert_eq!(
            (st[0].state.as_str(), st[1].state.as_str()),
            ("ok", "failing")
        );
        assert_eq!(st[1].last_error.as_deref(), Some("locked"));
        l.backoff_over("b");
        assert_eq!(l.kicked(), vec!["b"], "a is still running");
    }

    #[test]
    fn recovery_and_behind() {
        let mut l = Lanes::new(["a".to_string()]);
        l.kicked();
        l.finished("a", &outcome(false));
        l.backoff_over("a");
        l.kicked();
        let mut o = outcome(true);
        o.behind = true;
        l.finished("a", &o);
        assert!(l.all_good());
        assert_eq!(l.statuses()[0].state, "behind");
        assert_eq!(l.pending(), 0);
    }

    #[test]
    fn a_partial_round_shows_the_error_but_keeps_the_pace() {
        let mut l = Lanes::new([MULTI.to_string()]);
        l.kicked();
        let mut o = outcome(false);
        o.partial = true;
        o.moved = false;
        assert_eq!(l.finished(MULTI, &o), Next::After(PARTIAL_RETRY));
        assert_eq!(l.statuses()[0].state, "failing");
        assert_eq!(l.kicked(), vec![MULTI], "no backoff: kicks start rounds");
        o.moved = true;
        assert_eq!(l.finished(MULTI, &o), Next::Now);
    }

    #[test]
    fn an_unprepared_target_fails_alone_and_starts_once_prepared() {
        let mut l = Lanes::new(["a".to_string(), "b".to_string()]);
        let e = PgError::config("b", "cannot connect");
        assert!(matches!(l.unprepared("b", &e), Next::After(_)));
        assert_eq!(l.kicked(), vec!["a"], "b waits for its retry");
        let st = l.statuses();
        assert_eq!(st[1].state, "failing");
        assert!(st[1]
            .last_error
            .as_deref()
            .unwrap()
            .contains("cannot connect"));
        l.backoff_over("b");
        assert!(l.kick("b") && l.is_running("b"), "the retry prepares b");
        assert_eq!(l.prepared("b"), Next::Now);
        assert!(!l.is_running("b"));
        assert!(l.kick("b"), "then its rounds start");
    }

    #[test]
    fn stop_waits_for_running_lanes() {
        let mut l = Lanes::new(["a".to_string(), "b".to_string()]);
        assert_eq!(l.kicked().len(), 2);
        l.finished("a", &outcome(true));
        assert!(!l.stop(), "b still runs");
        assert_eq!(l.finished("b", &outcome(true)), Next::Stop);
        assert!(!l.running());
        assert!(l.kicked().is_empty(), "no rounds once stopping");
    }

    #[test]
    fn doorbell_not_needed_while_every_lane_is_busy_or_backing_off() {
        let mut l = Lanes::new(["a".to_string(), "b".to_string()]);
        assert!(l.waiting());
        for _ in 0..2 {
            l.kicked();
            l.finished("a", &outcome(true));
        }
        l.finished("b", &outcome(false));
        assert!(!l.waiting());
    }
}
