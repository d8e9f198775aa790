//! Applying changed rows in place, for targets where foreign keys are live (no
//! `session_replication_role = replica`: the managed-service case). An update applied as
//! DELETE + INSERT would fire the FK actions of the deleted row: `ON DELETE CASCADE` deletes
//! the target's child rows, `SET NULL` nulls them, `RESTRICT` fails the round on every retry.
//! So a changed key whose row exists on the target is UPDATEd (often a HOT update), a new key
//! INSERTed, and only a key without a current row on the source DELETEd. The round orders
//! deletes children first and updates/inserts parents first (`plan::fk_order`).
//!
//! The COPY path loads the changed rows into a session temp table (`drover_rows_*`) beside the
//! changed keys, and ANALYZEs both, so the planner sizes the joins from real counts (no global
//! join switches); the small path uses typed VALUES lists, whose row counts the planner knows.
//! In replica mode FK actions do not fire, and the apply keeps DELETE + INSERT of every changed
//! key: a unique index other than the key whose values two rows swap in one round stays valid
//! that way, where an UPDATE statement would check each row as it goes. Multi-master applies to
//! a master update in place in every mode (application writes wait there for the apply's rows:
//! see `multi_apply::in_place_here`).

use std::hash::{Hash, Hasher};

use tokio_postgres::error::SqlState;

use crate::pg::error::PgError;
use crate::round::plan::TablePlan;

/// `a.k1 = b.k1 AND ...` over the key columns.
fn key_match(t: &TablePlan, a: &str, b: &str) -> String {
    let on: Vec<String> = t.key.iter().map(|k| format!("{a}.{k} = {b}.{k}")).collect();
    on.join(" AND ")
}

fn aliased(t: &TablePlan, alias: &str) -> String {
    let cols: Vec<String> = t.cols.iter().map(|c| format!("{alias}.{c}")).collect();
    cols.join(", ")
}

impl TablePlan {
    /// The session temp table holding a round's changed rows on `db`. Its name carries a hash
    /// of the column list and types: after a column change a new table is created instead of
    /// loading into one of the old shape (the session outlives the plan).
    pub fn temp_rows(&self, db: &str) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&self.cols, &self.column_types).hash(&mut h);
        format!("{}_{:08x}", self.temp_name("rows", db), h.finish() as u32)
    }

    /// Creates `temp_rows`, emptied at every commit (like the key table).
    pub fn create_temp_rows(&self, db: &str) -> String {
        format!(
            "CREATE TEMP TABLE IF NOT EXISTS {tmp} ON COMMIT DELETE ROWS AS SELECT {c} FROM {t} WITH NO DATA",
            tmp = self.temp_rows(db),
            c = self.columns,
            t = self.quoted
        )
    }

    pub fn rows_in_temp(&self, db: &str) -> String {
        format!("COPY {} ({}) FROM STDIN", self.temp_rows(db), self.columns)
    }

    /// Deletes the changed keys that have no current row on the source (loaded in
    /// `temp_rows`): the rows deleted there.
    pub fn delete_gone(&self, db: &str) -> String {
        format!(
            "DELETE FROM {t} AS t USING {keys} AS k WHERE {tk} \
             AND NOT EXISTS (SELECT 1 FROM {rows} AS r WHERE {rk})",
            t = self.quoted,
            keys = self.temp_name("keys", db),
            rows = self.temp_rows(db),
            tk = key_match(self, "t", "k"),
            rk = key_match(self, "r", "k"),
        )
    }

    /// Deletes the rows whose key is not in `temp_rows` (a forced copy in place).
    pub fn delete_absent(&self, db: &str) -> String {
        format!(
            "DELETE FROM {t} AS t WHERE NOT EXISTS (SELECT 1 FROM {rows} AS r WHERE {on})",
            t = self.quoted,
            rows = self.temp_rows(db),
            on = key_match(self, "r", "t"),
        )
    }

    /// Deletes the rows of the keys loaded in `temp_rows` (see `update_rows`).
    pub fn delete_loaded(&self, db: &str) -> String {
        format!(
            "DELETE FROM {t} AS t USING {rows} AS r WHERE {on}",
            t = self.quoted,
            rows = self.temp_rows(db),
            on = key_match(self, "t", "r"),
        )
    }

    /// Updates the rows whose key exists on the target from `from` (a row source aliased
    /// `r`); None when only key columns replicate (nothing to set).
    pub fn update_from(&self, from: &str) -> Option<String> {
        if self.set_cols.is_empty() {
            return None;
        }
        let set: Vec<String> = self
            .set_cols
            .iter()
            .map(|c| format!("{c} = r.{c}"))
            .collect();
        Some(format!(
            "UPDATE {t} AS t SET {set} FROM {from} WHERE {on}",
            t = self.quoted,
            set = set.join(", "),
            on = key_match(self, "t", "r"),
        ))
    }

    /// Inserts the rows of `from` (aliased `r`) whose key the target lacks; like COPY it stores
    /// the source's values in identity columns.
    pub fn insert_new(&self, from: &str) -> String {
        format!(
            "INSERT INTO {t} ({c}) OVERRIDING SYSTEM VALUE SELECT {rc} FROM {from} \
             WHERE NOT EXISTS (SELECT 1 FROM {t} AS t WHERE {on})",
            t = self.quoted,
            c = self.columns,
            rc = aliased(self, "r"),
            on = key_match(self, "t", "r"),
        )
    }

    /// `temp_rows` as the `from` of `update_from` / `insert_new`.
    pub fn temp_rows_from(&self, db: &str) -> String {
        format!("{} AS r", self.temp_rows(db))
    }

    /// The temp tables of an in-place apply, analyzed once loaded (one statement each: a
    /// list needs PostgreSQL 11).
    pub fn analyze_temp(&self, db: &str) -> String {
        format!(
            "ANALYZE {}; ANALYZE {};",
            self.temp_name("keys", db),
            self.temp_rows(db)
        )
    }
}

/// Whether `e` is a unique violation reported by the target.
pub fn unique_violation(e: &PgError) -> bool {
    matches!(e, PgError::Query { source, .. } if source.code() == Some(&SqlState::UNIQUE_VIOLATION))
}

/// Runs a table's in-place UPDATE (from `temp_rows`) under a savepoint, sent in the same flight.
/// An UPDATE checks a unique index row by row, so two changed rows that swap values of a unique
/// index other than the key refuse it, where DELETE + INSERT of both is valid. Then, if no
/// foreign key references the table here (nothing can cascade), the loaded keys' rows are
/// deleted and the insert that follows puts every loaded row back; in replica mode too, where
/// no FK action fires (an application UPDATE waiting for such a row then finds none: a rare
/// case, see `multi_apply::in_place_here`). Returns the rows updated.
pub async fn update_rows<T>(
    ttx: &tokio_postgres::Transaction<'_>,
    dst: &str,
    t: &TablePlan,
    update: &T,
) -> Result<u64, PgError>
where
    T: ?Sized + tokio_postgres::ToStatement,
{
    let purpose = |what: &str| format!("{what} rows of {} in place", t.display);
    let (saved, updated) = tokio::join!(
        ttx.batch_execute("SAVEPOINT drover_update"),
        ttx.execute(update, &[])
    );
    saved.map_err(|e| PgError::query(dst, purpose("update"), e))?;
    let err = match updated {
        Ok(n) => return Ok(n),
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => e,
        Err(e) => return Err(PgError::query(dst, purpose("update"), e)),
    };
    ttx.batch_execute("ROLLBACK TO SAVEPOINT drover_update")
        .await
        .map_err(|e| PgError::query(dst, purpose("update"), e))?;
    if referenced(ttx, dst, t).await? && !replica_session(ttx, dst).await? {
        return Err(PgError::query(
            dst,
            format!(
                "update rows of {} in place (changed rows swap values of a unique index, and a \
                 foreign key references the table, so they cannot be deleted and inserted: make \
                 that unique constraint DEFERRABLE on the target, or let drover set \
                 session_replication_role)",
                t.display
            ),
            err,
        ));
    }
    ttx.execute(&t.delete_loaded(dst), &[])
        .await
        .map_err(|e| PgError::query(dst, purpose("replace"), e))?;
    Ok(0)
}

/// Whether a foreign key references `t` on the target (its own included): emptying it there
/// would fire the key's delete action.
pub async fn referenced(
    ttx: &tokio_postgres::Transaction<'_>,
    dst: &str,
    t: &TablePlan,
) -> Result<bool, PgError> {
    let row = ttx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE contype = 'f' \
             AND confrelid = $1::text::regclass)",
            &[&t.quoted],
        )
        .await
        .map_err(|e| {
            PgError::query(
                dst,
                format!("read the foreign keys referencing {}", t.display),
                e,
            )
        })?;
    Ok(row.get(0))
}

/// Whether the apply session runs in replica mode, where deleting a referenced row fires no
/// foreign key action (a master's apply updates in place in either mode).
async fn replica_session(
    ttx: &tokio_postgres::Transaction<'_>,
    dst: &str,
) -> Result<bool, PgError> {
    let row = ttx
        .query_one(
            "SELECT current_setting('session_replication_role') = 'replica'",
            &[],
        )
        .await
        .map_err(|e| PgError::query(dst, "read session_replication_role", e))?;
    Ok(row.get(0))
}

/// After a forced copy loaded the source's rows into `temp_rows`: makes the table equal to
/// them without emptying it (children keep their rows).
pub fn sync_from_temp(t: &TablePlan, dst: &str) -> String {
    let from = t.temp_rows_from(dst);
    let mut sql = format!("ANALYZE {};\n{};\n", t.temp_rows(dst), t.delete_absent(dst));
    if let Some(u) = t.update_from(&from) {
        sql.push_str(&u);
        sql.push_str(";\n");
    }
    sql.push_str(&t.insert_new(&from));
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn plan() -> TablePlan {
        let mut p = crate::round::plan::test_plan("s", "t", &[("a", "integer"), ("v", "text")], 1);
        p.target_oids = HashMap::from([("dst".to_string(), 7)]);
        p
    }

    #[test]
    fn key_only_tables_only_insert_and_deletes_spare_current_rows() {
        let mut t = plan();
        t.set_cols.clear();
        assert!(t.update_from("x AS r").is_none());
        let d = t.delete_gone("dst");
        assert!(
            d.starts_with(r#"DELETE FROM "s"."t" AS t USING pg_temp.drover_keys_7 AS k WHERE t."a" = k."a" AND NOT EXISTS (SELECT 1 FROM pg_temp.drover_rows_7_"#),
            "{d}"
        );
        assert!(t.temp_rows("dst").starts_with("pg_temp.drover_rows_7_"));
    }
}
