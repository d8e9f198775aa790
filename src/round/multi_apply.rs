//! The apply side of a multi-master round: every database that needs it receives the
//! winners' current rows (or their absence), the round's conflict rows and its progress in one
//! transaction. A master whose keys changed after its round snapshot lets the strategy decide
//! them (`local_newer`).

use std::collections::{BTreeMap, HashMap};

use tokio_postgres::Transaction;

use crate::pg::connect::checkout;
use crate::pg::copy::copy_in_bytes;
use crate::pg::error::PgError;
use crate::pg::facts::ReplicaRole;
use crate::round::conflict_log;
use crate::round::in_place;
use crate::round::increments;
use crate::round::keys::{copy_text, Key};
use crate::round::local_newer::{self, Late};
use crate::round::multi_images;
use crate::round::multi_input::{strategy_of, MultiInput, TableRound};
use crate::round::multi_rewind;
use crate::round::plan::TablePlan;
use crate::round::progress;
use crate::round::report::{ConflictRecord, RoundReport, TableCounts, TargetReport};
use crate::round::session::{commit_apply, empty_table, limited_session};
use crate::round::side::TargetSide;
use crate::round::snapshot::Snapshot;
use crate::round::winners::{winner_rows, SourceTxs, Winner};

/// What the round decided, for the applies.
pub(super) struct Decided<'a, 'c> {
    pub(super) rounds: &'a [TableRound],
    pub(super) conflicts: &'a [ConflictRecord],
    pub(super) curs: &'a HashMap<String, Snapshot>,
    pub(super) txs: &'a SourceTxs<'c>,
}

/// Applies to every database that needs it; returns those that committed.
pub(super) async fn apply_all(
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
    let is_source = input.sources.iter().any(|s| s.name == dst);
    let here = Here {
        ttx: &ttx,
        dst,
        in_place: in_place_here(is_source, &ctx.db.replica_role),
        is_source,
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
    for (t, r) in input.tables.iter().zip(ctx.rounds) {
        increments::before(&ttx, dst, t, incs_to(r, dst)).await?;
    }
    // Keys each winner sends here, after dropping keys changed here since the snapshot.
    let mut sends: Vec<BTreeMap<String, Vec<Key>>> = Vec::new();
    for (t, r) in input.tables.iter().zip(ctx.rounds).rev() {
        let c = counts.entry(t.display.clone()).or_default();
        sends.push(delete_changed(ctx, &here, t, r, c).await?);
    }
    sends.reverse();
    insert_rows(ctx, &here, &sends, counts).await?;
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

/// Rows: parents first. In place, the keys' rows loaded into the temp table are updated or
/// inserted; then each winner's rows for the keys it sends here (`sends`, per table).
async fn insert_rows(
    ctx: &ApplyCtx<'_, '_, '_>,
    here: &Here<'_>,
    sends: &[BTreeMap<String, Vec<Key>>],
    counts: &mut HashMap<String, TableCounts>,
) -> Result<(), PgError> {
    let (input, dst) = (ctx.input, here.dst);
    for ((t, r), from) in input.tables.iter().zip(ctx.rounds).zip(sends) {
        let c = counts.entry(t.display.clone()).or_default();
        if t.whole_row {
            multi_images::insert(&images(ctx, here), t, c).await?;
            continue;
        }
        if here.in_place && r.reload_from.is_none() && c.pending > 0 {
            let from = t.temp_rows_from(dst);
            if let Some(u) = t.update_from(&from) {
                c.inserted += in_place::update_rows(here.ttx, dst, t, u.as_str()).await?;
            }
            c.inserted += here
                .ttx
                .execute(&t.insert_new(&from), &[])
                .await
                .map_err(|e| PgError::query(dst, format!("insert rows of {}", t.display), e))?;
        }
        for (w, keys) in from {
            let from = winner(ctx, r, w, keys);
            c.inserted += winner_rows(from, here.ttx, dst, t, &t.rows_in()).await?;
        }
        increments::after(here.ttx, dst, t, incs_to(r, dst)).await?;
        let missing = r
            .reload_from
            .is_none()
            .then(|| r.missing.get(dst))
            .flatten();
        increments::add_missing(here.ttx, dst, t, missing).await?;
    }
    Ok(())
}

/// Whether an apply to a database updates rows in place (see `in_place`) rather than deleting
/// and inserting every winning key. A master always does: an application UPDATE waiting there
/// for a row the apply holds would find it deleted and update nothing, its write lost; in place
/// it re-reads the new row version and applies on top. Elsewhere only where FKs are live.
fn in_place_here(is_source: bool, role: &ReplicaRole) -> bool {
    is_source || !role.is_replica()
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
    if t.whole_row {
        multi_images::delete(&images(ctx, here), t, r, c).await?;
        return Ok(from);
    }
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

/// The increments `dst` receives for a table; none when it is reloaded (the truncate wins).
fn incs_to<'r>(r: &'r TableRound, dst: &str) -> Option<&'r Vec<(Key, Vec<String>)>> {
    r.reload_from.is_none().then(|| r.incs.get(dst)).flatten()
}

/// What `multi_images` needs to apply a key-less table here.
fn images<'a, 'b, 'c>(
    ctx: &'a ApplyCtx<'a, 'b, 'c>,
    here: &'a Here<'a>,
) -> multi_images::Here<'a, 'b, 'c> {
    multi_images::Here {
        input: ctx.input,
        txs: ctx.txs,
        curs: ctx.curs,
        ttx: here.ttx.client(),
        dst: here.dst,
        is_source: here.is_source,
    }
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
