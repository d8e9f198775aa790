//! A master that changed a key after its round snapshot, while another master's change to the
//! key is on its way to it: both changes are concurrent, a conflict like any other. The apply
//! transaction locks the batch's rows (a local writer in flight finishes first), finds the keys
//! with a local change newer than the snapshot, and lets the sync's strategy decide each one
//! against the incoming winner, logging the decision here:
//! - the local change wins: the key leaves the batch, and the next round sends the local row
//!   everywhere (its delta rows are still pending);
//! - the incoming winner wins: its row is applied over the local one, and the local change's
//!   delta rows are removed (the row they describe is gone; the winner sends its own);
//! - `skip`: the key leaves the batch and the local change's delta rows are removed: each
//!   side keeps its row, as with any skipped conflict (neither change is sent);
//! - `abort`: this database's apply fails; the next round sees both changes pending and aborts.
//!
//! A local insert of a new key still in flight has no row to lock: the apply's insert of the
//! key waits for it and fails on the key's unique index, and the round is retried with both
//! changes visible. Nothing is dropped unseen.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use tokio_postgres::Transaction;

use crate::capture::increments::OTHER;
use crate::pg::error::PgError;
use crate::round::conflict_log;
use crate::round::gather;
use crate::round::keys::{self, Key};
use crate::round::plan::TablePlan;
use crate::round::report::{ConflictRecord, TableCounts};
use crate::round::resolve::{self, decide, Change, Strategies, Strategy};
use crate::round::snapshot::Snapshot;
use crate::round::winners::SourceTxs;

/// What the applying database `dst` needs to settle its late local changes to one table.
pub(super) struct Late<'a, 'c> {
    pub sync: &'a str,
    pub ttx: &'a Transaction<'a>,
    pub dst: &'a str,
    pub t: &'a TablePlan,
    /// `dst`'s round snapshot.
    pub cur: &'a Snapshot,
    pub strategy: &'a Strategy,
    /// The round's masters, in config order (priority ties).
    pub sources: Vec<String>,
    /// The winners' round transactions.
    pub txs: &'a SourceTxs<'c>,
    /// The winner's change time of each key.
    pub won_at: &'a HashMap<Key, DateTime<Utc>>,
}

impl Late<'_, '_> {
    /// This table's strategy as the conflict log takes strategies (by table).
    fn only_strategy(&self) -> Strategies {
        Strategies {
            default: self.strategy.clone(),
            tables: Default::default(),
        }
    }
}

/// Decides the batch's keys (`from`: winner -> keys, already in the temp key table) that
/// `dst` changed after its snapshot; returns the keys that leave the batch. The decisions go
/// to `c.late_conflicts` (counted once the apply commits).
pub(super) async fn settle(
    late: &Late<'_, '_>,
    from: &BTreeMap<String, Vec<Key>>,
    c: &mut TableCounts,
) -> Result<BTreeSet<Key>, PgError> {
    let newer = newer_local(late).await?;
    if newer.is_empty() {
        return Ok(BTreeSet::new());
    }
    let mut leave = BTreeSet::new();
    let mut lost = Vec::new();
    let mut records = Vec::new();
    for (w, keys) in from {
        let mine: Vec<&Key> = keys.iter().filter(|k| newer.contains_key(*k)).collect();
        if mine.is_empty() {
            continue;
        }
        let theirs = gather::versions(late.txs.get(w).client(), w, late.t, &mine).await?;
        let here = gather::versions(late.ttx.client(), late.dst, late.t, &mine).await?;
        for (i, k) in mine.iter().enumerate() {
            let at = (late.won_at.get(*k).copied(), newer[*k]);
            let d = decide(&both(w, late.dst, at), late.strategy, &late.sources);
            match d.winner.as_deref() {
                Some(x) if x == w.as_str() => lost.push((*k).clone()),
                Some(_) => {
                    leave.insert((*k).clone());
                }
                // Skipped: neither change goes anywhere, the local one included.
                None => {
                    leave.insert((*k).clone());
                    lost.push((*k).clone());
                }
            }
            let versions = serde_json::json!({
                w.clone(): {"row": theirs[i].1, "changed_at": at.0.map(|a| a.to_rfc3339())},
                late.dst: {"row": here[i].1, "changed_at": at.1.to_rfc3339()},
            });
            let mut involved = vec![w.clone(), late.dst.to_string()];
            involved.sort();
            records.push(ConflictRecord {
                table: late.t.display.clone(),
                key: theirs[i].0.clone(),
                winner: d.winner,
                involved,
                versions,
            });
        }
    }
    if *late.strategy == Strategy::Abort && !records.is_empty() {
        return Err(resolve::abort_error(&records));
    }
    let one = late.only_strategy();
    conflict_log::record(late.ttx, late.dst, (late.sync, &one), &records).await?;
    forget(late, "temp", &leave.iter().collect::<Vec<_>>()).await?;
    forget(late, "delta", &lost.iter().collect::<Vec<_>>()).await?;
    c.late_conflicts.extend(records);
    Ok(leave)
}

/// `dst`, a master, reloads the table from `from`'s TRUNCATE: its changes since its round
/// snapshot are erased with everything else. Each is logged as a conflict the truncate won
/// (`abort`: this apply fails, and the next round sees them pending). Then the table is
/// emptied with DELETE: this round's read transaction on `dst` may hold a lock on the table
/// that TRUNCATE would wait for until the round ends. Returns the erasures logged.
pub(super) async fn erase_for_reload(
    late: &Late<'_, '_>,
    from: &str,
) -> Result<Vec<ConflictRecord>, PgError> {
    let (t, dst) = (late.t, late.dst);
    let fail = |e| {
        PgError::query(
            dst,
            format!("find changes of {} erased by the reload", t.display),
            e,
        )
    };
    // Local writers wait until the reload commits; readers go on.
    let lock = format!("LOCK TABLE {} IN EXCLUSIVE MODE", t.quoted);
    late.ttx.batch_execute(&lock).await.map_err(fail)?;
    let texts: Vec<String> = t.key.iter().map(|k| format!("{k}::text")).collect();
    let s = late.cur.sql();
    let rows = (late.ttx)
        .query(
            &format!(
                "SELECT {texts}, max(drover_changed_at) FROM {d} WHERE NOT drover_truncate                  AND drover_xid >= txid_snapshot_xmin({s}) AND NOT txid_visible_in_snapshot(drover_xid, {s})                  GROUP BY {texts}",
                d = t.deltas[dst],
                texts = texts.join(", ")
            ),
            &[],
        )
        .await
        .map_err(fail)?;
    let nk = t.key.len();
    let keys: Vec<Key> = (rows.iter())
        .map(|r| (0..nk).map(|i| r.get::<_, String>(i)).collect())
        .collect();
    let refs: Vec<&Key> = keys.iter().collect();
    let here = gather::versions(late.ttx.client(), dst, t, &refs).await?;
    let mut involved = vec![from.to_string(), dst.to_string()];
    involved.sort();
    let records: Vec<ConflictRecord> = (rows.iter().zip(here))
        .map(|(r, (key, row))| {
            let at: DateTime<Utc> = r.get(nk);
            ConflictRecord {
                table: t.display.clone(),
                key,
                winner: Some(from.to_string()),
                involved: involved.clone(),
                versions: serde_json::json!({
                    from: {"row": null, "truncated": true},
                    dst: {"row": row, "changed_at": at.to_rfc3339()},
                }),
            }
        })
        .collect();
    if *late.strategy == Strategy::Abort && !records.is_empty() {
        return Err(resolve::abort_error(&records));
    }
    let one = late.only_strategy();
    conflict_log::record(late.ttx, dst, (late.sync, &one), &records).await?;
    (late
        .ttx
        .batch_execute(&format!("DELETE FROM {}", t.quoted))
        .await)
        .map_err(|e| PgError::query(dst, format!("empty {}", t.display), e))?;
    Ok(records)
}

/// The incoming winner's change and the local one, as `decide` takes them: each unheard by
/// the other.
fn both(
    w: &str,
    dst: &str,
    at: (Option<DateTime<Utc>>, DateTime<Utc>),
) -> BTreeMap<String, Change> {
    let change = |changed_at, other: &str| Change {
        changed_at,
        pending_to: BTreeSet::from([other.to_string()]),
        other: true,
        incs: BTreeMap::new(),
        past_cut: Vec::new(),
    };
    BTreeMap::from([
        (w.to_string(), change(at.0.unwrap_or(at.1), dst)),
        (dst.to_string(), change(at.1, w)),
    ])
}

/// Locks the rows of the batch's keys, then returns the keys changed here after the round
/// snapshot, with the time of their last local change.
async fn newer_local(late: &Late<'_, '_>) -> Result<HashMap<Key, DateTime<Utc>>, PgError> {
    let (t, dst) = (late.t, late.dst);
    let tmp = t.temp_name("keys", dst);
    let on = |a: &str, b: &str| {
        (t.key.iter())
            .map(|k| format!("{a}.{k} = {b}.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    late.ttx
        .execute(
            &format!(
                "WITH l AS (SELECT 1 FROM {tb} AS r JOIN {tmp} AS k ON {on} FOR UPDATE OF r) SELECT count(*) FROM l",
                tb = t.quoted,
                on = on("r", "k")
            ),
            &[],
        )
        .await
        .map_err(|e| PgError::query(dst, format!("lock rows of {}", t.display), e))?;
    let texts: Vec<String> = t.key.iter().map(|k| format!("k.{k}::text")).collect();
    let s = late.cur.sql();
    let rows = late
        .ttx
        .query(
            &format!(
                "SELECT {texts}, max(d.drover_changed_at) FROM {tmp} AS k JOIN {d} AS d ON {on} \
                 WHERE d.drover_xid >= txid_snapshot_xmin({s}) AND NOT txid_visible_in_snapshot(d.drover_xid, {s}){only} \
                 GROUP BY {texts}",
                d = t.deltas[dst],
                // Increments of delta columns add up with the winner's row: no conflict.
                only = if t.increments.is_empty() { "" } else { " AND d.drover_other" },
                on = on("k", "d"),
                texts = texts.join(", ")
            ),
            &[],
        )
        .await
        .map_err(|e| {
            PgError::query(dst, format!("find keys of {} changed here since the snapshot", t.display), e)
        })?;
    let nk = t.key.len();
    Ok(rows
        .iter()
        .map(|r| ((0..nk).map(|i| r.get::<_, String>(i)).collect(), r.get(nk)))
        .collect())
}

/// Deletes `keys` from the batch's temp key table ("temp") or their local changes since the
/// snapshot from the delta table ("delta").
async fn forget(late: &Late<'_, '_>, what: &str, keys: &[&Key]) -> Result<(), PgError> {
    if keys.is_empty() {
        return Ok(());
    }
    let t = late.t;
    let s = late.cur.sql();
    let (table, extra) = if what == "temp" {
        (t.temp_name("keys", late.dst), String::new())
    } else {
        let extra = format!(
            " AND x.drover_xid >= txid_snapshot_xmin({s}) AND NOT txid_visible_in_snapshot(x.drover_xid, {s})"
        );
        (t.deltas[late.dst].clone(), extra)
    };
    // With delta columns, the local increments of a row still here reach the other masters
    // (marked as increments only); those of a row deleted here go with the delete.
    let row_here = (what == "delta" && !t.increments.is_empty()).then(|| {
        let on: Vec<String> = t.key.iter().map(|k| format!("r.{k} = x.{k}")).collect();
        format!(
            "EXISTS (SELECT 1 FROM {} AS r WHERE {})",
            t.quoted,
            on.join(" AND ")
        )
    });
    let cols: Vec<String> = (0..t.key.len()).map(|i| format!("c{i}")).collect();
    let unnest: Vec<String> = (0..t.key.len())
        .map(|i| format!("${}::text[]", i + 1))
        .collect();
    let on: Vec<String> = (t.key.iter().zip(&t.key_types).enumerate())
        .map(|(i, (k, ty))| format!("x.{k} = u.c{i}::{ty}"))
        .collect();
    let using = format!(
        "unnest({}) AS u({}) WHERE {}",
        unnest.join(", "),
        cols.join(", "),
        on.join(" AND ")
    );
    let mut sqls = vec![format!("DELETE FROM {table} AS x USING {using}{extra}")];
    if let Some(here) = row_here {
        sqls[0].push_str(&format!(" AND NOT {here}"));
        sqls.push(format!(
            "UPDATE {table} AS x SET {OTHER} = false FROM {using}{extra} AND {here}"
        ));
    }
    let columns = keys::by_column(keys, t.key.len());
    let params = keys::params(&columns);
    for sql in sqls {
        late.ttx.execute(&sql, &params).await.map_err(|e| {
            let what = format!("settle local changes of {}", t.display);
            PgError::query(late.dst, what, e)
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_strategy_decides_a_late_local_change() {
        let at = |s: i64| Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap();
        let srcs = vec!["a".to_string(), "b".to_string()];
        // b changed the key after its snapshot, later than a.
        let ch = both("a", "b", (Some(at(1)), at(5)));
        let pick = |s: &Strategy| decide(&ch, s, &srcs).winner;
        assert_eq!(pick(&Strategy::Latest).as_deref(), Some("b"));
        assert_eq!(
            pick(&Strategy::Priority(vec!["a".into()])).as_deref(),
            Some("a")
        );
        assert_eq!(pick(&Strategy::Skip), None);
        assert!(decide(&ch, &Strategy::Abort, &srcs).conflict.is_some());
    }
}
