//! A shared batch's changes (`batch`): like a small round's (`small`), every changed key with
//! its current row, plus the delta rows behind each key (transaction id, change time). A
//! target whose progress is after the batch's start takes only the keys some transaction its
//! progress has not seen changed, with exactly its own pending counts: the same changes a read
//! of its own at the batch's snapshot would give it (`for_target`).

use chrono::{DateTime, Utc};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::pg::error::PgError;
use crate::pg::simple;
use crate::round::plan::{TablePlan, Window};
use crate::round::small::{TextChanges, TextRow, SMALL_ROWS};
use crate::round::snapshot::Snapshot;

/// One changed key: its current row (None: deleted on the source) and its delta rows.
pub struct KeyChange {
    key: TextRow,
    row: Option<TextRow>,
    /// (transaction id, change time) of each delta row of the key.
    deltas: Vec<(i64, Option<DateTime<Utc>>)>,
}

/// One table's changes after the batch's start.
pub struct KeyedChanges {
    pub table: usize,
    keys: Vec<KeyChange>,
}

/// Every changed key joined to its current row, with its delta rows as text
/// (`xid@epoch,...`). At most `SMALL_ROWS + 1` delta rows are read: all of them whenever the
/// batch is small.
fn read_sql(t: &TablePlan, source: &str, w: &Window) -> String {
    let on: Vec<String> = t.key.iter().map(|k| format!("r.{k} = k.{k}")).collect();
    let kcols: Vec<String> = t.key.iter().map(|k| format!("k.{k}")).collect();
    let keys = t.key_list();
    format!(
        "SELECT r.{k1} IS NOT NULL, k.drover_deltas_, {kcols}, r.* FROM (\
         SELECT {keys}, string_agg(drover_xid::text || '@' || extract(epoch FROM drover_changed_at)::text, ',') AS drover_deltas_ \
         FROM ({pending} LIMIT {limit}) AS p GROUP BY {keys}) AS k \
         LEFT JOIN (SELECT {c} FROM {t}) AS r ON {on}",
        k1 = t.key[0],
        kcols = kcols.join(", "),
        pending = t.pending_deltas(source, w),
        limit = SMALL_ROWS + 1,
        c = t.columns,
        t = t.quoted,
        on = on.join(" AND ")
    )
}

/// Reads the changes of `tables` (index, plan, window) in one statement batch, one round trip.
pub async fn read(
    src: &Client,
    source: &str,
    tables: &[(usize, &TablePlan, Window)],
) -> Result<Vec<KeyedChanges>, PgError> {
    let sql: String = (tables.iter())
        .map(|(_, t, w)| format!("{};\n", read_sql(t, source, w)))
        .collect();
    let purpose = || {
        let names: Vec<&str> = tables.iter().map(|(_, t, _)| t.display.as_str()).collect();
        format!("read changes of {}", names.join(", "))
    };
    let answer =
        (src.simple_query(&sql).await).map_err(|e| PgError::query(source, purpose(), e))?;
    let parts = simple::split(answer);
    if parts.len() != tables.len() {
        let msg = format!(
            "{}: {} answers for {} tables",
            purpose(),
            parts.len(),
            tables.len()
        );
        return Err(PgError::protocol(source, msg));
    }
    Ok((tables.iter().zip(parts))
        .map(|((i, t, _), m)| parse(*i, t.key.len(), m))
        .collect())
}

fn parse(table: usize, nk: usize, messages: Vec<SimpleQueryMessage>) -> KeyedChanges {
    let keys = (simple::rows(messages).iter())
        .map(|r| {
            let text = |i: usize| r.get(i).map(str::to_string);
            let present = r.get(0) == Some("t");
            KeyChange {
                key: (2..2 + nk).map(text).collect(),
                row: present.then(|| (2 + nk..r.len()).map(text).collect()),
                deltas: deltas(r.get(1).unwrap_or_default()),
            }
        })
        .collect();
    KeyedChanges { table, keys }
}

/// `xid@epoch,...` as (xid, time) pairs.
fn deltas(text: &str) -> Vec<(i64, Option<DateTime<Utc>>)> {
    (text.split(',').filter(|d| !d.is_empty()))
        .filter_map(|d| {
            let (xid, epoch) = d.split_once('@')?;
            let at = (epoch.parse::<f64>().ok())
                .and_then(|e| DateTime::from_timestamp_micros((e * 1e6) as i64));
            Some((xid.parse().ok()?, at))
        })
        .collect()
}

/// Per table: pending delta rows and the oldest of them.
pub type Pending = Vec<(u64, Option<DateTime<Utc>>)>;

/// What a target at `prevs` applies from `changes`: the keys some delta row it has not seen
/// changed, and per table its pending delta rows and the oldest of them.
/// Whether a target at `prevs` has not seen some of `changes` (`for_target` would give it rows).
pub fn unseen(changes: &[KeyedChanges], prevs: &[Snapshot]) -> bool {
    (changes.iter()).any(|c| {
        let prev = &prevs[c.table];
        (c.keys.iter()).any(|k| k.deltas.iter().any(|(x, _)| !prev.sees(*x)))
    })
}

pub fn for_target(changes: &[KeyedChanges], prevs: &[Snapshot]) -> (Vec<TextChanges>, Pending) {
    let mut pending = vec![(0, None); prevs.len()];
    let mut out = Vec::new();
    for c in changes {
        let prev = &prevs[c.table];
        let mut t = TextChanges {
            table: c.table,
            keys: Vec::new(),
            rows: Vec::new(),
            gone: Vec::new(),
        };
        let p: &mut (u64, Option<DateTime<Utc>>) = &mut pending[c.table];
        for k in &c.keys {
            let unseen: Vec<_> = k.deltas.iter().filter(|(x, _)| !prev.sees(*x)).collect();
            if unseen.is_empty() {
                continue;
            }
            p.0 += unseen.len() as u64;
            for (_, at) in unseen {
                p.1 = match (p.1, at) {
                    (Some(a), Some(b)) => Some(a.min(*b)),
                    (a, b) => a.or(*b),
                };
            }
            t.keys.push(k.key.clone());
            match &k.row {
                Some(r) => t.rows.push(r.clone()),
                None => t.gone.push(k.key.clone()),
            }
        }
        if !t.keys.is_empty() {
            out.push(t);
        }
    }
    (out, pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, row: Option<&str>, deltas: &str) -> KeyChange {
        KeyChange {
            key: vec![Some(id.into())],
            row: row.map(|v| vec![Some(id.into()), Some(v.into())]),
            deltas: super::deltas(deltas),
        }
    }

    #[test]
    fn a_target_ahead_of_the_start_takes_only_what_it_has_not_seen() {
        let changes = vec![KeyedChanges {
            table: 0,
            keys: vec![
                key("1", Some("a"), "100@1700000000.5"),
                key("2", None, "100@1700000000.5,105@1700000001"),
                key("3", Some("c"), "103@1700000002"),
            ],
        }];
        let start = Snapshot::parse("100:100:").unwrap();
        let (all, pending) = for_target(&changes, std::slice::from_ref(&start));
        assert_eq!(all[0].keys.len(), 3);
        assert_eq!(pending[0].0, 4);
        // Sees 100 and 103 (101..104 finished but 102 ran); not 105.
        let ahead = Snapshot::parse("102:105:102").unwrap();
        let (some, pending) = for_target(&changes, std::slice::from_ref(&ahead));
        assert_eq!(some[0].keys, vec![vec![Some("2".to_string())]]);
        assert_eq!(some[0].gone, vec![vec![Some("2".to_string())]]);
        assert!(some[0].rows.is_empty());
        assert_eq!(pending[0].0, 1);
        assert_eq!(pending[0].1.unwrap().timestamp(), 1700000001);
        // Everything seen: nothing to apply.
        let done = Snapshot::parse("106:106:").unwrap();
        let (none, pending) = for_target(&changes, std::slice::from_ref(&done));
        assert!(none.is_empty());
        assert_eq!(pending[0], (0, None));
    }
}
