//! What one database of a multi-master round receives: the rows of the keys each winner won
//! (`winner_rows`), read in the winners' round transactions (`SourceTxs`). Split from `multi`,
//! which decides the winners.

use tokio_postgres::Transaction;

use crate::pg::copy::{copy_in_bytes, pipe, CopyEnd};
use crate::pg::error::PgError;
use crate::round::keys::{copy_text, Key};
use crate::round::plan::TablePlan;

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

/// The round's source transactions, by source name.
pub(super) struct SourceTxs<'c> {
    pub names: Vec<String>,
    pub txs: Vec<Transaction<'c>>,
}

impl<'c> SourceTxs<'c> {
    pub fn get(&self, name: &str) -> &Transaction<'c> {
        let i = self
            .names
            .iter()
            .position(|n| n == name)
            .expect("a source of the round");
        &self.txs[i]
    }
}
