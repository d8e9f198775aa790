//! `drover pause SYNC [--reason TEXT]`, `drover resume SYNC` and `drover kick SYNC --wait`.
//! The pause is a row in `drover.sync_pause` on the sync's first source, written here so it
//! holds without a daemon; a daemon that answers is told too, so it applies at once.

use crate::cli::{require_sync, wait, EXIT_OK, EXIT_PROBLEM};
use crate::config::Config;
use crate::http::client::api;
use crate::http::server::percent_encode;
use crate::pause::{self, Pause};
use crate::pg::Endpoint;

/// A session on the sync's first source (where its pause and lease live) and its name.
pub(super) async fn first_source(
    config: &Config,
    sync: &str,
    purpose: &str,
) -> anyhow::Result<(tokio_postgres::Client, String)> {
    let s = require_sync(config, sync)?;
    let first = s.sources[0].clone();
    let client = Endpoint::new(&first, &config.databases[&first])?
        .connect(purpose)
        .await?;
    Ok((client, first))
}

pub fn describe(p: &Pause) -> String {
    let reason = if p.reason.is_empty() {
        String::new()
    } else {
        format!(", reason: {}", p.reason)
    };
    format!("paused by {} since {}{reason}", p.by, p.at.to_rfc3339())
}

pub async fn pause(config: &Config, sync: &str, reason: Option<&str>) -> anyhow::Result<i32> {
    let (client, first) = first_source(config, sync, "pause").await?;
    let by = pause::who("drover pause");
    let stored = pause::write(&client, &first, sync, &by, reason.unwrap_or("")).await?;
    if stored.by != by || stored.reason != reason.unwrap_or("") {
        println!("sync {sync}: already {}", describe(&stored));
    } else {
        println!("sync {sync}: {}", describe(&stored));
    }
    tell_daemon(config, sync, "pause").await;
    Ok(EXIT_OK)
}

pub async fn resume(config: &Config, sync: &str) -> anyhow::Result<i32> {
    let (client, first) = first_source(config, sync, "resume").await?;
    if pause::delete(&client, &first, sync).await? {
        println!("sync {sync}: resumed");
    } else {
        println!("sync {sync}: was not paused");
    }
    tell_daemon(config, sync, "resume").await;
    Ok(EXIT_OK)
}

/// Tells a running daemon (best effort: the stored row is what counts).
pub(super) async fn tell_daemon(config: &Config, sync: &str, action: &str) {
    let path = format!("/syncs/{}/{action}", percent_encode(sync));
    match api(config, "POST", &path).await {
        Ok((202, _)) => println!("the daemon applied it at once"),
        Ok((code, body)) => println!(
            "note: the daemon answered {code}: {}; the stored state applies at its next round start",
            body.trim()
        ),
        Err(e) => println!(
            "note: no daemon answered ({e}); the stored state applies when a daemon runs this sync"
        ),
    }
}

/// `drover kick SYNC --wait`: kicks the daemon and returns once every target has applied
/// everything committed on the sources before the call: what a round started after the call
/// applies (`drover wait`). A paused sync fails at once instead of waiting out the timeout.
pub async fn kick_wait(config: &Config, sync: &str, timeout: f64) -> anyhow::Result<i32> {
    let (client, first) = first_source(config, sync, "kick").await?;
    if let Some(p) = pause::read(&client, &first, sync).await? {
        eprintln!(
            "drover: sync {sync} is {}: no round runs until `drover resume {sync}`",
            describe(&p)
        );
        return Ok(EXIT_PROBLEM);
    }
    wait::run(config, sync, timeout).await
}
