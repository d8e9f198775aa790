//! `drover ddl SYNC (--file F | -c SQL)`: a schema change on every database of a sync.
//!
//! 1. Pause the sync (stored pause, reason `ddl`) and tell a running daemon.
//! 2. Wait until no round of the sync runs: take its round gate (`pause::wait_idle`), which
//!    every round holds from its pause check to its end, whichever daemon runs it.
//! 3. Run the script on each database (`ddl::order`: receive-only first, then sources), each
//!    in its own transaction, recorded in that database's `drover.ddl_log`. The first failure
//!    stops the run; the sync stays paused.
//! 4. Refresh capture (`drover install` on the sync's databases) and resume. The daemon reads
//!    its table plans again when it sees the new `ddl_log` row at its next round start.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::cli::pause::{describe, first_source, tell_daemon};
use crate::cli::{EXIT_OK, EXIT_PROBLEM};
use crate::config::Config;
use crate::ddl::{self, Run};
use crate::pause;
use crate::pg::Endpoint;
use crate::topology::{self, SyncPlan};

/// Default for `--timeout`: how long to wait for the round running at the call.
pub const DEFAULT_TIMEOUT_SECS: f64 = 300.0;

pub struct Args<'a> {
    pub sync: &'a str,
    pub file: Option<&'a Path>,
    pub sql: Option<&'a str>,
    pub timeout: f64,
}

fn script_text(a: &Args) -> anyhow::Result<String> {
    let text = match (a.file, a.sql) {
        (Some(f), None) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the script {}", f.display()))?,
        (None, Some(s)) => s.to_string(),
        _ => bail!("give the script with exactly one of --file FILE or -c SQL"),
    };
    if text.trim().is_empty() {
        bail!("the script is empty: nothing to run");
    }
    Ok(text)
}

pub async fn run(config: &Config, a: Args<'_>) -> anyhow::Result<i32> {
    let script = script_text(&a)?;
    let (client, first) = first_source(config, a.sync, "ddl").await?;
    let plan = topology::syncs(config)
        .into_iter()
        .find(|s| s.name == a.sync)
        .expect("sync exists");
    let sync = a.sync;
    let ours = match pause::read(&client, &first, sync).await? {
        Some(p) => {
            println!(
                "sync {sync} is already {}: it stays paused afterwards",
                describe(&p)
            );
            false
        }
        None => {
            pause::write(&client, &first, sync, &pause::who("drover ddl"), "ddl").await?;
            println!("sync {sync}: paused for the schema change");
            true
        }
    };
    tell_daemon(config, sync, "pause").await;
    let timeout = Duration::from_secs_f64(a.timeout.max(0.0));
    if let Err(e) = pause::wait_idle(&client, &first, sync, timeout).await {
        if ours {
            pause::delete(&client, &first, sync).await?;
            tell_daemon(config, sync, "resume").await;
        }
        bail!(
            "{e}; the script ran nowhere{}",
            if ours { " and the sync is resumed" } else { "" }
        );
    }
    if !run_everywhere(config, &plan, &script).await? {
        return Ok(EXIT_PROBLEM);
    }
    if ours {
        pause::delete(&client, &first, sync).await?;
        println!("sync {sync}: resumed");
        tell_daemon(config, sync, "resume").await;
    }
    Ok(EXIT_OK)
}

/// Runs the script database by database, then refreshes capture; false (after saying where
/// it stopped) on the first failure.
async fn run_everywhere(config: &Config, plan: &SyncPlan, script: &str) -> anyhow::Result<bool> {
    let order = ddl::order(plan);
    let sha = ddl::sha256_hex(script);
    let by = pause::who("drover ddl");
    let run = Run {
        sync: &plan.name,
        script,
        sha256: &sha,
        by: &by,
        databases: &order,
    };
    let endpoint = |db: &str| Endpoint::new(db, &config.databases[db]);
    for (i, db) in order.iter().enumerate() {
        if let Err(e) = ddl::run_on(&endpoint(db)?, &run).await {
            stopped(plan, &order, i, &format!("the script failed: {e}"));
            return Ok(false);
        }
        println!("{db}: ran the script (sha256 {sha})");
    }
    // Capture follows the new columns: install on each database, with every sync of the
    // config (install drops capture that no sync it is given wants).
    let syncs = topology::syncs(config);
    for db in &order {
        if let Err(e) = crate::capture::install(&endpoint(db)?, &syncs).await {
            eprintln!(
                "drover: the script ran on every database ({}), but refreshing capture on {db} \
                 failed: {e}\n  the sync {} is still paused: fix the cause, run `drover install`, \
                 then `drover resume {}`",
                order.join(", "),
                plan.name,
                plan.name
            );
            return Ok(false);
        }
    }
    println!("capture refreshed on {}", order.join(", "));
    Ok(true)
}

/// Says exactly where a run stopped and what is left to do.
fn stopped(plan: &SyncPlan, order: &[String], at: usize, why: &str) {
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    eprintln!(
        "drover: ddl on sync {s} stopped at database {db}: {why}\n  \
         already ran it: {done}\n  not run: {rest}\n  \
         the sync {s} is still paused (reason ddl): fix the cause, finish the change by hand \
         where it did not run (or roll it back where it did), run `drover install`, then \
         `drover resume {s}`",
        s = plan.name,
        db = order[at],
        done = list(&order[..at]),
        rest = list(&order[at..]),
    );
}
