//! `drover verify SYNC --repair [--dry-run]`: verify, make every differing key equal to the
//! reference (see `crate::verify::repair`), print each change, then verify again. `--dry-run`
//! prints the SQL each database's transaction would run and changes nothing.
//!
//! The repair holds the sync's lease while it applies, so no round of a daemon runs beside it:
//! with a daemon running the sync, stop it first (a standby keeps waiting). Exit 0 when the
//! databases are identical at the end, 1 when something still differs (always after a dry run
//! that found differences), a repair failed, or the lease is held elsewhere.

use serde_json::json;

use crate::actors::sync::lease_key;
use crate::cli::{EXIT_OK, EXIT_PROBLEM};
use crate::config::Config;
use crate::pg::ident::TableName;
use crate::pg::Endpoint;
use crate::topology::SyncPlan;
use crate::verify::repair::{self, DatabaseRepair, REPAIR_LISTED};
use crate::verify::{self, Report};

/// Passes of verify-then-repair at most: each repairs up to `REPAIR_LISTED` keys per table.
const PASSES: usize = 5;

pub async fn run(
    config: &Config,
    plan: &SyncPlan,
    tables: &[TableName],
    json: bool,
    dry_run: bool,
) -> anyhow::Result<i32> {
    // Held until the command ends (the session closes with it).
    let _lease = if dry_run {
        None
    } else {
        match take_lease(config, plan).await? {
            Some(c) => Some(c),
            None => return Ok(EXIT_PROBLEM),
        }
    };
    let mut before = Vec::new();
    let mut repairs: Vec<DatabaseRepair> = Vec::new();
    let mut failed = false;
    // Whether `last` was printed already (each report is printed once).
    let mut shown = false;
    let mut last = verify::run_listing(config, plan, tables, REPAIR_LISTED).await?;
    for _ in 0..PASSES {
        if last.identical {
            break;
        }
        if !json {
            print!("{}", super::verify::text(&last));
            shown = true;
        }
        let done = repair::repair(config, plan, &last, dry_run).await?;
        before.push(last.clone());
        if !json {
            print_repairs(&done, dry_run);
        }
        failed = done.iter().any(|d| d.error.is_some());
        let progressed = done.iter().any(|d| !d.changes.is_empty());
        repairs.extend(done);
        if dry_run || failed || !progressed {
            break;
        }
        last = verify::run_listing(config, plan, tables, REPAIR_LISTED).await?;
        shown = false;
    }
    let identical = before.is_empty() || (last.identical && !dry_run);
    if json {
        let after: Option<&Report> = (!dry_run).then_some(&last);
        let doc = json!({
            "sync": plan.name,
            "identical": identical,
            "dry_run": dry_run,
            "before": before.first(),
            "repairs": repairs,
            "after": after,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else if !shown {
        print!("{}", super::verify::text(&last));
    }
    Ok(if identical && !failed {
        EXIT_OK
    } else {
        EXIT_PROBLEM
    })
}

/// Takes the sync's lease on its first source; None (with a message) when a daemon holds it.
async fn take_lease(
    config: &Config,
    plan: &SyncPlan,
) -> anyhow::Result<Option<tokio_postgres::Client>> {
    let source = &plan.sources[0];
    let client = Endpoint::new(source, &config.databases[source])?
        .connect(&format!("{}:repair", plan.name))
        .await?;
    let held: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&lease_key(&plan.name)])
        .await?
        .get(0);
    if held {
        return Ok(Some(client));
    }
    eprintln!(
        "drover: sync {} is running in a daemon (it holds the sync's lease on {source}): a repair \
         must not race its rounds; stop the daemon, run verify --repair, start it again \
         (verify without --repair, and --dry-run, are safe while it runs)",
        plan.name
    );
    Ok(None)
}

fn print_repairs(done: &[DatabaseRepair], dry_run: bool) {
    for d in done {
        for c in &d.changes {
            let action = serde_json::to_value(c.action).unwrap_or_default();
            println!(
                "  {} {}: {} {}",
                if dry_run { "would repair" } else { "repair" },
                d.database,
                action.as_str().unwrap_or_default(),
                format_args!("{} {}", c.table, c.key_text)
            );
        }
        if dry_run {
            println!(
                "-- database {}: one transaction\nBEGIN;\n{}COMMIT;",
                d.database, d.sql
            );
        } else if let Some(e) = &d.error {
            println!("  repair of {} FAILED, rolled back: {e}", d.database);
        } else {
            println!(
                "  repaired {} key(s) on {} in one transaction",
                d.changes.len(),
                d.database
            );
        }
    }
}
