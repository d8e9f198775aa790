//! Configured keys (`[relgroups.NAME.keys]`) must not be NULL: a NULL key value never equals
//! another, so its row's changes would never find the row on a target (deletes lost, updates
//! doubled). `check` and the daemon's table prepare refuse such a key with the same text.

use tokio_postgres::Client;

use crate::pg::error::PgError;
use crate::pg::schema::{KeyMethod, TableMeta};

/// Refuses `meta`'s configured key when any of its columns may be NULL on `database`.
pub async fn refuse_nullable(
    client: &Client,
    database: &str,
    meta: &TableMeta,
) -> Result<(), PgError> {
    if meta.method != KeyMethod::Configured {
        return Ok(());
    }
    let nullable: Vec<String> = client
        .query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 \
             AND NOT attisdropped AND NOT attnotnull AND attname = ANY($2) ORDER BY attnum",
            &[&meta.oid, &meta.key],
        )
        .await
        .map_err(|e| {
            PgError::query(
                database,
                format!("read the key columns of table {}", meta.name),
                e,
            )
        })?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    match problem(&meta.name.to_string(), &nullable) {
        None => Ok(()),
        Some(message) => Err(PgError::schema(database, message)),
    }
}

/// The problem text for configured key columns that may be NULL, None when there are none.
fn problem(table: &str, nullable: &[String]) -> Option<String> {
    let quoted: Vec<String> = nullable.iter().map(|c| format!("\"{c}\"")).collect();
    let (noun, pronoun) = if nullable.len() == 1 {
        ("column", "it")
    } else {
        ("columns", "them")
    };
    (!nullable.is_empty()).then(|| {
        format!(
            "table {table}: configured key {noun} {} may be NULL: make {pronoun} NOT NULL, \
             or choose other key columns under [relgroups.*.keys]",
            quoted.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_table_and_columns() {
        assert_eq!(problem("public.t", &[]), None);
        assert_eq!(
            problem("public.t", &["x".into()]).as_deref(),
            Some(
                "table public.t: configured key column \"x\" may be NULL: make it NOT NULL, \
                 or choose other key columns under [relgroups.*.keys]"
            )
        );
    }
}
