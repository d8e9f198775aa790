//! `drover copy SYNC [--table T]`: truncate and copy tables from the sync's first source to its
//! receive-only databases (every other database for a one-source sync) from one consistent
//! snapshot, moving their progress to that snapshot. Safe beside a running daemon: the copy
//! locks the progress rows, and the daemon's next round sees they moved and re-reads them.

use std::sync::Arc;

use crate::cli::{require_sync, EXIT_CONFIG, EXIT_OK, EXIT_PROBLEM};
use crate::config::Config;
use crate::pg::connect::checkout;
use crate::pg::ident::TableName;
use crate::pg::{facts, Endpoint};
use crate::round::apply::{SourceSide, TargetSide};
use crate::round::copy::{initial_copy, CopyBoard, CopyMode};
use crate::round::plan::{Side, TablePlan};
use crate::topology;

pub async fn run(config: &Config, sync: &str, table: Option<&str>) -> anyhow::Result<i32> {
    require_sync(config, sync)?;
    let plan = topology::syncs(config)
        .into_iter()
        .find(|s| s.name == sync)
        .expect("sync exists");
    let tables: Vec<TableName> = match table {
        None => plan.tables.clone(),
        Some(t) => {
            let parsed = TableName::parse(t).map_err(|e| anyhow::anyhow!("--table: {e}"))?;
            if !plan.tables.contains(&parsed) {
                eprintln!(
                    "drover: --table: {parsed} is not in relgroup {} of sync {sync}",
                    plan.relgroup
                );
                return Ok(EXIT_CONFIG);
            }
            vec![parsed]
        }
    };
    let source_name = plan.sources[0].clone();
    let receivers: Vec<String> = if plan.sources.len() > 1 {
        plan.targets.clone()
    } else {
        plan.receivers_of(&source_name).map(String::from).collect()
    };
    if receivers.is_empty() {
        eprintln!("drover: sync {sync} has no receive-only database to copy into");
        return Ok(EXIT_PROBLEM);
    }
    let mut sides = Vec::new();
    for db in std::iter::once(&source_name).chain(receivers.iter()) {
        let ep = Endpoint::new(db, &config.databases[db])?;
        let pool = ep.pool("copy", 4);
        let f = {
            let mut c = checkout(&pool, db).await?;
            facts::read(&mut c, db).await?
        };
        sides.push((db.clone(), pool, f));
    }
    let side = |i: usize| Side {
        name: &sides[i].0,
        pool: &sides[i].1,
        version_num: sides[i].2.version_num,
    };
    let srcs = [side(0)];
    let tgts: Vec<Side> = (1..sides.len()).map(side).collect();
    let mut plans = Vec::new();
    for t in &tables {
        plans.push(Arc::new(TablePlan::prepare(t, &srcs, &tgts).await?));
    }
    let source = SourceSide {
        name: source_name.clone(),
        pool: sides[0].1.clone(),
    };
    let targets: Vec<TargetSide> = sides[1..]
        .iter()
        .map(|(n, p, f)| TargetSide {
            name: n.clone(),
            pool: p.clone(),
            replica_role: f.replica_role,
        })
        .collect();
    let board = CopyBoard::default();
    let started = std::time::Instant::now();
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
