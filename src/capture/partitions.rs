//! Capture of partitioned tables. A statement names either the parent or one partition, and
//! PostgreSQL fires only the named table's statement triggers: every table of the partition tree
//! (the parent, sub-partitioned tables, leaves) gets the same statement triggers with transition
//! tables, so a write through the parent is captured once (by the parent's), a write naming a
//! partition once (by that partition's). Row triggers on the parent, which PostgreSQL 11+ clones
//! to partitions created later, would avoid the per-partition triggers but cost 3-4x per row on
//! bulk statements, and partitions added later still need their TRUNCATE trigger (below), so
//! install has to run for them either way.
//!
//! A TRUNCATE of one partition fires only that partition's own statement triggers: each leaf
//! gets a BEFORE TRUNCATE trigger that records the keys (or, for a key-less table, the row
//! images with sign -1) of every row it holds, so a target partitioned any way deletes exactly
//! those rows. A TRUNCATE of the parent fires the parent's trigger first, which records the usual
//! truncate marker (the table is reloaded); the leaves then see the marker of their own
//! transaction and record nothing more.
//!
//! A partition created or attached after install is "uncaptured" until `drover install` runs
//! again: `check` names it, and every round of its table fails naming it (`check_captured`,
//! read under the round's snapshot, so no row of it reaches a target before it is captured).
//! Install then records the rows it holds (`send_existing_rows`). A partition detached or
//! dropped since install is the other half (`partition_list`), checked in the same statement.

use tokio_postgres::{Client, Transaction};

use super::partition_list;
use super::sql::{statement_triggers, CaptureObjects};
use crate::pg::error::PgError;
use crate::pg::ident::{quote_ident, quote_literal, TableName};
use crate::pg::schema::Column;
use crate::pg::simple;

/// The BEFORE TRUNCATE trigger on each leaf partition.
pub const LEAF_TRUNCATE: &str = "drover_capture_ptrunc";
/// The statement triggers every table of the tree has (`sql::statement_triggers`).
const STATEMENT: [&str; 3] = [
    "drover_capture_ins",
    "drover_capture_upd",
    "drover_capture_del",
];
/// The parent's truncate trigger: its presence means the table is captured.
const PARENT_TRUNCATE: &str = "drover_capture_trunc";

/// A partition (at any depth) found at install.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// Schema-qualified, quoted.
    pub quoted: String,
    /// A leaf (holds rows), not a sub-partitioned table.
    pub leaf: bool,
    /// Whether it has all its capture triggers.
    pub captured: bool,
}

/// `SELECT quoted name, leaf, captured` for every partition below `parent` (a regclass
/// expression), at any depth. Captured means its triggers call this table's functions (those of
/// the parent's TRUNCATE trigger): a partition moved from another captured table keeps that
/// table's triggers, which record its writes in the other table's delta.
fn leaves_sql(parent: &str) -> String {
    let list = |names: &[&str]| {
        let quoted: Vec<String> = names.iter().map(|t| quote_literal(t)).collect();
        quoted.join(", ")
    };
    // One index probe per partition: a leaf has all four triggers, a sub-partitioned table
    // the three statement ones.
    format!(
        "WITH RECURSIVE tree(relid) AS (SELECT inhrelid FROM pg_inherits WHERE inhparent = {parent} \
         UNION ALL SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.relid), \
         fns AS (SELECT f.oid AS stmt, (SELECT l.oid FROM pg_proc l WHERE l.pronamespace = f.pronamespace \
         AND l.proname = f.proname || '_partition_truncate') AS leaf \
         FROM pg_trigger g JOIN pg_proc f ON f.oid = g.tgfoid WHERE g.tgrelid = {parent} AND g.tgname = {trunc}) \
         SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS leaf, c.relkind = 'r' AS is_leaf, \
         (SELECT count(*) FROM pg_trigger g WHERE g.tgrelid = c.oid AND \
         (g.tgname IN ({stmt}) AND g.tgfoid = (SELECT stmt FROM fns) \
         OR g.tgname = {leaf} AND g.tgfoid = (SELECT leaf FROM fns))) \
         = CASE c.relkind WHEN 'r' THEN 4 ELSE 3 END AS captured \
         FROM tree JOIN pg_class c ON c.oid = tree.relid JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p')",
        stmt = list(&STATEMENT),
        leaf = quote_literal(LEAF_TRUNCATE),
        trunc = quote_literal(PARENT_TRUNCATE),
    )
}

fn regclass(table: &TableName) -> String {
    format!("{}::regclass", quote_literal(&table.quoted()))
}

/// `SELECT table, leaf` for each uncaptured leaf of `table`, once `table` itself is captured.
fn uncaptured_sql(table: &TableName) -> String {
    let parent = regclass(table);
    format!(
        "SELECT {display}::text, leaf FROM ({leaves}) l WHERE NOT captured AND EXISTS \
         (SELECT 1 FROM pg_trigger WHERE tgrelid = {parent} AND tgname = {trunc})",
        display = quote_literal(&table.to_string()),
        leaves = leaves_sql(&parent),
        trunc = quote_literal(PARENT_TRUNCATE),
    )
}

/// Whether `oid` (`display` in messages) is a partitioned table; an error when it is but the
/// schema predates `drover.partitions` (rounds compare with it: `partition_list`).
pub async fn is_partitioned(
    client: &Client,
    db: &str,
    oid: u32,
    display: &str,
) -> Result<bool, PgError> {
    let row = client
        .query_opt(
            "SELECT to_regclass('drover.partitions') IS NOT NULL FROM pg_class WHERE oid = $1 AND relkind = 'p'",
            &[&oid],
        )
        .await
        .map_err(|e| PgError::query(db, "read whether a table is partitioned", e))?;
    match row.map(|r| r.get::<_, bool>(0)) {
        None => Ok(false),
        Some(true) => Ok(true),
        Some(false) => Err(PgError::install(
            db,
            partition_list::unrecorded_message(display),
        )),
    }
}

/// The leaves of `table` if it is partitioned, `None` if it is not.
pub async fn leaves(
    client: &Client,
    db: &str,
    table: &TableName,
) -> Result<Option<Vec<Leaf>>, PgError> {
    let purpose = format!("list the partitions of {table}");
    let partitioned = client
        .query_opt(
            &format!(
                "SELECT 1 FROM pg_class WHERE oid = {} AND relkind = 'p'",
                regclass(table)
            ),
            &[],
        )
        .await
        .map_err(|e| PgError::query(db, &purpose, e))?
        .is_some();
    if !partitioned {
        return Ok(None);
    }
    let rows = client
        .query(&format!("{} ORDER BY 1", leaves_sql(&regclass(table))), &[])
        .await
        .map_err(|e| PgError::query(db, &purpose, e))?;
    Ok(Some(
        rows.iter()
            .map(|r| Leaf {
                quoted: r.get(0),
                leaf: r.get(1),
                captured: r.get(2),
            })
            .collect(),
    ))
}

/// What `check` says about the partitions of `table`: uncaptured ones, and recorded ones gone
/// from its tree (empty when it is not partitioned or not captured).
pub async fn problems(
    client: &Client,
    db: &str,
    table: &TableName,
) -> Result<Vec<String>, PgError> {
    let recorded = client
        .query_one("SELECT to_regclass('drover.partitions') IS NOT NULL", &[])
        .await
        .map_err(|e| PgError::query(db, "look for drover.partitions", e))?
        .get::<_, bool>(0);
    let sql = if recorded {
        problems_sql(table)
    } else {
        format!("SELECT *, false FROM ({}) u", uncaptured_sql(table))
    };
    let rows = client
        .simple_query(&format!("{sql} ORDER BY 3, 2"))
        .await
        .map_err(|e| PgError::query(db, format!("list the partitions of {table}"), e))?;
    let mut out = messages(rows);
    let captured = !client
        .query(&format!("{} LIMIT 1", partitioned_captured_sql(table)), &[])
        .await
        .map_err(|e| PgError::query(db, format!("list the partitions of {table}"), e))?
        .is_empty();
    if !recorded && captured {
        out.push(partition_list::unrecorded_message(&table.to_string()));
    }
    Ok(out)
}

/// `SELECT 1` when `table` is partitioned and captured.
fn partitioned_captured_sql(table: &TableName) -> String {
    format!(
        "SELECT 1 FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid \
         WHERE g.tgrelid = {} AND c.relkind = 'p' AND g.tgname = {}",
        regclass(table),
        quote_literal(PARENT_TRUNCATE)
    )
}

/// `SELECT table, partition, gone` for each uncaptured partition of `table` and each recorded
/// one gone from its tree.
fn problems_sql(table: &TableName) -> String {
    format!(
        "SELECT *, false FROM ({}) u UNION ALL SELECT *, true FROM ({}) g",
        uncaptured_sql(table),
        partition_list::gone_sql(table)
    )
}

/// The messages for `problems_sql` rows.
fn messages(rows: Vec<tokio_postgres::SimpleQueryMessage>) -> Vec<String> {
    simple::rows(rows)
        .iter()
        .map(|r| {
            let (table, partition) = (r.get(0).unwrap_or_default(), r.get(1).unwrap_or_default());
            if simple::get_bool(r, 2) {
                partition_list::gone_message(table, partition)
            } else {
                uncaptured_message(table, partition)
            }
        })
        .collect()
}

/// What `check` and a refused round say about one uncaptured leaf.
pub fn uncaptured_message(table: &str, leaf: &str) -> String {
    format!(
        "table {table}: partition {leaf} is not captured (created or attached after drover install): \
         run drover install, which captures it and sends the rows it already holds; until then the \
         table's changes are held back"
    )
}

/// One statement per round (pipelined with the round's first reads, under its snapshot): fails
/// naming every uncaptured partition of the given partitioned tables (`(display name, table)`)
/// and every recorded one since detached or dropped (`partition_list`), so a sync is never
/// reported good while writes to a partition could be missed or its rows linger on targets.
pub async fn check_captured(
    client: &Client,
    db: &str,
    tables: &[(&str, &TableName)],
) -> Result<(), PgError> {
    if tables.is_empty() {
        return Ok(());
    }
    let sql: Vec<String> = tables.iter().map(|(_, t)| problems_sql(t)).collect();
    let rows = client
        .simple_query(&sql.join(" UNION ALL "))
        .await
        .map_err(|e| PgError::query(db, "check the partitions of partitioned tables", e))?;
    let problems = messages(rows);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(PgError::install(db, problems.join("; ")))
    }
}

/// The function the leaves' TRUNCATE triggers call: records every row of the truncated leaf as
/// gone (keys, or images with sign -1), unless this transaction truncated the whole table.
pub fn leaf_function(objects: &CaptureObjects, columns: &[&Column], images: bool) -> String {
    let list: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
    let list = list.join(", ");
    let (sign_col, sign) = if images {
        (", drover_sign", ", -1")
    } else {
        ("", "")
    };
    let delta = &objects.delta_quoted;
    let insert = format!(
        "INSERT INTO {delta} ({list}{sign_col}, drover_xid, drover_changed_at) \
         SELECT {list}{sign}, txid_current(), clock_timestamp() FROM "
    );
    let super::sql::Pieces { guard, notify, .. } = super::sql::Pieces::new(delta);
    format!(
        "CREATE OR REPLACE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql \
         SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $drover$
BEGIN
  {guard}
  IF EXISTS (SELECT 1 FROM {delta} WHERE drover_xid = txid_current() AND drover_truncate) THEN
    RETURN NULL;
  END IF;
  EXECUTE {insert} || format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME);
  {notify}
  RETURN NULL;
END
$drover$;
REVOKE ALL ON FUNCTION {f}() FROM PUBLIC;\n",
        f = objects.leaf_function_quoted,
        insert = quote_literal(&insert),
    )
}

/// Drops the partitions' triggers (after the parent's).
pub fn drop_leaf_triggers(leaves: &[Leaf]) -> String {
    let mut sql = String::new();
    for l in leaves {
        for t in STATEMENT.iter().chain([&LEAF_TRUNCATE]) {
            sql.push_str(&format!(
                "DROP TRIGGER IF EXISTS {} ON {};\n",
                quote_ident(t),
                l.quoted
            ));
        }
    }
    sql
}

/// The triggers of every partition (dropped first by `drop_leaf_triggers`).
pub fn leaf_triggers(objects: &CaptureObjects, leaves: &[Leaf]) -> String {
    let mut sql = String::new();
    for l in leaves {
        sql.push_str(&statement_triggers(&l.quoted, &objects.function_quoted));
        if l.leaf {
            sql.push_str(&format!(
                "CREATE TRIGGER {} BEFORE TRUNCATE ON {} FOR EACH STATEMENT EXECUTE PROCEDURE {}();\n",
                quote_ident(LEAF_TRUNCATE),
                l.quoted,
                objects.leaf_function_quoted
            ));
        }
    }
    sql
}

/// After the triggers exist (their creation locks each partition against writers until commit):
/// sends the rows that partitions captured only now already hold. A keyed table records their
/// keys. No row of such a partition reached a target before (rounds refuse the table while it
/// is uncaptured), so nothing there needs deleting. A key-less table is reloaded (the truncate
/// marker): the parent's trigger already recorded the images of rows written through it.
pub async fn send_existing_rows(
    tx: &Transaction<'_>,
    db: &str,
    objects: &CaptureObjects,
    key: &[&Column],
    key_less: bool,
    new_leaves: &[&Leaf],
) -> Result<(), PgError> {
    if new_leaves.is_empty() {
        return Ok(());
    }
    let delta = &objects.delta_quoted;
    let stamp = "txid_current(), clock_timestamp()";
    let sql = if key_less {
        format!(
            "INSERT INTO {delta} (drover_xid, drover_changed_at, drover_truncate) VALUES ({stamp}, true);"
        )
    } else {
        let list: Vec<String> = key.iter().map(|c| quote_ident(&c.name)).collect();
        let list = list.join(", ");
        new_leaves
            .iter()
            .filter(|l| l.leaf)
            .map(|l| {
                format!(
                    "INSERT INTO {delta} ({list}, drover_xid, drover_changed_at) SELECT {list}, {stamp} FROM {};\n",
                    l.quoted
                )
            })
            .collect()
    };
    tx.batch_execute(&sql)
        .await
        .map_err(|e| PgError::query(db, "record the rows of newly captured partitions", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str) -> Column {
        Column {
            name: name.into(),
            type_name: "text".into(),
            needs_value: false,
        }
    }

    #[test]
    fn leaf_function_quotes_names_inside_its_dynamic_statement() {
        let (a, b) = (col("it's"), col("a\"b"));
        let f = leaf_function(&CaptureObjects::for_id(7), &[&a, &b], false);
        // The static part is a literal: the quote in the column name is doubled once more.
        assert!(
            f.contains(r#"EXECUTE 'INSERT INTO drover."delta_7" ("it''s", "a""b", drover_xid"#),
            "{f}"
        );
        assert!(f.contains("format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME)"));
        assert!(f.contains(r#"CREATE OR REPLACE FUNCTION drover."capture_7_partition_truncate"()"#));
        let images = leaf_function(&CaptureObjects::for_id(7), &[&a], true);
        assert!(
            images.contains(r#"("it''s", drover_sign, drover_xid"#),
            "{images}"
        );
        assert!(
            images.contains(r#"SELECT "it''s", -1, txid_current()"#),
            "{images}"
        );
    }

    #[test]
    fn leaves_get_statement_and_truncate_triggers_sub_partitioned_tables_statement_only() {
        let leaves = [
            Leaf {
                quoted: r#""s"."leaf""#.into(),
                leaf: true,
                captured: false,
            },
            Leaf {
                quoted: r#""s"."mid""#.into(),
                leaf: false,
                captured: false,
            },
        ];
        let sql = leaf_triggers(&CaptureObjects::for_id(3), &leaves);
        assert_eq!(sql.matches(r#"ON "s"."leaf""#).count(), 4, "{sql}");
        assert_eq!(sql.matches(r#"ON "s"."mid""#).count(), 3, "{sql}");
        assert!(sql.contains(r#"BEFORE TRUNCATE ON "s"."leaf" FOR EACH STATEMENT EXECUTE PROCEDURE drover."capture_3_partition_truncate"()"#));
    }
}
