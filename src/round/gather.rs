//! Multi-master rounds, first half: read every source's pending keys under its snapshot,
//! per receiver, and the row versions of conflicting keys for the conflict log.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::pg::error::PgError;
use crate::pg::ident::quote_literal;
use crate::round::increments;
use crate::round::keys::{self, Key};
use crate::round::plan::TablePlan;
use crate::round::resolve::Change;
use crate::round::snapshot::Snapshot;

/// Every key pending on some source for one table: key -> source -> change.
pub type Pending = HashMap<Key, BTreeMap<String, Change>>;

/// What a source's delta table of one table holds for this round.
#[derive(Debug, Default)]
pub struct SourceTable {
    /// Receivers with a TRUNCATE pending from this source.
    pub truncate_to: Vec<String>,
    /// Delta rows at or above the oldest receiver horizon.
    pub retained: i64,
}

/// `drover_xid` is newer than `prev`: not yet applied by that receiver. (The upper bound makes
/// it an index range for the planner: see `TablePlan::from`.)
pub(crate) fn pending_pred(prev: &Snapshot) -> String {
    let s = prev.sql();
    format!(
        "(drover_xid >= txid_snapshot_xmin({s}) AND drover_xid < {max} AND NOT txid_visible_in_snapshot(drover_xid, {s}))",
        max = i64::MAX
    )
}

/// Reads the keys of `table` pending on `source` for each of `receivers` (with their progress
/// snapshots), up to the round's snapshot or cut `upto`, into `pending`; returns the table's
/// truncate and retention facts.
pub async fn pending_keys(
    client: &Client,
    (source, upto): (&str, &Snapshot),
    table: &TablePlan,
    receivers: &[(String, Snapshot)],
    pending: &mut Pending,
) -> Result<SourceTable, PgError> {
    let delta = &table.deltas[source];
    let min_xmin = receivers.iter().map(|(_, s)| s.xmin()).min().unwrap_or(1);
    let preds: Vec<String> = receivers.iter().map(|(_, s)| pending_pred(s)).collect();
    let sql = pending_keys_sql(table, delta, min_xmin, &preds, upto);
    let purpose = format!("read pending keys of {}", table.display);
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(|e| PgError::query(source, &purpose, e))?;
    for row in rows {
        let (key, change) = pending_change(&row, table, receivers);
        pending
            .entry(key)
            .or_default()
            .insert(source.to_string(), change);
    }
    let scope = DeltaScope {
        delta,
        min_xmin,
        preds: &preds,
    };
    truncates_and_retained(client, (source, upto), &scope, receivers, &purpose).await
}

/// One row per pending key: the key as text, its latest change time, per receiver whether
/// it is pending there, then the increment columns.
fn pending_keys_sql(
    table: &TablePlan,
    delta: &str,
    min_xmin: i64,
    preds: &[String],
    upto: &Snapshot,
) -> String {
    // Below the round's cut (`multi_backlog`).
    let any = format!(
        "({}) AND txid_visible_in_snapshot(drover_xid, {})",
        preds.join(" OR "),
        upto.sql()
    );
    let texts: Vec<String> = table.key.iter().map(|k| format!("{k}::text")).collect();
    let flags: Vec<String> = preds.iter().map(|p| format!("bool_or({p})")).collect();
    format!(
        "SELECT {texts}, max(drover_changed_at) FILTER (WHERE {any}), {flags}{incs} FROM {delta} \
         WHERE drover_xid >= {min_xmin} AND NOT drover_truncate GROUP BY {keys} HAVING bool_or({any})",
        texts = texts.join(", "),
        flags = flags.join(", "),
        incs = increments::gather_columns(table, &any, preds, upto),
        keys = table.key_list(),
    )
}

/// A row of [`pending_keys_sql`] as the key and its change on this source.
fn pending_change(
    row: &tokio_postgres::Row,
    table: &TablePlan,
    receivers: &[(String, Snapshot)],
) -> (Key, Change) {
    let nk = table.key.len();
    let key: Key = (0..nk).map(|i| row.get::<_, String>(i)).collect();
    let changed_at: DateTime<Utc> = row.get(nk);
    let pending_to = receivers
        .iter()
        .enumerate()
        .filter(|(i, _)| row.get::<_, bool>(nk + 1 + i))
        .map(|(_, (r, _))| r.clone())
        .collect();
    let mut change = Change {
        changed_at,
        pending_to,
        other: true,
        incs: BTreeMap::new(),
        past_cut: Vec::new(),
    };
    increments::read(row, nk + 1 + receivers.len(), table, receivers, &mut change);
    (key, change)
}

/// The delta rows a round of one table reads: its delta table, from the oldest receiver
/// horizon, and per receiver the predicate of what it has not applied.
struct DeltaScope<'a> {
    delta: &'a str,
    min_xmin: i64,
    preds: &'a [String],
}

/// Which receivers have a TRUNCATE pending, and how many delta rows are retained.
async fn truncates_and_retained(
    client: &Client,
    (source, upto): (&str, &Snapshot),
    scope: &DeltaScope<'_>,
    receivers: &[(String, Snapshot)],
    purpose: &str,
) -> Result<SourceTable, PgError> {
    let (delta, min_xmin) = (scope.delta, scope.min_xmin);
    let truncs: Vec<String> = scope
        .preds
        .iter()
        .map(|p| format!("coalesce(bool_or(drover_truncate AND {p}), false)"))
        .collect();
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), {} FROM {delta} WHERE drover_xid >= {min_xmin} AND txid_visible_in_snapshot(drover_xid, {})",
                truncs.join(", "),
                upto.sql()
            ),
            &[],
        )
        .await
        .map_err(|e| PgError::query(source, purpose, e))?;
    Ok(SourceTable {
        retained: row.get(0),
        truncate_to: receivers
            .iter()
            .enumerate()
            .filter(|(i, _)| row.get::<_, bool>(1 + i))
            .map(|(_, (r, _))| r.clone())
            .collect(),
    })
}

/// For each key, the key as JSON and the current row on `source` as JSON (None when the row
/// does not exist there), read inside the source's round snapshot.
pub async fn versions(
    client: &Client,
    source: &str,
    table: &TablePlan,
    keys: &[&Key],
) -> Result<Vec<(serde_json::Value, Option<serde_json::Value>)>, PgError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let cols: Vec<String> = (0..table.key.len()).map(|i| format!("c{i}")).collect();
    let unnest: Vec<String> = (0..table.key.len())
        .map(|i| format!("${}::text[]", i + 1))
        .collect();
    let on: Vec<String> = table
        .key
        .iter()
        .zip(&table.key_types)
        .enumerate()
        .map(|(i, (k, t))| format!("r.{k} = u.c{i}::{t}"))
        .collect();
    let json_key: Vec<String> = table
        .key
        .iter()
        .zip(&table.key_types)
        .enumerate()
        .map(|(i, (k, t))| {
            let name = k.trim_matches('"').replace("\"\"", "\"");
            format!("{}, u.c{i}::{t}", quote_literal(&name))
        })
        .collect();
    let sql = format!(
        "SELECT jsonb_build_object({jk})::text, row_to_json(r)::text \
         FROM unnest({un}) WITH ORDINALITY AS u({cols}, ord) \
         LEFT JOIN {t} AS r ON {on} ORDER BY u.ord",
        jk = json_key.join(", "),
        un = unnest.join(", "),
        cols = cols.join(", "),
        t = table.quoted,
        on = on.join(" AND "),
    );
    let columns = keys::by_column(keys, table.key.len());
    let params = keys::params(&columns);
    let rows = client.query(&sql, &params).await.map_err(|e| {
        PgError::query(
            source,
            format!("read conflicting rows of {}", table.display),
            e,
        )
    })?;
    let parse = |s: &str| serde_json::from_str(s).unwrap_or(serde_json::Value::String(s.into()));
    Ok(rows
        .iter()
        .map(|r| {
            let key: String = r.get(0);
            let row: Option<String> = r.get(1);
            (parse(&key), row.as_deref().map(parse))
        })
        .collect())
}
