//! Capture on sources and bookkeeping on targets: what `drover install` creates and
//! `drover uninstall` removes. Each database is changed in one transaction, so a failed install
//! leaves it as it was; re-running after a config change adds new tables and drops removed ones.

pub mod apply_errors;
pub mod catalog;
pub mod images;
pub mod increments;
pub mod partition_list;
pub mod partitions;
mod report;
pub mod secret;
pub mod sql;
mod table_capture;
pub mod trust;

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::Transaction;

use crate::config::ReplicaRoleConfig;
use crate::pg::error::PgError;
use crate::pg::facts::ServerFacts;
use crate::pg::ident::{quote_ident, TableName};
use crate::pg::{facts, schema, Endpoint};
use crate::topology::SyncPlan;
pub use report::InstallReport;
use sql::CaptureMode;
use table_capture::{install_capture, Wanted};

/// Serialises concurrent installs on one database (an arbitrary constant key).
const INSTALL_LOCK_KEY: i64 = 0x6472_6f76_6572_0001;

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
