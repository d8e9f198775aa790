//! `drover status` and `drover kick`: ask the running daemon over `daemon.listen`. When no
//! daemon answers, `status` reads the databases instead (`status_offline`) and exits 1.

use chrono::{DateTime, Local, Utc};

use crate::cli::{require_sync, EXIT_OK, EXIT_PROBLEM};
use crate::config::Config;
use crate::http::client::{api, ClientError};
use crate::http::server::percent_encode;
use crate::status::{StatusDoc, SyncStatus};

pub async fn status(config: &Config, sync: Option<&str>, json: bool) -> anyhow::Result<i32> {
    let path = match sync {
        Some(s) => {
            require_sync(config, s)?;
            format!("/status?sync={}", percent_encode(s))
        }
        None => "/status".to_string(),
    };
    let (code, body) = match api(config, "GET", &path).await {
        Ok(answer) => answer,
        Err(e @ (ClientError::Unreachable { .. } | ClientError::Timeout { .. })) => {
            return super::status_offline::status(config, sync, json, &e.to_string()).await;
        }
        Err(e) => return Err(e.into()),
    };
    if code != 200 {
        anyhow::bail!("the daemon answered {code}: {}", body.trim());
    }
    let doc: StatusDoc = serde_json::from_str(&body)?;
    if json {
        // Where the status came from; the database-read fallback says "databases".
        let mut v = serde_json::to_value(&doc)?;
        v["source"] = "daemon".into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if let (Some(_), Some(s)) = (sync, doc.syncs.first()) {
        print!("{}", detail(s));
    } else {
        print!("{}", table(&doc.syncs));
    }
    Ok(EXIT_OK)
}

pub async fn kick(config: &Config, sync: &str) -> anyhow::Result<i32> {
    require_sync(config, sync)?;
    let (code, body) = api(
        config,
        "POST",
        &format!("/syncs/{}/kick", percent_encode(sync)),
    )
    .await?;
    if code == 202 {
        println!("Kicked sync {sync}");
        Ok(EXIT_OK)
    } else {
        eprintln!(
            "drover: the daemon refused the kick ({code}): {}",
            body.trim()
        );
        Ok(EXIT_PROBLEM)
    }
}

/// One line per held table: where, why, since when (`drover retry` releases them).
fn held_lines(s: &SyncStatus) -> String {
    let mut out = String::new();
    for t in &s.target_states {
        for h in &t.held {
            let with = h
                .held_with
                .as_ref()
                .map(|w| format!(" (with {w})"))
                .unwrap_or_default();
            let keys = h
                .keys
                .as_ref()
                .map(|k| format!(" key {k}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "{:<25}: {} on {}{with}: SQLSTATE {}{keys}, since {}, {} attempt(s): {}\n",
                "Held table",
                h.table,
                t.target,
                h.sqlstate,
                when(&Some(h.since)),
                h.count,
                h.error
            ));
        }
    }
    out
}

fn when(t: &Option<DateTime<Utc>>) -> String {
    t.map(|t| {
        t.with_timezone(&Local)
            .format("%b %d, %Y %H:%M:%S")
            .to_string()
    })
    .unwrap_or_else(|| "none".into())
}

/// `bucardo status` without a sync: one line per sync.
fn table(syncs: &[SyncStatus]) -> String {
    let mut out = format!(
        "{:<20} {:<9} {:<8} {:<22} {:>9} {:>21} {:>9}\n",
        "Name", "State", "Lease", "Last good", "Lag (s)", "Rows ins/del", "Pending"
    );
    out.push_str(&"=".repeat(104));
    out.push('\n');
    for s in syncs {
        out.push_str(&format!(
            "{:<20} {:<9} {:<8} {:<22} {:>9.3} {:>21} {:>9}\n",
            s.name,
            s.state,
            s.lease,
            when(&s.last_good),
            s.lag_seconds,
            format!("{} / {}", s.rows_inserted, s.rows_deleted),
            s.pending_rows
        ));
    }
    out
}

/// `bucardo status SYNC`: one field per line.
fn detail(s: &SyncStatus) -> String {
    let line = "=".repeat(70);
    let rows = [
        ("Last good", when(&s.last_good)),
        (
            "Rows deleted/inserted",
            format!("{} / {}", s.rows_deleted, s.rows_inserted),
        ),
        ("Last bad", when(&s.last_bad)),
        ("Sync name", s.name.clone()),
        ("Current state", s.state.clone()),
        ("Lease", s.lease.clone()),
        (
            "Source relgroup/database",
            format!("{} / {}", s.relgroup, s.sources.join(", ")),
        ),
        ("Targets", s.targets.join(", ")),
        ("Tables in sync", s.tables.to_string()),
        ("Conflicts", s.conflicts.to_string()),
        ("Lag (seconds)", format!("{:.3}", s.lag_seconds)),
        ("Pending rows", s.pending_rows.to_string()),
        ("Rounds", s.rounds.to_string()),
        (
            "Last round time",
            s.last_round_ms
                .map(|m| format!("{m:.1} ms"))
                .unwrap_or_else(|| "none".into()),
        ),
        ("Last error", s.last_error.clone().unwrap_or_default()),
    ];
    let mut out = format!("{line}\n");
    for (k, v) in rows {
        out.push_str(&format!("{k:<25}: {v}\n"));
    }
    out.push_str(&held_lines(s));
    for w in &s.warnings {
        out.push_str(&format!("{:<25}: {w}\n", "Warning"));
    }
    out.push_str(&line);
    out.push('\n');
    out
}
