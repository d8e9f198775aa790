//! `drover check`: connects to every database of every sync and reports server version,
//! privileges and whether each table exists everywhere with a primary key and the same columns.
//! Exit 1 lists every problem.

use std::collections::HashMap;

use crate::capture::partitions;
use crate::cli::{EXIT_OK, EXIT_PROBLEM};
use crate::config::Config;
use crate::pg::facts::{self, ServerFacts};
use crate::pg::ident::TableName;
use crate::pg::key_nulls;
use crate::pg::schema::{self, TableMeta};
use crate::pg::Endpoint;
use crate::topology;

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
fn print_sources(db: &crate::config::Database) {
    println!("  connection settings from:");
    for line in db.sources.lines() {
        println!("    {line}");
    }
}

pub async fn run(config: &Config) -> anyhow::Result<i32> {
    let syncs = topology::syncs(config);
    let mut problems: Vec<String> = Vec::new();
    let mut clients = HashMap::new();
    let mut server: HashMap<String, ServerFacts> = HashMap::new();

    for (name, db) in &config.databases {
        if !syncs.iter().any(|s| s.involves(name)) {
            println!("database {name}: not used by any sync");
            continue;
        }
        let conn = async {
            let ep = Endpoint::new(name, db)?;
            let mut client = ep.connect("check").await?;
            let f = facts::read(&mut client, name, &db.replica_role).await?;
            Ok::<_, crate::pg::PgError>((client, f))
        };
        match conn.await {
            Ok((client, f)) => {
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
                if let Some(p) = crate::pg::tested::untested(f.version_num) {
                    problems.push(format!("database \"{name}\": {p}"));
                }
                clients.insert(name.clone(), client);
                server.insert(name.clone(), f);
            }
            Err(e) => {
                let what = match e {
                    crate::pg::PgError::Connect { .. } | crate::pg::PgError::Pool { .. } => {
                        "UNREACHABLE"
                    }
                    _ => "PROBLEM",
                };
                println!("database {name}: {what}");
                print_sources(db);
                problems.push(e.to_string());
            }
        }
    }

    for sync in &syncs {
        println!(
            "sync {}: {} -> {}",
            sync.name,
            sync.sources.join(", "),
            sync.targets.join(", ")
        );
        if let Some(f) = server.get(&sync.sources[0]) {
            let expiry = crate::actors::sync::lease::Expiry::for_version(f.version_num);
            println!(
                "  lease: on {}, expires by {}",
                sync.sources[0],
                expiry.describe()
            );
        }
        for table in &sync.tables {
            let mut reference: Option<(String, TableMeta)> = None;
            let mut table_ok = true;
            let mut notes: Vec<String> = Vec::new();
            for db in sync.databases() {
                let (Some(client), Some(f)) = (clients.get(db), server.get(db)) else {
                    continue;
                };
                match schema::describe(client, db, table, f.version_num, sync.key_of(table)).await {
                    Err(e) => {
                        table_ok = false;
                        problems.push(e.to_string());
                    }
                    Ok(None) => {
                        table_ok = false;
                        problems.push(format!(
                            "database \"{db}\": table {table} does not exist (sync {})",
                            sync.name
                        ));
                    }
                    Ok(Some(meta)) => {
                        if let Err(e) = key_nulls::refuse_nullable(client, db, &meta).await {
                            table_ok = false;
                            problems.push(e.to_string());
                        }
                        let deltas = sync.delta_columns.get(table);
                        if let Err(m) = crate::capture::increments::columns(&meta, deltas) {
                            table_ok = false;
                            problems.push(format!("database \"{db}\": {m}"));
                        }
                        if sync.is_source(db) {
                            table_ok &=
                                uncaptured_partitions(client, db, table, &mut problems).await;
                        }
                        match &reference {
                            None => reference = Some((db.to_string(), meta)),
                            Some((rdb, rmeta)) => {
                                let mut diffs = schema::differences(rmeta, &meta);
                                if sync.sources.iter().any(|s| s == db) {
                                    diffs.extend(schema::only_here(rmeta, &meta));
                                } else {
                                    notes.extend(drift_note(db, rmeta, &meta));
                                }
                                if !diffs.is_empty() {
                                    table_ok = false;
                                    problems.push(format!(
                                        "database \"{db}\": table {table} differs from database \"{rdb}\": {}",
                                        diffs.join("; ")
                                    ));
                                }
                            }
                        }
                    }
                }
            }
            let key = reference
                .as_ref()
                .map(|(_, m)| m.method.describe(&m.key))
                .unwrap_or_default();
            let verdict = match (&reference, table_ok) {
                (_, false) => "PROBLEM".to_string(),
                (None, true) => "not checked (no database of the sync reachable)".to_string(),
                (Some(_), true) => format!("ok, {key}"),
            };
            println!("  {table}: {verdict}");
            for n in &notes {
                println!("    information: {n}");
            }
        }
        crate::cli::check_copy::print_copy_methods(sync, &clients).await;
    }

    for sync in &syncs {
        for seq in &sync.sequences {
            for db in sync.databases() {
                let Some(client) = clients.get(db) else {
                    continue;
                };
                let exists: bool = client
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                         WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'S')",
                        &[&seq.schema, &seq.name],
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("database \"{db}\": {e}"))?
                    .get(0);
                if !exists {
                    problems.push(format!(
                        "database \"{db}\": sequence {seq} does not exist (sync {})",
                        sync.name
                    ));
                }
            }
            if sync.interleaves() {
                let found = crate::cli::interleave::check(sync, seq, &clients).await;
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
    }

    if problems.is_empty() {
        println!("no problems found");
        Ok(EXIT_OK)
    } else {
        println!("{} problem(s):", problems.len());
        for p in &problems {
            println!("  - {p}");
        }
        Ok(EXIT_PROBLEM)
    }
}
