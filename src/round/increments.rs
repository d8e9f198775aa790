//! Delta columns in multi-master rounds (see `capture::increments` for what is captured).
//!
//! Gathering sums each source's increments per key and receiver over that receiver's window,
//! and notes whether the source changed anything else (`drover_other`). Deciding: only
//! masters that changed other columns compete for the row; when at most one did, there is no
//! conflict; with none, no row image is sent at all. Applying to database D: every key D held before the apply ends with D's value
//! then (read under a row lock) plus the increments of every other master, whoever won the
//! row's other columns; a key new to D takes the winner's image plus the increments of other
//! masters the winner had not received (`collect_missing`).

use std::collections::{BTreeMap, HashMap};

use tokio_postgres::{Row, Transaction};

use crate::capture::increments::{inc_name, inc_type, OTHER};
use crate::pg::error::PgError;
use crate::round::keys::{self, Key};
use crate::round::plan::TablePlan;
use crate::round::resolve::{decide as decide_row, Change, Decision, Strategy};
use crate::round::snapshot::Snapshot;

/// Extra select items of `gather::pending_keys`: whether the source changed other columns,
/// then per receiver (`preds`) each delta column's sum, then each column's increments past the
/// cut `upto` negated (the query reads at the round snapshot, so these are the ones the
/// source's row image holds and this round does not send), all as text.
pub fn gather_columns(t: &TablePlan, any: &str, preds: &[String], upto: &Snapshot) -> String {
    if t.increments.is_empty() {
        return String::new();
    }
    let mut out = format!(", coalesce(bool_or({OTHER}) FILTER (WHERE {any}), false)");
    let upto = upto.sql();
    for p in preds {
        for i in 0..t.increments.len() {
            out.push_str(&format!(
                ", coalesce(sum({}) FILTER (WHERE {p} AND txid_visible_in_snapshot(drover_xid, {upto})), 0)::text",
                inc_name(i),
            ));
        }
    }
    for i in 0..t.increments.len() {
        out.push_str(&format!(
            ", (-coalesce(sum({}) FILTER (WHERE NOT txid_visible_in_snapshot(drover_xid, {upto})), 0))::text",
            inc_name(i),
        ));
    }
    out
}

/// Reads what `gather_columns` added, from column `at` of `row`, into `change`.
pub fn read(
    row: &Row,
    at: usize,
    t: &TablePlan,
    receivers: &[(String, Snapshot)],
    change: &mut Change,
) {
    let n = t.increments.len();
    if n == 0 {
        return;
    }
    change.other = row.get(at);
    for (r, (name, _)) in receivers.iter().enumerate() {
        if change.pending_to.contains(name) {
            let sums = (0..n).map(|i| row.get(at + 1 + r * n + i)).collect();
            change.incs.insert(name.clone(), sums);
        }
    }
    let past = at + 1 + receivers.len() * n;
    change.past_cut = (0..n).map(|i| row.get(past + i)).collect();
}

/// Decides one key of a table with delta columns: only masters that changed other columns
/// compete; with at most one of them, no conflict.
pub fn decide(
    t: &TablePlan,
    changes: &BTreeMap<String, Change>,
    strategy: &Strategy,
    sources: &[String],
) -> Decision {
    if t.increments.is_empty() {
        return decide_row(changes, strategy, sources);
    }
    let others: BTreeMap<String, Change> = (changes.iter())
        .filter(|(_, c)| c.other)
        .map(|(s, c)| (s.clone(), c.clone()))
        .collect();
    match others.len() {
        // Only counters changed: the increments are the whole change. No image is sent, so
        // no row is rewritten under a local writer (a delete and insert would make a
        // concurrent local UPDATE miss the row).
        0 => Decision {
            winner: None,
            conflict: None,
        },
        1 => Decision {
            winner: others.keys().next().cloned(),
            conflict: None,
        },
        _ => decide_row(&others, strategy, sources),
    }
}

/// Per receiver: (key, increment sums) of every source's pending change to one key.
pub type ByReceiver = HashMap<String, Vec<(Key, Vec<String>)>>;

/// Adds one key's increments to `by`. With a winner, every other database of the round
/// (`dbs`) gets a row, with no increment when none is pending to it: the winner's image
/// overwrites the delta columns, and `after` puts back the value a database held (its own
/// increments not sent yet included) plus what it receives.
pub fn collect(
    by: &mut ByReceiver,
    key: &Key,
    changes: &BTreeMap<String, Change>,
    winner: Option<&str>,
    dbs: &[String],
) {
    for ch in changes.values() {
        for (receiver, sums) in &ch.incs {
            let rows = by.entry(receiver.clone()).or_default();
            rows.push((key.clone(), sums.clone()));
        }
    }
    let n = changes.values().next().map_or(0, |c| c.past_cut.len());
    let Some(w) = winner.filter(|_| n > 0) else {
        return;
    };
    for db in dbs.iter().filter(|d| *d != w) {
        let rows = by.entry(db.clone()).or_default();
        rows.push((key.clone(), vec!["0".to_string(); n]));
    }
}

/// Key columns of `t` joined between aliases `a` and `b`.
fn on(t: &TablePlan, a: &str, b: &str) -> String {
    (t.key.iter())
        .map(|k| format!("{a}.{k} = {b}.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Before `dst`'s apply changes any row of `t`: loads the increments it receives into a temp
/// table, locks the rows they touch and keeps their current delta column values.
pub async fn before(
    ttx: &Transaction<'_>,
    dst: &str,
    t: &TablePlan,
    rows: Option<&Vec<(Key, Vec<String>)>>,
) -> Result<(), PgError> {
    let Some(rows) = rows.filter(|r| !r.is_empty() && !t.increments.is_empty()) else {
        return Ok(());
    };
    let tmp = t.temp_name("inc", dst);
    let (nk, n) = (t.key.len(), t.increments.len());
    let mut cols: Vec<String> = Vec::new();
    let mut sums: Vec<String> = Vec::new();
    for (i, (c, ty)) in t.increments.iter().enumerate() {
        cols.push(format!(
            "{c}::{} AS drover_i{i}, {c} AS drover_p{i}",
            inc_type(ty)
        ));
        sums.push(format!("sum(u.i{i}::{})", inc_type(ty)));
    }
    let create = format!(
        "CREATE TEMP TABLE IF NOT EXISTS {tmp} ON COMMIT DELETE ROWS AS SELECT {k}, {cols}, true AS drover_existed FROM {tb} WITH NO DATA",
        k = t.key_list(),
        cols = cols.join(", "),
        tb = t.quoted
    );
    let fail = |what: &str| {
        let what = format!("{what} of {}", t.display);
        move |e| PgError::query(dst, what, e)
    };
    ttx.batch_execute(&create)
        .await
        .map_err(fail("prepare the increments"))?;
    let keys_u: Vec<String> = (t.key_types.iter().enumerate())
        .map(|(i, ty)| format!("u.c{i}::{ty}"))
        .collect();
    let names: Vec<String> = (0..nk)
        .map(|i| format!("c{i}"))
        .chain((0..n).map(|i| format!("i{i}")))
        .collect();
    let unnest: Vec<String> = (1..=nk + n).map(|i| format!("${i}::text[]")).collect();
    let load = format!(
        "INSERT INTO {tmp} ({k}, {is}) SELECT {ku}, {sums} FROM unnest({un}) AS u({names}) GROUP BY {groups}",
        k = t.key_list(),
        is = (0..n).map(|i| format!("drover_i{i}")).collect::<Vec<_>>().join(", "),
        ku = keys_u.join(", "),
        sums = sums.join(", "),
        un = unnest.join(", "),
        names = names.join(", "),
        groups = (1..=nk).map(|i| i.to_string()).collect::<Vec<_>>().join(", "),
    );
    let flat: Vec<Key> = (rows.iter())
        .map(|(k, s)| k.iter().chain(s.iter()).cloned().collect())
        .collect();
    let refs: Vec<&Key> = flat.iter().collect();
    let columns = keys::by_column(&refs, nk + n);
    ttx.execute(&load, &keys::params(&columns))
        .await
        .map_err(fail("load the increments"))?;
    let kept: Vec<String> = (t.increments.iter().enumerate())
        .map(|(i, (c, _))| format!("drover_p{i} = l.{c}"))
        .collect();
    let lk: Vec<String> = t.key.iter().map(|k| format!("r.{k}")).collect();
    let lc: Vec<String> = t.increments.iter().map(|(c, _)| format!("r.{c}")).collect();
    let keep = format!(
        "WITH l AS (SELECT {lk}, {lc} FROM {tb} AS r JOIN {tmp} AS k ON {on_rk} FOR UPDATE OF r) \
         UPDATE {tmp} AS k SET {kept}, drover_existed = true FROM l WHERE {on_kl}",
        lk = lk.join(", "),
        lc = lc.join(", "),
        tb = t.quoted,
        on_rk = on(t, "r", "k"),
        kept = kept.join(", "),
        on_kl = on(t, "k", "l"),
    );
    ttx.execute(&keep, &[])
        .await
        .map_err(fail("lock the rows receiving increments"))?;
    Ok(())
}

/// After the winners' rows are in: each key `dst` held before the apply gets its kept value
/// plus the increments (a NULL counts as 0; no increment leaves a NULL alone).
pub async fn after(
    ttx: &Transaction<'_>,
    dst: &str,
    t: &TablePlan,
    rows: Option<&Vec<(Key, Vec<String>)>>,
) -> Result<(), PgError> {
    if rows.map_or(true, |r| r.is_empty()) || t.increments.is_empty() {
        return Ok(());
    }
    let set: Vec<String> = (t.increments.iter().enumerate())
        .map(|(i, (c, ty))| {
            format!(
                "{c} = CASE WHEN k.drover_i{i} = 0 THEN k.drover_p{i} ELSE (coalesce(k.drover_p{i}, 0) + k.drover_i{i})::{ty} END"
            )
        })
        .collect();
    let sql = format!(
        "UPDATE {tb} AS r SET {set} FROM {tmp} AS k WHERE {on} AND k.drover_existed",
        tb = t.quoted,
        set = set.join(", "),
        tmp = t.temp_name("inc", dst),
        on = on(t, "r", "k"),
    );
    ttx.execute(&sql, &[])
        .await
        .map_err(|e| PgError::query(dst, format!("add the increments of {}", t.display), e))?;
    Ok(())
}

/// Adds what turns the winner's image of one key into the right value for a database new to
/// the key (`add_missing`), per receiver. The image holds the increments the winner had at its
/// round snapshot: the other masters' changes pending to both the winner and that receiver
/// are added on top, and the winner's own past the round's cut are taken off (the next round
/// sends them as increments, to a receiver that then holds the key).
pub fn collect_missing(
    by: &mut ByReceiver,
    key: &Key,
    changes: &BTreeMap<String, Change>,
    winner: Option<&str>,
    dbs: &[String],
) {
    let Some(w) = winner else { return };
    if let Some(past) = changes.get(w).map(|c| &c.past_cut) {
        if past.iter().any(|p| !is_zero(p)) {
            for db in dbs.iter().filter(|d| *d != w) {
                let rows = by.entry(db.clone()).or_default();
                rows.push((key.clone(), past.clone()));
            }
        }
    }
    for (s, ch) in changes.iter().filter(|(s, _)| s.as_str() != w) {
        let Some(lacking) = ch.incs.get(w) else {
            continue;
        };
        for receiver in ch.incs.keys().filter(|r| *r != w && *r != s) {
            let rows = by.entry(receiver.clone()).or_default();
            rows.push((key.clone(), lacking.clone()));
        }
    }
}

/// Whether an increment (as text) is zero: `0`, `-0`, `0.00`, `-0.0`.
fn is_zero(v: &str) -> bool {
    v.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
}

/// After `after`: each key new to `dst` (its row came as the winner's image) gets the
/// increments the winner lacked, from `collect_missing`.
pub async fn add_missing(
    ttx: &Transaction<'_>,
    dst: &str,
    t: &TablePlan,
    rows: Option<&Vec<(Key, Vec<String>)>>,
) -> Result<(), PgError> {
    let Some(rows) = rows.filter(|r| !r.is_empty() && !t.increments.is_empty()) else {
        return Ok(());
    };
    let (nk, n) = (t.key.len(), t.increments.len());
    let keys_m: Vec<String> = (t.key.iter().zip(&t.key_types).enumerate())
        .map(|(i, (k, ty))| format!("u.c{i}::{ty} AS {k}"))
        .collect();
    let sums: Vec<String> = (t.increments.iter().enumerate())
        .map(|(i, (_, ty))| format!("sum(u.i{i}::{}) AS i{i}", inc_type(ty)))
        .collect();
    let names: Vec<String> = (0..nk)
        .map(|i| format!("c{i}"))
        .chain((0..n).map(|i| format!("i{i}")))
        .collect();
    let unnest: Vec<String> = (1..=nk + n).map(|i| format!("${i}::text[]")).collect();
    let set: Vec<String> = (t.increments.iter().enumerate())
        .map(|(i, (c, ty))| {
            format!("{c} = CASE WHEN m.i{i} = 0 THEN r.{c} ELSE (coalesce(r.{c}, 0) + m.i{i})::{ty} END")
        })
        .collect();
    let sql = format!(
        "UPDATE {tb} AS r SET {set} FROM (SELECT {km}, {sums} FROM unnest({un}) AS u({names}) GROUP BY {groups}) AS m, \
         {tmp} AS k WHERE {on_rm} AND {on_km} AND k.drover_existed IS NOT TRUE",
        tb = t.quoted,
        set = set.join(", "),
        km = keys_m.join(", "),
        sums = sums.join(", "),
        un = unnest.join(", "),
        names = names.join(", "),
        groups = (1..=nk).map(|i| i.to_string()).collect::<Vec<_>>().join(", "),
        tmp = t.temp_name("inc", dst),
        on_rm = on(t, "r", "m"),
        on_km = on(t, "k", "m"),
    );
    let flat: Vec<Key> = (rows.iter())
        .map(|(k, s)| k.iter().chain(s.iter()).cloned().collect())
        .collect();
    let refs: Vec<&Key> = flat.iter().collect();
    let columns = keys::by_column(&refs, nk + n);
    ttx.execute(&sql, &keys::params(&columns))
        .await
        .map_err(|e| {
            PgError::query(
                dst,
                format!(
                    "add the increments missing from the winner's image of {}",
                    t.display
                ),
                e,
            )
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(other: bool, incs: &[(&str, &str)]) -> Change {
        Change {
            changed_at: chrono::Utc::now(),
            pending_to: incs.iter().map(|(r, _)| r.to_string()).collect(),
            other,
            incs: (incs.iter())
                .map(|(r, v)| (r.to_string(), vec![v.to_string()]))
                .collect(),
            past_cut: vec!["0".to_string()],
        }
    }

    fn dbs() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    #[test]
    fn a_new_key_gets_what_the_winner_lacked() {
        // a inserted the key (pending to c only); b added 5, pending to a and c.
        let changes = BTreeMap::from([
            ("a".to_string(), change(true, &[("c", "11")])),
            ("b".to_string(), change(false, &[("a", "5"), ("c", "5")])),
        ]);
        let key: Key = vec!["500".to_string()];
        let mut by = ByReceiver::new();
        collect_missing(&mut by, &key, &changes, Some("a"), &dbs());
        assert_eq!(by.len(), 1, "{by:?}");
        assert_eq!(by["c"], vec![(key.clone(), vec!["5".to_string()])]);
        let mut none = ByReceiver::new();
        collect_missing(&mut none, &key, &changes, None, &dbs());
        assert!(none.is_empty());
    }

    #[test]
    fn a_new_key_loses_the_winners_increments_past_the_cut() {
        // a's image holds 11 that a bounded round leaves for the next one.
        let mut a = change(true, &[("c", "7")]);
        a.past_cut = vec!["-11".to_string()];
        let changes = BTreeMap::from([("a".to_string(), a)]);
        let key: Key = vec!["500".to_string()];
        let mut by = ByReceiver::new();
        collect_missing(&mut by, &key, &changes, Some("a"), &dbs());
        let undo = vec![(key.clone(), vec!["-11".to_string()])];
        assert_eq!((by.len(), &by["b"], &by["c"]), (2, &undo, &undo));
    }

    #[test]
    fn every_database_but_the_winner_keeps_its_value_under_the_image() {
        // b added 5 (not at a yet); a's insert, pending to c only, wins: b gets a row with no
        // increment, so that `after` restores its value over a's image.
        let changes = BTreeMap::from([
            ("a".to_string(), change(true, &[("c", "7")])),
            ("b".to_string(), change(false, &[("a", "5"), ("c", "5")])),
        ]);
        let key: Key = vec!["500".to_string()];
        let mut by = ByReceiver::new();
        collect(&mut by, &key, &changes, Some("a"), &dbs());
        let row = |v: &str| (key.clone(), vec![v.to_string()]);
        assert_eq!(by["b"], vec![row("0")]);
        assert_eq!(by["a"], vec![row("5")]);
        assert_eq!(by["c"], vec![row("7"), row("5"), row("0")]);
        let mut alone = ByReceiver::new();
        collect(&mut alone, &key, &changes, None, &dbs());
        assert!(!alone.contains_key("b"), "{alone:?}");
        assert!(is_zero("-0.00") && is_zero("0") && !is_zero("-10"));
    }
}
