//! `drover copy SYNC [--table T]`: truncate and copy tables from the sync's first source to its
//! receive-only databases (every other database for a one-source sync) from one consistent
//! snapshot, moving their progress to that snapshot.
//!
//! The copy must not race the sync's rounds: a round that commits a newer snapshot and purges
//! delta rows between the copy's snapshot and its commit would lose those changes. So the copy
//! runs under the sync's lease: when a daemon holds it, the daemon is asked to copy between its
//! rounds (`POST /syncs/{name}/copy`) and this command follows its progress; otherwise the
//! command takes the lease and copies itself.

use std::sync::Arc;

use crate::actors::sync::lease_key;
use crate::cli::{require_sync, EXIT_CONFIG, EXIT_OK, EXIT_PROBLEM};
use crate::config::Config;
use crate::http::client::api;
use crate::http::server::percent_encode;
use crate::pg::connect::{checkout, Pool};
use crate::pg::facts::{self, ServerFacts};
use crate::pg::ident::TableName;
use crate::pg::Endpoint;
use crate::round::copy::{initial_copy, CopyBoard, CopyMode};
use crate::round::plan::{Side, TablePlan};
use crate::round::side::{SourceSide, TargetSide};
use crate::status::StatusDoc;
use crate::topology::{self, SyncPlan};

/// Pause between status polls while a daemon copies.
const POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Has the daemon that holds the lease run the copy, and reports its outcome.
async fn delegate(config: &Config, sync: &str, tables: &[TableName]) -> anyhow::Result<i32> {
    let path = format!("/status?sync={}", percent_encode(sync));
    let runs = |body: &str| -> anyhow::Result<(u64, Vec<crate::round::copy::CopyStatus>)> {
        let doc: StatusDoc = serde_json::from_str(body)?;
        let s = doc
            .syncs
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("the daemon does not run {sync}"))?;
        Ok((s.copy_runs, s.copy))
    };
    let (_, body) = api(config, "GET", &path).await?;
    let (before, _) = runs(&body)?;
    let query: Vec<String> = tables
        .iter()
        .map(|t| format!("table={}", percent_encode(&t.to_string())))
        .collect();
    let (code, body) = api(
        config,
        "POST",
        &format!("/syncs/{}/copy?{}", percent_encode(sync), query.join("&")),
    )
    .await?;
    if code != 202 {
        anyhow::bail!("the daemon refused the copy ({code}): {}", body.trim());
    }
    let started = std::time::Instant::now();
    loop {
        tokio::time::sleep(POLL).await;
        let (_, body) = api(config, "GET", &path).await?;
        let (now, board) = runs(&body)?;
        if now > before {
            let names: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
            let mut ok = true;
            for c in board.iter().filter(|c| names.contains(&c.table)) {
                println!(
                    "{} -> {}: {}: {} rows",
                    c.table, c.target, c.state, c.rows_copied
                );
                ok &= c.state == "done";
            }
            println!("copy finished in {:.1} s", started.elapsed().as_secs_f64());
            return Ok(if ok { EXIT_OK } else { EXIT_PROBLEM });
        }
    }
}

pub async fn run(config: &Config, sync: &str, table: Option<&str>) -> anyhow::Result<i32> {
    require_sync(config, sync)?;
    let plan = topology::syncs(config)
        .into_iter()
        .find(|s| s.name == sync)
        .expect("sync exists");
    let Some(tables) = chosen_tables(&plan, table)? else {
        return Ok(EXIT_CONFIG);
    };
    let source_name = plan.sources[0].clone();
    let lease = Endpoint::new(&source_name, &config.databases[&source_name])?
        .connect(&format!("{sync}:copy"))
        .await?;
    let held: bool = lease
        .query_one("SELECT pg_try_advisory_lock($1)", &[&lease_key(sync)])
        .await?
        .get(0);
    if !held {
        println!("a daemon runs sync {sync}: asking it to copy between rounds");
        return delegate(config, sync, &tables).await;
    }
    let receivers: Vec<String> = if plan.sources.len() > 1 {
        plan.targets.clone()
    } else {
        plan.receivers_of(&source_name).map(String::from).collect()
    };
    if receivers.is_empty() {
        eprintln!("drover: sync {sync} has no receive-only database to copy into");
        return Ok(EXIT_PROBLEM);
    }
    let dbs: Vec<&String> = std::iter::once(&source_name)
        .chain(receivers.iter())
        .collect();
    let sides = open_sides(config, &dbs).await?;
    copy_here(&plan, &tables, &sides).await
}

/// The tables to copy: every table of the sync, or the one `--table` names; None (after
/// saying why) when that table is not in the sync.
fn chosen_tables(plan: &SyncPlan, table: Option<&str>) -> anyhow::Result<Option<Vec<TableName>>> {
    let Some(t) = table else {
        return Ok(Some(plan.tables.clone()));
    };
    let parsed = TableName::parse(t).map_err(|e| anyhow::anyhow!("--table: {e}"))?;
    if !plan.tables.contains(&parsed) {
        eprintln!(
            "drover: --table: {parsed} is not in relgroup {} of sync {}",
            plan.relgroup, plan.name
        );
        return Ok(None);
    }
    Ok(Some(vec![parsed]))
}

/// A database the command copies from or into: its name, a small pool and its server facts.
type OpenSide = (String, Pool, ServerFacts);

async fn open_sides(config: &Config, dbs: &[&String]) -> anyhow::Result<Vec<OpenSide>> {
    let mut sides = Vec::new();
    for &db in dbs {
        let ep = Endpoint::new(db, &config.databases[db])?;
        let pool = ep.pool("copy", 4);
        let f = {
            let mut c = checkout(&pool, db).await?;
            facts::read(&mut c, db, &ep.replica_role).await?
        };
        sides.push((db.clone(), pool, f));
    }
    Ok(sides)
}

/// Copies `tables` from the first of `sides` into the others, itself (it holds the lease),
/// and prints the outcome per table and target.
async fn copy_here(
    plan: &SyncPlan,
    tables: &[TableName],
    sides: &[OpenSide],
) -> anyhow::Result<i32> {
    let side = |i: usize| Side {
        name: &sides[i].0,
        pool: &sides[i].1,
        version_num: sides[i].2.version_num,
    };
    let srcs = [side(0)];
    let tgts: Vec<Side> = (1..sides.len()).map(side).collect();
    let mut plans = Vec::new();
    for t in tables {
        plans.push(Arc::new(
            TablePlan::prepare(t, plan.key_of(t), &srcs, &tgts).await?,
        ));
    }
    let source = SourceSide {
        name: sides[0].0.clone(),
        pool: sides[0].1.clone(),
    };
    let targets: Vec<TargetSide> = sides[1..]
        .iter()
        .map(|(n, p, f)| TargetSide {
            name: n.clone(),
            pool: p.clone(),
            replica_role: f.replica_role.clone(),
        })
        .collect();
    let board = CopyBoard::default();
    let started = std::time::Instant::now();
    let sync = plan.name.as_str();
    let result = initial_copy(sync, &source, &targets, &plans, CopyMode::Forced, &board).await;
    for c in board.lock().expect("copy board").iter() {
        println!(
            "{} -> {}: {}: {} rows",
            c.table, c.target, c.state, c.rows_copied
        );
    }
    match result {
        Ok(n) => {
            println!(
                "copied {n} table(s) in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            Ok(EXIT_OK)
        }
        Err(e) => {
            eprintln!("drover: copy failed, nothing marked done for the failed table: {e}");
            Ok(EXIT_PROBLEM)
        }
    }
}
