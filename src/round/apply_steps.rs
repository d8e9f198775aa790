//! What one target's apply sends: per table, the statements on the source and the target,
//! built before the first query so that they go in one flight; and the COPY pipes between them.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::pg::copy::{pipe, CopyEnd};
use crate::pg::error::PgError;
use crate::round::in_place;
use crate::round::plan::{TablePlan, Window};
use crate::round::report::TableCounts;
use crate::round::session::empty_table;
use crate::round::side::TargetSide;
use crate::round::snapshot::Snapshot;

/// What one table needs on one target this round.
pub(crate) struct TableWork {
    pub prev: Snapshot,
    /// What this round applies: after `prev`, bounded when the backlog is split.
    pub window: Window,
    pub pending: u64,
    pub oldest: Option<DateTime<Utc>>,
    pub truncate: bool,
    pub retained: i64,
}

/// Where a round reads and what it applies: the source's name and the tables, parents first.
pub(crate) struct Scope<'a> {
    pub src: &'a str,
    pub tables: &'a [Arc<TablePlan>],
}

/// The source and target of a round's COPY pipes.
pub(crate) struct Pipes<'a> {
    pub stx: &'a tokio_postgres::Client,
    pub src: &'a str,
    pub ttx: &'a tokio_postgres::Client,
    pub dst: &'a str,
}

impl Pipes<'_> {
    pub async fn run(
        &self,
        out: &tokio_postgres::Statement,
        into: &tokio_postgres::Statement,
        what: &str,
    ) -> Result<u64, PgError> {
        pipe(
            CopyEnd {
                tx: self.stx,
                database: self.src,
                sql: out,
            },
            CopyEnd {
                tx: self.ttx,
                database: self.dst,
                sql: into,
            },
            what,
        )
        .await
    }
}

/// Indexes into the statements prepared for one table's apply.
#[derive(Default)]
pub(crate) struct TableSteps {
    /// Source: the changed keys (or gone row images); target: where they go; the delete.
    pub gone_out: Option<usize>,
    pub gone_in: Option<usize>,
    pub delete: Option<usize>,
    /// Source: the current rows; target: the COPY that stores them, into the table or (in
    /// place) into the rows temp table.
    pub rows_out: Option<usize>,
    pub rows_in: Option<usize>,
    pub rows_temp: Option<usize>,
    /// In place: the update and insert from the rows temp table.
    pub update: Option<usize>,
    pub insert: Option<usize>,
    /// ANALYZE of the loaded temp tables, before the delete.
    pub analyze: String,
}

/// Everything one target's apply sends, built before the first query so that it can be sent
/// in one flight.
pub(crate) struct ApplySteps {
    /// The temp tables of the round (created before its statements are prepared).
    pub temp_tables: String,
    pub source_sql: Vec<String>,
    pub target_sql: Vec<String>,
    pub tables: Vec<TableSteps>,
}

fn push(v: &mut Vec<String>, q: String) -> Option<usize> {
    v.push(q);
    Some(v.len() - 1)
}

impl ApplySteps {
    pub fn new(scope: &Scope<'_>, target: &TargetSide, work: &[TableWork]) -> ApplySteps {
        let mut steps = ApplySteps {
            temp_tables: String::new(),
            source_sql: Vec::new(),
            target_sql: Vec::new(),
            tables: Vec::with_capacity(work.len()),
        };
        let in_place = !target.replica_role.is_replica();
        for (t, w) in scope.tables.iter().zip(work) {
            let s = if w.truncate {
                TableSteps {
                    rows_out: push(&mut steps.source_sql, t.all_rows_out()),
                    rows_in: push(&mut steps.target_sql, t.rows_in()),
                    ..TableSteps::default()
                }
            } else if w.pending == 0 {
                TableSteps::default()
            } else if t.whole_row {
                steps.images(scope.src, target, t, &w.window)
            } else {
                steps.keyed(scope.src, target, t, &w.window, in_place)
            };
            steps.tables.push(s);
        }
        steps
    }

    /// A key-less table: delete the gone images, insert the new ones.
    fn images(&mut self, src: &str, target: &TargetSide, t: &TablePlan, w: &Window) -> TableSteps {
        let dst = target.name.as_str();
        self.temp_tables
            .push_str(&format!("{};\n", t.create_temp_images(dst)));
        TableSteps {
            gone_out: push(&mut self.source_sql, t.images_gone_out(src, w)),
            gone_in: push(&mut self.target_sql, t.images_in(dst)),
            delete: push(&mut self.target_sql, t.delete_images(dst)),
            rows_out: push(&mut self.source_sql, t.images_new_out(src, w)),
            rows_in: push(&mut self.target_sql, t.rows_in()),
            analyze: format!("ANALYZE {};", t.temp_name("img", dst)),
            ..TableSteps::default()
        }
    }

    /// A keyed table: delete every changed key and insert the current rows, or `in_place`
    /// (see `in_place`) delete only the keys gone on the source and update or insert the rest.
    fn keyed(
        &mut self,
        src: &str,
        target: &TargetSide,
        t: &TablePlan,
        w: &Window,
        in_place: bool,
    ) -> TableSteps {
        let dst = target.name.as_str();
        self.temp_tables
            .push_str(&format!("{};\n", t.create_temp_keys(dst)));
        let mut s = TableSteps {
            gone_out: push(&mut self.source_sql, t.keys_out(src, w)),
            gone_in: push(&mut self.target_sql, t.keys_in(dst)),
            rows_out: push(&mut self.source_sql, t.rows_out(src, w)),
            ..TableSteps::default()
        };
        if in_place {
            self.temp_tables
                .push_str(&format!("{};\n", t.create_temp_rows(dst)));
            let from = t.temp_rows_from(dst);
            s.delete = push(&mut self.target_sql, t.delete_gone(dst));
            s.rows_temp = push(&mut self.target_sql, t.rows_in_temp(dst));
            s.update = t
                .update_from(&from)
                .and_then(|u| push(&mut self.target_sql, u));
            s.insert = push(&mut self.target_sql, t.insert_new(&from));
            s.analyze = t.analyze_temp(dst);
        } else {
            s.delete = push(&mut self.target_sql, t.delete_keys(dst));
            s.rows_in = push(&mut self.target_sql, t.rows_in());
            s.analyze = format!("ANALYZE {};", t.temp_name("keys", dst));
        }
        s
    }
}

/// The statements of a COPY apply, prepared on each side.
pub(crate) struct Prepared {
    pub target: Vec<tokio_postgres::Statement>,
    pub source: Vec<tokio_postgres::Statement>,
}

/// A COPY apply under way on one target.
pub(crate) struct CopyApply<'a> {
    pub ttx: &'a tokio_postgres::Transaction<'a>,
    pub pipes: &'a Pipes<'a>,
    pub plan: &'a ApplySteps,
    pub stmts: &'a Prepared,
}

impl CopyApply<'_> {
    /// TRUNCATE, changed keys (and rows, in place) into temp tables, deletes: children first.
    pub async fn deletes(
        &self,
        tables: &[Arc<TablePlan>],
        work: &[TableWork],
        counts: &mut HashMap<String, TableCounts>,
    ) -> Result<(), PgError> {
        let (ttx, dst) = (self.ttx, self.pipes.dst);
        let (src_st, dst_st) = (&self.stmts.source, &self.stmts.target);
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
            let gone = self.pipes.run(&src_st[out], &dst_st[into], &what).await?;
            if let (Some(out), Some(into)) = (s.rows_out, s.rows_temp) {
                let what = format!("copy changed rows of {}", t.display);
                self.pipes.run(&src_st[out], &dst_st[into], &what).await?;
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
    pub async fn rows(
        &self,
        tables: &[Arc<TablePlan>],
        counts: &mut HashMap<String, TableCounts>,
    ) -> Result<(), PgError> {
        let (ttx, dst) = (self.ttx, self.pipes.dst);
        let (src_st, dst_st) = (&self.stmts.source, &self.stmts.target);
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
            c.inserted += self.pipes.run(&src_st[out], &dst_st[into], &what).await?;
        }
        Ok(())
    }
}
