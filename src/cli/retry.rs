//! `drover retry SYNC [--table T] [--target D]`: asks the running daemon to retry held tables
//! (`round::hold`) now instead of after their backoff.

use crate::cli::{require_sync, EXIT_OK, EXIT_PROBLEM};
use crate::config::Config;
use crate::http::client::api;
use crate::http::server::percent_encode;

pub async fn run(
    config: &Config,
    sync: &str,
    table: Option<&str>,
    target: Option<&str>,
) -> anyhow::Result<i32> {
    let plan = require_sync(config, sync)?;
    if let Some(t) = target {
        if !plan.targets.iter().any(|x| x == t) {
            anyhow::bail!(
                "sync {sync} has no target {t:?} (targets: {})",
                plan.targets.join(", ")
            );
        }
    }
    let mut query = Vec::new();
    if let Some(t) = table {
        query.push(format!("table={}", percent_encode(t)));
    }
    if let Some(t) = target {
        query.push(format!("target={}", percent_encode(t)));
    }
    let mut path = format!("/syncs/{}/retry", percent_encode(sync));
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let (code, body) = api(config, "POST", &path).await?;
    if code == 202 {
        println!("Sync {sync}: {}", body.trim());
        Ok(EXIT_OK)
    } else {
        eprintln!("drover: sync {sync}: {} ({code})", body.trim());
        Ok(EXIT_PROBLEM)
    }
}
