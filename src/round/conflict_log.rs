//! `drover.conflicts` on a database of a multi-master sync: each conflict it took part in,
//! with the winner and every version, written in its apply transaction.

use tokio_postgres::Transaction;

use crate::pg::error::PgError;
use crate::round::report::ConflictRecord;
use crate::round::resolve::Strategies;

/// Logs the conflicts `dst` took part in, each with the strategy of its table; `sync` is
/// (name, strategies).
pub async fn record(
    ttx: &Transaction<'_>,
    dst: &str,
    sync: (&str, &Strategies),
    conflicts: &[ConflictRecord],
) -> Result<(), PgError> {
    let mine: Vec<serde_json::Value> = conflicts
        .iter()
        .filter(|c| c.involved.iter().any(|i| i == dst))
                .map(|c| {
            let strategy = sync.1.for_table(&c.table).as_str();
            serde_json::json!({"table_name": c.table, "key": c.key, "winner": c.winner, "versions": c.versions, "strategy": strategy})
        })
        .collect();
    if mine.is_empty() {
        return Ok(());
    }
    ttx.execute(
        "INSERT INTO drover.conflicts (sync, table_name, key, winner, strategy, versions) \
         SELECT $1, x.table_name, x.key, x.winner, x.strategy, x.versions \
         FROM jsonb_to_recordset($2::text::jsonb) \
              AS x(table_name text, key jsonb, winner text, versions jsonb, strategy text)",
        &[&sync.0, &serde_json::Value::Array(mine).to_string()],
    )
    .await
    .map_err(|e| PgError::query(dst, "log conflicts", e))?;
    Ok(())
}
