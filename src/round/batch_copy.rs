//! A shared batch too large to travel as text (`small`) but within one round's budget: its
//! COPY reads, the same statements a target's own round would pipe (`apply_steps`), are read
//! once under the batch's snapshot into memory, so that every target at the batch's start
//! applies it through COPY fed from memory (`copy_apply`) instead of reading the source again.
//! The source then does a backlog's key and row reads once whatever the number of targets, and
//! its transaction ends before any target applies (no snapshot held while targets write).
//!
//! Memory is bounded: a batch whose reads pass `COPIED_BYTES` is dropped, as is one that needs
//! a cut (`backlog::within_budget`) or carries a TRUNCATE (all of a table's rows); each target
//! then runs its own rounds, piped from the source as they are read.

use bytes::Bytes;

use crate::pg::copy::{read_all, CopyEnd};
use crate::pg::error::PgError;
use crate::round::apply_steps::{all_source_reads, Scope, TableWork};
use crate::round::backlog;

/// Most bytes of COPY text one shared batch holds. At pgbench's row widths that is about
/// 300,000 changed rows, three times a round's budget of one table; a batch is kept only while
/// targets apply it and for its keep time (`batch_share`).
pub const COPIED_BYTES: usize = 32 << 20;

/// A batch's COPY reads, in `ApplySteps::source_sql` order, each in chunks.
pub struct Copied {
    pub reads: Vec<Vec<Bytes>>,
}

/// Reads the batch's rows inside the source transaction `stx`, or None when the batch is not
/// one to hold in memory.
pub(crate) async fn read(
    stx: &tokio_postgres::Client,
    scope: &Scope<'_>,
    work: &[TableWork],
) -> Result<Option<Copied>, PgError> {
    if work.iter().any(|w| w.truncate) || !backlog::within_budget(work) {
        return Ok(None);
    }
    let src = scope.src;
    let sql = all_source_reads(scope, work);
    let stmts = futures::future::try_join_all(sql.iter().map(|q| stx.prepare(q)))
        .await
        .map_err(|e| PgError::query(src, "prepare the shared batch's reads", e))?;
    let mut reads = Vec::with_capacity(stmts.len());
    let mut bytes = 0;
    for st in &stmts {
        let from = CopyEnd {
            tx: stx,
            database: src,
            sql: st,
        };
        let Some(chunks) = read_all(from, COPIED_BYTES - bytes, "read a shared batch").await?
        else {
            tracing::debug!(
                source = src,
                "shared batch over {COPIED_BYTES} bytes: each target reads its own"
            );
            return Ok(None);
        };
        bytes += chunks.iter().map(Bytes::len).sum::<usize>();
        reads.push(chunks);
    }
    Ok(Some(Copied { reads }))
}
