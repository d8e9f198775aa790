//! Bounded rounds that cannot wedge. A backlog over the round budget is applied in rounds cut
//! at transaction-id boundaries (`bound`), but every row is read at the round's
//! snapshot: a cut may carry a later transaction's value of one row while a row that later
//! transaction's predecessor changed waits beyond the cut. A unique index other than the key
//! can then refuse the bounded round on every retry (a value moved from one row to another).
//! After a constraint violation in a bounded round, the next attempt for that target applies
//! the whole remaining backlog as one round: a state the source actually had at one snapshot.

use std::collections::HashSet;

use crate::pg::error::PgError;
use crate::round::apply_steps::{Scope, TableWork};
use crate::round::snapshot::Snapshot;

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

/// Most delta rows of one table one round applies; a larger backlog is split into rounds.
const ROUND_BUDGET: u64 = 100_000;

/// Whether every table's pending rows fit one round (`bound` cuts nothing).
pub(crate) fn within_budget(work: &[TableWork]) -> bool {
    work.iter().all(|w| w.pending <= ROUND_BUDGET || w.truncate)
}

/// The transaction-id cut that keeps this round within `ROUND_BUDGET` rows per table, or None
/// to apply everything visible in `cur`. The cut is valid only at or below `cur.xmin()`
/// (nothing below it still running) and at or above every `prev.xmax()` (it must not go back).
pub(crate) async fn bound(
    stx: &tokio_postgres::Client,
    scope: &Scope<'_>,
    work: &[TableWork],
    cur: &Snapshot,
) -> Result<Option<i64>, PgError> {
    if within_budget(work) {
        return Ok(None);
    }
    let src = scope.src;
    let mut cut = i64::MAX;
    for (t, w) in scope.tables.iter().zip(work) {
        if w.pending <= ROUND_BUDGET || w.truncate {
            continue;
        }
        let row = stx
            .query_opt(&t.budget_xid_sql(src, &w.prev, ROUND_BUDGET), &[])
            .await
            .map_err(|e| PgError::query(src, format!("split the backlog of {}", t.display), e))?;
        if let Some(r) = row {
            // Include that row's whole transaction: a cut must always move forward, even
            // when one transaction wrote more rows than the budget.
            cut = cut.min(r.get::<_, i64>(0) + 1);
        }
    }
    let lower = work.iter().map(|w| w.prev.xmax()).max().unwrap_or(0);
    let cut = cut.max(lower);
    Ok((cut < cur.xmin()).then_some(cut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bounded_constraint_failure_lifts_the_bound() {
        let mut u = Unbounded::default();
        let other = Err(PgError::concurrency("dst", "progress moved"));
        u.record("s", ("src", "dst"), true, &other);
        assert!(!u.wanted("src", "dst"));
        u.0.insert(("src".into(), "dst".into()));
        u.record("s", ("src", "dst"), false, &Ok(true));
        assert!(!u.wanted("src", "dst"));
    }
}
