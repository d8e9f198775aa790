//! Small rounds without COPY. Under steady load a round carries a handful of rows per table,
//! and its cost is round trips, not bytes: a COPY pipe costs three (start both ends, finish)
//! plus one to prepare each end. Here the changed keys and current rows of every table are read
//! as text in the round's first flight on the source (beside its snapshot and pending counts),
//! and applied on the target in the flight that locks and records progress: one batch of
//! `DELETE ... USING (VALUES ...)` and `INSERT ... VALUES` statements, all values as
//! escape-string literals (the same text COPY would carry, under the same pinned
//! session settings). Larger rounds, TRUNCATEs and tables without a key take the COPY path.

use std::collections::HashMap;

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::pg::error::PgError;
use crate::pg::ident::quote_value;
use crate::pg::simple;
use crate::round::plan::{TablePlan, Window};

/// Most pending delta rows a table may have for its round to go this way.
pub const SMALL_ROWS: u64 = 200;

/// A row of text values (None: NULL).
pub type TextRow = Vec<Option<String>>;

/// One table's changes: the distinct changed keys, the current rows of those keys, and the
/// keys without a current row (deleted on the source).
pub struct TextChanges {
    pub table: usize,
    pub keys: Vec<TextRow>,
    pub rows: Vec<TextRow>,
    pub gone: Vec<TextRow>,
}

/// Whether a table's pending work fits this path.
pub fn eligible(t: &TablePlan, pending: u64, truncate: bool) -> bool {
    !truncate && (pending == 0 || (!t.whole_row && pending <= SMALL_ROWS))
}

/// Reads one table's changes: every changed key joined to its current row (none: the key was
/// deleted). Sent speculatively with the round's pending counts, before they are known, so
/// at most `SMALL_ROWS + 1` delta rows are read: enough whenever the round is small.
fn read_sql(t: &TablePlan, source: &str, w: &Window) -> String {
    let on: Vec<String> = t.key.iter().map(|k| format!("r.{k} = k.{k}")).collect();
    format!(
        "SELECT r.{k1} IS NOT NULL, k.*, r.* FROM (SELECT DISTINCT * FROM ({pending} LIMIT {limit}) AS p) AS k \
         LEFT JOIN (SELECT {c} FROM {t}) AS r ON {on}",
        k1 = t.key[0],
        pending = t.pending_keys(source, w),
        limit = SMALL_ROWS + 1,
        c = t.columns,
        t = t.quoted,
        on = on.join(" AND ")
    )
}

/// Reads the changes of `tables` (index, plan, window) in one statement batch, one round trip.
pub async fn read(
    src: &Client,
    source: &str,
    tables: &[(usize, &TablePlan, Window)],
) -> Result<Vec<TextChanges>, PgError> {
    let sql: String = tables
        .iter()
        .map(|(_, t, w)| format!("{};\n", read_sql(t, source, w)))
        .collect();
    let purpose = || {
        let names: Vec<&str> = tables.iter().map(|(_, t, _)| t.display.as_str()).collect();
        format!("read changes of {}", names.join(", "))
    };
    let parts = simple::split(
        src.simple_query(&sql)
            .await
            .map_err(|e| PgError::query(source, purpose(), e))?,
    );
    if parts.len() != tables.len() {
        return Err(PgError::protocol(
            source,
            format!(
                "{}: {} answers for {} tables",
                purpose(),
                parts.len(),
                tables.len()
            ),
        ));
    }
    Ok(tables
        .iter()
        .zip(parts)
        .map(|((i, t, _), m)| parse(*i, t, m))
        .collect())
}

/// Per target, the tables in which the last round found changes: the next round's first
/// flight reads their changes speculatively (under load most rounds change the same tables),
/// and a small round reads any other changed table in one more round trip. Measured at
/// pgbench -R 500 with a probe table written every 50 ms: keeping tables busy for a second
/// avoided the probe's extra round trip but made the first flight of every round ~35% longer
/// (reads of unchanged tables), for no better lag.
#[derive(Debug, Default)]
pub struct Busy(HashMap<String, Vec<usize>>);

impl Busy {
    /// The busy tables of `target`, in table order.
    pub fn tables(&self, target: &str) -> Vec<usize> {
        self.0.get(target).cloned().unwrap_or_default()
    }

    /// Records the tables in which a round found changes.
    pub fn changed(&mut self, target: &str, tables: impl Iterator<Item = usize>) {
        let mut v: Vec<usize> = tables.collect();
        v.sort_unstable();
        self.0.insert(target.to_string(), v);
    }
}

/// The answer of `read_sql` for table number `table`.
fn parse(table: usize, t: &TablePlan, messages: Vec<SimpleQueryMessage>) -> TextChanges {
    let nk = t.key.len();
    let mut changes = TextChanges {
        table,
        keys: Vec::new(),
        rows: Vec::new(),
        gone: Vec::new(),
    };
    for mut row in text_rows(messages) {
        let present = row.first().and_then(|v| v.as_deref()) == Some("t");
        let current = row.split_off(1 + nk);
        row.remove(0);
        if present {
            changes.rows.push(current);
        } else {
            changes.gone.push(row.clone());
        }
        changes.keys.push(row);
    }
    changes
}

fn text_rows(messages: Vec<SimpleQueryMessage>) -> Vec<TextRow> {
    crate::pg::simple::rows(messages)
        .iter()
        .map(|r| (0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
        .collect()
}

/// A text value as a literal of type `ty`.
pub(crate) fn typed(v: &Option<String>, ty: &str) -> String {
    value(v, Some(ty))
}

fn value(v: &Option<String>, cast: Option<&str>) -> String {
    match (v, cast) {
        (None, Some(ty)) => format!("NULL::{ty}"),
        (None, None) => "NULL".to_string(),
        (Some(s), Some(ty)) => format!("{}::{ty}", quote_value(s)),
        (Some(s), None) => quote_value(s),
    }
}

/// Deletes the changed keys (typed: a VALUES list has no column types of its own).
pub fn delete_sql(t: &TablePlan, keys: &[TextRow]) -> Option<String> {
    if keys.is_empty() {
        return None;
    }
    let values: Vec<String> = keys
        .iter()
        .map(|k| {
            let vals: Vec<String> = k
                .iter()
                .zip(&t.key_types)
                .map(|(v, ty)| value(v, Some(ty)))
                .collect();
            format!("({})", vals.join(", "))
        })
        .collect();
    let on: Vec<String> = t.key.iter().map(|k| format!("t.{k} = k.{k}")).collect();
    Some(format!(
        "DELETE FROM {tbl} AS t USING (VALUES {v}) AS k ({kl}) WHERE {on}",
        tbl = t.quoted,
        v = values.join(", "),
        kl = t.key_list(),
        on = on.join(" AND ")
    ))
}

/// Inserts the current rows (INSERT coerces untyped literals to the column types). Like COPY,
/// it stores the source's values in identity columns (`GENERATED ALWAYS` included).
pub fn insert_sql(t: &TablePlan, rows: &[TextRow]) -> Option<String> {
    if rows.is_empty() {
        return None;
    }
    let values: Vec<String> = rows
        .iter()
        .map(|r| {
            let vals: Vec<String> = r.iter().map(|v| value(v, None)).collect();
            format!("({})", vals.join(", "))
        })
        .collect();
    Some(format!(
        "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE VALUES {}",
        t.quoted,
        t.columns,
        values.join(", ")
    ))
}

/// The apply batch: deletes children first, inserts parents first (`changes` in table order).
/// `in_place` (FKs live on the target, see `in_place`): only keys deleted on the source are
/// deleted, and current rows are updated where their key exists, inserted where not.
/// Returns the SQL and, per statement, (table index, is a delete).
pub fn apply_batch(
    tables: &[std::sync::Arc<TablePlan>],
    changes: &[TextChanges],
    in_place: bool,
) -> (String, Vec<(usize, bool)>) {
    let mut sql = String::new();
    let mut statements = Vec::new();
    let mut push = |s: String, table: usize, delete: bool| {
        sql.push_str(&s);
        sql.push_str(";\n");
        statements.push((table, delete));
    };
    for c in changes.iter().rev() {
        let keys = if in_place { &c.gone } else { &c.keys };
        if let Some(d) = delete_sql(&tables[c.table], keys) {
            push(d, c.table, true);
        }
    }
    for c in changes {
        let t = &tables[c.table];
        if in_place {
            for s in upsert_sql(t, &c.rows) {
                push(s, c.table, false);
            }
        } else if let Some(i) = insert_sql(t, &c.rows) {
            push(i, c.table, false);
        }
    }
    (sql, statements)
}

/// Rows affected per statement of a batch, in order.
pub fn affected(messages: &[SimpleQueryMessage]) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect()
}

/// Typed VALUES list of `rows` (a VALUES list has no column types of its own), aliased `r`.
pub fn values_from(t: &TablePlan, rows: &[TextRow]) -> String {
    let values: Vec<String> = rows
        .iter()
        .map(|r| {
            let vals: Vec<String> = r
                .iter()
                .zip(&t.column_types)
                .map(|(v, ty)| typed(v, ty))
                .collect();
            format!("({})", vals.join(", "))
        })
        .collect();
    format!("(VALUES {}) AS r ({})", values.join(", "), t.columns)
}

/// The small path's in-place statements of one table's rows: the update, then the insert.
pub fn upsert_sql(t: &TablePlan, rows: &[TextRow]) -> Vec<String> {
    if rows.is_empty() {
        return Vec::new();
    }
    let from = values_from(t, rows);
    t.update_from(&from)
        .into_iter()
        .chain(std::iter::once(t.insert_new(&from)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> TablePlan {
        let columns = [("a", "integer"), ("b", "text"), ("v", "text")];
        crate::round::plan::test_plan("s", "t", &columns, 2)
    }

    #[test]
    fn deletes_are_typed_and_inserts_escape_every_value() {
        let t = plan();
        let keys = vec![vec![Some("1".into()), Some(r"it's \ x".into())]];
        assert_eq!(
            delete_sql(&t, &keys).unwrap(),
            r#"DELETE FROM "s"."t" AS t USING (VALUES ('1'::integer,  E'it''s \\ x'::text)) AS k ("a", "b") WHERE t."a" = k."a" AND t."b" = k."b""#
        );
        let rows = vec![vec![Some("1".into()), Some("x".into()), None]];
        assert_eq!(
            insert_sql(&t, &rows).unwrap(),
            r#"INSERT INTO "s"."t" ("a", "b", "v") OVERRIDING SYSTEM VALUE VALUES ('1', 'x', NULL)"#
        );
        assert!(delete_sql(&t, &[]).is_none());
        assert!(insert_sql(&t, &[]).is_none());
    }

    #[test]
    fn busy_tables_are_the_last_rounds_per_target() {
        let mut b = Busy::default();
        assert!(b.tables("t1").is_empty());
        b.changed("t1", [3, 1].into_iter());
        b.changed("t2", [0].into_iter());
        assert_eq!(b.tables("t1"), vec![1, 3]);
        b.changed("t1", [2].into_iter());
        assert_eq!(b.tables("t1"), vec![2], "only the last round's tables");
        assert_eq!(b.tables("t2"), vec![0]);
    }

    #[test]
    fn only_small_keyed_rounds_without_truncate() {
        let mut t = plan();
        assert!(eligible(&t, 0, false));
        assert!(eligible(&t, SMALL_ROWS, false));
        assert!(!eligible(&t, SMALL_ROWS + 1, false));
        assert!(!eligible(&t, 1, true));
        t.whole_row = true;
        assert!(!eligible(&t, 1, false));
        assert!(eligible(&t, 0, false));
    }

    #[test]
    fn small_rows_update_then_insert_with_typed_values() {
        let rows = vec![vec![Some("1".into()), None]];
        let sql = upsert_sql(&in_place_plan(), &rows);
        assert_eq!(
            sql,
            [
                r#"UPDATE "s"."t" AS t SET "v" = r."v" FROM (VALUES ('1'::integer, NULL::text)) AS r ("a", "v") WHERE t."a" = r."a""#,
                r#"INSERT INTO "s"."t" ("a", "v") OVERRIDING SYSTEM VALUE SELECT r."a", r."v" FROM (VALUES ('1'::integer, NULL::text)) AS r ("a", "v") WHERE NOT EXISTS (SELECT 1 FROM "s"."t" AS t WHERE t."a" = r."a")"#,
            ]
        );
    }

    fn in_place_plan() -> TablePlan {
        let mut p = crate::round::plan::test_plan("s", "t", &[("a", "integer"), ("v", "text")], 1);
        p.target_oids = std::collections::HashMap::from([("dst".to_string(), 7)]);
        p
    }
}
