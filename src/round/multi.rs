//! Multi-master rounds: every source is read under its own REPEATABLE READ snapshot, each
//! pending key gets one winner (see `resolve`), and every database of the sync receives the
//! winners' current rows (or their absence) in one transaction that also records conflicts and
//! advances the progress of every (source, this database) pair.
//!
//! A database that is itself a source may have changed a key after its round snapshot was
//! taken: its apply lets the strategy decide those keys against the incoming winners
//! (`local_newer`). Unreachable databases are left out of the round (`multi_down`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use tokio_postgres::{IsolationLevel, Transaction};

use crate::capture::partitions;
use crate::pg::connect::{checkout, PooledClient};
use crate::pg::copy::copy_in_bytes;
use crate::pg::error::PgError;
use crate::round::clock;
use crate::round::conflict_log;
use crate::round::gather::{self, Pending, SourceTable};
use crate::round::in_place;
use crate::round::keys::{copy_text, Key};
use crate::round::local_newer::{self, Late};
use crate::round::multi_backlog;
use crate::round::multi_rewind;
use crate::round::plan::TablePlan;
use crate::round::progress::{self, load_progress, ProgressCache};
use crate::round::purge;
use crate::round::report::{ConflictRecord, RoundReport, TableCounts, TargetReport};
use crate::round::resolve::{self, decide, Strategies, Strategy};
use crate::round::session::{commit_apply, empty_table, limited_session};
use crate::round::side::{SourceSide, TargetSide};
use crate::round::snapshot::Snapshot;
use crate::round::winners::{winner_rows, SourceTxs, Winner};

pub struct MultiInput<'a> {
    pub sync: &'a str,
    /// Masters, in config order.
    pub sources: &'a [SourceSide],
    /// Every database of the sync, masters included.
    pub databases: &'a [TargetSide],
    /// Parents before children.
    pub tables: &'a [Arc<TablePlan>],
    pub progress: &'a mut ProgressCache,
    pub strategy: &'a Strategies,
    pub limits: &'a crate::round::limits::Limits,
}

/// One table's decisions for this round.
#[derive(Default)]
struct TableRound {
    /// Winner -> keys whose winner it is.
    won: BTreeMap<String, Vec<Key>>,
    /// The winner's change time of each won key (`local_newer`).
    won_at: HashMap<Key, chrono::DateTime<chrono::Utc>>,
    /// A source whose TRUNCATE is pending: every other database reloads the table from it.
    reload_from: Option<String>,
    /// Per source: retained delta rows.
    retained: HashMap<String, i64>,
    /// Per source: receivers with something pending.
    pending_to: HashMap<String, BTreeSet<String>>,
}

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
    let sources: Vec<String> = input.sources.iter().map(|s| s.name.clone()).collect();
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
            None => decide(changes, strategy_of(input, t), &sources),
        };
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

/// What the round decided, for the applies.
struct Decided<'a, 'c> {
    rounds: &'a [TableRound],
    conflicts: &'a [ConflictRecord],
    curs: &'a HashMap<String, Snapshot>,
    txs: &'a SourceTxs<'c>,
}

/// Applies to every database that needs it; returns those that committed.
async fn apply_all(
    input: &mut MultiInput<'_>,
    report: &mut RoundReport,
    dec: &Decided<'_, '_>,
) -> Vec<String> {
    let mut committed: Vec<String> = Vec::new();
    for d in input.databases {
        let mut tr = TargetReport {
            target: d.name.clone(),
            result: Ok(false),
            tables: HashMap::new(),
        };
        if needs_apply(input, d, dec) {
            let ctx = ApplyCtx {
                input,
                db: d,
                rounds: dec.rounds,
                conflicts: dec.conflicts,
                curs: dec.curs,
                txs: dec.txs,
            };
            tr.result = apply_db(&ctx, &mut tr.tables).await;
            if record(input, d, dec.curs, &tr.result) {
                committed.push(d.name.clone());
                report.conflicts.extend(tr.take_late_conflicts());
            }
        }
        report.targets.push(tr);
    }
    committed
}

/// Whether `d` has anything to receive this round.
fn needs_apply(input: &MultiInput<'_>, d: &TargetSide, dec: &Decided<'_, '_>) -> bool {
    dec.rounds.iter().any(|r| {
        r.won.keys().any(|w| *w != d.name)
            || r.reload_from.as_ref().is_some_and(|s| *s != d.name)
            || input.sources.iter().any(|s| {
                s.name != d.name
                    && (r
                        .pending_to
                        .get(&s.name)
                        .is_some_and(|p| p.contains(&d.name))
                        || r.retained.get(&s.name).copied().unwrap_or(0) > 0)
            })
    }) || dec.conflicts.iter().any(|c| c.involved.contains(&d.name))
}

/// Records an apply's result in the cache; true when it committed.
fn record(
    input: &mut MultiInput<'_>,
    d: &TargetSide,
    curs: &HashMap<String, Snapshot>,
    result: &Result<bool, PgError>,
) -> bool {
    if let Err(e) = result {
        // The sync logs and counts it once with the round's other failures.
        tracing::debug!(sync = input.sync, database = %d.name, error = %e, "apply failed, rolled back");
        for s in input.sources {
            input.progress.invalidate(&s.name, &d.name);
        }
        return false;
    }
    for s in input.sources.iter().filter(|s| s.name != d.name) {
        let id = input.progress.identity.current(&s.name).map(str::to_string);
        for t in input.tables {
            let p = &mut *input.progress;
            p.set(&s.name, &d.name, &t.display, curs[&s.name].clone());
            p.identity.record(&s.name, &d.name, &t.display, id.clone());
        }
    }
    true
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

struct ApplyCtx<'a, 'b, 'c> {
    input: &'a MultiInput<'b>,
    db: &'a TargetSide,
    rounds: &'a [TableRound],
    conflicts: &'a [ConflictRecord],
    curs: &'a HashMap<String, Snapshot>,
    txs: &'a SourceTxs<'c>,
}

/// One database's apply transaction.
async fn apply_db(
    ctx: &ApplyCtx<'_, '_, '_>,
    counts: &mut HashMap<String, TableCounts>,
) -> Result<bool, PgError> {
    let input = ctx.input;
    let dst = ctx.db.name.as_str();
    let mut client = checkout(&ctx.db.pool, dst).await?;
    let ttx = client
        .transaction()
        .await
        .map_err(|e| PgError::query(dst, "begin apply", e))?;
    let here = Here {
        ttx: &ttx,
        dst,
        // FKs live here: update in place (see `in_place`).
        in_place: !ctx.db.replica_role.is_replica(),
        is_source: input.sources.iter().any(|s| s.name == dst),
    };
    let mut setup = limited_session(input.sync, &ctx.db.replica_role, input.limits);
    for t in input.tables {
        setup.push_str(&format!("{};", t.create_temp_keys(dst)));
        if here.in_place {
            setup.push_str(&format!("{};", t.create_temp_rows(dst)));
        }
    }
    ttx.batch_execute(&setup)
        .await
        .map_err(|e| PgError::query(dst, "prepare the apply session", e))?;
    let senders: Vec<&str> = (input.sources.iter())
        .map(|s| s.name.as_str())
        .filter(|s| *s != dst)
        .collect();
    let on = (input.sync, dst, senders.as_slice());
    multi_rewind::check_progress(&ttx, on, input.tables, input.progress).await?;
    // Keys each winner sends here, after dropping keys changed here since the snapshot.
    let mut sends: Vec<BTreeMap<String, Vec<Key>>> = Vec::new();
    for (t, r) in input.tables.iter().zip(ctx.rounds).rev() {
        let c = counts.entry(t.display.clone()).or_default();
        sends.push(delete_changed(ctx, &here, t, r, c).await?);
    }
    sends.reverse();
    for ((t, r), from) in input.tables.iter().zip(ctx.rounds).zip(&sends) {
        let c = counts.entry(t.display.clone()).or_default();
        if here.in_place && r.reload_from.is_none() && c.pending > 0 {
            let from = t.temp_rows_from(dst);
            if let Some(u) = t.update_from(&from) {
                c.inserted += in_place::update_rows(&ttx, dst, t, u.as_str()).await?;
            }
            c.inserted += ttx
                .execute(&t.insert_new(&from), &[])
                .await
                .map_err(|e| PgError::query(dst, format!("insert rows of {}", t.display), e))?;
        }
        for (w, keys) in from {
            let from = winner(ctx, r, w, keys);
            c.inserted += winner_rows(from, &ttx, dst, t, &t.rows_in()).await?;
        }
    }
    conflict_log::record(&ttx, dst, (input.sync, input.strategy), ctx.conflicts).await?;
    let from: Vec<(&str, &Snapshot, Option<&str>)> = (input.sources.iter())
        .filter(|s| s.name != dst)
        .map(|s| {
            let id = input.progress.identity.current(&s.name);
            (s.name.as_str(), &ctx.curs[&s.name], id)
        })
        .collect();
    progress::record_from(&ttx, dst, input.sync, input.tables, &from).await?;
    commit_apply(ttx, &ctx.db.replica_role, dst).await?;
    Ok(true)
}

/// The database an apply writes to, in its transaction.
struct Here<'a> {
    ttx: &'a Transaction<'a>,
    dst: &'a str,
    in_place: bool,
    is_source: bool,
}

/// Empties a table reloaded from another master, or deletes the keys other winners send
/// (children first); returns the keys each winner sends.
async fn delete_changed(
    ctx: &ApplyCtx<'_, '_, '_>,
    here: &Here<'_>,
    t: &TablePlan,
    r: &TableRound,
    c: &mut TableCounts,
) -> Result<BTreeMap<String, Vec<Key>>, PgError> {
    let (ttx, dst) = (here.ttx, here.dst);
    let mut from: BTreeMap<String, Vec<Key>> = BTreeMap::new();
    if let Some(src) = r.reload_from.as_ref().filter(|s| **s != dst) {
        if here.is_source {
            c.late_conflicts = local_newer::erase_for_reload(&late(ctx, here, t, r), src).await?;
        } else {
            empty_table(ttx, dst, t).await?;
        }
        c.truncated = true;
        from.insert(src.clone(), Vec::new());
        return Ok(from);
    }
    if r.reload_from.is_some() {
        return Ok(from);
    }
    for (w, keys) in r.won.iter().filter(|(w, _)| **w != dst) {
        from.insert(w.clone(), keys.clone());
    }
    let all: Vec<&Key> = from.values().flatten().collect();
    if all.is_empty() {
        return Ok(from);
    }
    c.pending = all.len() as u64;
    let (keys_in, text) = (t.keys_in(dst), copy_text(&all));
    copy_in_bytes(ttx.client(), dst, &keys_in, text, "load winning keys").await?;
    if here.is_source {
        let leave = local_newer::settle(&late(ctx, here, t, r), &from, c).await?;
        for keys in from.values_mut() {
            keys.retain(|k| !leave.contains(k));
        }
    }
    let (delete, analyze) = if here.in_place {
        // The winners' rows go to the temp table; only keys without one go.
        for (w, keys) in std::mem::take(&mut from) {
            let rows = winner(ctx, r, &w, &keys);
            winner_rows(rows, ttx, dst, t, &t.rows_in_temp(dst)).await?;
        }
        (t.delete_gone(dst), t.analyze_temp(dst))
    } else {
        let analyze = format!("ANALYZE {}", t.temp_name("keys", dst));
        (t.delete_keys(dst), analyze)
    };
    // Real row counts for the planner (no join switches: see `apply`).
    ttx.batch_execute(&analyze)
        .await
        .map_err(|e| PgError::query(dst, "analyze the winning keys", e))?;
    c.deleted = ttx
        .execute(&delete, &[])
        .await
        .map_err(|e| PgError::query(dst, format!("delete changed rows of {}", t.display), e))?;
    Ok(from)
}

/// What `local_newer` needs to settle `here`'s changes since its round snapshot.
fn late<'a, 'c>(
    ctx: &'a ApplyCtx<'_, '_, 'c>,
    here: &'a Here<'a>,
    t: &'a TablePlan,
    r: &'a TableRound,
) -> Late<'a, 'c> {
    Late {
        sync: ctx.input.sync,
        ttx: here.ttx,
        dst: here.dst,
        t,
        cur: &ctx.curs[here.dst],
        strategy: strategy_of(ctx.input, t),
        sources: ctx.input.sources.iter().map(|s| s.name.clone()).collect(),
        txs: ctx.txs,
        won_at: &r.won_at,
    }
}

fn winner<'a, 'c>(
    ctx: &'a ApplyCtx<'_, '_, 'c>,
    r: &TableRound,
    w: &'a str,
    keys: &'a [Key],
) -> Winner<'a, 'c> {
    Winner {
        name: w,
        tx: ctx.txs.get(w),
        keys,
        reload: r.reload_from.as_deref() == Some(w),
    }
}

/// The strategy that decides `t`'s conflicts.
fn strategy_of<'a>(input: &MultiInput<'a>, t: &TablePlan) -> &'a Strategy {
    input.strategy.for_table(&t.display)
}
