//! Capture on sources and bookkeeping on targets: what `drover install` creates and
//! `drover uninstall` removes. Each database is changed in one transaction, so a failed install
//! leaves it as it was; re-running after a config change adds new tables and drops removed ones.

pub mod apply_errors;
pub mod catalog;
pub mod images;
pub mod increments;
pub mod partition_list;
pub mod partitions;
pub mod secret;
pub mod sql;
pub mod trust;

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::Transaction;

use crate::config::ReplicaRoleConfig;
use crate::pg::error::PgError;
use crate::pg::facts::ServerFacts;
use crate::pg::ident::{quote_ident, TableName};
use crate::pg::schema::{Column, KeyMethod, TableMeta};
use crate::pg::{facts, schema, Endpoint};
use crate::topology::SyncPlan;
use sql::{CaptureMode, CaptureObjects, OnTable};

/// Serialises concurrent installs on one database (an arbitrary constant key).
const INSTALL_LOCK_KEY: i64 = 0x6472_6f76_6572_0001;

/// The tables an install captures on one database and their configured keys.
struct Wanted<'a> {
    tables: &'a BTreeSet<TableName>,
    keys: &'a BTreeMap<TableName, Vec<String>>,
    /// `[relgroups.*.delta_columns]` of the captured tables.
    deltas: &'a BTreeMap<TableName, Vec<String>>,
}

/// A row of `drover.tables`: a table captured by an earlier install.
struct Installed {
    id: i32,
    table: TableName,
    key_columns: Vec<String>,
    key_types: Vec<String>,
}

/// What an install did to one database, for the command's report.
#[derive(Debug, Default)]
pub struct InstallReport {
    pub added: Vec<String>,
    pub kept: Vec<String>,
    pub rebuilt: Vec<String>,
    pub removed: Vec<String>,
    /// Partitions of already captured tables that this install captured (created or attached
    /// since the last install); the rows they held are sent.
    pub new_partitions: Vec<String>,
    /// Recorded partitions since detached or dropped: their tables are reloaded on targets.
    pub gone_partitions: Vec<String>,
    pub progress_rows: usize,
    pub capture: Option<CaptureMode>,
}

/// The capture mode for a server, unless `DROVER_CAPTURE_MODE=row|statement` overrides it
/// (row capture also serves PostgreSQL 9.x; the override lets tests exercise it on new servers).
pub fn capture_mode(facts: &ServerFacts) -> CaptureMode {
    match std::env::var("DROVER_CAPTURE_MODE").as_deref() {
        Ok("row") => CaptureMode::Row,
        Ok("statement") if facts.has_transition_tables() => CaptureMode::Statement,
        _ if facts.has_transition_tables() => CaptureMode::Statement,
        _ => CaptureMode::Row,
    }
}

/// Installs (or updates) drover's objects on database `db` for the given syncs.
pub async fn install(endpoint: &Endpoint, syncs: &[SyncPlan]) -> Result<InstallReport, PgError> {
    let db = endpoint.name.as_str();
    let mut client = endpoint.connect("install").await?;
    // Install needs the version only: no replica-role probe.
    let facts = facts::read(&mut client, db, &ReplicaRoleConfig::Off).await?;
    let mode = capture_mode(&facts);
    let tx = client
        .transaction()
        .await
        .map_err(|e| PgError::query(db, "begin install", e))?;
    let q = |purpose: &'static str| move |e| PgError::query(db, purpose, e);
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&INSTALL_LOCK_KEY])
        .await
        .map_err(q("wait for other installs"))?;
    trust::check_schema(&tx, db).await?;
    tx.batch_execute(&sql::catalog())
        .await
        .map_err(q("create the drover schema"))?;
    secret::ensure(&tx, db).await?;

    let mut report = InstallReport::default();
    let captured: BTreeSet<TableName> = syncs
        .iter()
        .filter(|s| s.is_source(db))
        .flat_map(|s| s.tables.iter().cloned())
        .collect();
    let configured: BTreeMap<TableName, Vec<String>> = syncs
        .iter()
        .filter(|s| s.is_source(db))
        .flat_map(|s| s.keys.clone())
        .collect();
    let deltas: BTreeMap<TableName, Vec<String>> = (syncs.iter())
        .filter(|s| s.is_source(db))
        .flat_map(|s| s.delta_columns.clone())
        .collect();
    if !captured.is_empty() {
        report.capture = Some(mode);
    }
    let wanted = Wanted {
        tables: &captured,
        keys: &configured,
        deltas: &deltas,
    };
    install_capture(&tx, db, &facts, mode, &wanted, &mut report).await?;
    install_consumers(&tx, db, syncs).await?;
    report.progress_rows = install_progress(&tx, db, syncs).await?;
    tx.commit().await.map_err(q("commit install"))?;
    Ok(report)
}

/// Where an install runs: its transaction, database, server and capture mode.
struct Site<'a, 't> {
    tx: &'a Transaction<'t>,
    db: &'a str,
    facts: &'a ServerFacts,
    mode: CaptureMode,
}

/// Creates delta tables, functions and triggers for `wanted`; drops those no longer wanted.
async fn install_capture(
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

/// One purge-horizon row per (sync, receiving database, table) of what this database sends.
async fn install_consumers(
    tx: &Transaction<'_>,
    db: &str,
    syncs: &[SyncPlan],
) -> Result<(), PgError> {
    let mut wanted = Vec::new();
    for s in syncs.iter().filter(|s| s.is_source(db)) {
        for target in s.receivers_of(db) {
            for t in &s.tables {
                wanted.push((s.name.clone(), target.to_string(), t.to_string()));
            }
        }
    }
    sync_rows(
        tx,
        db,
        "drover.consumers",
        "target",
        &wanted,
        "register receivers",
    )
    .await?;
    Ok(())
}

/// One progress row per (sync, sending database, table) of what this database receives,
/// starting at "nothing applied" so the first round applies everything since install.
async fn install_progress(
    tx: &Transaction<'_>,
    db: &str,
    syncs: &[SyncPlan],
) -> Result<usize, PgError> {
    let mut wanted = Vec::new();
    for s in syncs.iter().filter(|s| s.involves(db)) {
        for source in s.senders_to(db) {
            for t in &s.tables {
                wanted.push((s.name.clone(), source.to_string(), t.to_string()));
            }
        }
    }
    sync_rows(
        tx,
        db,
        "drover.progress",
        "source",
        &wanted,
        "register progress",
    )
    .await?;
    Ok(wanted.len())
}

/// Makes the rows of `table` (keyed by sync, `peer`, table_name) exactly `wanted`: inserts
/// missing ones with their defaults, deletes the rest, keeps existing ones untouched.
async fn sync_rows(
    tx: &Transaction<'_>,
    db: &str,
    table: &str,
    peer: &str,
    wanted: &[(String, String, String)],
    purpose: &str,
) -> Result<(), PgError> {
    let syncs: Vec<&str> = wanted.iter().map(|w| w.0.as_str()).collect();
    let peers: Vec<&str> = wanted.iter().map(|w| w.1.as_str()).collect();
    let tables: Vec<&str> = wanted.iter().map(|w| w.2.as_str()).collect();
    let peer = quote_ident(peer);
    tx.execute(
        &format!(
            "DELETE FROM {table} WHERE (sync, {peer}, table_name) NOT IN \
             (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))"
        ),
        &[&syncs, &peers, &tables],
    )
    .await
    .map_err(|e| PgError::query(db, purpose, e))?;
    tx.execute(
        &format!(
            "INSERT INTO {table} (sync, {peer}, table_name) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING"
        ),
        &[&syncs, &peers, &tables],
    )
    .await
    .map_err(|e| PgError::query(db, purpose, e))?;
    Ok(())
}

/// Removes everything drover created on a database: triggers, functions, delta and catalog
/// tables. Idempotent.
pub async fn uninstall(endpoint: &Endpoint) -> Result<usize, PgError> {
    let db = endpoint.name.as_str();
    let mut client = endpoint.connect("uninstall").await?;
    // Install needs the version only: no replica-role probe.
    let facts = facts::read(&mut client, db, &ReplicaRoleConfig::Off).await?;
    if !facts.installed {
        return Ok(0);
    }
    let tx = client
        .transaction()
        .await
        .map_err(|e| PgError::query(db, "begin uninstall", e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&INSTALL_LOCK_KEY])
        .await
        .map_err(|e| PgError::query(db, "wait for other installs", e))?;
    let tables: Vec<TableName> = tx
        .query("SELECT schema_name, rel_name FROM drover.tables", &[])
        .await
        .map_err(|e| PgError::query(db, "read drover.tables", e))?
        .into_iter()
        .map(|r| TableName {
            schema: r.get(0),
            name: r.get(1),
        })
        .collect();
    let mut ddl = String::new();
    for t in &tables {
        if schema::describe(tx.client(), db, t, facts.version_num, None)
            .await?
            .is_some()
        {
            ddl.push_str(&sql::drop_triggers(t));
            if let Some(leaves) = partitions::leaves(tx.client(), db, t).await? {
                ddl.push_str(&partitions::drop_leaf_triggers(&leaves));
            }
        }
    }
    ddl.push_str("DROP SCHEMA IF EXISTS drover CASCADE;\n");
    tx.batch_execute(&ddl)
        .await
        .map_err(|e| PgError::query(db, "remove the drover schema", e))?;
    tx.commit()
        .await
        .map_err(|e| PgError::query(db, "commit uninstall", e))?;
    Ok(tables.len())
}
