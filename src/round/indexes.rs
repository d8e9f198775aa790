//! Index rebuild around a large initial copy: loading an empty table and building its indexes
//! afterwards (one sort each) is faster than maintaining them row by row, which is why
//! pg_restore does it. Done inside the copy's transaction, so a failed copy restores them.
//!
//! Only plain tables, and only indexes no foreign key depends on: a primary key or unique
//! constraint referenced by another table's foreign key stays in place.

use tokio_postgres::Transaction;

use crate::pg::error::PgError;
use crate::pg::ident::quote_ident;
use crate::round::plan::TablePlan;

/// Source tables estimated below this many rows are copied with their indexes in place.
pub const REBUILD_MIN_ROWS: f64 = 100_000.0;

/// Drops the table's rebuildable indexes and constraints; returns the DDL that recreates them.
pub async fn drop_for_load(
    ttx: &Transaction<'_>,
    dst: &str,
    t: &TablePlan,
) -> Result<Vec<String>, PgError> {
    let purpose = format!("drop indexes of {} for the copy", t.display);
    let rows = ttx
        .query(
            "SELECT c.relkind::text, i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), \
                    k.conname::text, pg_get_constraintdef(k.oid), \
                    EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.conindid = i.indexrelid) \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
             LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u') \
             WHERE i.indrelid = $1::text::regclass",
            &[&t.quoted],
        )
        .await
        .map_err(|e| PgError::query(dst, &purpose, e))?;
    let mut drop = String::new();
    let mut recreate = Vec::new();
    for r in rows {
        let relkind: String = r.get(0);
        let referenced: bool = r.get(5);
        if relkind != "r" || referenced {
            continue;
        }
        let index: String = r.get(1);
        match (r.get::<_, Option<String>>(3), r.get::<_, Option<String>>(4)) {
            (Some(name), Some(def)) => {
                drop.push_str(&format!(
                    "ALTER TABLE {} DROP CONSTRAINT {};",
                    t.quoted,
                    quote_ident(&name)
                ));
                recreate.push(format!(
                    "ALTER TABLE {} ADD CONSTRAINT {} {def}",
                    t.quoted,
                    quote_ident(&name)
                ));
            }
            _ => {
                let def: String = r.get(2);
                // regclass text is already quoted where needed.
                drop.push_str(&format!("DROP INDEX {index};"));
                recreate.push(def);
            }
        }
    }
    if !drop.is_empty() {
        ttx.batch_execute(&drop)
            .await
            .map_err(|e| PgError::query(dst, &purpose, e))?;
    }
    Ok(recreate)
}

/// Recreates what `drop_for_load` dropped.
pub async fn rebuild(
    ttx: &Transaction<'_>,
    dst: &str,
    t: &TablePlan,
    ddl: &[String],
) -> Result<(), PgError> {
    for d in ddl {
        ttx.batch_execute(d).await.map_err(|e| {
            PgError::query(
                dst,
                format!("rebuild indexes of {} after the copy", t.display),
                e,
            )
        })?;
    }
    Ok(())
}
