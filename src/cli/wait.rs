//! `drover wait SYNC`: returns once every receiver has applied every change committed on the
//! sources before the call. It reads the databases directly, trusting no daemon state: a change
//! is still owed while its delta row is visible in the snapshot taken at the call and not visible
//! in the receiver's progress snapshot.

use std::time::{Duration, Instant};

use crate::capture::sql::NOTHING_APPLIED;
use crate::cli::{require_sync, EXIT_OK, EXIT_PROBLEM};
use crate::config::Config;
use crate::http::client::api;
use crate::http::server::percent_encode;
use crate::pg::error::PgError;
use crate::pg::ident::{quote_ident, quote_literal};
use crate::pg::Endpoint;
use crate::round::snapshot::Snapshot;
use crate::topology;

/// Default for `--timeout`: an hour, long enough for a large catch-up, short enough that a
/// cutover script never hangs forever.
pub const DEFAULT_TIMEOUT_SECS: f64 = 3600.0;

/// Pause between checks.
const POLL: Duration = Duration::from_millis(50);

pub async fn run(config: &Config, sync: &str, timeout: f64) -> anyhow::Result<i32> {
    require_sync(config, sync)?;
    let plan = topology::syncs(config)
        .into_iter()
        .find(|s| s.name == sync)
        .expect("sync exists");
    let deadline = Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
    let endpoint = |db: &str| Endpoint::new(db, &config.databases[db]);

    // The cut: what each source has committed now.
    let mut cuts = Vec::new();
    for source in &plan.sources {
        let client = endpoint(source)?.connect("wait").await?;
        let cut: String = client
            .query_one("SELECT txid_current_snapshot()::text", &[])
            .await
            .map_err(|e| PgError::query(source, "read the source snapshot", e))?
            .get(0);
        cuts.push((source.clone(), client, cut));
    }
    // Sequences (one-source syncs): each target must reach the source's value at the call.
    let mut seq_cut = Vec::new();
    if plan.sources.len() == 1 {
        for s in &plan.sequences {
            let v: i64 = cuts[0]
                .1
                .query_one(&format!("SELECT last_value FROM {}", s.quoted()), &[])
                .await
                .map_err(|e| PgError::query(&plan.sources[0], format!("read sequence {s}"), e))?
                .get(0);
            seq_cut.push((s.clone(), v));
        }
    }
    // Best effort: a running daemon starts a round now instead of at its next poll.
    let _ = api(
        config,
        "POST",
        &format!("/syncs/{}/kick", percent_encode(sync)),
    )
    .await;

    let mut last_reason;
    loop {
        let owed = match owed(config, &plan, &cuts).await {
            Ok(None) => sequences_behind(config, &plan, &seq_cut).await,
            other => other,
        };
        match owed {
            Ok(None) => {
                println!(
                    "sync {sync}: every target has applied everything committed before the call"
                );
                return Ok(EXIT_OK);
            }
            Ok(Some(reason)) => last_reason = reason,
            Err(e) => last_reason = e.to_string(),
        }
        if Instant::now() >= deadline {
            eprintln!("drover: timed out after {timeout} s waiting for sync {sync}: {last_reason}");
            return Ok(EXIT_PROBLEM);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Describes the first sequence some target has not advanced to its cut value, if any.
async fn sequences_behind(
    config: &Config,
    plan: &topology::SyncPlan,
    cut: &[(crate::pg::ident::TableName, i64)],
) -> Result<Option<String>, PgError> {
    if cut.is_empty() {
        return Ok(None);
    }
    for target in plan.receivers_of(&plan.sources[0]) {
        let dst = Endpoint::new(target, &config.databases[target])?
            .connect("wait")
            .await?;
        for (s, v) in cut {
            let have: i64 = dst
                .query_one(&format!("SELECT last_value FROM {}", s.quoted()), &[])
                .await
                .map_err(|e| PgError::query(target, format!("read sequence {s}"), e))?
                .get(0);
            if have < *v {
                return Ok(Some(format!(
                    "sequence {s} on {target} is at {have}, source was at {v}"
                )));
            }
        }
    }
    Ok(None)
}

/// Describes the first change still owed to some receiver, or None when nothing is owed.
async fn owed(
    config: &Config,
    plan: &topology::SyncPlan,
    cuts: &[(String, tokio_postgres::Client, String)],
) -> Result<Option<String>, PgError> {
    for (source, src, cut) in cuts {
        let deltas = src
            .query("SELECT table_name, delta_name FROM drover.tables", &[])
            .await
            .map_err(|e| {
                PgError::query(source, "read drover.tables (has drover install run?)", e)
            })?;
        for target in plan.receivers_of(source) {
            let ep = Endpoint::new(target, &config.databases[target])?;
            let dst = ep.connect("wait").await?;
            for table in &plan.tables {
                let name = table.to_string();
                let Some(delta) = deltas.iter().find(|r| r.get::<_, String>(0) == name) else {
                    return Ok(Some(format!(
                        "table {name} is not captured on {source}: run drover install"
                    )));
                };
                let delta: String = delta.get(1);
                let progress: String = dst
                    .query_opt(
                        "SELECT snapshot FROM drover.progress WHERE sync = $1 AND source = $2 AND table_name = $3",
                        &[&plan.name, source, &name],
                    )
                    .await
                    .map_err(|e| PgError::query(target, "read progress", e))?
                    .map(|r| r.get(0))
                    .unwrap_or_else(|| NOTHING_APPLIED.to_string());
                let progress = Snapshot::parse(&progress).ok_or_else(|| {
                    PgError::protocol(target, format!("bad progress snapshot {progress:?}"))
                })?;
                let p = progress.sql();
                let sql = format!(
                    "SELECT count(*) FROM drover.{d} WHERE drover_xid >= txid_snapshot_xmin({p}) \
                     AND NOT txid_visible_in_snapshot(drover_xid, {p}) \
                     AND txid_visible_in_snapshot(drover_xid, {c}::txid_snapshot)",
                    d = quote_ident(&delta),
                    c = quote_literal(cut)
                );
                let n: i64 = src
                    .query_one(&sql, &[])
                    .await
                    .map_err(|e| PgError::query(source, "count changes still owed", e))?
                    .get(0);
                if n > 0 {
                    return Ok(Some(format!(
                        "{n} change(s) of {name} from {source} not yet applied on {target}"
                    )));
                }
            }
        }
    }
    Ok(None)
}
