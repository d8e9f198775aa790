//! `drover check`: connects to every database of every sync and reports server version,
//! privileges and whether each table exists everywhere with a primary key and the same columns.
//! Exit 1 lists every problem.

use std::collections::HashMap;

use crate::capture::partitions;
use crate::cli::{EXIT_OK, EXIT_PROBLEM};
use crate::config::{Config, Database};
use crate::pg::facts::{self, ServerFacts};
use crate::pg::ident::TableName;
use crate::pg::key_nulls;
use crate::pg::schema::{self, TableMeta};
use crate::pg::{Endpoint, PgError};
use crate::topology::{self, SyncPlan};
use tokio_postgres::Client;

/// Names each partition of a captured `table` on source `db` that is not captured, or was
/// detached or dropped since install.
async fn uncaptured_partitions(
    client: &tokio_postgres::Client,
    db: &str,
    table: &TableName,
    problems: &mut Vec<String>,
) -> bool {
    match partitions::problems(client, db, table).await {
        Ok(found) if found.is_empty() => true,
        Ok(found) => {
            for what in found {
                problems.push(format!("database \"{db}\": {what}"));
            }
            false
        }
        Err(e) => {
            problems.push(e.to_string());
            false
        }
    }
}

/// A target's extra columns that rows can leave to their default: tolerated, but said.
fn drift_note(db: &str, source: &TableMeta, target: &TableMeta) -> Option<String> {
    let extra = schema::tolerated_extra(source, target);
    (!extra.is_empty()).then(|| {
        let names: Vec<String> = extra.iter().map(|c| format!("\"{c}\"")).collect();
        format!(
            "database \"{db}\" has columns the source lacks: {} (nullable or with a default: \
             tolerated, they get their default)",
            names.join(", ")
        )
    })
}

/// Where each connection setting came from (never the password itself).
fn print_sources(db: &Database) {
    println!("  connection settings from:");
    for line in db.sources.lines() {
        println!("    {line}");
    }
}

/// The open connections of `drover check`, keyed by database name, with what each server
/// said about itself; a database missing here was unreachable and the later checks skip it.
struct Reached {
    clients: HashMap<String, Client>,
    server: HashMap<String, ServerFacts>,
}

pub async fn run(config: &Config) -> anyhow::Result<i32> {
    let syncs = topology::syncs(config);
    let mut problems: Vec<String> = Vec::new();
    let reached = connect_all(config, &syncs, &mut problems).await;
    for sync in &syncs {
        check_sync_tables(sync, &reached, &mut problems).await;
    }
    for sync in &syncs {
        check_sequences(sync, &reached.clients, &mut problems).await?;
    }
    Ok(report(&problems))
}

/// Connects to every database some sync uses and prints what each server is; one that cannot
/// be reached or read is a problem.
async fn connect_all(config: &Config, syncs: &[SyncPlan], problems: &mut Vec<String>) -> Reached {
    let mut reached = Reached {
        clients: HashMap::new(),
        server: HashMap::new(),
    };
    for (name, db) in &config.databases {
        if !syncs.iter().any(|s| s.involves(name)) {
            println!("database {name}: not used by any sync");
            continue;
        }
        match connect_one(name, db).await {
            Ok((client, f)) => {
                print_database(name, db, &f);
                if let Some(p) = crate::pg::tested::untested(f.version_num) {
                    problems.push(format!("database \"{name}\": {p}"));
                }
                reached.clients.insert(name.clone(), client);
                reached.server.insert(name.clone(), f);
            }
            Err(e) => {
                let what = match e {
                    PgError::Connect { .. } | PgError::Pool { .. } => "UNREACHABLE",
                    _ => "PROBLEM",
                };
                println!("database {name}: {what}");
                print_sources(db);
                problems.push(e.to_string());
            }
        }
    }
    reached
}

/// One connection for the checks, with the server's facts read through it.
async fn connect_one(name: &str, db: &Database) -> Result<(Client, ServerFacts), PgError> {
    let ep = Endpoint::new(name, db)?;
    let mut client = ep.connect("check").await?;
    let f = facts::read(&mut client, name, &db.replica_role).await?;
    Ok((client, f))
}

/// The server, role and install state of one reachable database.
fn print_database(name: &str, db: &Database, f: &ServerFacts) {
    println!(
        "database {name} ({}:{}/{} as {}): PostgreSQL {}{}",
        db.host,
        db.port,
        db.dbname,
        f.user,
        f.version,
        if f.superuser { ", superuser" } else { "" }
    );
    println!(
        "  session_replication_role: {}",
        if f.replica_role == crate::pg::facts::ReplicaRole::Set {
            "yes"
        } else {
            "no"
        }
    );
    println!("  apply method: {}", f.replica_role.describe());
    print_sources(db);
    println!(
        "  drover schema: {}",
        if f.installed {
            "installed"
        } else {
            "not installed (run drover install)"
        }
    );
}

/// Prints the sync, its lease and a verdict per table, then how each target would be copied.
async fn check_sync_tables(sync: &SyncPlan, reached: &Reached, problems: &mut Vec<String>) {
    println!(
        "sync {}: {} -> {}",
        sync.name,
        sync.sources.join(", "),
        sync.targets.join(", ")
    );
    if let Some(f) = reached.server.get(&sync.sources[0]) {
        let expiry = crate::actors::sync::lease::Expiry::for_version(f.version_num);
        println!(
            "  lease: on {}, expires by {}",
            sync.sources[0],
            expiry.describe()
        );
    }
    for table in &sync.tables {
        check_table(sync, table, reached, problems).await;
    }
    crate::cli::check_copy::print_copy_methods(sync, &reached.clients).await;
}

/// Checks one table on every reachable database of the sync, comparing each with the first
/// one described (the reference), and prints its verdict.
async fn check_table(
    sync: &SyncPlan,
    table: &TableName,
    reached: &Reached,
    problems: &mut Vec<String>,
) {
    let mut reference: Option<(String, TableMeta)> = None;
    let mut table_ok = true;
    let mut notes: Vec<String> = Vec::new();
    for db in sync.databases() {
        let (Some(client), Some(f)) = (reached.clients.get(db), reached.server.get(db)) else {
            continue;
        };
        let meta =
            match schema::describe(client, db, table, f.version_num, sync.key_of(table)).await {
                Err(e) => {
                    table_ok = false;
                    problems.push(e.to_string());
                    continue;
                }
                Ok(None) => {
                    table_ok = false;
                    problems.push(format!(
                        "database \"{db}\": table {table} does not exist (sync {})",
                        sync.name
                    ));
                    continue;
                }
                Ok(Some(meta)) => meta,
            };
        table_ok &= check_table_on(sync, client, db, table, &meta, problems).await;
        match &reference {
            None => reference = Some((db.to_string(), meta)),
            Some(reference) => {
                let here = (db, &meta);
                table_ok &= same_as_reference(sync, table, here, reference, &mut notes, problems);
            }
        }
    }
    print_table_verdict(table, reference.as_ref().map(|(_, m)| m), table_ok, &notes);
}

/// The checks of one table that need only its own database: no nullable key column, usable
/// increment columns and, on a source, every partition captured.
async fn check_table_on(
    sync: &SyncPlan,
    client: &Client,
    db: &str,
    table: &TableName,
    meta: &TableMeta,
    problems: &mut Vec<String>,
) -> bool {
    let mut ok = true;
    if let Err(e) = key_nulls::refuse_nullable(client, db, meta).await {
        ok = false;
        problems.push(e.to_string());
    }
    let deltas = sync.delta_columns.get(table);
    if let Err(m) = crate::capture::increments::columns(meta, deltas) {
        ok = false;
        problems.push(format!("database \"{db}\": {m}"));
    }
    if sync.is_source(db) {
        ok &= uncaptured_partitions(client, db, table, problems).await;
    }
    ok
}

/// Compares a table on `db` with the reference copy: a source must match it exactly, a
/// target may have tolerated extra columns (a note, not a problem).
fn same_as_reference(
    sync: &SyncPlan,
    table: &TableName,
    (db, meta): (&str, &TableMeta),
    (rdb, rmeta): &(String, TableMeta),
    notes: &mut Vec<String>,
    problems: &mut Vec<String>,
) -> bool {
    let mut diffs = schema::differences(rmeta, meta);
    if sync.sources.iter().any(|s| s == db) {
        diffs.extend(schema::only_here(rmeta, meta));
    } else {
        notes.extend(drift_note(db, rmeta, meta));
    }
    if diffs.is_empty() {
        return true;
    }
    problems.push(format!(
        "database \"{db}\": table {table} differs from database \"{rdb}\": {}",
        diffs.join("; ")
    ));
    false
}

/// `  TABLE: VERDICT` and the notes under it; `reference` is the table as first described.
fn print_table_verdict(
    table: &TableName,
    reference: Option<&TableMeta>,
    table_ok: bool,
    notes: &[String],
) {
    let key = reference
        .map(|m| m.method.describe(&m.key))
        .unwrap_or_default();
    let verdict = match (reference, table_ok) {
        (_, false) => "PROBLEM".to_string(),
        (None, true) => "not checked (no database of the sync reachable)".to_string(),
        (Some(_), true) => format!("ok, {key}"),
    };
    println!("  {table}: {verdict}");
    for n in notes {
        println!("    information: {n}");
    }
}

/// Checks each sequence of the sync exists everywhere and can be replicated with its
/// sources: one source, or several masters interleaving their values.
async fn check_sequences(
    sync: &SyncPlan,
    clients: &HashMap<String, Client>,
    problems: &mut Vec<String>,
) -> anyhow::Result<()> {
    for seq in &sync.sequences {
        for db in sync.databases() {
            let Some(client) = clients.get(db) else {
                continue;
            };
            if !sequence_exists(client, db, seq).await? {
                problems.push(format!(
                    "database \"{db}\": sequence {seq} does not exist (sync {})",
                    sync.name
                ));
            }
        }
        if sync.interleaves() {
            let found = crate::cli::interleave::check(sync, seq, clients).await;
            if found.is_empty() {
                println!(
                    "  sequence {seq}: interleaved on the masters, INCREMENT BY {}",
                    sync.sequence_step
                );
            }
            problems.extend(found);
        } else if sync.sources.len() > 1 {
            problems.push(format!(
                "sync {}: sequence {seq}: sequences follow one source; with several masters set sequence_mode = \"interleave\" in [relgroups.{}] and run drover install (or remove the sequence and give each master its own range)",
                sync.name, sync.relgroup
            ));
        } else {
            println!("  sequence {seq}: follows {}", sync.sources[0]);
        }
    }
    Ok(())
}

async fn sequence_exists(client: &Client, db: &str, seq: &TableName) -> anyhow::Result<bool> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'S')",
            &[&seq.schema, &seq.name],
        )
        .await
        .map_err(|e| anyhow::anyhow!("database \"{db}\": {e}"))?
        .get(0))
}

/// Prints the problem list (or that there is none) and returns the exit code.
fn report(problems: &[String]) -> i32 {
    if problems.is_empty() {
        println!("no problems found");
        EXIT_OK
    } else {
        println!("{} problem(s):", problems.len());
        for p in problems {
            println!("  - {p}");
        }
        EXIT_PROBLEM
    }
}
