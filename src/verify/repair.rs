//! `drover verify SYNC --repair [--dry-run]`: makes every key verify found different equal to
//! the reference (the sync's first source), the way a round applies changes.
//!
//! The reference's current rows of the differing keys are read under one REPEATABLE READ
//! snapshot. Each other database then gets one transaction, opened with the apply session's
//! settings (`round::apply::apply_session`: the loop guard, so capture on that database does
//! not record the repair as a change of its own, and `session_replication_role = replica`
//! where allowed) and holding the statements a small round would send
//! (`round::small`, `round::in_place` where foreign keys are live): deletes children first,
//! inserts or in-place updates parents first (`round::plan::fk_order`). A table without a key
//! has the rows of each differing row hash deleted and the reference's copies inserted.
//!
//! The repair must not race the sync's rounds (a round could apply a newer row that the repair
//! then overwrites with the older one it read), so the caller holds the sync's lease while it
//! applies. Progress rows are not touched: changes committed after the repair's snapshot are
//! still pending and the next round applies them.

use std::collections::HashMap;

use serde::Serialize;

use crate::config::Config;
use crate::pg::connect::{checkout, Pool};
use crate::pg::error::PgError;
use crate::pg::facts::{self, ReplicaRole};
use crate::pg::ident::TableName;
use crate::pg::{schema, simple, Endpoint};
use crate::round::plan::{fk_order, Side, TablePlan};
use crate::round::small::{self, TextRow};
use crate::topology::SyncPlan;
use crate::verify::sql::{KeyText, TableSql};
use crate::verify::{Difference, Kind, Report};

/// Differences listed per table and pass for `--repair` (verify shows 100).
pub const REPAIR_LISTED: usize = 100_000;

/// Keys per statement when reading the reference's rows.
const READ_CHUNK: usize = 1_000;

/// What the repair does to one key on one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Insert,
    Update,
    Delete,
}

/// One change, as printed.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub table: String,
    pub database: String,
    pub key: serde_json::Value,
    pub action: Action,
    #[serde(skip)]
    pub key_text: String,
}

/// The repair's SQL for one database (one transaction) and the changes it makes.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseRepair {
    pub database: String,
    pub changes: Vec<Change>,
    /// The transaction's statements (commit_apply adds the replica role's reset).
    #[serde(skip)]
    pub sql: String,
    /// What runs before COMMIT: resetting a helper-set replica role.
    #[serde(skip)]
    pub end_sql: Option<String>,
    /// Set when its transaction failed (rolled back, nothing changed there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DatabaseRepair {
    /// The whole transaction as a script, for `--dry-run`.
    pub fn script(&self) -> String {
        let end = self
            .end_sql
            .as_deref()
            .map(|e| format!("{};\n", e.trim_end().trim_end_matches(';')))
            .unwrap_or_default();
        format!("BEGIN;\n{}{end}COMMIT;", self.sql)
    }
}

/// A database of the sync, connected.
struct Db {
    name: String,
    pool: Pool,
    version_num: i32,
    role: ReplicaRole,
}

/// One differing table: its plan, its verify SQL (tables without a key are repaired by row
/// hash) and the reference's rows of its differing keys.
struct Work<'a> {
    plan: TablePlan,
    hashes: Option<TableSql>,
    diffs: Vec<&'a Difference>,
    /// Key (whole-row tables: row hash) -> the reference's rows with it.
    rows: HashMap<KeyText, Vec<TextRow>>,
}

/// Plans (and unless `dry_run`, applies) the repair of every difference in `report`.
/// Tables verify could not compare are left out (the caller prints their problem).
pub async fn repair(
    config: &Config,
    sync: &SyncPlan,
    report: &Report,
    dry_run: bool,
) -> anyhow::Result<Vec<DatabaseRepair>> {
    let dbs = connect(config, sync).await?;
    let mut works = plan_tables(sync, report, &dbs).await?;
    if works.is_empty() {
        return Ok(Vec::new());
    }
    read_reference(&dbs[0], &mut works).await?;
    let mut out = Vec::new();
    for db in &dbs[1..] {
        let mut r = statements(&sync.name, db, &works);
        if r.changes.is_empty() {
            continue;
        }
        if !dry_run {
            if let Err(e) = apply(db, &r.sql).await {
                r.error = Some(e.to_string());
            }
        }
        out.push(r);
    }
    Ok(out)
}

/// Every database of the sync, the reference first, with its apply method.
async fn connect(config: &Config, sync: &SyncPlan) -> anyhow::Result<Vec<Db>> {
    let mut dbs = Vec::new();
    for name in sync.databases() {
        let ep = Endpoint::new(name, &config.databases[name])?;
        let pool = ep.pool("repair", 2);
        let f = {
            let mut c = checkout(&pool, name).await?;
            facts::read(&mut c, name, &ep.replica_role).await?
        };
        dbs.push(Db {
            name: name.to_string(),
            pool,
            version_num: f.version_num,
            role: f.replica_role,
        });
    }
    Ok(dbs)
}

/// A plan for each differing table, parents first.
async fn plan_tables<'a>(
    sync: &SyncPlan,
    report: &'a Report,
    dbs: &[Db],
) -> anyhow::Result<Vec<Work<'a>>> {
    let (reference, others): (Vec<Side>, Vec<Side>) = (
        vec![side_of(&dbs[0])],
        dbs[1..].iter().map(side_of).collect(),
    );
    let mut plans = Vec::new();
    let mut diffs: HashMap<String, Vec<&Difference>> = HashMap::new();
    for t in report
        .tables
        .iter()
        .filter(|t| !t.identical && t.problem.is_none())
    {
        let name = TableName::parse(&t.table)?;
        let plan = TablePlan::prepare(&name, sync.key_of(&name), &reference, &others).await?;
        same_key(&plan, t.differences.first())?;
        diffs.insert(plan.display.clone(), t.differences.iter().collect());
        plans.push(plan);
    }
    let mut works = Vec::new();
    for plan in fk_order(plans) {
        let hashes = if plan.whole_row {
            let c = checkout(&dbs[0].pool, &dbs[0].name).await?;
            let meta = schema::describe(&c, &dbs[0].name, &plan.name, dbs[0].version_num, None)
                .await?
                .ok_or_else(|| anyhow::anyhow!("table {} disappeared", plan.display))?;
            Some(TableSql::new(&meta, &[]))
        } else {
            None
        };
        works.push(Work {
            diffs: diffs.remove(&plan.display).unwrap_or_default(),
            plan,
            hashes,
            rows: HashMap::new(),
        });
    }
    Ok(works)
}

fn side_of(d: &Db) -> Side<'_> {
    Side {
        name: &d.name,
        pool: &d.pool,
        version_num: d.version_num,
    }
}

/// Verify compares by the primary key (or unique index); a key configured under
/// `[relgroups.*.keys]` that differs from it cannot name verify's keys.
fn same_key(plan: &TablePlan, first: Option<&Difference>) -> anyhow::Result<()> {
    let Some(serde_json::Value::Object(key)) = first.map(|d| &d.key) else {
        return Ok(());
    };
    let names: Vec<String> = key
        .keys()
        .map(|k| crate::pg::ident::quote_ident(k))
        .collect();
    let matches = if plan.whole_row {
        names.len() == 1 && key.contains_key(super::multiset::ROW_HASH)
    } else {
        names.len() == plan.key.len() && plan.key.iter().all(|k| names.contains(k))
    };
    if matches {
        return Ok(());
    }
    anyhow::bail!(
        "table {}: verify compares it by ({}), drover replicates it by ({}): repair it with \
         drover copy --table {}",
        plan.display,
        names.join(", "),
        plan.key.join(", "),
        plan.display
    )
}

/// Reads the reference's current rows of every differing key, under one snapshot.
async fn read_reference(reference: &Db, works: &mut [Work<'_>]) -> anyhow::Result<()> {
    let client = checkout(&reference.pool, &reference.name).await?;
    let db = reference.name.as_str();
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| PgError::query(db, "start the repair snapshot", e))?;
    for w in works.iter_mut() {
        let mut keys: Vec<KeyText> = w.diffs.iter().map(|d| d.key_parts.clone()).collect();
        keys.sort();
        keys.dedup();
        for chunk in keys.chunks(READ_CHUNK) {
            let sql = match &w.hashes {
                Some(h) => h.rows_with_hashes(&w.plan.columns, &flat(chunk)),
                None => rows_by_key(&w.plan, chunk),
            };
            let purpose = format!("read the rows to repair of {}", w.plan.display);
            let rows = client
                .simple_query(&sql)
                .await
                .map_err(|e| PgError::query(db, &purpose, e))?;
            for row in simple::rows(rows) {
                let mut vals: TextRow = (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect();
                let key = match w.hashes {
                    Some(_) => vec![vals.remove(0).unwrap_or_default()],
                    None => key_of(&w.plan, &vals),
                };
                w.rows.entry(key).or_default().push(vals);
            }
        }
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(|e| PgError::query(db, "end the repair snapshot", e))?;
    Ok(())
}

fn flat(keys: &[KeyText]) -> Vec<String> {
    keys.iter().filter_map(|k| k.first().cloned()).collect()
}

/// The replicated columns of the rows with one of `keys`.
fn rows_by_key(t: &TablePlan, keys: &[KeyText]) -> String {
    let values: Vec<String> = keys
        .iter()
        .map(|k| {
            let vals: Vec<String> = k
                .iter()
                .zip(&t.key_types)
                .map(|(v, ty)| small::typed(&Some(v.clone()), ty))
                .collect();
            format!("({})", vals.join(", "))
        })
        .collect();
    let key: Vec<String> = t.key.iter().map(|k| format!("r.{k}")).collect();
    format!(
        "SELECT {cols} FROM {tbl} AS r WHERE ({key}) IN (VALUES {v})",
        cols = t
            .cols
            .iter()
            .map(|c| format!("r.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
        tbl = t.quoted,
        key = key.join(", "),
        v = values.join(", ")
    )
}

/// The key's text of a row of `cols`.
fn key_of(t: &TablePlan, row: &TextRow) -> KeyText {
    t.key
        .iter()
        .map(|k| {
            let i = t
                .cols
                .iter()
                .position(|c| c == k)
                .expect("key columns replicate");
            row[i].clone().unwrap_or_default()
        })
        .collect()
}

/// The transaction for one database: deletes children first, then inserts (or, where foreign
/// keys are live, in-place updates and inserts) parents first, as a small round sends them.
fn statements(sync: &str, db: &Db, works: &[Work<'_>]) -> DatabaseRepair {
    let in_place = !db.role.is_replica();
    let mut changes = Vec::new();
    let mut deletes = Vec::new();
    let mut inserts = Vec::new();
    for w in works {
        let diffs: Vec<&Difference> = w
            .diffs
            .iter()
            .copied()
            .filter(|d| d.database == db.name)
            .collect();
        if diffs.is_empty() {
            continue;
        }
        let mut keys: Vec<KeyText> = diffs.iter().map(|d| d.key_parts.clone()).collect();
        keys.sort();
        keys.dedup();
        let rows: Vec<TextRow> = keys
            .iter()
            .flat_map(|k| w.rows.get(k).cloned().unwrap_or_default())
            .collect();
        for d in &diffs {
            changes.push(change(w, d));
        }
        if let Some(h) = &w.hashes {
            deletes.push(h.delete_hashes(&flat(&keys)));
            inserts.extend(small::insert_sql(&w.plan, &rows));
            continue;
        }
        let as_rows = |ks: &[KeyText]| -> Vec<TextRow> {
            ks.iter()
                .map(|k| k.iter().cloned().map(Some).collect())
                .collect()
        };
        let gone: Vec<KeyText> = keys
            .iter()
            .filter(|k| !w.rows.contains_key(*k))
            .cloned()
            .collect();
        let delete = if in_place {
            as_rows(&gone)
        } else {
            as_rows(&keys)
        };
        deletes.extend(small::delete_sql(&w.plan, &delete));
        if in_place {
            inserts.extend(crate::round::small::upsert_sql(&w.plan, &rows));
        } else {
            inserts.extend(small::insert_sql(&w.plan, &rows));
        }
    }
    deletes.reverse();
    let session = crate::round::session::apply_session(sync, &db.role);
    let mut sql = String::new();
    for s in std::iter::once(session.trim_end().trim_end_matches(';').to_string())
        .chain(deletes)
        .chain(inserts)
    {
        sql.push_str(s.trim_end());
        sql.push_str(";\n");
    }
    DatabaseRepair {
        database: db.name.clone(),
        changes,
        sql,
        end_sql: db.role.end_sql(),
        error: None,
    }
}

/// How a key is changed: a key the reference lacks goes, one only it has is inserted, one on
/// both is updated (rows without a key: each surplus copy goes, each missing one is inserted).
fn change(w: &Work<'_>, d: &Difference) -> Change {
    let on_reference = w.rows.contains_key(&d.key_parts);
    let action = match (d.kind, on_reference) {
        (Kind::Extra, _) | (_, false) => Action::Delete,
        (Kind::Missing, true) => Action::Insert,
        (Kind::Changed, true) => Action::Update,
    };
    Change {
        table: w.plan.display.clone(),
        database: d.database.clone(),
        key: d.key.clone(),
        action,
        key_text: d.key_text.clone(),
    }
}

/// Runs one database's repair in one transaction; any error rolls it all back.
async fn apply(db: &Db, sql: &str) -> Result<(), PgError> {
    let mut client = checkout(&db.pool, &db.name).await?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| PgError::query(&db.name, "begin the repair", e))?;
    tx.batch_execute(sql)
        .await
        .map_err(|e| PgError::query(&db.name, "apply the repair", e))?;
    crate::round::session::commit_apply(tx, &db.role, &db.name).await
}
