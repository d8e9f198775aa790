//! `drover install` and `drover uninstall`: one transaction per database, every database
//! reported, exit 1 if any failed.

use crate::capture;
use crate::cli::{EXIT_OK, EXIT_PROBLEM};
use crate::config::Config;
use crate::pg::Endpoint;
use crate::topology;

pub async fn install(config: &Config) -> anyhow::Result<i32> {
    let syncs = topology::syncs(config);
    let mut failed = 0;
    for (name, db) in &config.databases {
        if !syncs.iter().any(|s| s.involves(name)) {
            continue;
        }
        let result = match Endpoint::new(name, db) {
            Ok(ep) => capture::install(&ep, &syncs).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(r) => {
                let mut parts = Vec::new();
                if let Some(mode) = r.capture {
                    parts.push(format!(
                        "capturing {} table(s) with {}-level triggers",
                        r.added.len() + r.kept.len() + r.rebuilt.len(),
                        mode.as_str()
                    ));
                }
                for (what, list) in [
                    ("added", &r.added),
                    ("rebuilt", &r.rebuilt),
                    ("removed", &r.removed),
                    ("partitions captured", &r.new_partitions),
                    ("partitions gone, table reloaded", &r.gone_partitions),
                ] {
                    if !list.is_empty() {
                        parts.push(format!("{what}: {}", list.join(", ")));
                    }
                }
                if r.progress_rows > 0 {
                    parts.push(format!(
                        "receiving {} (sync, source, table) stream(s)",
                        r.progress_rows
                    ));
                }
                println!("{name}: installed; {}", parts.join("; "));
            }
            Err(e) => {
                failed += 1;
                println!("{name}: FAILED, nothing changed there: {e}");
            }
        }
    }
    failed += crate::cli::interleave::install(config, &syncs).await;
    Ok(if failed == 0 { EXIT_OK } else { EXIT_PROBLEM })
}

pub async fn uninstall(config: &Config) -> anyhow::Result<i32> {
    let mut failed = 0;
    for (name, db) in &config.databases {
        let result = match Endpoint::new(name, db) {
            Ok(ep) => capture::uninstall(&ep).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(n) => println!("{name}: uninstalled (capture removed from {n} table(s))"),
            Err(e) => {
                failed += 1;
                println!("{name}: FAILED, nothing changed there: {e}");
            }
        }
    }
    Ok(if failed == 0 { EXIT_OK } else { EXIT_PROBLEM })
}
