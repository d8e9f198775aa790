//! Trimming delta tables: a delta row is done once every receiver of every sync reading that
//! table has applied it, i.e. its xid is below the smallest horizon (progress xmin) recorded in
//! `drover.consumers`. Receivers' progress lives on the receivers; the source keeps this copy
//! (written after they commit, so it may lag, which only delays purging).

use std::sync::Arc;

use crate::pg::connect::checkout;
use crate::pg::error::PgError;
use crate::pg::ident::quote_literal;
use crate::pg::Pool;
use crate::round::plan::TablePlan;
use crate::round::snapshot::Snapshot;

/// Records that each target applied everything up to its snapshot and deletes what no one
/// needs.
pub async fn after_round(
    pool: &Pool,
    source: &str,
    sync: &str,
    targets: &[(String, Snapshot)],
    tables: &[Arc<TablePlan>],
) -> Result<(), PgError> {
    let mut sql = String::new();
    let sync_l = quote_literal(sync);
    for (target, snap) in targets {
        let xmin = snap.xmin();
        for t in tables {
            sql.push_str(&format!(
                "UPDATE drover.consumers SET horizon = {xmin}, updated_at = now() WHERE sync = {sync_l} \
                 AND target = {} AND table_name = {} AND horizon < {xmin};\n",
                quote_literal(target),
                quote_literal(&t.display)
            ));
        }
    }
    for t in tables {
        sql.push_str(&format!(
            "DELETE FROM {d} WHERE drover_xid < (SELECT coalesce(min(horizon), 0) FROM drover.consumers WHERE table_name = {n});\n",
            d = t.deltas[source],
            n = quote_literal(&t.display)
        ));
    }
    let client = checkout(pool, source).await?;
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| PgError::query(source, "purge applied delta rows", e))
}
