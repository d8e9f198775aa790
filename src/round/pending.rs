//! What each table has pending for one target, counted on the source in a round's first
//! flight: the statements and the parsing of their answers into each table's work.

use std::sync::Arc;

use chrono::DateTime;
use tokio_postgres::SimpleQueryMessage;

use crate::pg::error::PgError;
use crate::pg::simple;
use crate::round::apply_steps::TableWork;
use crate::round::plan::{TablePlan, Window};
use crate::round::snapshot::Snapshot;

/// Counts what each table has pending after `prevs` (one per table): one statement per table
/// in one text batch, each row numbered. (One UNION ALL query costs more to plan, and under a
/// Parallel Append returns its rows in any order.)
pub(crate) fn stats_sql(src: &str, tables: &[Arc<TablePlan>], prevs: &[Snapshot]) -> String {
    (tables.iter().zip(prevs).enumerate())
        .map(|(i, (t, p))| {
            format!(
                "SELECT {i} AS i, s.* FROM ({}) AS s;\n",
                t.stats_sql(src, p)
            )
        })
        .collect()
}

/// One table's work, named.
pub(crate) struct Counted {
    pub table: String,
    pub pending: u64,
    pub oldest: Option<chrono::DateTime<chrono::Utc>>,
    pub work: TableWork,
}

/// Parses the answers of `stats_sql` into each table's work after `prevs`.
pub(crate) fn parse(
    src: &str,
    tables: &[Arc<TablePlan>],
    prevs: Vec<Snapshot>,
    msgs: Vec<SimpleQueryMessage>,
) -> Result<Vec<Counted>, PgError> {
    let rows = simple::rows(msgs);
    if rows.len() != tables.len() {
        let msg = format!(
            "pending counts: {} rows for {} tables",
            rows.len(),
            tables.len()
        );
        return Err(PgError::protocol(src, msg));
    }
    let mut out = Vec::with_capacity(rows.len());
    for (i, ((row, prev), t)) in rows.iter().zip(prevs).zip(tables.iter()).enumerate() {
        if simple::get::<usize>(row, 0) != Some(i) {
            return Err(PgError::protocol(
                src,
                "pending counts arrived out of order",
            ));
        }
        let w = TableWork {
            window: Window {
                prev: prev.clone(),
                below: None,
            },
            prev,
            pending: simple::get(row, 1).unwrap_or(0),
            oldest: simple::get::<f64>(row, 2)
                .and_then(|e| DateTime::from_timestamp_micros((e * 1e6) as i64)),
            truncate: simple::get_bool(row, 3),
            retained: simple::get(row, 4).unwrap_or(0),
        };
        out.push(Counted {
            table: t.display.clone(),
            pending: w.pending,
            oldest: w.oldest,
            work: w,
        });
    }
    Ok(out)
}
