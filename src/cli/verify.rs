//! `drover verify SYNC [--table T] [--json]`: compares every table of the sync across its
//! databases (see `crate::verify`) and prints the differing keys. Exit 0 when identical, 1 when
//! something differs or a table cannot be compared, 2 for a `--table` outside the sync.
//! `--repair [--dry-run]` is `verify_repair`.

use std::fmt::Write;

use crate::cli::{require_sync, EXIT_CONFIG, EXIT_OK, EXIT_PROBLEM};
use crate::config::Config;
use crate::pg::ident::TableName;
use crate::topology;
use crate::verify::{self, Report, TableReport};

/// `--repair` and `--dry-run`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Repair {
    pub enabled: bool,
    pub dry_run: bool,
}

pub async fn run(
    config: &Config,
    sync: &str,
    table: Option<&str>,
    json: bool,
    repair: Repair,
) -> anyhow::Result<i32> {
    require_sync(config, sync)?;
    let plan = topology::syncs(config)
        .into_iter()
        .find(|s| s.name == sync)
        .expect("sync exists");
    let tables = match table {
        None => plan.tables.clone(),
        Some(t) => match TableName::parse(t) {
            Err(e) => {
                eprintln!("drover: --table: {e}");
                return Ok(EXIT_CONFIG);
            }
            Ok(name) if !plan.tables.contains(&name) => {
                eprintln!(
                    "drover: --table {name}: not in relgroup {} of sync {sync} (tables: {})",
                    plan.relgroup,
                    plan.tables
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return Ok(EXIT_CONFIG);
            }
            Ok(name) => vec![name],
        },
    };
    if repair.enabled {
        return super::verify_repair::run(config, &plan, &tables, json, repair.dry_run).await;
    }
    let report = verify::run(config, &plan, &tables).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    Ok(if report.identical {
        EXIT_OK
    } else {
        EXIT_PROBLEM
    })
}

/// The report for people.
pub(super) fn text(r: &Report) -> String {
    let mut s = String::new();
    let others = &r.databases[1.min(r.databases.len())..];
    let _ = writeln!(
        s,
        "sync {}: comparing {} with {} (reference)",
        r.sync,
        others.join(", "),
        r.reference
    );
    for t in &r.tables {
        table_text(&mut s, t);
    }
    let differing = r.tables.iter().filter(|t| !t.identical).count();
    if r.identical {
        let _ = writeln!(s, "sync {}: identical", r.sync);
    } else {
        let _ = writeln!(
            s,
            "sync {}: DIFFERENT ({differing} of {} tables)",
            r.sync,
            r.tables.len()
        );
    }
    s
}

fn table_text(s: &mut String, t: &TableReport) {
    if let Some(p) = &t.problem {
        let _ = writeln!(s, "  {}: PROBLEM: table {}", t.table, p);
        return;
    }
    let rows = t
        .rows
        .iter()
        .map(|(db, n)| format!("{db}: {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    if t.identical {
        let _ = writeln!(s, "  {}: identical (rows {rows})", t.table);
        return;
    }
    let _ = writeln!(
        s,
        "  {}: {} difference(s) (rows {rows})",
        t.table, t.difference_count
    );
    for d in &t.differences {
        let _ = writeln!(
            s,
            "    {} on {}: {}",
            d.kind.as_str(),
            d.database,
            d.key_text
        );
    }
    if t.truncated {
        let _ = writeln!(
            s,
            "    ... and {} more (the first {} are listed)",
            t.difference_count - t.differences.len() as u64,
            t.differences.len()
        );
    }
}
