//! A round's COPY apply on one target, in one transaction: the flight that opens it
//! (`opening`), TRUNCATE, changed keys into temp tables and deletes (children first), the
//! current rows (parents first), commit. The rows come either from the round's own source
//! transaction, piped as they are read, or from a batch read once for every target of the
//! same start (`batch_copy`), fed from memory.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio_postgres::{Client, Statement, Transaction};

use crate::pg::copy::{pipe, write_all, CopyEnd};
use crate::pg::error::PgError;
use crate::round::apply_steps::{ApplySteps, Scope, TableWork};
use crate::round::in_place;
use crate::round::input::RoundInput;
use crate::round::opening::{open_apply, progress_for, Opening};
use crate::round::plan::TablePlan;
use crate::round::report::TableCounts;
use crate::round::session::{commit_apply, empty_table};
use crate::round::side::TargetSide;
use crate::round::snapshot::Snapshot;
use crate::round::timing::Phases;

/// Where a COPY apply's rows come from.
#[derive(Clone, Copy)]
pub(crate) enum RowsFrom<'a> {
    /// The round's source transaction: each read is prepared on it and piped to the target.
    Source(&'a Client),
    /// A shared batch's reads (`batch_copy`), in `ApplySteps::source_sql` order.
    Copied(&'a [Vec<Bytes>]),
}

/// The two ends of a COPY apply's pipes.
struct Pipes<'a> {
    from: RowsFrom<'a>,
    /// The read statements prepared on the source (`RowsFrom::Source` only).
    source: Vec<Statement>,
    src: &'a str,
    ttx: &'a Client,
    dst: &'a str,
}

impl Pipes<'_> {
    /// Runs read `out` into the target's `into`; returns the rows the target stored.
    async fn run(&self, out: usize, into: &Statement, what: &str) -> Result<u64, PgError> {
        let to = CopyEnd {
            tx: self.ttx,
            database: self.dst,
            sql: into,
        };
        match self.from {
            RowsFrom::Source(stx) => {
                let from = CopyEnd {
                    tx: stx,
                    database: self.src,
                    sql: &self.source[out],
                };
                pipe(from, to, what).await
            }
            RowsFrom::Copied(reads) => write_all(to, &reads[out], &format!("{what} (write)")).await,
        }
    }
}

/// One target's COPY apply: what it applies, up to which snapshot.
pub(crate) struct CopyRound<'a> {
    pub target: &'a TargetSide,
    pub cur: &'a Snapshot,
    pub work: &'a [TableWork],
}

/// Applies `side` in `ttx` with rows `from` the source or a shared batch; commits.
pub(crate) async fn apply_copy(
    ttx: Transaction<'_>,
    input: &RoundInput<'_>,
    side: CopyRound<'_>,
    from: RowsFrom<'_>,
    counts: &mut HashMap<String, TableCounts>,
    steps: &mut Phases,
) -> Result<bool, PgError> {
    let (target, work) = (side.target, side.work);
    let dst = target.name.as_str();
    let scope = Scope {
        src: input.source.name.as_str(),
        tables: input.tables,
    };
    let plan = ApplySteps::new(&scope, target, work);
    if let RowsFrom::Copied(reads) = from {
        if reads.len() != plan.source_sql.len() {
            let msg = format!(
                "a shared batch has {} reads for {}",
                reads.len(),
                plan.source_sql.len()
            );
            return Err(PgError::internal(dst, msg));
        }
    }
    // One flight: the session setup, the progress lock, check and update (a failed check
    // rolls the update back), and every statement the round runs, prepared on both sides.
    let progress = progress_for(input, target, side.cur);
    let opening = Opening {
        sql: &progress,
        extra: &plan.temp_tables,
        batch: None,
    };
    let (opened, tstmts, sstmts) = tokio::join!(
        open_apply(&ttx, input, target, work, opening),
        futures::future::try_join_all(plan.target_sql.iter().map(|q| ttx.prepare(q))),
        prepare_reads(from, &plan),
    );
    opened?;
    let tstmts = tstmts.map_err(|e| PgError::query(dst, "prepare the apply statements", e))?;
    let pipes = Pipes {
        from,
        source: sstmts.map_err(|e| PgError::query(scope.src, "prepare the read statements", e))?,
        src: scope.src,
        ttx: ttx.client(),
        dst,
    };
    steps.mark("target_setup");
    let copy = CopyApply {
        ttx: &ttx,
        pipes: &pipes,
        plan: &plan,
        stmts: &tstmts,
    };
    copy.deletes(input.tables, work, counts).await?;
    steps.mark("target_deletes");
    copy.rows(input.tables, counts).await?;
    steps.mark("target_rows");
    commit_apply(ttx, &target.replica_role, dst).await?;
    steps.mark("target_commit");
    Ok(true)
}

/// The read statements prepared on the source; none for a shared batch's data.
async fn prepare_reads(
    from: RowsFrom<'_>,
    plan: &ApplySteps,
) -> Result<Vec<Statement>, tokio_postgres::Error> {
    match from {
        RowsFrom::Source(stx) => {
            futures::future::try_join_all(plan.source_sql.iter().map(|q| stx.prepare(q))).await
        }
        RowsFrom::Copied(_) => Ok(Vec::new()),
    }
}

/// A COPY apply under way on one target.
struct CopyApply<'a> {
    ttx: &'a tokio_postgres::Transaction<'a>,
    pipes: &'a Pipes<'a>,
    plan: &'a ApplySteps,
    /// The target's statements, in `plan.target_sql` order.
    stmts: &'a [Statement],
}

impl CopyApply<'_> {
    /// TRUNCATE, changed keys (and rows, in place) into temp tables, deletes: children first.
    async fn deletes(
        &self,
        tables: &[Arc<TablePlan>],
        work: &[TableWork],
        counts: &mut HashMap<String, TableCounts>,
    ) -> Result<(), PgError> {
        let (ttx, dst) = (self.ttx, self.pipes.dst);
        let dst_st = self.stmts;
        for ((t, w), s) in tables.iter().zip(work).zip(&self.plan.tables).rev() {
            let c = counts.entry(t.display.clone()).or_default();
            c.pending = w.pending;
            if w.truncate {
                empty_table(ttx, dst, t).await?;
                c.truncated = true;
                continue;
            }
            let (Some(out), Some(into), Some(delete)) = (s.gone_out, s.gone_in, s.delete) else {
                continue;
            };
            let what = if t.whole_row {
                "gone rows"
            } else {
                "changed keys"
            };
            let what = format!("copy {what} of {}", t.display);
            let gone = self.pipes.run(out, &dst_st[into], &what).await?;
            if let (Some(out), Some(into)) = (s.rows_out, s.rows_temp) {
                let what = format!("copy changed rows of {}", t.display);
                self.pipes.run(out, &dst_st[into], &what).await?;
            }
            if gone > 0 {
                // Real row counts for the planner (see `session_settings`).
                ttx.batch_execute(&s.analyze).await.map_err(|e| {
                    PgError::query(dst, format!("analyze the changes of {}", t.display), e)
                })?;
                c.deleted = ttx.execute(&dst_st[delete], &[]).await.map_err(|e| {
                    PgError::query(dst, format!("delete changed rows of {}", t.display), e)
                })?;
            }
        }
        Ok(())
    }

    /// Rows: parents first. Updated rows count as inserted (no updated counter).
    async fn rows(
        &self,
        tables: &[Arc<TablePlan>],
        counts: &mut HashMap<String, TableCounts>,
    ) -> Result<(), PgError> {
        let (ttx, dst) = (self.ttx, self.pipes.dst);
        let dst_st = self.stmts;
        for (t, s) in tables.iter().zip(&self.plan.tables) {
            let c = counts.entry(t.display.clone()).or_default();
            if let Some(u) = s.update {
                c.inserted += in_place::update_rows(ttx, dst, t, &dst_st[u]).await?;
            }
            if let Some(i) = s.insert {
                c.inserted += ttx.execute(&dst_st[i], &[]).await.map_err(|e| {
                    PgError::query(dst, format!("insert changed rows of {}", t.display), e)
                })?;
            }
            let (Some(out), Some(into)) = (s.rows_out, s.rows_in) else {
                continue;
            };
            let what = format!("copy changed rows of {}", t.display);
            c.inserted += self.pipes.run(out, &dst_st[into], &what).await?;
        }
        Ok(())
    }
}
