//! Bounded multi-master rounds: a source's backlog over the budget is cut at a transaction id,
//! like a one-source round (`backlog::bound`), so a round holds at most about `MULTI_BUDGET`
//! delta rows per (source, table) of pending keys in memory. The round reads and decides only
//! the changes below the cut, and progress, the purge and the late-local check
//! (`local_newer`) use the cut as that source's snapshot; the next round takes the rest.

use std::sync::Arc;

use crate::pg::error::PgError;
use crate::round::plan::TablePlan;
use crate::round::snapshot::Snapshot;

/// Most delta rows of one table one source contributes to a round. Lower than the one-source
/// budget: every pending key of every table is held in memory until the round's applies end.
const MULTI_BUDGET: u64 = 10_000;

/// `source`'s snapshot for this round: `cur`, or a cut below it when some table's backlog for
/// the receiver furthest behind is over the budget. `prevs` holds, per table, every
/// receiver's progress from `source`.
pub async fn cut(
    tx: &tokio_postgres::Client,
    source: &str,
    tables: &[Arc<TablePlan>],
    prevs: &[Vec<Snapshot>],
    cur: &Snapshot,
) -> Result<Snapshot, PgError> {
    // One statement for every table: each table's budget-th pending xid, or NULL.
    let mut lower = 0;
    let mut cols = Vec::new();
    for (t, prevs) in tables.iter().zip(prevs) {
        lower = prevs.iter().map(Snapshot::xmax).fold(lower, i64::max);
        if let Some(oldest) = prevs.iter().min_by_key(|p| p.xmin()) {
            cols.push(format!(
                "({})",
                t.budget_xid_sql(source, oldest, MULTI_BUDGET)
            ));
        }
    }
    if cols.is_empty() {
        return Ok(cur.clone());
    }
    let row = tx
        .query_one(&format!("SELECT {}", cols.join(", ")), &[])
        .await
        .map_err(|e| PgError::query(source, "split the backlog", e))?;
    // The whole transaction of that row: a cut always moves forward.
    let cut = (0..cols.len())
        .filter_map(|i| row.get::<_, Option<i64>>(i))
        .map(|x| x + 1)
        .min()
        .unwrap_or(i64::MAX);
    let cut = cut.max(lower);
    Ok(if cut < cur.xmin() {
        Snapshot::below(cut)
    } else {
        cur.clone()
    })
}
