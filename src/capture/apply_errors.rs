//! `drover.apply_errors` on a receiving database: one row per (sync, table, target) that a
//! data error held back (`round::hold`). The round's own transaction has failed when a row is
//! written, so each write is a short transaction of its own. A cleared hold keeps its row
//! with `held = false` (the last error and how often it happened stay readable).
//!
//! `error` is the redacted text (no row data); `keys` holds the refused key as the server's
//! DETAIL names it (`(id)=(42)`), when it does: both live on the database that holds the rows.

use tokio_postgres::types::ToSql;

use crate::pg::connect::checkout;
use crate::pg::error::PgError;
use crate::pg::Pool;

/// Created with the catalog on every database drover touches.
pub const CATALOG: &str = "CREATE TABLE IF NOT EXISTS drover.apply_errors (
    sync text NOT NULL,
    table_name text NOT NULL,
    target text NOT NULL,
    sqlstate text NOT NULL,
    error text NOT NULL,
    keys text,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now(),
    count bigint NOT NULL DEFAULT 1,
    held boolean NOT NULL DEFAULT true,
    PRIMARY KEY (sync, table_name, target));
";

/// A held table's row.
#[derive(Debug, Clone)]
pub struct ErrorRow<'a> {
    pub sync: &'a str,
    pub table: &'a str,
    pub target: &'a str,
    pub sqlstate: &'a str,
    pub error: &'a str,
    pub keys: Option<&'a str>,
}

/// A hold that was cleared starts a new episode: `first_seen` and `count` start again.
const UPSERT: &str = "INSERT INTO drover.apply_errors AS e \
    (sync, table_name, target, sqlstate, error, keys) VALUES ($1, $2, $3, $4, $5, $6) \
    ON CONFLICT (sync, table_name, target) DO UPDATE SET sqlstate = EXCLUDED.sqlstate, \
    error = EXCLUDED.error, keys = EXCLUDED.keys, last_seen = now(), held = true, \
    first_seen = CASE WHEN e.held THEN e.first_seen ELSE now() END, \
    count = CASE WHEN e.held THEN e.count + 1 ELSE 1 END";

/// Records (or counts again) the rows of one hold, in one transaction.
pub async fn record(pool: &Pool, database: &str, rows: &[ErrorRow<'_>]) -> Result<(), PgError> {
    let mut client = checkout(pool, database).await?;
    let what = |e| PgError::query(database, "record a held table in drover.apply_errors", e);
    let tx = client.transaction().await.map_err(what)?;
    for r in rows {
        let params: [&(dyn ToSql + Sync); 6] =
            [&r.sync, &r.table, &r.target, &r.sqlstate, &r.error, &r.keys];
        tx.execute(UPSERT, &params).await.map_err(what)?;
    }
    tx.commit().await.map_err(what)
}

/// Marks every row of (sync, target) whose table is not in `still_held` as no longer held.
pub async fn clear(
    pool: &Pool,
    database: &str,
    sync: &str,
    still_held: &[String],
) -> Result<(), PgError> {
    let client = checkout(pool, database).await?;
    client
        .execute(
            "UPDATE drover.apply_errors SET held = false \
             WHERE sync = $1 AND target = $2 AND held AND NOT (table_name = ANY($3))",
            &[&sync, &database, &still_held],
        )
        .await
        .map_err(|e| PgError::query(database, "clear held tables in drover.apply_errors", e))?;
    Ok(())
}
