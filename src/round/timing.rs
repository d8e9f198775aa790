//! Where a round's time goes, step by step: one debug event per round under the target
//! `drover::round::timing` (`RUST_LOG=drover::round::timing=debug`). Used to profile rounds;
//! costs a few `Instant::now()` calls when disabled.

use std::fmt::Write;
use std::time::Instant;

pub struct Phases {
    last: Instant,
    marks: Vec<(&'static str, u32)>,
}

impl Default for Phases {
    fn default() -> Self {
        Phases {
            last: Instant::now(),
            marks: Vec::with_capacity(16),
        }
    }
}

impl Phases {
    /// Ends a step: the time since the previous mark, in microseconds.
    pub fn mark(&mut self, step: &'static str) {
        let now = Instant::now();
        let us = now
            .duration_since(self.last)
            .as_micros()
            .min(u32::MAX as u128) as u32;
        self.marks.push((step, us));
        self.last = now;
    }

    pub fn log(&self, sync: &str) {
        if !tracing::enabled!(target: "drover::round::timing", tracing::Level::DEBUG) {
            return;
        }
        let mut s = String::new();
        for (step, us) in &self.marks {
            let _ = write!(s, "{step}={us} ");
        }
        let total: u32 = self.marks.iter().map(|m| m.1).sum();
        tracing::debug!(target: "drover::round::timing", sync, total_us = total, steps = %s.trim_end(), "round steps (us)");
    }
}
