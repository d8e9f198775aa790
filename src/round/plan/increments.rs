//! The delta columns a source recorded for a table at `drover install` (`drover.tables`),
//! read with the table's plan (see `round::increments` for how rounds use them).

use crate::pg::error::PgError;
use crate::pg::ident::quote_ident;
use crate::pg::schema::TableMeta;

/// A table's delta columns as a source recorded them at install (quoted name, type).
pub async fn recorded(
    client: &tokio_postgres::Client,
    db: &str,
    meta: &TableMeta,
) -> Result<Vec<(String, String)>, PgError> {
    // Read through jsonb: a catalog from an install before delta columns has no column.
    let row = client
        .query_opt(
            "SELECT coalesce(to_jsonb(t) -> 'delta_columns', '[]')::text FROM drover.tables AS t WHERE table_name = $1",
            &[&meta.name.to_string()],
        )
        .await
        .map_err(|e| PgError::query(db, "read drover.tables (has drover install run?)", e))?;
    let text: String = row.map(|r| r.get(0)).unwrap_or_default();
    let names: Vec<String> = serde_json::from_str(&text).unwrap_or_default();
    names
        .iter()
        .map(|n| match meta.columns.iter().find(|c| &c.name == n) {
            Some(c) => Ok((quote_ident(n), c.type_name.clone())),
            None => Err(PgError::install(
                db,
                format!(
                    "table {}: delta column {} was dropped since install: run drover install",
                    meta.name,
                    quote_ident(n)
                ),
            )),
        })
        .collect()
}

/// The error when two sources recorded different delta columns for a table.
pub fn differ(db: &str, display: &str) -> PgError {
    PgError::install(
        db,
        format!("table {display} has other delta columns here than on the first source: run drover install on every source"),
    )
}
