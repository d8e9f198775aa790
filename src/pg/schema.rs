//! Table metadata read from the catalogs: replicated columns with their types, the key, and the
//! foreign-key parents (to order deletes and inserts on a target).

use tokio_postgres::Client;

use crate::pg::error::PgError;
use crate::pg::ident::TableName;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `format_type()` output, compared across databases.
    pub type_name: String,
}

#[derive(Debug, Clone)]
pub struct TableMeta {
    pub oid: u32,
    pub name: TableName,
    /// Columns that replicate, in attnum order: not dropped, not generated.
    pub columns: Vec<Column>,
    /// Primary key columns in key order; empty when the table has none.
    pub key: Vec<String>,
    /// Tables this one references with foreign keys.
    pub fk_parents: Vec<TableName>,
}

impl TableMeta {
    pub fn key_columns(&self) -> Vec<&Column> {
        self.key
            .iter()
            .filter_map(|k| self.columns.iter().find(|c| &c.name == k))
            .collect()
    }
}

/// Reads a table's metadata; `Ok(None)` when it does not exist (or is not a plain or
/// partitioned table).
pub async fn describe(
    client: &Client,
    database: &str,
    table: &TableName,
    version_num: i32,
) -> Result<Option<TableMeta>, PgError> {
    let purpose = format!("read the definition of table {table}");
    let Some(row) = client
        .query_opt(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(|e| PgError::query(database, &purpose, e))?
    else {
        return Ok(None);
    };
    let oid: u32 = row.get(0);
    let generated = if version_num >= 120_000 {
        "a.attgenerated = ''"
    } else {
        "true"
    };
    let columns = client
        .query(
            &format!(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
                 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND {generated} \
                 ORDER BY a.attnum"
            ),
            &[&oid],
        )
        .await
        .map_err(|e| PgError::query(database, &purpose, e))?
        .into_iter()
        .map(|r| Column {
            name: r.get(0),
            type_name: r.get(1),
        })
        .collect();
    let key = client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord",
            &[&oid],
        )
        .await
        .map_err(|e| PgError::query(database, &purpose, e))?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    let fk_parents = client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_constraint k \
             JOIN pg_class c ON c.oid = k.confrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE k.conrelid = $1 AND k.contype = 'f' AND k.confrelid <> k.conrelid",
            &[&oid],
        )
        .await
        .map_err(|e| PgError::query(database, &purpose, e))?
        .into_iter()
        .map(|r| TableName {
            schema: r.get(0),
            name: r.get(1),
        })
        .collect();
    Ok(Some(TableMeta {
        oid,
        name: table.clone(),
        columns,
        key,
        fk_parents,
    }))
}

/// Compares a target's definition with the source's; returns each difference as a sentence.
pub fn differences(source: &TableMeta, target: &TableMeta) -> Vec<String> {
    let mut out = Vec::new();
    for c in &source.columns {
        match target.columns.iter().find(|t| t.name == c.name) {
            None => out.push(format!("column \"{}\" is missing", c.name)),
            Some(t) if t.type_name != c.type_name => out.push(format!(
                "column \"{}\" has type {} (source: {})",
                c.name, t.type_name, c.type_name
            )),
            Some(_) => {}
        }
    }
    for t in &target.columns {
        if !source.columns.iter().any(|c| c.name == t.name) {
            out.push(format!(
                "column \"{}\" does not exist on the source",
                t.name
            ));
        }
    }
    if target.key != source.key {
        out.push(format!(
            "primary key ({}) differs from the source's ({})",
            target.key.join(", "),
            source.key.join(", ")
        ));
    }
    out
}
