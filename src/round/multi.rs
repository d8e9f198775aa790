//! Multi-master rounds: every source is read under its own REPEATABLE READ snapshot, each
//! pending key gets one winner (see `resolve`), and every database of the sync receives the
//! winners' current rows (or their absence) in one transaction that also records conflicts and
//! advances the progress of every (source, this database) pair.
//!
//! A database that is itself a source may have changed a key after its round snapshot was
//! taken: its apply lets the strategy decide those keys against the incoming winners
//! (`local_newer`). Unreachable databases are left out of the round (`multi_down`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use tokio_postgres::IsolationLevel;

use crate::capture::partitions;
use crate::pg::connect::{checkout, PooledClient};
use crate::pg::error::PgError;
use crate::round::clock;
use crate::round::gather::{self, Pending, SourceTable};
use crate::round::increments;
use crate::round::keys::Key;
use crate::round::multi_backlog;
use crate::round::multi_rewind;
use crate::round::plan::TablePlan;
use crate::round::progress::load_progress;
use crate::round::purge;
use crate::round::report::{ConflictRecord, RoundReport, TargetReport};
use crate::round::resolve::{self, Strategy};
use crate::round::snapshot::Snapshot;
use crate::round::winners::SourceTxs;

use crate::round::multi_apply::{apply_all, Decided};
pub use crate::round::multi_input::MultiInput;
use crate::round::multi_input::{strategy_of, TableRound};

pub async fn run_multi_round(input: MultiInput<'_>) -> RoundReport {
    let started = Instant::now();
    let mut report = RoundReport::empty();
    if let Err(e) = multi_inner(input, &mut report).await {
        report.source_error = Some(e);
    }
    report.duration = started.elapsed();
    report
}

/// Runs the round on the databases that answer (`multi_down`); the others are reported.
async fn multi_inner(input: MultiInput<'_>, report: &mut RoundReport) -> Result<(), PgError> {
    let live = input.progress.down.live(input.sources, input.databases);
    report.rejoin = live.rejoin;
    for e in live.left_out {
        report.left_out.push(e.database().to_string());
        report.targets.push(TargetReport {
            target: e.database().to_string(),
            result: Err(e),
            tables: HashMap::new(),
        });
    }
    let sub = MultiInput {
        sources: &live.sources,
        databases: &live.databases,
        progress: &mut *input.progress,
        ..input
    };
    let result = live_round(sub, report).await;
    let down = &mut input.progress.down;
    if let Err(e) = &result {
        down.note(e);
    }
    for t in &report.targets {
        if let Err(e) = &t.result {
            down.note(e);
        }
    }
    result
}

async fn live_round(mut input: MultiInput<'_>, report: &mut RoundReport) -> Result<(), PgError> {
    for s in input.sources {
        for d in input.databases.iter().filter(|d| d.name != s.name) {
            if !input.progress.is_loaded(&s.name, &d.name) {
                load_progress(input.sync, &s.name, d, input.progress).await?;
            }
        }
    }
    // Sessions on every source: temp tables first (not allowed inside a read-only
    // transaction), then the round snapshot.
    let mut clients: Vec<PooledClient<'_>> = Vec::new();
    for s in input.sources {
        let c = checkout(&s.pool, &s.name).await?;
        let ddl: String = input
            .tables
            .iter()
            .map(|t| format!("{};", t.create_temp("win", &s.name)))
            .collect();
        c.batch_execute(&ddl)
            .await
            .map_err(|e| PgError::query(&s.name, "create the winner key tables", e))?;
        clients.push(c);
    }
    let (committed, curs) = read_and_apply(&mut input, report, &mut clients).await?;
    drop(clients);
    for s in input.sources {
        // Multi-master applies commit synchronously: what committed is durable.
        let done: Vec<purge::Horizon> = committed
            .iter()
            .filter(|c| **c != s.name)
            .flat_map(|c| purge::Horizon::all(c, &curs[&s.name], input.tables))
            .collect();
        if !done.is_empty() {
            purge::after_round(&s.pool, &s.name, input.sync, &done, input.tables).await?;
        }
    }
    Ok(())
}

/// Opens the source snapshots, decides every key and applies to every database; returns the
/// databases that committed and each source's snapshot.
async fn read_and_apply(
    input: &mut MultiInput<'_>,
    report: &mut RoundReport,
    clients: &mut [PooledClient<'_>],
) -> Result<(Vec<String>, HashMap<String, Snapshot>), PgError> {
    let (txs, curs) = open_sources(input, report, clients).await?;
    // Gather and decide, table by table.
    let mut rounds: Vec<TableRound> = Vec::new();
    let mut conflicts: Vec<ConflictRecord> = Vec::new();
    for t in input.tables {
        rounds.push(decide_table(input, t, (&txs, &curs), report, &mut conflicts).await?);
    }
    // Conflicts on tables whose strategy is `abort` fail the whole round.
    let aborting: Vec<ConflictRecord> = (conflicts.iter())
        .filter(|c| *input.strategy.for_table(&c.table) == Strategy::Abort)
        .cloned()
        .collect();
    if !aborting.is_empty() {
        return Err(resolve::abort_error(&aborting));
    }
    report.conflicts = conflicts.clone();
    let ctx = Decided {
        rounds: &rounds,
        conflicts: &conflicts,
        curs: &curs,
        txs: &txs,
    };
    let committed = apply_all(input, report, &ctx).await;
    report.keep_logged_conflicts(&committed);
    for tx in txs.txs {
        tx.commit().await.ok();
    }
    Ok((committed, curs))
}

/// Opens each source's REPEATABLE READ snapshot, checks its column signatures, partitions and
/// that no database moved backwards (`multi_rewind`); measures their clocks (`clock`).
async fn open_sources<'c>(
    input: &mut MultiInput<'_>,
    report: &mut RoundReport,
    clients: &'c mut [PooledClient<'_>],
) -> Result<(SourceTxs<'c>, HashMap<String, Snapshot>), PgError> {
    let mut txs = SourceTxs {
        names: input.sources.iter().map(|s| s.name.clone()).collect(),
        txs: Vec::new(),
    };
    let mut curs: HashMap<String, Snapshot> = HashMap::new();
    let receivers: Vec<&str> = input.databases.iter().map(|d| d.name.as_str()).collect();
    let partitioned = crate::round::plan::partitioned(input.tables);
    for (s, c) in input.sources.iter().zip(clients.iter_mut()) {
        let tx = c
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| PgError::query(&s.name, "begin the source snapshot", e))?;
        // With the tables' column signatures (`signature`) and the server's clock.
        let offsets = &mut report.clock_offsets;
        let cur = clock::open_snapshot(&tx, &s.name, input.tables, offsets).await?;
        partitions::check_captured(tx.client(), &s.name, &partitioned).await?;
        let on = multi_rewind::OnSource {
            sync: input.sync,
            source: &s.name,
            cur: &cur,
        };
        multi_rewind::check_receivers(&tx, &on, &receivers, input.tables, input.progress).await?;
        let prevs: Vec<Vec<Snapshot>> = (input.tables.iter())
            .map(|t| {
                (receivers.iter().filter(|d| **d != s.name))
                    .map(|d| input.progress.get(&s.name, d, &t.display))
                    .collect()
            })
            .collect();
        let upto = multi_backlog::cut(tx.client(), &s.name, input.tables, &prevs, &cur).await?;
        curs.insert(s.name.clone(), upto);
        txs.txs.push(tx);
    }
    Ok((txs, curs))
}

/// Gathers one table's pending keys on every source and decides each key's winner.
async fn decide_table(
    input: &MultiInput<'_>,
    t: &Arc<TablePlan>,
    (txs, curs): (&SourceTxs<'_>, &HashMap<String, Snapshot>),
    report: &mut RoundReport,
    conflicts: &mut Vec<ConflictRecord>,
) -> Result<TableRound, PgError> {
    if t.whole_row {
        return crate::round::multi_images::gather(input, t, (txs, curs), report).await;
    }
    let sources: Vec<String> = input.sources.iter().map(|s| s.name.clone()).collect();
    let dbs: Vec<String> = input.databases.iter().map(|d| d.name.clone()).collect();
    let mut pending = Pending::new();
    let mut tr = TableRound::default();
    for s in input.sources {
        let receivers: Vec<(String, Snapshot)> = (input.databases.iter())
            .filter(|d| d.name != s.name)
            .map(|d| {
                let prev = input.progress.get(&s.name, &d.name, &t.display);
                (d.name.clone(), prev)
            })
            .collect();
        let tx = txs.get(&s.name).client();
        let SourceTable {
            truncate_to,
            retained,
        } = gather::pending_keys(tx, (&s.name, &curs[&s.name]), t, &receivers, &mut pending)
            .await?;
        if !truncate_to.is_empty() && tr.reload_from.is_none() {
            tr.reload_from = Some(s.name.clone());
        }
        tr.retained.insert(s.name.clone(), retained);
        let to = tr.pending_to.entry(s.name.clone()).or_default();
        to.extend(truncate_to);
    }
    let mut oldest = None;
    let mut table_conflicts: BTreeMap<Vec<String>, Vec<(Key, Option<String>)>> = BTreeMap::new();
    for (key, changes) in &pending {
        for (src, ch) in changes {
            let to = tr.pending_to.entry(src.clone()).or_default();
            to.extend(ch.pending_to.iter().cloned());
            oldest = Some(
                oldest.map_or(ch.changed_at, |o: chrono::DateTime<chrono::Utc>| {
                    o.min(ch.changed_at)
                }),
            );
        }
        let d = match &tr.reload_from {
            Some(from) => resolve::truncated(changes, from),
            None => increments::decide(t, changes, strategy_of(input, t), &sources),
        };
        let w = d.winner.as_deref();
        increments::collect(&mut tr.incs, key, changes, w, &dbs);
        increments::collect_missing(&mut tr.missing, key, changes, w, &dbs);
        if let Some(w) = &d.winner {
            tr.won.entry(w.clone()).or_default().push(key.clone());
            if let Some(c) = changes.get(w) {
                tr.won_at.insert(key.clone(), c.changed_at);
            }
        }
        if let Some(involved) = d.conflict {
            let keys = table_conflicts.entry(involved).or_default();
            keys.push((key.clone(), d.winner));
        }
    }
    report.note(&t.display, pending.len() as u64, oldest);
    for (involved, keys) in table_conflicts {
        conflicts.extend(conflict_records(t, &involved, &keys, &pending, txs).await?);
    }
    Ok(tr)
}

/// Builds the conflict records of one table for one set of involved sources.
async fn conflict_records(
    t: &TablePlan,
    involved: &[String],
    keys: &[(Key, Option<String>)],
    pending: &Pending,
    txs: &SourceTxs<'_>,
) -> Result<Vec<ConflictRecord>, PgError> {
    let refs: Vec<&Key> = keys.iter().map(|(k, _)| k).collect();
    let mut per_source = Vec::new();
    for s in involved {
        per_source.push(gather::versions(txs.get(s).client(), s, t, &refs).await?);
    }
    let mut out = Vec::new();
    for (i, (key, winner)) in keys.iter().enumerate() {
        let mut versions = serde_json::Map::new();
        for (s, rows) in involved.iter().zip(&per_source) {
            let changed_at = pending[key].get(s).map(|c| c.changed_at.to_rfc3339());
            versions.insert(
                s.clone(),
                serde_json::json!({ "row": rows[i].1, "changed_at": changed_at }),
            );
        }
        out.push(ConflictRecord {
            table: t.display.clone(),
            key: per_source[0][i].0.clone(),
            winner: winner.clone(),
            involved: involved.to_vec(),
            versions: serde_json::Value::Object(versions),
        });
    }
    Ok(out)
}
