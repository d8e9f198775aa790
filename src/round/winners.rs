//! What one database of a multi-master round receives: the rows of the keys each winner won
//! (`winner_rows`), after dropping keys this database changed after its own snapshot
//! (`drop_newer_local`). Split from `multi`, which decides the winners.

use std::collections::BTreeSet;

use tokio_postgres::Transaction;

use crate::pg::copy::{copy_in_bytes, pipe, CopyEnd};
use crate::pg::error::PgError;
use crate::round::keys::{copy_text, Key};
use crate::round::plan::TablePlan;
use crate::round::snapshot::Snapshot;

/// A winner of some keys of one table, as one applying database reads from it.
pub(super) struct Winner<'a, 'c> {
    pub name: &'a str,
    /// The winner's round transaction.
    pub tx: &'a Transaction<'c>,
    pub keys: &'a [Key],
    /// This round reloads the whole table from the winner (it truncated).
    pub reload: bool,
}

/// Pipes a winner's current rows of its keys (all rows when this round reloads the table from
/// it) into `into` on the applying database `dst`; returns how many.
pub(super) async fn winner_rows(
    from: Winner<'_, '_>,
    ttx: &Transaction<'_>,
    dst: &str,
    t: &TablePlan,
    into: &str,
) -> Result<u64, PgError> {
    let Winner {
        name: w,
        tx: wtx,
        keys,
        reload,
    } = from;
    let rows_out = if reload {
        t.all_rows_out()
    } else {
        if keys.is_empty() {
            return Ok(0);
        }
        let win = t.temp_name("win", w);
        wtx.batch_execute(&format!("DELETE FROM {win}"))
            .await
            .map_err(|e| PgError::query(w, "reset the winner key table", e))?;
        let refs: Vec<&Key> = keys.iter().collect();
        copy_in_bytes(
            wtx.client(),
            w,
            &format!("COPY {win} ({}) FROM STDIN", t.key_list()),
            copy_text(&refs),
            "load winning keys",
        )
        .await?;
        format!(
            "COPY (SELECT {c} FROM {tb} WHERE ({k}) IN (SELECT {k} FROM {win})) TO STDOUT",
            c = t.columns,
            tb = t.quoted,
            k = t.key_list()
        )
    };
    pipe(
        CopyEnd {
            tx: wtx.client(),
            database: w,
            sql: &rows_out,
        },
        CopyEnd {
            tx: ttx.client(),
            database: dst,
            sql: into,
        },
        &format!("copy rows of {} from {w}", t.display),
    )
    .await
}

/// Locks the rows of the batch's keys, then removes from the batch (and returns) keys that this
/// database changed after its round snapshot `cur`: those local changes are newer and win later.
pub(super) async fn drop_newer_local(
    ttx: &Transaction<'_>,
    dst: &str,
    t: &TablePlan,
    cur: &Snapshot,
) -> Result<BTreeSet<Key>, PgError> {
    let tmp = t.temp_name("keys", dst);
    let on = |a: &str, b: &str| {
        t.key
            .iter()
            .map(|k| format!("{a}.{k} = {b}.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    ttx.execute(
        &format!(
            "WITH l AS (SELECT 1 FROM {tb} AS r JOIN {tmp} AS k ON {on} FOR UPDATE OF r) SELECT count(*) FROM l",
            tb = t.quoted,
            on = on("r", "k")
        ),
        &[],
    )
    .await
    .map_err(|e| PgError::query(dst, format!("lock rows of {}", t.display), e))?;
    let texts: Vec<String> = t.key.iter().map(|k| format!("k.{k}::text")).collect();
    let s = cur.sql();
    let rows = ttx
        .query(
            &format!(
                "DELETE FROM {tmp} AS k USING {d} AS d WHERE {on} AND d.drover_xid >= txid_snapshot_xmin({s}) \
                 AND NOT txid_visible_in_snapshot(d.drover_xid, {s}) RETURNING {texts}",
                d = t.deltas[dst],
                on = on("k", "d"),
                texts = texts.join(", ")
            ),
            &[],
        )
        .await
        .map_err(|e| PgError::query(dst, format!("skip keys changed here since the snapshot ({})", t.display), e))?;
    Ok(rows
        .iter()
        .map(|r| (0..t.key.len()).map(|i| r.get::<_, String>(i)).collect())
        .collect())
}
