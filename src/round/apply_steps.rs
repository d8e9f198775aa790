//! What one target's apply sends: per table, the statements on the source and the target,
//! built before the first query so that they go in one flight. The source's statements depend
//! on the tables' work only, not on the target (`source_reads`), so that a batch read once
//! serves every target of the same start (`batch_copy`).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::round::plan::{TablePlan, Window};
use crate::round::side::TargetSide;
use crate::round::snapshot::Snapshot;

/// What one table needs on one target this round.
#[derive(Clone)]
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

/// One table's reads on the source, in the order the apply runs them: the changed keys (or
/// gone row images), then the current rows (or new images; all rows after a TRUNCATE).
pub(crate) fn source_reads(src: &str, t: &TablePlan, w: &TableWork) -> [Option<String>; 2] {
    if w.truncate {
        [None, Some(t.all_rows_out())]
    } else if w.pending == 0 {
        [None, None]
    } else if t.whole_row {
        let w = &w.window;
        [
            Some(t.images_gone_out(src, w)),
            Some(t.images_new_out(src, w)),
        ]
    } else {
        let w = &w.window;
        [Some(t.keys_out(src, w)), Some(t.rows_out(src, w))]
    }
}

/// Every table's reads on the source, in table order: what `ApplySteps::source_sql` holds for
/// this work on any target.
pub(crate) fn all_source_reads(scope: &Scope<'_>, work: &[TableWork]) -> Vec<String> {
    (scope.tables.iter().zip(work))
        .flat_map(|(t, w)| source_reads(scope.src, t, w))
        .flatten()
        .collect()
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
            let [gone, rows] = source_reads(scope.src, t, w);
            let mut s = TableSteps {
                gone_out: gone.and_then(|q| push(&mut steps.source_sql, q)),
                rows_out: rows.and_then(|q| push(&mut steps.source_sql, q)),
                ..TableSteps::default()
            };
            if w.truncate {
                s.rows_in = push(&mut steps.target_sql, t.rows_in());
            } else if w.pending > 0 && t.whole_row {
                steps.images(target, t, &mut s);
            } else if w.pending > 0 {
                steps.keyed(target, t, &mut s, in_place);
            }
            steps.tables.push(s);
        }
        steps
    }

    /// A key-less table: delete the gone images, insert the new ones.
    fn images(&mut self, target: &TargetSide, t: &TablePlan, s: &mut TableSteps) {
        let dst = target.name.as_str();
        self.temp_tables
            .push_str(&format!("{};\n", t.create_temp_images(dst)));
        s.gone_in = push(&mut self.target_sql, t.images_in(dst));
        s.delete = push(&mut self.target_sql, t.delete_images(dst));
        s.rows_in = push(&mut self.target_sql, t.rows_in());
        s.analyze = format!("ANALYZE {};", t.temp_name("img", dst));
    }

    /// A keyed table: delete every changed key and insert the current rows, or `in_place`
    /// (see `in_place`) delete only the keys gone on the source and update or insert the rest.
    fn keyed(&mut self, target: &TargetSide, t: &TablePlan, s: &mut TableSteps, in_place: bool) {
        let dst = target.name.as_str();
        self.temp_tables
            .push_str(&format!("{};\n", t.create_temp_keys(dst)));
        s.gone_in = push(&mut self.target_sql, t.keys_in(dst));
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
    }
}
