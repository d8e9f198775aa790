//! `drover status` when no daemon answers on `daemon.listen`: what the databases themselves
//! record, read without the daemon. Per sync: whether it is paused (`drover.sync_pause` on the
//! first source, when that table exists), who holds its lease (`drover.leases`), and per
//! (source, receiver, table) when the receiver last applied a round (`drover.progress`) and how
//! many captured changes it has not applied yet (the source's delta rows after its progress
//! snapshot, the same predicate a round uses); held tables from `drover.apply_errors` on the
//! receivers when that table exists. The output says first that the daemon is not answering;
//! `--json` has `"source": "databases"` (a daemon's answer says `"daemon"`). Exit 1: the
//! daemon did not answer, whatever the databases say.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Client;

use crate::cli::EXIT_PROBLEM;
use crate::config::Config;
use crate::pg::ident::quote_ident;
use crate::pg::Endpoint;
use crate::topology::{self, SyncPlan};

#[derive(Debug, Serialize)]
struct Doc {
    /// "databases": read from the databases because the daemon did not answer.
    source: &'static str,
    /// Why the daemon's status could not be read.
    daemon: String,
    syncs: Vec<SyncView>,
}

#[derive(Debug, Default, Serialize)]
struct SyncView {
    name: String,
    /// Always "unknown": only a daemon knows its rounds.
    state: &'static str,
    relgroup: String,
    sources: Vec<String>,
    targets: Vec<String>,
    paused: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    paused_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    paused_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pause_reason: Option<String>,
    /// Changes captured and not yet applied, per (source, table) the most any receiver lacks.
    pending_rows: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_holder: Option<Lease>,
    progress: Vec<Progress>,
    /// Rows of `drover.apply_errors` on the receivers; null when no receiver has that table.
    held: Option<Vec<serde_json::Value>>,
    /// What could not be read (a database unreachable, drover not installed).
    problems: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Lease {
    host: String,
    pid: i32,
    since: DateTime<Utc>,
    heartbeat_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
struct Progress {
    source: String,
    target: String,
    table: String,
    /// When a round (or copy) last committed on the target; null before the first.
    applied_at: Option<DateTime<Utc>>,
    /// Null when the source could not be read.
    pending_rows: Option<u64>,
    oldest_pending: Option<DateTime<Utc>>,
}

/// Prints the databases' view of `sync` (or every sync); `why` says why the daemon did not
/// answer.
pub async fn status(
    config: &Config,
    sync: Option<&str>,
    json: bool,
    why: &str,
) -> anyhow::Result<i32> {
    let mut clients = Clients::default();
    let mut views = Vec::new();
    for plan in topology::syncs(config) {
        if sync.is_some_and(|s| s != plan.name) {
            continue;
        }
        views.push(read_sync(config, &plan, &mut clients).await);
    }
    let doc = Doc {
        source: "databases",
        daemon: format!("not answering: {why}"),
        syncs: views,
    };
    eprintln!("drover: {why}");
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", text(&doc));
    }
    Ok(EXIT_PROBLEM)
}

/// One session per database, opened on first use; a failure is kept as its message.
#[derive(Default)]
struct Clients(HashMap<String, Result<Client, String>>);

impl Clients {
    async fn get(&mut self, config: &Config, db: &str) -> Result<&Client, String> {
        if !self.0.contains_key(db) {
            let c = match Endpoint::new(db, &config.databases[db]) {
                Ok(ep) => ep.connect("status").await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            self.0.insert(db.to_string(), c);
        }
        self.0[db].as_ref().map_err(Clone::clone)
    }
}

async fn read_sync(config: &Config, plan: &SyncPlan, clients: &mut Clients) -> SyncView {
    let mut v = SyncView {
        name: plan.name.clone(),
        state: "unknown",
        relgroup: plan.relgroup.clone(),
        sources: plan.sources.clone(),
        targets: plan.targets.clone(),
        ..SyncView::default()
    };
    match clients.get(config, &plan.sources[0]).await {
        Ok(c) => {
            if let Err(e) = pause_and_lease(c, plan, &mut v).await {
                v.problems
                    .push(format!("database \"{}\": {e}", plan.sources[0]));
            }
        }
        Err(e) => v.problems.push(e),
    }
    for source in &plan.sources {
        for receiver in plan.receivers_of(source) {
            if let Err(e) = progress(config, plan, source, receiver, clients, &mut v).await {
                v.problems.push(e);
            }
        }
    }
    held(config, plan, clients, &mut v).await;
    let mut most: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for p in &v.progress {
        let m = most.entry((&p.source, &p.table)).or_default();
        *m = (*m).max(p.pending_rows.unwrap_or(0));
    }
    v.pending_rows = most.values().sum();
    v
}

/// Whether a table exists in the `drover` schema.
async fn has_table(c: &Client, table: &str) -> Result<bool, tokio_postgres::Error> {
    let row = c
        .query_one(
            "SELECT to_regclass(format('drover.%I', $1::text)) IS NOT NULL",
            &[&table],
        )
        .await?;
    Ok(row.get(0))
}

async fn pause_and_lease(
    c: &Client,
    plan: &SyncPlan,
    v: &mut SyncView,
) -> Result<(), tokio_postgres::Error> {
    if has_table(c, "sync_pause").await? {
        if let Some(r) = c
            .query_opt(
                "SELECT paused_by, paused_at, reason FROM drover.sync_pause WHERE sync = $1",
                &[&plan.name],
            )
            .await?
        {
            v.paused = true;
            v.paused_by = Some(r.get(0));
            v.paused_at = Some(r.get(1));
            v.pause_reason = Some(r.get(2));
        }
    }
    if has_table(c, "leases").await? {
        v.lease_holder = c
            .query_opt(
                "SELECT host, pid, since, heartbeat_at FROM drover.leases WHERE sync = $1",
                &[&plan.name],
            )
            .await?
            .map(|r| Lease {
                host: r.get(0),
                pid: r.get(1),
                since: r.get(2),
                heartbeat_at: r.get(3),
            });
    }
    Ok(())
}

/// The progress of `receiver` from `source`, with the changes the source holds beyond it.
async fn progress(
    config: &Config,
    plan: &SyncPlan,
    source: &str,
    receiver: &str,
    clients: &mut Clients,
    v: &mut SyncView,
) -> Result<(), String> {
    let rows = clients
        .get(config, receiver)
        .await?
        .query(
            "SELECT table_name, snapshot, applied_at FROM drover.progress \
             WHERE sync = $1 AND source = $2 ORDER BY table_name",
            &[&plan.name, &source],
        )
        .await
        .map_err(|e| format!("database \"{receiver}\": cannot read drover.progress: {e}"))?;
    let wanted: Vec<String> = plan.tables.iter().map(ToString::to_string).collect();
    let src = clients.get(config, source).await;
    for r in rows {
        let table: String = r.get(0);
        if !wanted.contains(&table) {
            continue;
        }
        let snapshot: String = r.get(1);
        let (pending_rows, oldest_pending) = match &src {
            Ok(c) => match pending(c, &table, &snapshot).await {
                Ok(p) => p,
                Err(e) => {
                    v.problems
                        .push(format!("database \"{source}\": {table}: {e}"));
                    (None, None)
                }
            },
            Err(_) => (None, None),
        };
        v.progress.push(Progress {
            source: source.to_string(),
            target: receiver.to_string(),
            table,
            applied_at: r.get(2),
            pending_rows,
            oldest_pending,
        });
    }
    if let Err(e) = src {
        v.problems.push(e);
    }
    Ok(())
}

/// Delta rows of `table` committed after `snapshot`: what a round would find pending.
async fn pending(
    c: &Client,
    table: &str,
    snapshot: &str,
) -> Result<(Option<u64>, Option<DateTime<Utc>>), tokio_postgres::Error> {
    let Some(delta) = c
        .query_opt(
            "SELECT delta_name FROM drover.tables WHERE table_name = $1",
            &[&table],
        )
        .await?
    else {
        return Ok((None, None));
    };
    let delta: String = delta.get(0);
    let row = c
        .query_one(
            &format!(
                "SELECT count(*), min(drover_changed_at) FROM drover.{} \
                 WHERE drover_xid >= txid_snapshot_xmin($1::text::txid_snapshot) \
                 AND NOT txid_visible_in_snapshot(drover_xid, $1::text::txid_snapshot)",
                quote_ident(&delta)
            ),
            &[&snapshot],
        )
        .await?;
    Ok((Some(row.get::<_, i64>(0) as u64), row.get(1)))
}

/// Held tables recorded on the receivers, where `drover.apply_errors` exists.
async fn held(config: &Config, plan: &SyncPlan, clients: &mut Clients, v: &mut SyncView) {
    let mut receivers: Vec<&str> = plan.targets.iter().map(String::as_str).collect();
    if plan.sources.len() > 1 {
        receivers.extend(plan.sources.iter().map(String::as_str));
    }
    for db in receivers {
        let Ok(c) = clients.get(config, db).await else {
            continue;
        };
        let rows = async {
            if !has_table(c, "apply_errors").await? {
                return Ok::<_, tokio_postgres::Error>(None);
            }
            c.query(
                "SELECT to_json(e)::text FROM drover.apply_errors e WHERE e.sync = $1 AND e.held",
                &[&plan.name],
            )
            .await
            .map(Some)
        };
        match rows.await {
            Ok(None) => {}
            Ok(Some(rows)) => {
                let list = v.held.get_or_insert_with(Vec::new);
                for r in rows {
                    let text: String = r.get(0);
                    let mut row: serde_json::Value =
                        serde_json::from_str(&text).unwrap_or_default();
                    row["database"] = db.into();
                    list.push(row);
                }
            }
            Err(e) => v.problems.push(format!(
                "database \"{db}\": cannot read drover.apply_errors: {e}"
            )),
        }
    }
}

fn when(t: &Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "never".into())
}

fn text(doc: &Doc) -> String {
    let mut s =
        "daemon not answering (see above): showing what the databases record instead\n".to_string();
    for v in &doc.syncs {
        sync_text(&mut s, v);
    }
    s
}

fn sync_text(s: &mut String, v: &SyncView) {
    let _ = writeln!(
        s,
        "sync {}: {} -> {} (relgroup {}), pending rows: {}",
        v.name,
        v.sources.join(", "),
        v.targets.join(", "),
        v.relgroup,
        v.pending_rows
    );
    if v.paused {
        let _ = writeln!(
            s,
            "  paused by {} at {}{}",
            v.paused_by.as_deref().unwrap_or_default(),
            when(&v.paused_at),
            v.pause_reason
                .as_deref()
                .filter(|r| !r.is_empty())
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
    } else {
        let _ = writeln!(s, "  not paused");
    }
    if let Some(l) = &v.lease_holder {
        let _ = writeln!(
            s,
            "  lease last held by {} pid {} since {}, last heartbeat {}",
            l.host,
            l.pid,
            when(&Some(l.since)),
            when(&Some(l.heartbeat_at))
        );
    }
    for p in &v.progress {
        let pending = p
            .pending_rows
            .map_or_else(|| "unknown".to_string(), |n| n.to_string());
        let _ = writeln!(
            s,
            "  {} -> {}: {}: last applied {}, pending rows {}{}",
            p.source,
            p.target,
            p.table,
            when(&p.applied_at),
            pending,
            p.oldest_pending
                .map(|t| format!(" (oldest {})", when(&Some(t))))
                .unwrap_or_default()
        );
    }
    match &v.held {
        None => {}
        Some(h) if h.is_empty() => {
            let _ = writeln!(s, "  held tables: none");
        }
        Some(h) => {
            for row in h {
                let _ = writeln!(s, "  held: {row}");
            }
        }
    }
    for p in &v.problems {
        let _ = writeln!(s, "  cannot read: {p}");
    }
}
