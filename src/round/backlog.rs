//! Bounded rounds that cannot wedge. A backlog over the round budget is applied in rounds cut
//! at transaction-id boundaries (`apply::bound`), but every row is read at the round's
//! snapshot: a cut may carry a later transaction's value of one row while a row that later
//! transaction's predecessor changed waits beyond the cut. A unique index other than the key
//! can then refuse the bounded round on every retry (a value moved from one row to another).
//! After a constraint violation in a bounded round, the next attempt for that target applies
//! the whole remaining backlog as one round: a state the source actually had at one snapshot.

use std::collections::HashSet;

use crate::pg::error::PgError;

/// Per (source, target): whether the next round must not be cut.
#[derive(Debug, Default)]
pub struct Unbounded(HashSet<(String, String)>);

impl Unbounded {
    /// True when the next round for this target must apply the whole backlog.
    pub fn wanted(&self, source: &str, target: &str) -> bool {
        self.0.contains(&(source.to_string(), target.to_string()))
    }

    /// Records how one target's apply ended: a bounded apply refused by a constraint makes
    /// the next one unbounded; any committed apply ends that.
    pub fn record(
        &mut self,
        sync: &str,
        pair: (&str, &str),
        bounded: bool,
        result: &Result<bool, PgError>,
    ) {
        let (source, target) = pair;
        let key = (source.to_string(), target.to_string());
        match result {
            Ok(_) => {
                self.0.remove(&key);
            }
            Err(e) if bounded && constraint_violation(e) => {
                tracing::warn!(
                    sync,
                    target,
                    "a bounded round broke a constraint: its rows are read at the round's snapshot, \
                     so a cut can carry a later value before the change that freed it; the next \
                     attempt applies the whole backlog as one round"
                );
                self.0.insert(key);
            }
            Err(_) => {}
        }
    }
}

/// SQLSTATE class 23: integrity constraint violation (unique, foreign key, check, not null,
/// exclusion).
fn constraint_violation(e: &PgError) -> bool {
    match e {
        PgError::Query { source, .. } => source.code().is_some_and(|c| c.code().starts_with("23")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bounded_constraint_failure_lifts_the_bound() {
        let mut u = Unbounded::default();
        let other = Err(PgError::setup("dst", "progress moved"));
        u.record("s", ("src", "dst"), true, &other);
        assert!(!u.wanted("src", "dst"));
        u.0.insert(("src".into(), "dst".into()));
        u.record("s", ("src", "dst"), false, &Ok(true));
        assert!(!u.wanted("src", "dst"));
    }
}
