//! `drover verify`: proves that every database of a sync holds the same rows, without trusting
//! drover's own bookkeeping (no delta tables, no progress rows: verify works with or without
//! `drover install`).
//!
//! Each database gets one session in a `REPEATABLE READ READ ONLY` transaction, all opened at
//! once, so every table is compared as of one snapshot per database. The first source of the
//! sync is the reference: a key it has that database D lacks is "missing" on D, a key D has that
//! it lacks is "extra", a key with different row contents is "changed". Tables are compared by
//! primary key (or the unique index drover uses), range by range (`compare`), with rows hashed on
//! the servers as `md5` of the row's text under drover's pinned session settings (`sql`). A table
//! with no key is compared as a multiset of row hashes (`multiset`).
//!
//! On a live system the snapshots are taken at slightly different moments and the targets lag
//! the source, so a change in flight shows as a difference. Such a difference disappears when
//! verify runs again after `drover wait`; one that stays is real.

mod compare;
pub mod key;
mod multiset;
pub mod repair;
pub mod sql;

use std::collections::BTreeMap;

use futures::future::join_all;
use serde::Serialize;
use tokio_postgres::Client;

use crate::config::Config;
use crate::pg::error::PgError;
use crate::pg::ident::TableName;
use crate::pg::schema::{self, TableMeta};
use crate::pg::Endpoint;
use crate::topology::SyncPlan;
use compare::{Collector, Side, Table};
use key::KeyShape;
use sql::TableSql;

/// Differing keys listed per table; the rest are only counted.
pub const SHOWN_PER_TABLE: usize = 100;

/// How a key differs on a database, relative to the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// On the reference, not on this database.
    Missing,
    /// On this database, not on the reference.
    Extra,
    /// On both, with different contents.
    Changed,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Extra => "extra",
            Kind::Changed => "changed",
        }
    }
}

/// The result of `drover verify`; `--json` prints it. Field names are a contract: add fields,
/// never rename them.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub sync: String,
    pub identical: bool,
    /// The database the others are compared with: the sync's first source.
    pub reference: String,
    /// Every database compared, the reference first.
    pub databases: Vec<String>,
    pub tables: Vec<TableReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub table: String,
    pub identical: bool,
    /// The first [`SHOWN_PER_TABLE`] differences, in key order range by range.
    pub differences: Vec<Difference>,
    /// All differences found, listed or not.
    pub difference_count: u64,
    /// True when `differences` does not list them all.
    pub truncated: bool,
    /// Rows per database.
    pub rows: BTreeMap<String, i64>,
    /// Why the table could not be compared (missing somewhere, different columns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// `{"col": value}`: integers as JSON numbers, other types as their text.
    pub key: serde_json::Value,
    pub kind: Kind,
    pub database: String,
    /// The key for people: `id=5`.
    #[serde(skip)]
    pub key_text: String,
    /// The key's columns as the server prints them (a whole-row table: its row hash), for
    /// `--repair`.
    #[serde(skip)]
    pub key_parts: sql::KeyText,
}

/// Why verify could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error("sync {sync} has no source to compare with")]
    NoReference { sync: String },
}

/// One database's verify session.
struct Session {
    name: String,
    client: Client,
    version_num: i32,
}

/// Compares `tables` (all in the sync's relgroup) across every database of `plan`.
pub async fn run(
    config: &Config,
    plan: &SyncPlan,
    tables: &[TableName],
) -> Result<Report, VerifyError> {
    run_listing(config, plan, tables, SHOWN_PER_TABLE).await
}

/// `run`, listing up to `limit` differences per table (`--repair` needs them all).
pub async fn run_listing(
    config: &Config,
    plan: &SyncPlan,
    tables: &[TableName],
    limit: usize,
) -> Result<Report, VerifyError> {
    let names: Vec<String> = plan.databases().map(str::to_string).collect();
    let reference = plan
        .sources
        .first()
        .cloned()
        .ok_or_else(|| VerifyError::NoReference {
            sync: plan.name.clone(),
        })?;
    // Opened together, so the snapshots are as close in time as they can be.
    let sessions: Vec<Session> = join_all(names.iter().map(|n| open(config, n)))
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;

    let mut reports = Vec::new();
    for table in tables {
        reports.push(verify_table(&sessions, table, limit).await?);
    }
    for s in &sessions {
        s.client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| PgError::query(&s.name, "end the verify snapshot", e))?;
    }
    Ok(Report {
        sync: plan.name.clone(),
        identical: reports.iter().all(|t| t.identical),
        reference,
        databases: names,
        tables: reports,
    })
}

/// Connects and starts the read-only snapshot.
async fn open(config: &Config, name: &str) -> Result<Session, PgError> {
    let client = Endpoint::new(name, &config.databases[name])?
        .connect("verify")
        .await?;
    // Range reads must use the primary-key index: a sequential scan per range would read the
    // table once per range. Key lookups must be index nested loops for the same reason.
    client
        .batch_execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
             SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; \
             SET LOCAL enable_mergejoin = off",
        )
        .await
        .map_err(|e| PgError::query(name, "start the verify snapshot", e))?;
    // The first query fixes the snapshot; it also reads the version for the catalogs.
    let version_num: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(|e| PgError::query(name, "read server version", e))?
        .get(0);
    Ok(Session {
        name: name.to_string(),
        client,
        version_num,
    })
}

async fn verify_table(
    sessions: &[Session],
    table: &TableName,
    limit: usize,
) -> Result<TableReport, PgError> {
    let display = table.to_string();
    let mut report = TableReport {
        table: display.clone(),
        identical: false,
        differences: Vec::new(),
        difference_count: 0,
        truncated: false,
        rows: BTreeMap::new(),
        problem: None,
    };
    let meta = match definition(sessions, table).await? {
        Ok(meta) => meta,
        Err(problem) => {
            report.problem = Some(problem);
            return Ok(report);
        }
    };
    let mut sqls = Vec::new();
    for s in sessions {
        let collations = key_collations(s, table, &meta.key).await?;
        sqls.push(TableSql::new(&meta, &collations));
    }
    let shape = if meta.whole_row() {
        KeyShape::new([(multiset::ROW_HASH, "text")])
    } else {
        KeyShape::new(
            meta.key_columns()
                .into_iter()
                .map(|c| (c.name.as_str(), c.type_name.as_str())),
        )
    };
    let sides: Vec<Side> = sessions
        .iter()
        .zip(&sqls)
        .map(|(s, sql)| Side {
            name: &s.name,
            client: &s.client,
            sql,
        })
        .collect();
    let mut out = Collector::new(limit);
    let job = Table {
        shape: &shape,
        display: &display,
    };
    let rows = if meta.whole_row() {
        multiset::compare(&display, &sides[0], &sides[1..], &mut out).await?
    } else {
        job.compare(&sides[0], &sides[1..], &mut out).await?
    };
    report.rows = sessions.iter().map(|s| s.name.clone()).zip(rows).collect();
    report.identical = out.count == 0;
    report.difference_count = out.count;
    report.truncated = out.count > out.shown.len() as u64;
    report.differences = out
        .shown
        .into_iter()
        .map(|f| Difference {
            key: shape.to_json(&f.key),
            key_text: shape.display(&f.key),
            kind: f.kind,
            database: f.database,
            key_parts: f.key,
        })
        .collect();
    Ok(report)
}

/// The collation of each key column on one database (`"schema"."name"`), None for types that
/// have none. Only comparisons of two bounds need it spelled out.
async fn key_collations(
    s: &Session,
    table: &TableName,
    key: &[String],
) -> Result<Vec<Option<String>>, PgError> {
    let rows = s
        .client
        .query(
            "SELECT a.attname::text, format('%I.%I', n.nspname, c.collname) \
             FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation \
             JOIN pg_namespace n ON n.oid = c.collnamespace \
             WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped",
            &[&table.quoted()],
        )
        .await
        .map_err(|e| PgError::query(&s.name, format!("read the key collations of {table}"), e))?;
    Ok(key
        .iter()
        .map(|k| {
            rows.iter()
                .find(|r| r.get::<_, String>(0) == *k)
                .map(|r| r.get(1))
        })
        .collect())
}

/// The reference's definition of the table, or why it cannot be compared: missing somewhere, or
/// columns and key that differ from the reference's.
async fn definition(
    sessions: &[Session],
    table: &TableName,
) -> Result<Result<TableMeta, String>, PgError> {
    let mut problems = Vec::new();
    let mut reference: Option<(&str, TableMeta)> = None;
    for s in sessions {
        let Some(meta) = schema::describe(&s.client, &s.name, table, s.version_num, None).await?
        else {
            problems.push(format!("does not exist on database \"{}\"", s.name));
            continue;
        };
        match &reference {
            None => reference = Some((&s.name, meta)),
            Some((ref_name, r)) => {
                let diffs = schema::differences(r, &meta);
                if !diffs.is_empty() {
                    problems.push(format!(
                        "differs on database \"{}\" from \"{ref_name}\": {}",
                        s.name,
                        diffs.join("; ")
                    ));
                }
            }
        }
    }
    Ok(match reference {
        Some((_, meta)) if problems.is_empty() => Ok(meta),
        _ => Err(problems.join("; ")),
    })
}
