//! The capture of each table on a source, as `drover install` sets it up: its delta table,
//! capture function and triggers (on the partitions too for a partitioned table) and its row
//! of `drover.tables`; tables no longer replicated lose theirs.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::Transaction;

use super::report::InstallReport;
use super::sql::{self, CaptureMode, CaptureObjects, OnTable};
use super::{images, increments, partition_list, partitions};
use crate::pg::error::PgError;
use crate::pg::facts::ServerFacts;
use crate::pg::ident::TableName;
use crate::pg::schema::{self, Column, KeyMethod, TableMeta};

/// The tables an install captures on one database and their configured keys.
pub(super) struct Wanted<'a> {
    pub(super) tables: &'a BTreeSet<TableName>,
    pub(super) keys: &'a BTreeMap<TableName, Vec<String>>,
    /// `[relgroups.*.delta_columns]` of the captured tables.
    pub(super) deltas: &'a BTreeMap<TableName, Vec<String>>,
}

/// A row of `drover.tables`: a table captured by an earlier install.
struct Installed {
    id: i32,
    table: TableName,
    key_columns: Vec<String>,
    key_types: Vec<String>,
}

/// Where an install runs: its transaction, database, server and capture mode.
pub(super) struct Site<'a, 't> {
    tx: &'a Transaction<'t>,
    db: &'a str,
    facts: &'a ServerFacts,
    mode: CaptureMode,
}

/// Creates delta tables, functions and triggers for `wanted`; drops those no longer wanted.
pub(super) async fn install_capture(
    tx: &Transaction<'_>,
    db: &str,
    facts: &ServerFacts,
    mode: CaptureMode,
    wanted: &Wanted<'_>,
    report: &mut InstallReport,
) -> Result<(), PgError> {
    let site = Site {
        tx,
        db,
        facts,
        mode,
    };
    let existing = read_installed(tx, db).await?;
    for (name, installed) in &existing {
        if !wanted.tables.contains(&installed.table) {
            remove_capture(&site, name, installed).await?;
            report.removed.push(name.clone());
        }
    }
    for table in wanted.tables {
        install_table(&site, table, wanted, &existing, report).await?;
    }
    Ok(())
}

/// The tables an earlier install captured, by `drover.tables.table_name`.
async fn read_installed(
    tx: &Transaction<'_>,
    db: &str,
) -> Result<BTreeMap<String, Installed>, PgError> {
    Ok(tx
        .query(
            "SELECT table_name, id, schema_name, rel_name, key_columns, key_types FROM drover.tables",
            &[],
        )
        .await
        .map_err(|e| PgError::query(db, "read drover.tables", e))?
        .into_iter()
        .map(|r| {
            let installed = Installed {
                id: r.get(1),
                table: TableName {
                    schema: r.get(2),
                    name: r.get(3),
                },
                key_columns: r.get(4),
                key_types: r.get(5),
            };
            (r.get(0), installed)
        })
        .collect())
}

/// Drops the triggers, functions and delta table of a table no longer captured (the triggers
/// only if the table still exists) and forgets it.
async fn remove_capture(
    site: &Site<'_, '_>,
    name: &str,
    installed: &Installed,
) -> Result<(), PgError> {
    let (tx, db) = (site.tx, site.db);
    let (id, table) = (&installed.id, &installed.table);
    let objects = CaptureObjects::for_id(*id);
    let exists = schema::describe(tx.client(), db, table, site.facts.version_num, None)
        .await?
        .is_some();
    let mut ddl = String::new();
    if exists {
        ddl.push_str(&sql::drop_triggers(table));
        if let Some(leaves) = partitions::leaves(tx.client(), db, table).await? {
            ddl.push_str(&partitions::drop_leaf_triggers(&leaves));
        }
    }
    partition_list::forget(tx, db, table, &objects).await?;
    ddl.push_str(&format!(
        "DROP FUNCTION IF EXISTS {}();\nDROP FUNCTION IF EXISTS {}();\nDROP TABLE IF EXISTS {};\n",
        objects.function_quoted, objects.leaf_function_quoted, objects.delta_quoted
    ));
    tx.batch_execute(&ddl)
        .await
        .map_err(|e| PgError::query(db, format!("remove capture of {name}"), e))?;
    tx.execute("DELETE FROM drover.tables WHERE id = $1", &[id])
        .await
        .map_err(|e| PgError::query(db, format!("remove capture of {name}"), e))?;
    Ok(())
}

/// The key a delta table records: the table's key, or for a whole-row table every column,
/// marked by a leading "*" in `names`.
struct DeltaKey<'m> {
    columns: Vec<&'m Column>,
    names: Vec<String>,
    types: Vec<String>,
}

impl<'m> DeltaKey<'m> {
    fn of(meta: &'m TableMeta) -> DeltaKey<'m> {
        // Whole-row tables record every column, with a sign, in place of a key.
        let columns: Vec<&Column> = if meta.whole_row() {
            meta.columns.iter().collect()
        } else {
            meta.key_columns()
        };
        // A whole-row delta is marked by its leading "*" (its columns are the table's).
        let mut names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
        if meta.whole_row() {
            names.insert(0, "*".into());
        }
        let types = columns.iter().map(|c| c.type_name.clone()).collect();
        DeltaKey {
            columns,
            names,
            types,
        }
    }
}

/// What an install decided for one captured table: the inputs of its DDL and bookkeeping.
struct TablePlan<'a> {
    table: &'a TableName,
    name: &'a str,
    purpose: &'a str,
    meta: &'a TableMeta,
    key: &'a DeltaKey<'a>,
    incs: &'a [&'a Column],
    id: i32,
    objects: CaptureObjects,
    /// The delta table is (re)created, so it starts empty.
    fresh_delta: bool,
    /// The partitions of a partitioned table, read before the DDL replaces their triggers.
    leaves: Option<Vec<partitions::Leaf>>,
    on: OnTable,
}

/// Captures one wanted table: its delta table, functions and triggers, and its row of
/// `drover.tables`.
async fn install_table(
    site: &Site<'_, '_>,
    table: &TableName,
    wanted: &Wanted<'_>,
    existing: &BTreeMap<String, Installed>,
    report: &mut InstallReport,
) -> Result<(), PgError> {
    let (tx, db) = (site.tx, site.db);
    let name = table.to_string();
    let configured = wanted.keys.get(table).map(Vec::as_slice);
    let meta = describe_captured(site, table, &name, configured).await?;
    let key = DeltaKey::of(&meta);
    let incs =
        increments::columns(&meta, wanted.deltas.get(table)).map_err(|m| PgError::schema(db, m))?;
    let purpose = format!("install capture of {name}");
    let (id, fresh_delta) =
        claim_id(site, &name, existing.get(&name), &key, &purpose, report).await?;
    // Read before the DDL below replaces the triggers: which leaves were captured already.
    let leaves = partitions::leaves(tx.client(), db, table).await?;
    let on = match leaves {
        Some(_) => OnTable::Partitioned,
        None => OnTable::from(site.mode),
    };
    let plan = TablePlan {
        table,
        name: &name,
        purpose: &purpose,
        meta: &meta,
        key: &key,
        incs: &incs,
        id,
        objects: CaptureObjects::for_id(id),
        fresh_delta,
        leaves,
        on,
    };
    tx.batch_execute(&capture_ddl(&plan))
        .await
        .map_err(|e| PgError::query(db, &purpose, e))?;
    update_partitions(site, &plan, report).await?;
    record_table(site, &plan).await
}

/// The table as it is now, refused if it is missing or lacks a configured key column.
async fn describe_captured(
    site: &Site<'_, '_>,
    table: &TableName,
    name: &str,
    configured: Option<&[String]>,
) -> Result<TableMeta, PgError> {
    let db = site.db;
    let meta = schema::describe(
        site.tx.client(),
        db,
        table,
        site.facts.version_num,
        configured,
    )
    .await?
    .ok_or_else(|| PgError::schema(db, format!("table {name} does not exist")))?;
    if meta.method == KeyMethod::Configured && meta.key_columns().len() != meta.key.len() {
        return Err(PgError::schema(
            db,
            format!(
                "table {name}: a key column configured under [relgroups.*.keys] does not exist"
            ),
        ));
    }
    Ok(meta)
}

/// The table's id in `drover.tables`, and whether its delta table must be created: kept
/// when the recorded key is unchanged, rebuilt (pending changes dropped) when it changed,
/// new for a table not captured before.
async fn claim_id(
    site: &Site<'_, '_>,
    name: &str,
    installed: Option<&Installed>,
    key: &DeltaKey<'_>,
    purpose: &str,
    report: &mut InstallReport,
) -> Result<(i32, bool), PgError> {
    let (tx, db) = (site.tx, site.db);
    match installed {
        Some(i) if i.key_columns == key.names && i.key_types == key.types => {
            report.kept.push(name.to_owned());
            Ok((i.id, false))
        }
        Some(Installed { id, .. }) => {
            // The key changed: the old delta rows cannot be read with the new key.
            tracing::warn!(database = db, table = %name, "primary key changed since install: delta table rebuilt, pending changes of this table dropped; its targets stop until `drover copy --table` re-seeds them");
            let objects = CaptureObjects::for_id(*id);
            tx.batch_execute(&format!("DROP TABLE IF EXISTS {};", objects.delta_quoted))
                .await
                .map_err(|e| PgError::query(db, purpose, e))?;
            tx.execute(sql::HORIZON_PAST_DROPPED, &[&name])
                .await
                .map_err(|e| PgError::query(db, purpose, e))?;
            report.rebuilt.push(name.to_owned());
            Ok((*id, true))
        }
        None => {
            let id: i32 = tx
                .query_one(
                    "SELECT nextval(pg_get_serial_sequence('drover.tables', 'id'))::int",
                    &[],
                )
                .await
                .map_err(|e| PgError::query(db, purpose, e))?
                .get(0);
            report.added.push(name.to_owned());
            Ok((id, true))
        }
    }
}

/// The DDL that (re)creates a table's delta table (when fresh), capture function and
/// triggers, on the partitions too for a partitioned table.
fn capture_ddl(plan: &TablePlan<'_>) -> String {
    let (table, objects, meta, key) = (plan.table, &plan.objects, plan.meta, &plan.key.columns);
    let mut ddl = String::new();
    if let Some(leaves) = &plan.leaves {
        // The parent's first: a row trigger a row-mode install put there was cloned to
        // the partitions (11+) and goes with it.
        ddl.push_str(&sql::drop_triggers(table));
        ddl.push_str(&partitions::drop_leaf_triggers(leaves));
    }
    if meta.whole_row() {
        if plan.fresh_delta {
            ddl.push_str(&images::create_delta(objects, &meta.columns));
        }
        ddl.push_str(&images::create_capture(
            table,
            objects,
            &meta.columns,
            plan.on,
        ));
    } else {
        if plan.fresh_delta {
            ddl.push_str(&sql::create_delta(objects, key));
        }
        if plan.incs.is_empty() {
            ddl.push_str(&sql::create_capture(table, objects, key, plan.on));
        } else {
            ddl.push_str(&increments::add_columns(objects, plan.incs));
            let sql = increments::create_capture(table, objects, meta, key, plan.incs, plan.on);
            ddl.push_str(&sql);
        }
    }
    if let Some(leaves) = &plan.leaves {
        ddl.push_str(&partitions::leaf_function(objects, key, meta.whole_row()));
        ddl.push_str(&partitions::leaf_triggers(objects, leaves));
    }
    ddl
}

/// After the DDL of a partitioned table: records its partitions and sends the rows of those
/// captured for the first time.
async fn update_partitions(
    site: &Site<'_, '_>,
    plan: &TablePlan<'_>,
    report: &mut InstallReport,
) -> Result<(), PgError> {
    let (tx, db, objects) = (site.tx, site.db, &plan.objects);
    let Some(leaves) = &plan.leaves else {
        return Ok(());
    };
    // Partitions detached or dropped since the last install: the table is reloaded.
    let gone = partition_list::refresh(tx, db, plan.table, objects).await?;
    report.gone_partitions.extend(gone);
    if !plan.fresh_delta {
        // A fresh delta starts with the initial copy; a kept one must learn the rows of
        // partitions created or attached since the last install.
        let new: Vec<&partitions::Leaf> = leaves.iter().filter(|l| !l.captured).collect();
        let (key, whole_row) = (&plan.key.columns, plan.meta.whole_row());
        partitions::send_existing_rows(tx, db, objects, key, whole_row, &new).await?;
        report
            .new_partitions
            .extend(new.iter().map(|l| l.quoted.clone()));
    }
    Ok(())
}

/// The table's row of `drover.tables`: its delta table, key, capture mode and increments.
async fn record_table(site: &Site<'_, '_>, plan: &TablePlan<'_>) -> Result<(), PgError> {
    let (tx, db, purpose) = (site.tx, site.db, plan.purpose);
    let (id, table, key) = (&plan.id, plan.table, plan.key);
    let capture = plan.on.body_mode().as_str();
    tx.execute(
        "INSERT INTO drover.tables (id, table_name, schema_name, rel_name, delta_name, key_columns, key_types, capture) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET key_columns = EXCLUDED.key_columns, \
         key_types = EXCLUDED.key_types, capture = EXCLUDED.capture",
        &[id, &plan.name, &table.schema, &table.name, &plan.objects.delta, &key.names, &key.types, &capture],
    )
    .await
    .map_err(|e| PgError::query(db, purpose, e))?;
    let inc_names: Vec<&str> = plan.incs.iter().map(|c| c.name.as_str()).collect();
    tx.execute(
        "UPDATE drover.tables SET delta_columns = $2 WHERE id = $1",
        &[id, &inc_names],
    )
    .await
    .map_err(|e| PgError::query(db, purpose, e))?;
    Ok(())
}
