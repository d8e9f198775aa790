//! `[daemon]` durations: `lease_timeout`, the round's limits
//! `lock_timeout`, `statement_timeout` (`0` turns it off) and
//! `round_deadline`, with the rule that a lock wait must end before the round
//! deadline (else a locked target would always run into the deadline), and
//! `round_pacing` (`0` turns it off).

use std::time::Duration;

use super::super::model::DEFAULT_LEASE_TIMEOUT;
use super::super::raw::RawDaemon;
use super::super::strict::Str;
use super::super::timeouts::{
    DEFAULT_LOCK_TIMEOUT, DEFAULT_ROUND_DEADLINE, DEFAULT_ROUND_PACING, DEFAULT_STATEMENT_TIMEOUT,
};
use super::Problems;

/// Shortest `daemon.lease_timeout`: the holder heartbeats every third of it, and
/// PostgreSQL's `idle_session_timeout` is in milliseconds.
const MIN_LEASE_TIMEOUT: Duration = Duration::from_secs(1);

/// Shortest `daemon.round_deadline`: a round connects, reads and applies;
/// below a second it would fail on a healthy but busy machine.
const MIN_ROUND_DEADLINE: Duration = Duration::from_secs(1);

/// Longest `lock_timeout` / `statement_timeout` PostgreSQL accepts: INT_MAX ms.
const MAX_SETTING: Duration = Duration::from_millis(i32::MAX as u64);

const DURATION_EXAMPLES: &str = "expected e.g. \"10s\", \"1500ms\", \"1m\", \"10min\" or \"1h\"";

/// The checked round limits of `[daemon]`.
#[derive(Clone, Copy)]
pub(super) struct RoundLimits {
    pub lock_timeout: Duration,
    pub statement_timeout: Option<Duration>,
    pub round_deadline: Duration,
}

pub(super) fn lease_timeout(raw: Option<&Str>, problems: &mut Problems) -> Option<Duration> {
    let key = "daemon.lease_timeout";
    let d = duration(key, raw, DEFAULT_LEASE_TIMEOUT, problems)?;
    at_least(key, raw, d, MIN_LEASE_TIMEOUT, "at least 1s", problems)
}

/// `lock_timeout`, `statement_timeout` and `round_deadline`; every problem
/// among them is reported, `None` if there is any.
pub(super) fn round_limits(raw: &RawDaemon, problems: &mut Problems) -> Option<RoundLimits> {
    let lock = lock_timeout(raw.lock_timeout.as_ref(), problems);
    let statement = statement_timeout(raw.statement_timeout.as_ref(), problems);
    let deadline = round_deadline(raw.round_deadline.as_ref(), problems);
    if let (Some(lock), Some(deadline)) = (lock, deadline) {
        if lock >= deadline {
            problems.push(
                "daemon.lock_timeout",
                format!(
                    "{} must be below daemon.round_deadline ({}): a round waiting for a lock would always run into its deadline; lower lock_timeout or raise round_deadline",
                    shown(raw.lock_timeout.as_ref(), lock),
                    shown(raw.round_deadline.as_ref(), deadline),
                ),
            );
            return None;
        }
    }
    Some(RoundLimits {
        lock_timeout: lock?,
        statement_timeout: statement?,
        round_deadline: deadline?,
    })
}

fn lock_timeout(raw: Option<&Str>, problems: &mut Problems) -> Option<Duration> {
    let key = "daemon.lock_timeout";
    let d = duration(key, raw, DEFAULT_LOCK_TIMEOUT, problems)?;
    let d = at_least(
        key,
        raw,
        d,
        Duration::from_millis(1),
        "at least 1ms (0 would let a locked target wait, and hold its round open, for as long as the lock is held)",
        problems,
    )?;
    at_most_setting(key, raw, d, problems)
}

/// `Some(None)` for `0` (or `0ms`, `0s`): PostgreSQL's statement_timeout off.
fn statement_timeout(raw: Option<&Str>, problems: &mut Problems) -> Option<Option<Duration>> {
    let key = "daemon.statement_timeout";
    let d = duration(key, raw, DEFAULT_STATEMENT_TIMEOUT, problems)?;
    if d.is_zero() {
        return Some(None);
    }
    at_most_setting(key, raw, d, problems).map(Some)
}

fn round_deadline(raw: Option<&Str>, problems: &mut Problems) -> Option<Duration> {
    let key = "daemon.round_deadline";
    let d = duration(key, raw, DEFAULT_ROUND_DEADLINE, problems)?;
    at_least(key, raw, d, MIN_ROUND_DEADLINE, "at least 1s", problems)
}

/// `round_pacing`: any duration; `0` (or `0ms`, `0s`) turns pacing off. No
/// upper bound is needed: a pause never exceeds the round before it.
pub(super) fn round_pacing(raw: Option<&Str>, problems: &mut Problems) -> Option<Duration> {
    duration("daemon.round_pacing", raw, DEFAULT_ROUND_PACING, problems)
}

/// The key's value, its default when absent; a problem if it does not parse.
fn duration(
    key: &str,
    raw: Option<&Str>,
    default: Duration,
    problems: &mut Problems,
) -> Option<Duration> {
    let Some(Str(s)) = raw else {
        return Some(default);
    };
    let parsed = parse_duration(s.trim());
    if parsed.is_none() {
        problems.push(key, format!("{s:?} is not a duration: {DURATION_EXAMPLES}"));
    }
    parsed
}

fn at_least(
    key: &str,
    raw: Option<&Str>,
    d: Duration,
    min: Duration,
    rule: &str,
    problems: &mut Problems,
) -> Option<Duration> {
    if d >= min {
        return Some(d);
    }
    problems.push(key, format!("{} is too short: {rule}", shown(raw, d)));
    None
}

fn at_most_setting(
    key: &str,
    raw: Option<&Str>,
    d: Duration,
    problems: &mut Problems,
) -> Option<Duration> {
    if d <= MAX_SETTING {
        return Some(d);
    }
    problems.push(
        key,
        format!(
            "{} is too long: PostgreSQL accepts at most 2147483647ms (about 24 days)",
            shown(raw, d)
        ),
    );
    None
}

/// The value as written (quoted), or the default in milliseconds.
fn shown(raw: Option<&Str>, d: Duration) -> String {
    match raw {
        Some(Str(s)) => format!("{s:?}"),
        None => format!("the default {}ms", d.as_millis()),
    }
}

/// "0", "250ms", "10s", "2m" / "2min", "1h" into a duration.
pub(super) fn parse_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = |factor: u64| n.checked_mul(factor).map(Duration::from_secs);
    match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" | "min" => secs(60),
        "h" => secs(3600),
        _ => None,
    }
}
