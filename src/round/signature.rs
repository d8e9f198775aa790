//! Column signatures: the md5 of a table's columns (name, type oid, typmod, in column order)
//! on a source. Plans are prepared once; each round reads the signature of every table in its
//! source snapshot, in the statement batch that opens the snapshot (no extra round trip), and
//! a table whose signature differs from its plan's fails the round with a schema error, so the
//! sync prepares its plans again before the next round.
//!
//! Read in the round's snapshot, an unchanged signature means every row that snapshot shows
//! was written under the plan's columns (ALTER TABLE takes an exclusive lock, so no write
//! visible to the snapshot follows a change the snapshot does not show): the round may apply
//! them with the plan's column list. A plan reads the signature (and the table's oid) before
//! the columns, so a change between the two reads is caught by the next round, never missed.
//! Rounds name tables by oid: a table dropped (or dropped and created again) has no
//! signature under its old oid, which is a difference too.
//!
//! Cost, measured with psql on PostgreSQL 15 for four tables (best of 300 runs, on a busy
//! two-core machine): 0.1 ms per round, against 0.01 ms for `SELECT 1` (EXPLAIN: 0.04 ms to
//! plan, 0.03 ms to run). Returning the columns as rows instead costs 0.05 ms less but sends
//! every column name each round.
//!
//! `source_snapshot` builds and checks the round's batch.

use tokio_postgres::Client;

use crate::pg::error::PgError;
use crate::pg::ident::quote_literal;
use crate::pg::simple;

/// A table's identity and columns on one source, as its plan saw them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub oid: u32,
    pub md5: String,
}

/// One row per relation of `rels` (an array expression), in order: number from 1, oid,
/// signature (NULL when no such relation).
pub(crate) fn sql(rels: &str) -> String {
    format!(
        "SELECT u.i, u.rel::oid, (SELECT md5(string_agg(a.attname || ' ' || a.atttypid || ' ' || a.atttypmod, ',' \
         ORDER BY a.attnum)) FROM pg_catalog.pg_attribute a \
         WHERE a.attrelid = u.rel AND a.attnum > 0 AND NOT a.attisdropped) \
         FROM unnest({rels}) WITH ORDINALITY AS u(rel, i) ORDER BY u.i"
    )
}

/// Reads one table's signature on `database` by name (when a plan is prepared).
pub async fn read(client: &Client, database: &str, quoted: &str) -> Result<Signature, PgError> {
    let rels = format!("ARRAY[{}]::pg_catalog.regclass[]", quote_literal(quoted));
    let msgs = client
        .simple_query(&sql(&rels))
        .await
        .map_err(|e| PgError::query(database, format!("read the columns of {quoted}"), e))?;
    let rows = simple::rows(msgs);
    let row = rows.first();
    Ok(Signature {
        oid: row.and_then(|r| simple::get(r, 1)).unwrap_or(0),
        md5: row.and_then(|r| r.get(2)).unwrap_or_default().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_name_tables_by_oid() {
        let s = sql("'{1,2}'::pg_catalog.oid[]");
        assert!(s.contains("unnest('{1,2}'::pg_catalog.oid[])"), "{s}");
    }
}
