//! Time limits of a round (`daemon.lock_timeout`, `daemon.statement_timeout`,
//! `daemon.round_deadline`): a locked or silent target fails its own round instead of holding
//! the source's snapshot (and xmin) open, and the sync's other targets go on. With them, the
//! pause between back-to-back rounds (`daemon.round_pacing`).

use std::time::Duration;

use crate::config::{
    Daemon, DEFAULT_LOCK_TIMEOUT, DEFAULT_ROUND_DEADLINE, DEFAULT_ROUND_PACING,
    DEFAULT_STATEMENT_TIMEOUT,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest wait for a lock in an apply transaction.
    pub lock_timeout: Duration,
    /// Longest statement of an apply transaction; zero = no limit.
    pub statement_timeout: Duration,
    /// After this a round is abandoned: its transactions are rolled back.
    pub round_deadline: Duration,
    /// Longest pause before the next round of a target whose rounds run back to back;
    /// zero = no pause (`Schedule::pace`).
    pub round_pacing: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            round_deadline: DEFAULT_ROUND_DEADLINE,
            round_pacing: DEFAULT_ROUND_PACING,
        }
    }
}

impl Limits {
    pub fn from_config(d: &Daemon) -> Limits {
        Limits {
            lock_timeout: d.lock_timeout,
            // `0` (off) is `None` in the config, zero here.
            statement_timeout: d.statement_timeout.unwrap_or(Duration::ZERO),
            round_deadline: d.round_deadline,
            round_pacing: d.round_pacing,
        }
    }

    /// Transaction-local settings of an apply session.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        vec![
            ("lock_timeout", ms(self.lock_timeout)),
            ("statement_timeout", ms(self.statement_timeout)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_carry_the_limits_in_milliseconds() {
        let l = Limits {
            lock_timeout: Duration::from_secs(2),
            statement_timeout: Duration::ZERO,
            round_deadline: Duration::from_secs(60),
            round_pacing: Duration::ZERO,
        };
        let s = l.settings();
        assert_eq!(s[0], ("lock_timeout", "2000ms".to_string()));
        assert_eq!(s[1], ("statement_timeout", "0ms".to_string()), "0 = off");
    }
}
