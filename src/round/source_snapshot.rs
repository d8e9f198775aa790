//! The batch that opens a round's source snapshot: the snapshot, the source's identity
//! (`rewind`) and every table's column signature (`signature`), checked against the plans.

use std::sync::Arc;

use tokio_postgres::{SimpleQueryMessage, SimpleQueryRow};

use crate::pg::error::PgError;
use crate::pg::simple;
use crate::round::plan::TablePlan;
use crate::round::signature::sql;
use crate::round::snapshot::Snapshot;

/// The round's reads find the current rows of changed keys through the key's index, as the
/// apply does on the target (`round::session`): at the default random_page_cost the planner
/// hashed 1 % of a table's keys against a scan of the whole table, in parallel workers on a
/// production source. Transaction-local, and no snapshot is taken by a SET. (A DBA's lower
/// value would need a `set_config` row in this batch's answer; 1.1 is close enough.)
const INDEX_LOOKUPS: &str = "SET LOCAL random_page_cost = 1.1; ";

/// The batch that opens a round's source snapshot: `begin` (empty when the transaction is
/// already open), the snapshot with the `extra` columns of its row (`rewind`'s source
/// identity), then the signatures of the round's tables in plan order.
pub fn snapshot_sql(begin: &str, source: &str, tables: &[Arc<TablePlan>], extra: &str) -> String {
    let oids: Vec<String> = tables
        .iter()
        .map(|t| t.signatures.get(source).map_or(0, |s| s.oid).to_string())
        .collect();
    let rels = format!("'{{{}}}'::pg_catalog.oid[]", oids.join(","));
    format!(
        "{begin}{INDEX_LOOKUPS}SELECT txid_current_snapshot()::text{sep}{extra}; {}",
        sql(&rels),
        sep = if extra.is_empty() { "" } else { ", " }
    )
}

/// The answer of `snapshot_sql`: the round's snapshot, once every signature matched its plan,
/// and the first `extra` column's value.
pub fn snapshot(
    source: &str,
    tables: &[Arc<TablePlan>],
    answer: Vec<SimpleQueryMessage>,
) -> Result<(Snapshot, Option<String>), PgError> {
    let rows = simple::rows(answer);
    check(source, tables, rows.get(1..).unwrap_or_default())?;
    let first = rows.first();
    let text = first.and_then(|r| r.get(0)).unwrap_or_default();
    let extra = first
        .and_then(|r| r.try_get(1).ok().flatten())
        .map(str::to_string);
    let cur = Snapshot::parse(text)
        .ok_or_else(|| PgError::protocol(source, format!("unexpected snapshot text {text:?}")))?;
    Ok((cur, extra))
}

/// Compares the signatures a round read on `source` (the rows of `sql`) with the plans'; a
/// difference is a schema error naming the table.
fn check(source: &str, tables: &[Arc<TablePlan>], rows: &[SimpleQueryRow]) -> Result<(), PgError> {
    if rows.len() != tables.len() {
        return Err(PgError::protocol(
            source,
            format!(
                "column signatures: {} rows for {} tables",
                rows.len(),
                tables.len()
            ),
        ));
    }
    for (row, t) in rows.iter().zip(tables) {
        let found = row.get(2);
        if t.signatures.get(source).map(|s| s.md5.as_str()) != found {
            return Err(PgError::schema(
                source,
                format!(
                    "table {}: its columns changed on this source since the table plans were read; \
                     reading them again (a column the targets lack stops the table until it is added there)",
                    t.display
                ),
            ));
        }
    }
    Ok(())
}
