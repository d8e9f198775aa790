//! The partitions each captured partitioned table had at the last `drover install`
//! (`drover.partitions`). `DETACH PARTITION` and `DROP TABLE` of a partition take its rows out of
//! the table without firing any trigger, so the targets would keep them forever. Every round
//! compares the recorded list with the tree under its snapshot (`gone_sql`, in the same
//! statement as the uncaptured-partition check) and fails naming the partition; `check` names it
//! too. A re-run of install records a TRUNCATE marker for the table (the next round reloads it on
//! every target, exact whatever the target's partitioning), removes drover's triggers from a
//! detached table that still exists (its writes are no longer the table's), and records the tree
//! as it is now.
//!
//! A detached table's current rows could be recorded as deletes instead of a reload, but only
//! while its capture triggers stayed in place and, for a key-less table, its rows unchanged since
//! the detach; a reload is exact without those conditions.

use tokio_postgres::Transaction;

use super::sql::{CaptureObjects, Pieces};
use crate::pg::error::PgError;
use crate::pg::ident::{quote_ident, quote_literal, TableName};

/// `SELECT oid` of every partition below `table`, at any depth (none once `table` is dropped).
/// A partition being detached CONCURRENTLY (14+: `inhdetachpending`, read through `to_jsonb` as
/// older servers lack the column) is gone already: queries of the table no longer see its rows.
fn tree_sql(table: &TableName) -> String {
    let kept = "NOT coalesce((to_jsonb(i) ->> 'inhdetachpending')::bool, false)";
    format!(
        "WITH RECURSIVE tree(relid) AS (SELECT i.inhrelid FROM pg_inherits i \
         WHERE i.inhparent = to_regclass({})::oid AND {kept} \
         UNION ALL SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.relid WHERE {kept}) \
         SELECT relid FROM tree",
        quote_literal(&table.quoted())
    )
}

/// `SELECT table, partition` for each recorded partition of `table` no longer in its tree.
pub fn gone_sql(table: &TableName) -> String {
    let name = quote_literal(&table.to_string());
    format!(
        "SELECT {name}::text, partition_name FROM drover.partitions \
         WHERE table_name = {name} AND partition NOT IN ({tree})",
        tree = tree_sql(table)
    )
}

/// What a refused round and `check` say about one partition gone from `table`.
pub fn gone_message(table: &str, partition: &str) -> String {
    format!(
        "partition {partition} of table {table} was detached or dropped after drover install: its rows \
         are gone from {table} on the source but not on the targets: run drover install (which reloads \
         {table} on the targets)"
    )
}

/// The message when the list cannot be compared: the schema predates `drover.partitions`.
pub fn unrecorded_message(table: &str) -> String {
    format!(
        "table {table} is partitioned but its partitions are not recorded (drover install ran with an \
         older drover): run drover install"
    )
}

/// At install of partitioned `table` (in the install transaction): finds recorded partitions
/// gone from the tree, records a TRUNCATE marker if any, takes drover's triggers off those that
/// still exist, and records the current tree. Returns the gone partitions' names.
pub async fn refresh(
    tx: &Transaction<'_>,
    db: &str,
    table: &TableName,
    objects: &CaptureObjects,
) -> Result<Vec<String>, PgError> {
    let gone = release_gone(tx, db, table, objects).await?;
    if !gone.is_empty() {
        tx.batch_execute(&Pieces::new(&objects.delta_quoted).truncate)
            .await
            .map_err(|e| PgError::query(db, format!("record the reload of {table}"), e))?;
    }
    let name = table.to_string();
    let purpose = format!("record the partitions of {table}");
    tx.execute(
        "DELETE FROM drover.partitions WHERE table_name = $1",
        &[&name],
    )
    .await
    .map_err(|e| PgError::query(db, &purpose, e))?;
    tx.execute(
        &format!(
            "INSERT INTO drover.partitions (table_name, partition, partition_name) \
             SELECT $1::text, c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname) \
             FROM ({}) t JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace",
            tree_sql(table)
        ),
        &[&name],
    )
    .await
    .map_err(|e| PgError::query(db, &purpose, e))?;
    Ok(gone)
}

/// When `table` is no longer captured: takes drover's triggers off its gone partitions (they
/// depend on the functions about to be dropped) and forgets its list.
pub async fn forget(
    tx: &Transaction<'_>,
    db: &str,
    table: &TableName,
    objects: &CaptureObjects,
) -> Result<(), PgError> {
    release_gone(tx, db, table, objects).await?;
    tx.execute(
        "DELETE FROM drover.partitions WHERE table_name = $1",
        &[&table.to_string()],
    )
    .await
    .map_err(|e| PgError::query(db, format!("forget the partitions of {table}"), e))?;
    Ok(())
}

/// The recorded partitions of `table` gone from its tree; drops the triggers that call this
/// table's capture functions from those that still exist (not those another captured table's
/// install gave them since).
async fn release_gone(
    tx: &Transaction<'_>,
    db: &str,
    table: &TableName,
    objects: &CaptureObjects,
) -> Result<Vec<String>, PgError> {
    let purpose = format!("read the recorded partitions of {table}");
    let gone = tx
        .query(
            &format!(
                "SELECT partition, partition_name FROM drover.partitions \
                 WHERE table_name = $1 AND partition NOT IN ({}) ORDER BY 2",
                tree_sql(table)
            ),
            &[&table.to_string()],
        )
        .await
        .map_err(|e| PgError::query(db, &purpose, e))?;
    let oids: Vec<u32> = gone.iter().map(|r| r.get(0)).collect();
    let triggers = tx
        .query(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), g.tgname \
             FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE g.tgrelid = ANY($1) AND g.tgfoid IN (to_regproc($2), to_regproc($3))",
            &[&oids, &objects.function_quoted, &objects.leaf_function_quoted],
        )
        .await
        .map_err(|e| PgError::query(db, &purpose, e))?;
    let ddl: String = triggers
        .iter()
        .map(|r| {
            let (rel, trigger): (String, String) = (r.get(0), r.get(1));
            format!("DROP TRIGGER {} ON {rel};\n", quote_ident(&trigger))
        })
        .collect();
    tx.batch_execute(&ddl).await.map_err(|e| {
        PgError::query(
            db,
            format!("uncapture the detached partitions of {table}"),
            e,
        )
    })?;
    Ok(gone.iter().map(|r| r.get(1)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gone_sql_quotes_the_table_and_compares_oids_with_the_whole_tree() {
        let t = TableName {
            schema: "s".into(),
            name: "it's".into(),
        };
        let sql = gone_sql(&t);
        assert!(sql.contains("WHERE table_name = 's.\"it''s\"'"), "{sql}");
        assert!(
            sql.contains(r#"inhparent = to_regclass('"s"."it''s"')::oid"#),
            "{sql}"
        );
        assert!(
            sql.contains("partition NOT IN (WITH RECURSIVE tree"),
            "{sql}"
        );
    }
}
