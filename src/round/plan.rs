//! What a round needs to know about one table, prepared once per sync: quoted names, the
//! replicated columns, the key, each source's delta table, and the SQL of every round step.
//! Preparing also checks that every database of the sync has the table with the same columns.

use std::collections::HashMap;

use crate::capture::partitions;
use crate::pg::error::PgError;
use crate::pg::floats;
use crate::pg::ident::{quote_ident, TableName};
use crate::pg::schema::{self, TableMeta};
use crate::pg::Pool;
use crate::round::signature;
use crate::round::snapshot::Snapshot;

mod increments;
mod target;
pub use target::TargetTable;

#[derive(Debug, Clone)]
pub struct TablePlan {
    pub name: TableName,
    /// Canonical name, the key of progress and consumer rows.
    pub display: String,
    pub quoted: String,
    /// Replicated columns, quoted, comma-separated.
    pub columns: String,
    /// Their types (`format_type`), in the same order.
    pub column_types: Vec<String>,
    /// Key columns, quoted.
    pub key: Vec<String>,
    /// Key column types (`format_type`), in key order.
    pub key_types: Vec<String>,
    /// Replicated columns one by one, quoted (types in `column_types`).
    pub cols: Vec<String>,
    /// Columns an in-place UPDATE sets: not the key (it never changes in an update by key),
    /// not `GENERATED ALWAYS` identity (PostgreSQL refuses to set those).
    pub set_cols: Vec<String>,
    /// Source database name -> quoted delta table there.
    pub deltas: HashMap<String, String>,
    /// Target database name -> the table's oid there (names its temp key table).
    pub target_oids: HashMap<String, u32>,
    /// Tables this one references on some target (ordering).
    pub fk_parents: Vec<TableName>,
    /// No usable key: whole-row images (see `capture::images`).
    pub whole_row: bool,
    /// Partitioned on a source: each round checks its partitions are all captured.
    pub partitioned: bool,
    /// Delta columns (quoted name, type) as the sources' installs recorded them.
    pub increments: Vec<(String, String)>,
    /// Source database name -> the table's column signature there (`round::signature`).
    pub signatures: HashMap<String, signature::Signature>,
    /// The first database's table, which a target prepared later is checked against.
    pub reference: Option<std::sync::Arc<(String, TableMeta)>>,
}

/// The delta rows a round applies for one table: those committed after `prev` and, when a
/// backlog is split into bounded rounds, with a transaction id below `below`.
#[derive(Debug, Clone)]
pub struct Window {
    pub prev: Snapshot,
    pub below: Option<i64>,
}

/// A database of the sync as preparing sees it.
pub struct Side<'a> {
    pub name: &'a str,
    pub pool: &'a Pool,
    pub version_num: i32,
}

impl TablePlan {
    /// Reads the table on every source and target and builds the plan, or says what differs.
    pub async fn prepare(
        table: &TableName,
        configured: Option<&[String]>,
        sources: &[Side<'_>],
        targets: &[Side<'_>],
    ) -> Result<TablePlan, PgError> {
        let display = table.to_string();
        let mut found = Found::default();
        for side in sources.iter().chain(targets.iter()) {
            let client = crate::pg::connect::checkout(side.pool, side.name).await?;
            let is_source = sources.iter().any(|s| s.name == side.name);
            if is_source {
                // Before the columns: a change between the two reads is seen by the next round.
                let sig = signature::read(&client, side.name, &table.quoted()).await?;
                found.signatures.insert(side.name.to_string(), sig);
            }
            let meta = schema::describe(&client, side.name, table, side.version_num, configured)
                .await?
                .ok_or_else(|| {
                    PgError::schema(side.name, format!("table {display} does not exist"))
                })?;
            crate::pg::key_nulls::refuse_nullable(&client, side.name, &meta).await?;
            found.compare(side.name, &display, &meta, is_source)?;
            if is_source {
                let delta = delta_table(&client, side.name, &display, &meta).await?;
                found.deltas.insert(side.name.to_string(), delta);
                let incs = increments::recorded(&client, side.name, &meta).await?;
                if *found.increments.get_or_insert_with(|| incs.clone()) != incs {
                    return Err(increments::differ(side.name, &display));
                }
                found.partitioned |=
                    partitions::is_partitioned(&client, side.name, meta.oid, &display).await?;
            }
            if targets.iter().any(|t| t.name == side.name) || sources.len() > 1 {
                found.target_oids.insert(side.name.to_string(), meta.oid);
            }
            for p in &meta.fk_parents {
                if !found.fk_parents.contains(p) {
                    found.fk_parents.push(p.clone());
                }
            }
        }
        Ok(found.plan(table))
    }

    pub fn key_list(&self) -> String {
        self.key.join(", ")
    }

    /// Delta rows that `prev` may not have seen: a range on the `drover_xid` index. The upper
    /// bound never excludes a row; it makes this a range, which the planner estimates as a
    /// small fraction of the table even before the delta table was ever analyzed (alone, `>=`
    /// is estimated at a third, and a seq scan over the purged table's dead rows wins).
    fn from(prev: &Snapshot) -> String {
        format!(
            "drover_xid >= txid_snapshot_xmin({}) AND drover_xid < {}",
            prev.sql(),
            i64::MAX
        )
    }

    /// Delta rows committed after `prev` (and visible to the round's snapshot).
    fn pending(prev: &Snapshot) -> String {
        format!(
            "{} AND NOT txid_visible_in_snapshot(drover_xid, {})",
            Self::from(prev),
            prev.sql()
        )
    }

    /// Pending rows of a window: after `prev`, and below the window's bound when it has one.
    fn window(w: &Window) -> String {
        match w.below {
            None => Self::pending(&w.prev),
            Some(x) => format!("{} AND drover_xid < {x}", Self::pending(&w.prev)),
        }
    }

    /// One row: pending change count, oldest pending change (epoch seconds), whether a TRUNCATE is pending, and
    /// rows kept in the delta table that `prev`'s horizon does not yet let anyone purge.
    pub fn stats_sql(&self, source: &str, prev: &Snapshot) -> String {
        let p = Self::pending(prev);
        format!(
            "SELECT count(*) FILTER (WHERE {p}) AS pending, \
             extract(epoch FROM min(drover_changed_at) FILTER (WHERE {p}))::float8 AS oldest, \
             coalesce(bool_or(drover_truncate) FILTER (WHERE {p}), false) AS truncate, \
             count(*) AS retained FROM {d} WHERE {from}",
            d = self.deltas[source],
            from = Self::from(prev)
        )
    }

    /// The transaction id of the `budget`-th pending delta row: a cut that bounds a round.
    pub fn budget_xid_sql(&self, source: &str, prev: &Snapshot, budget: u64) -> String {
        format!(
            "SELECT drover_xid FROM {d} WHERE {p} AND NOT drover_truncate ORDER BY drover_xid OFFSET {budget} LIMIT 1",
            d = self.deltas[source],
            p = Self::pending(prev)
        )
    }

    pub(crate) fn pending_keys(&self, source: &str, prev: &Window) -> String {
        format!(
            "SELECT {k} FROM {d} WHERE {p} AND NOT drover_truncate",
            k = self.key_list(),
            d = self.deltas[source],
            p = Self::window(prev)
        )
    }

    /// The pending delta rows of a window: key, transaction id, change time (`batch_rows`).
    pub(crate) fn pending_deltas(&self, source: &str, prev: &Window) -> String {
        format!(
            "SELECT {k}, drover_xid, drover_changed_at FROM {d} WHERE {p} AND NOT drover_truncate",
            k = self.key_list(),
            d = self.deltas[source],
            p = Self::window(prev)
        )
    }

    /// The distinct keys changed since `prev`, as COPY text.
    pub fn keys_out(&self, source: &str, prev: &Window) -> String {
        format!(
            "COPY (SELECT DISTINCT * FROM ({}) AS k) TO STDOUT",
            self.pending_keys(source, prev)
        )
    }

    /// The current rows of the keys changed since `prev`; keys without a row are deletes.
    pub fn rows_out(&self, source: &str, prev: &Window) -> String {
        format!(
            "COPY (SELECT {c} FROM {t} WHERE ({k}) IN ({pk})) TO STDOUT",
            c = self.columns,
            t = self.quoted,
            k = self.key_list(),
            pk = self.pending_keys(source, prev)
        )
    }

    /// Every row, after a TRUNCATE on the source.
    pub fn all_rows_out(&self) -> String {
        format!(
            "COPY (SELECT {} FROM {}) TO STDOUT",
            self.columns, self.quoted
        )
    }

    fn temp_keys(&self, target: &str) -> String {
        self.temp_name("keys", target)
    }

    /// A session temp table named after the table's oid on `db` (names stay unique when one
    /// session serves several syncs).
    pub fn temp_name(&self, prefix: &str, db: &str) -> String {
        format!(
            "pg_temp.drover_{prefix}_{}",
            self.target_oids.get(db).copied().unwrap_or(0)
        )
    }

    /// Creates the session temp table `temp_name(prefix, db)` holding key columns, emptied at
    /// every commit.
    pub fn create_temp(&self, prefix: &str, db: &str) -> String {
        format!(
            "CREATE TEMP TABLE IF NOT EXISTS {tmp} ON COMMIT DELETE ROWS AS SELECT {k} FROM {t} WITH NO DATA",
            tmp = self.temp_name(prefix, db),
            k = self.key_list(),
            t = self.quoted
        )
    }

    /// A session-lifetime temp table for the keys, emptied at every commit.
    pub fn create_temp_keys(&self, target: &str) -> String {
        self.create_temp("keys", target)
    }

    pub fn keys_in(&self, target: &str) -> String {
        format!(
            "COPY {} ({}) FROM STDIN",
            self.temp_keys(target),
            self.key_list()
        )
    }

    pub fn delete_keys(&self, target: &str) -> String {
        let on: Vec<String> = self.key.iter().map(|k| format!("t.{k} = k.{k}")).collect();
        format!(
            "DELETE FROM {t} AS t USING {tmp} AS k WHERE {on}",
            t = self.quoted,
            tmp = self.temp_keys(target),
            on = on.join(" AND ")
        )
    }

    pub fn truncate(&self) -> String {
        format!("TRUNCATE {}", self.quoted)
    }

    fn image_cols(&self, alias: &str) -> String {
        self.columns
            .split(", ")
            .map(|c| format!("{alias}.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A row's image as text, the same on every major (floats as bits, see `pg::floats`), so
    /// an image taken on a source matches the row on a target of another major.
    pub(crate) fn image(&self, alias: Option<&str>) -> String {
        let values: Vec<String> = self
            .columns
            .split(", ")
            .enumerate()
            .map(|(i, c)| {
                let col = alias.map_or_else(|| c.to_string(), |a| format!("{a}.{c}"));
                floats::comparable(self.column_types.get(i).map_or("", String::as_str), &col)
            })
            .collect();
        format!("ROW({})::text", values.join(", "))
    }

    /// Whole-row tables: the row images whose net count went down, with how many copies go.
    pub fn images_gone_out(&self, source: &str, prev: &Window) -> String {
        format!(
            "COPY (SELECT drover_img, -drover_n FROM (SELECT {img} AS drover_img, \
             sum(drover_sign)::int AS drover_n FROM {d} WHERE {p} AND NOT drover_truncate GROUP BY 1) x \
             WHERE drover_n < 0) TO STDOUT",
            img = self.image(None),
            d = self.deltas[source],
            p = Self::window(prev)
        )
    }

    pub fn create_temp_images(&self, target: &str) -> String {
        format!(
            "CREATE TEMP TABLE IF NOT EXISTS {} (img text, n int) ON COMMIT DELETE ROWS",
            self.temp_name("img", target)
        )
    }

    pub fn images_in(&self, target: &str) -> String {
        format!("COPY {} (img, n) FROM STDIN", self.temp_name("img", target))
    }

    /// Deletes n copies of each gone image (a table may hold identical rows).
    pub fn delete_images(&self, target: &str) -> String {
        let r = self.image(Some("r"));
        format!(
            "DELETE FROM {t} WHERE (tableoid, ctid) IN (SELECT x.tableoid, x.ctid FROM \
             (SELECT r.tableoid, r.ctid, {r} AS img, row_number() OVER (PARTITION BY {r}) AS rn \
             FROM {t} AS r WHERE {r} IN (SELECT img FROM {tmp})) x \
             JOIN {tmp} AS k ON k.img = x.img WHERE x.rn <= k.n)",
            t = self.quoted,
            tmp = self.temp_name("img", target),
        )
    }

    /// Whole-row tables: each image whose net count went up, repeated that many times.
    pub fn images_new_out(&self, source: &str, prev: &Window) -> String {
        format!(
            "COPY (SELECT {dc} FROM (SELECT DISTINCT ON (drover_img) {c}, drover_n FROM \
             (SELECT {c}, {img} AS drover_img, sum(drover_sign) OVER (PARTITION BY {img}) AS drover_n \
             FROM {d} WHERE {p} AND NOT drover_truncate) w ORDER BY drover_img) d \
             CROSS JOIN LATERAL generate_series(1, d.drover_n::int) WHERE d.drover_n > 0) TO STDOUT",
            c = self.columns,
            dc = self.image_cols("d"),
            img = self.image(None),
            d = self.deltas[source],
            p = Self::window(prev)
        )
    }

    pub fn rows_in(&self) -> String {
        format!("COPY {} ({}) FROM STDIN", self.quoted, self.columns)
    }

    /// `rows_in` for a table truncated earlier in the same transaction: the rows are stored
    /// frozen (no hint-bit writes and no anti-wraparound vacuum later; a quarter less load
    /// time here). Transactions whose snapshot predates the commit see them, as after
    /// pg_restore of a table created in its transaction.
    pub fn rows_in_frozen(&self) -> String {
        format!(
            "COPY {} ({}) FROM STDIN WITH (FREEZE)",
            self.quoted, self.columns
        )
    }
}

/// A table without a key records whole rows: its delta table has the columns the table had
/// at `drover install` (`recorded`: "*" and their names). After a column change, those images
/// cannot be read with the new columns.
fn images_match(db: &str, meta: &TableMeta, recorded: &[String]) -> Result<(), PgError> {
    let now: Vec<&str> = meta.columns.iter().map(|c| c.name.as_str()).collect();
    if !meta.whole_row() || recorded.iter().skip(1).map(String::as_str).eq(now) {
        return Ok(());
    }
    Err(PgError::install(
        db,
        format!(
            "table {} has no key and its columns changed since drover install, whose capture \
             records whole rows with the old columns: run drover install again (it drops the \
             table's pending changes), then drover copy --table {}",
            meta.name, meta.name
        ),
    ))
}

/// The partitioned ones among `tables`, as `capture::partitions::check_captured` takes them.
pub fn partitioned(tables: &[std::sync::Arc<TablePlan>]) -> Vec<(&str, &TableName)> {
    tables
        .iter()
        .filter(|t| t.partitioned)
        .map(|t| (t.display.as_str(), &t.name))
        .collect()
}

/// Orders tables so that parents come before the tables that reference them (inserts in this
/// order, deletes in reverse). Cycles keep their config order.
pub fn fk_order(tables: Vec<TablePlan>) -> Vec<TablePlan> {
    let mut done: Vec<TablePlan> = Vec::with_capacity(tables.len());
    let mut left = tables;
    while !left.is_empty() {
        let ready = left.iter().position(|t| {
            t.fk_parents
                .iter()
                .all(|p| *p == t.name || !left.iter().any(|o| o.name == *p))
        });
        // No table is free of pending parents: a cycle; take the first.
        let i = ready.unwrap_or(0);
        done.push(left.remove(i));
    }
    done
}

/// A plan for unit tests: table `schema.name` with `columns` (name, type), keyed by the
/// leading `key_len` of them, nothing else set.
/// What `TablePlan::prepare` learns, database by database.
#[derive(Default)]
struct Found {
    /// The first database's table, which every other must agree with.
    reference: Option<(String, TableMeta)>,
    deltas: HashMap<String, String>,
    target_oids: HashMap<String, u32>,
    fk_parents: Vec<TableName>,
    partitioned: bool,
    signatures: HashMap<String, signature::Signature>,
    increments: Option<Vec<(String, String)>>,
}

impl Found {
    /// Checks one database's table against the first one's; every column of a source must
    /// reach the other databases.
    fn compare(
        &mut self,
        db: &str,
        display: &str,
        meta: &TableMeta,
        is_source: bool,
    ) -> Result<(), PgError> {
        let Some((ref_db, ref_meta)) = &self.reference else {
            self.reference = Some((db.to_string(), meta.clone()));
            return Ok(());
        };
        let mut diffs = schema::differences(ref_meta, meta);
        if is_source {
            diffs.extend(schema::only_here(ref_meta, meta));
        }
        if diffs.is_empty() {
            return Ok(());
        }
        let msg = format!(
            "table {display} differs from database \"{ref_db}\": {}",
            diffs.join("; ")
        );
        Err(PgError::schema(db, msg))
    }

    fn plan(self, table: &TableName) -> TablePlan {
        let (ref_db, meta) = self.reference.expect("a sync has at least one database");
        let quoted = |cols: &mut dyn Iterator<Item = &String>| -> Vec<String> {
            cols.map(|c| quote_ident(c)).collect()
        };
        let cols = quoted(&mut meta.columns.iter().map(|c| &c.name));
        let set_cols = quoted(
            &mut meta
                .columns
                .iter()
                .map(|c| &c.name)
                .filter(|n| !meta.key.contains(n) && !meta.identity_always.contains(n)),
        );
        TablePlan {
            name: table.clone(),
            quoted: table.quoted(),
            columns: cols.join(", "),
            column_types: meta.columns.iter().map(|c| c.type_name.clone()).collect(),
            key: quoted(&mut meta.key.iter()),
            key_types: (meta.key_columns().iter())
                .map(|c| c.type_name.clone())
                .collect(),
            cols,
            set_cols,
            display: table.to_string(),
            deltas: self.deltas,
            target_oids: self.target_oids,
            fk_parents: self.fk_parents,
            whole_row: meta.whole_row(),
            partitioned: self.partitioned,
            increments: self.increments.unwrap_or_default(),
            signatures: self.signatures,
            reference: Some(std::sync::Arc::new((ref_db, meta.clone()))),
        }
    }
}

/// The quoted delta table of a captured table on a source, after checking that the key its
/// images were recorded under is the table's.
async fn delta_table(
    client: &tokio_postgres::Client,
    db: &str,
    display: &str,
    meta: &TableMeta,
) -> Result<String, PgError> {
    let delta: Option<(String, Vec<String>)> = client
        .query_opt(
            "SELECT delta_name, key_columns FROM drover.tables WHERE table_name = $1",
            &[&display],
        )
        .await
        .map_err(|e| PgError::query(db, "read drover.tables (has drover install run?)", e))?
        .map(|r| (r.get(0), r.get(1)));
    if let Some((_, recorded)) = &delta {
        images_match(db, meta, recorded)?;
    }
    let (delta, _) = delta.ok_or_else(|| {
        PgError::install(
            db,
            format!("table {display} is not captured: run drover install"),
        )
    })?;
    Ok(format!("drover.{}", quote_ident(&delta)))
}

#[cfg(test)]
pub(crate) fn test_plan(
    schema: &str,
    name: &str,
    columns: &[(&str, &str)],
    key_len: usize,
) -> TablePlan {
    let table = TableName::new(schema, name);
    let cols: Vec<String> = columns.iter().map(|(c, _)| quote_ident(c)).collect();
    TablePlan {
        display: table.to_string(),
        quoted: table.quoted(),
        name: table,
        columns: cols.join(", "),
        column_types: columns.iter().map(|(_, t)| t.to_string()).collect(),
        key: cols[..key_len].to_vec(),
        key_types: columns[..key_len]
            .iter()
            .map(|(_, t)| t.to_string())
            .collect(),
        set_cols: cols[key_len..].to_vec(),
        cols,
        deltas: HashMap::new(),
        target_oids: HashMap::new(),
        fk_parents: Vec::new(),
        whole_row: false,
        partitioned: false,
        increments: Vec::new(),
        signatures: HashMap::new(),
        reference: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(name: &str, parents: &[&str]) -> TablePlan {
        let mut p = test_plan("public", name, &[("id", "integer")], 1);
        p.display = name.into();
        p.set_cols = Vec::new();
        p.deltas = HashMap::from([("src".to_string(), "drover.\"delta_1\"".to_string())]);
        p.target_oids = HashMap::from([("dst".to_string(), 42)]);
        p.fk_parents = parents
            .iter()
            .map(|n| TableName::new("public", *n))
            .collect();
        p
    }

    #[test]
    fn parents_first() {
        let order = fk_order(vec![plan("c", &["b"]), plan("b", &["a"]), plan("a", &[])]);
        let names: Vec<_> = order.iter().map(|t| t.display.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn sql_is_quoted() {
        let p = plan("x", &[]);
        let prev = Window {
            prev: Snapshot::parse("5:9:7").unwrap(),
            below: Some(12),
        };
        let sql = p.keys_out("src", &prev);
        assert!(
            sql.contains("'5:9:7'::txid_snapshot") && sql.contains("drover_xid < 12"),
            "{sql}"
        );
        assert_eq!(
            p.delete_keys("dst"),
            "DELETE FROM \"public\".\"x\" AS t USING pg_temp.drover_keys_42 AS k WHERE t.\"id\" = k.\"id\""
        );
    }
}
