//! Key-less (whole-row) tables across masters. There is no key to decide a winner on: each
//! master's window of signed row images (`capture::images`) goes to every other database of
//! the sync, which applies the sum of all senders' windows per image: n copies fewer (as many
//! as exist) or n copies more. Summing before applying makes every database end with the
//! same count even when masters delete the same row at once.
//!
//! A pending TRUNCATE reloads the table from the truncating master (the first in config
//! order), then adds every write that master had not seen: the other masters' windows
//! towards it and, on a master being reloaded, its own writes since its round snapshot. So a
//! TRUNCATE erases what its master had seen, and nothing else.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::pg::copy::{pipe, CopyEnd};
use crate::pg::error::PgError;
use crate::round::gather::pending_pred;
use crate::round::multi_input::{MultiInput, TableRound};
use crate::round::plan::TablePlan;
use crate::round::report::{RoundReport, TableCounts};
use crate::round::snapshot::Snapshot;
use crate::round::winners::SourceTxs;

/// Reads, on every source, which receivers have image changes or a TRUNCATE pending for `t`
/// below the round's cut, and what the delta table retains.
pub(super) async fn gather(
    input: &MultiInput<'_>,
    t: &TablePlan,
    (txs, curs): (&SourceTxs<'_>, &HashMap<String, Snapshot>),
    report: &mut RoundReport,
) -> Result<TableRound, PgError> {
    let mut tr = TableRound::default();
    let (mut pending, mut oldest) = (0u64, None::<DateTime<Utc>>);
    for s in input.sources {
        let receivers: Vec<(&str, Snapshot)> = (input.databases.iter())
            .filter(|d| d.name != s.name)
            .map(|d| {
                (
                    d.name.as_str(),
                    input.progress.get(&s.name, &d.name, &t.display),
                )
            })
            .collect();
        if receivers.is_empty() {
            continue;
        }
        let sql = stats_sql(t, &s.name, &curs[&s.name], &receivers);
        let row = (txs.get(&s.name).query_one(&sql, &[]).await).map_err(|e| {
            PgError::query(&s.name, format!("read pending images of {}", t.display), e)
        })?;
        let n = receivers.len();
        let flag = |i: usize| row.get::<_, Option<bool>>(i).unwrap_or(false);
        let truncating: Vec<bool> = (0..n).map(|i| flag(3 + n + i)).collect();
        if truncating.iter().any(|x| *x) && tr.reload_from.is_none() {
            tr.reload_from = Some(s.name.clone());
        }
        let to = tr.pending_to.entry(s.name.clone()).or_default();
        for (i, (r, _)) in receivers.iter().enumerate() {
            if flag(3 + i) || truncating[i] {
                to.insert(r.to_string());
            }
        }
        tr.retained.insert(s.name.clone(), row.get(0));
        pending = pending.max(row.get::<_, i64>(1) as u64);
        if let Some(o) = row.get::<_, Option<DateTime<Utc>>>(2) {
            oldest = Some(oldest.map_or(o, |x| x.min(o)));
        }
    }
    if let Some(a) = &tr.reload_from {
        for s in input.sources.iter().filter(|s| s.name != *a) {
            let prev = input.progress.get(&s.name, a, &t.display);
            tr.reload_prevs.insert(s.name.clone(), prev);
        }
    }
    report.note(&t.display, pending, oldest);
    Ok(tr)
}

/// One row: retained delta rows, pending image rows, the oldest pending change, then per
/// receiver whether images are pending, then whether a TRUNCATE is.
fn stats_sql(
    t: &TablePlan,
    source: &str,
    upto: &Snapshot,
    receivers: &[(&str, Snapshot)],
) -> String {
    let min_xmin = receivers.iter().map(|(_, s)| s.xmin()).min().unwrap_or(1);
    let preds: Vec<String> = receivers.iter().map(|(_, s)| pending_pred(s)).collect();
    let any = format!("({})", preds.join(" OR "));
    let rows: Vec<String> = (preds.iter())
        .map(|p| format!("bool_or(NOT drover_truncate AND {p})"))
        .collect();
    let truncs: Vec<String> = (preds.iter())
        .map(|p| format!("bool_or(drover_truncate AND {p})"))
        .collect();
    format!(
        "SELECT count(*), count(*) FILTER (WHERE {any} AND NOT drover_truncate), \
         min(drover_changed_at) FILTER (WHERE {any}), {rows}, {truncs} FROM {d} \
         WHERE drover_xid >= {min_xmin} AND txid_visible_in_snapshot(drover_xid, {upto})",
        rows = rows.join(", "),
        truncs = truncs.join(", "),
        d = t.deltas[source],
        upto = upto.sql(),
    )
}

/// The images gone in the delta rows matching `pred`, with how many copies go: `img`, `n`
/// (`flip` -1 reads the rows backwards: what went is what must come back).
fn gone_sql(t: &TablePlan, delta: &str, pred: &str, flip: i32) -> String {
    format!(
        "SELECT img, -n FROM (SELECT {img} AS img, ({flip} * sum(drover_sign))::int AS n FROM {delta} \
         WHERE {pred} AND NOT drover_truncate GROUP BY 1) x WHERE n < 0",
        img = t.image(None),
    )
}

/// The images new in the delta rows matching `pred`, each repeated as many times as copies came.
fn new_sql(t: &TablePlan, delta: &str, pred: &str, flip: i32) -> String {
    let img = t.image(None);
    let dc: Vec<String> = t.cols.iter().map(|c| format!("d.{c}")).collect();
    format!(
        "SELECT {dc} FROM (SELECT {c}, ({flip} * sum(drover_sign) OVER (PARTITION BY {img}))::int AS drover_n, \
         row_number() OVER (PARTITION BY {img}) AS drover_rn FROM {delta} \
         WHERE {pred} AND NOT drover_truncate) d CROSS JOIN LATERAL generate_series(1, d.drover_n) \
         WHERE d.drover_rn = 1 AND d.drover_n > 0",
        dc = dc.join(", "),
        c = t.columns,
    )
}

/// The temp tables of one apply: gone images with counts, and new rows.
fn temps(t: &TablePlan, dst: &str) -> (String, String) {
    (t.temp_name("img", dst), t.temp_name("imgrows", dst))
}

/// Per image, the copies still to delete (`delete_net`).
fn net_temp(t: &TablePlan, dst: &str) -> String {
    t.temp_name("imgnet", dst)
}

fn create_temps(t: &TablePlan, dst: &str) -> String {
    let (img, rows) = temps(t, dst);
    format!(
        "CREATE TEMP TABLE IF NOT EXISTS {img} (img text, n int) ON COMMIT DELETE ROWS; \
         CREATE TEMP TABLE IF NOT EXISTS {net} (img text, n int) ON COMMIT DELETE ROWS; \
         CREATE TEMP TABLE IF NOT EXISTS {rows} ON COMMIT DELETE ROWS AS SELECT {c} FROM {t} WITH NO DATA",
        net = net_temp(t, dst),
        c = t.columns,
        t = t.quoted,
    )
}

/// Per gone image: copies to delete once the new copies of the same image are netted out.
fn net_gone(t: &TablePlan, dst: &str) -> String {
    let (img, rows) = temps(t, dst);
    format!(
        "SELECT g.img, g.n - coalesce(i.n, 0) AS n FROM (SELECT img, sum(n) AS n FROM {img} GROUP BY img) g \
         LEFT JOIN (SELECT {ii} AS img, count(*) AS n FROM {rows} AS i GROUP BY 1) i ON i.img = g.img",
        ii = t.image(Some("i")),
    )
}

/// Fills the copies to delete per image: the net gone counts (`net_gone`).
fn fill_net_sql(t: &TablePlan, dst: &str) -> String {
    let (img, _) = temps(t, dst);
    let net = net_temp(t, dst);
    format!(
        "ANALYZE {img}; INSERT INTO {net} SELECT img, n FROM ({g}) AS g WHERE n > 0; ANALYZE {net};",
        g = net_gone(t, dst),
    )
}

/// Deletes up to the copies still to delete of each image (a table may hold identical rows:
/// any n of them) and takes what went off those counts. Answers how many copies it picked
/// and how many of those went: fewer when a concurrent transaction changed a picked copy.
fn delete_sql(t: &TablePlan, dst: &str) -> String {
    let r = t.image(Some("r"));
    let net = net_temp(t, dst);
    format!(
        "WITH x AS (SELECT x.tableoid, x.ctid FROM \
         (SELECT r.tableoid, r.ctid, {r} AS img, row_number() OVER (PARTITION BY {r}) AS rn \
         FROM {tb} AS r WHERE {r} IN (SELECT img FROM {net} WHERE n > 0)) x \
         JOIN {net} AS k ON k.img = x.img WHERE x.rn <= k.n), \
         d AS (DELETE FROM {tb} AS drover_d WHERE (tableoid, ctid) IN (SELECT tableoid, ctid FROM x) \
         RETURNING {dimg} AS img), \
         u AS (UPDATE {net} SET n = {net}.n - c.n FROM (SELECT img, count(*) AS n FROM d GROUP BY img) c \
         WHERE {net}.img = c.img) \
         SELECT (SELECT count(*) FROM x), count(*) FROM d",
        tb = t.quoted,
        dimg = t.image(Some("drover_d")),
    )
}

/// Most passes of `delete_net`; each after the first follows a concurrent delete.
const DELETE_PASSES: usize = 8;

/// Deletes the net gone copies. A local transaction that deleted or updated a copy this
/// statement had picked (READ COMMITTED waits for it, then skips that row) would leave one
/// copy too many: a multiset has no key to tell that the two deletes were of different
/// copies. So while a pass deletes fewer copies than it picked, the statement runs again,
/// with a fresh snapshot, for the copies still wanted. Returns the rows deleted.
async fn delete_net(ttx: &Client, t: &TablePlan, dst: &str) -> Result<u64, PgError> {
    let fail = |what: &str, e| PgError::query(dst, format!("{what} of {}", t.display), e);
    ttx.batch_execute(&fill_net_sql(t, dst))
        .await
        .map_err(|e| fail("count the gone images", e))?;
    let sql = delete_sql(t, dst);
    let mut deleted = 0;
    for _ in 0..DELETE_PASSES {
        let row = (ttx.query_one(&sql, &[]).await).map_err(|e| fail("delete gone rows", e))?;
        let (picked, went): (i64, i64) = (row.get(0), row.get(1));
        deleted += went as u64;
        if went == picked {
            break;
        }
    }
    Ok(deleted)
}

/// Inserts the new copies left once the gone copies of the same image are netted out.
fn insert_sql(t: &TablePlan, dst: &str) -> String {
    let (img, rows) = temps(t, dst);
    let xc: Vec<String> = t.cols.iter().map(|c| format!("x.{c}")).collect();
    format!(
        "INSERT INTO {tb} ({c}) SELECT {xc} FROM (SELECT i.*, {ii} AS drover_img, \
         row_number() OVER (PARTITION BY {ii}) AS drover_rn FROM {rows} AS i) x \
         LEFT JOIN (SELECT img, sum(n) AS n FROM {img} GROUP BY img) g ON g.img = x.drover_img \
         WHERE x.drover_rn > coalesce(g.n, 0)",
        tb = t.quoted,
        c = t.columns,
        xc = xc.join(", "),
        ii = t.image(Some("i")),
    )
}

/// What an image apply on one database needs from the round.
pub(super) struct Here<'a, 'b, 'c> {
    pub input: &'a MultiInput<'b>,
    pub txs: &'a SourceTxs<'c>,
    pub curs: &'a HashMap<String, Snapshot>,
    /// The apply transaction's session.
    pub ttx: &'a Client,
    pub dst: &'a str,
    pub is_source: bool,
}

/// First half of `dst`'s apply of `t` (deletes run children first): loads every sender's
/// images, reloads the table when a TRUNCATE is pending, deletes the net gone copies.
pub(super) async fn delete(
    h: &Here<'_, '_, '_>,
    t: &TablePlan,
    r: &TableRound,
    c: &mut TableCounts,
) -> Result<(), PgError> {
    let (ttx, dst) = (h.ttx, h.dst);
    let fail = |what: &str, e| PgError::query(dst, format!("{what} of {}", t.display), e);
    ttx.batch_execute(&create_temps(t, dst))
        .await
        .map_err(|e| fail("create the image tables", e))?;
    let mut gone = 0;
    let base = match r.reload_from.as_deref().filter(|a| *a != dst) {
        Some(a) => {
            gone += reload(h, t, a, c).await?;
            a
        }
        None => dst,
    };
    // Every other master's window towards `base`: what `dst` (or the reloaded copy) lacks.
    for s in h.input.sources.iter().filter(|s| s.name != base) {
        let pending = (r.pending_to.get(&s.name)).is_some_and(|to| to.contains(dst));
        if base == dst && !pending {
            continue;
        }
        let prev = match r.reload_prevs.get(&s.name) {
            Some(p) if base != dst => p.clone(),
            _ => h.input.progress.get(&s.name, base, &t.display),
        };
        let pred = format!(
            "{} AND txid_visible_in_snapshot(drover_xid, {})",
            pending_pred(&prev),
            h.curs[&s.name].sql()
        );
        gone += load(h, t, (&s.name, h.txs.get(&s.name).client()), &pred, 1).await?;
    }
    if gone > 0 {
        c.deleted += delete_net(ttx, t, dst).await?;
    }
    Ok(())
}

/// Second half (parents first): inserts the net new copies.
pub(super) async fn insert(
    h: &Here<'_, '_, '_>,
    t: &TablePlan,
    c: &mut TableCounts,
) -> Result<(), PgError> {
    c.inserted += (h.ttx.execute(&insert_sql(t, h.dst), &[]).await)
        .map_err(|e| PgError::query(h.dst, format!("insert new rows of {}", t.display), e))?;
    Ok(())
}

/// Replaces `dst`'s rows with `a`'s as of its round cut, and queues `dst`'s own writes since
/// its snapshot to be added back; returns how many gone images were queued.
async fn reload(
    h: &Here<'_, '_, '_>,
    t: &TablePlan,
    a: &str,
    c: &mut TableCounts,
) -> Result<u64, PgError> {
    let (ttx, dst) = (h.ttx, h.dst);
    let fail = |what: &str, e| PgError::query(dst, format!("{what} {}", t.display), e);
    let mut gone = 0;
    if h.is_source {
        // Local writers wait until the reload commits; their writes so far are added back.
        let lock = format!("LOCK TABLE {} IN EXCLUSIVE MODE", t.quoted);
        ttx.batch_execute(&lock)
            .await
            .map_err(|e| fail("lock", e))?;
        let late = pending_pred(&h.curs[dst]);
        gone += load(h, t, (dst, ttx), &late, 1).await?;
    }
    // Not TRUNCATE: the round's own read transaction here may hold a lock on the table.
    c.deleted += (ttx.execute(&format!("DELETE FROM {}", t.quoted), &[]).await)
        .map_err(|e| fail("empty", e))?;
    c.truncated = true;
    let atx = h.txs.get(a).client();
    c.inserted += pipe(
        CopyEnd {
            tx: atx,
            database: a,
            sql: &t.all_rows_out(),
        },
        CopyEnd {
            tx: ttx,
            database: dst,
            sql: &t.rows_in(),
        },
        &format!("copy rows of {} from {a}", t.display),
    )
    .await?;
    // `a`'s snapshot may see writes above its round's cut: take them back out, the next
    // round sends them.
    gone += load(h, t, (a, atx), &pending_pred(&h.curs[a]), -1).await?;
    Ok(gone)
}

/// Queues the images of `from`'s delta rows matching `pred` into `dst`'s temp tables;
/// returns how many gone images came.
async fn load(
    h: &Here<'_, '_, '_>,
    t: &TablePlan,
    (from, client): (&str, &Client),
    pred: &str,
    flip: i32,
) -> Result<u64, PgError> {
    let (ttx, dst) = (h.ttx, h.dst);
    let (img, rows) = temps(t, dst);
    let delta = &t.deltas[from];
    let (gone, new) = (
        gone_sql(t, delta, pred, flip),
        new_sql(t, delta, pred, flip),
    );
    if from == dst {
        let fail = |e| PgError::query(dst, format!("read own images of {}", t.display), e);
        let n = (ttx
            .execute(&format!("INSERT INTO {img} (img, n) {gone}"), &[])
            .await)
            .map_err(fail)?;
        let ins = format!("INSERT INTO {rows} ({}) {new}", t.columns);
        ttx.execute(&ins, &[]).await.map_err(fail)?;
        return Ok(n);
    }
    let purpose = format!("copy images of {} from {from}", t.display);
    let sql = [
        format!("COPY ({gone}) TO STDOUT"),
        format!("COPY {img} (img, n) FROM STDIN"),
        format!("COPY ({new}) TO STDOUT"),
        format!("COPY {rows} ({}) FROM STDIN", t.columns),
    ];
    let to = |sql| CopyEnd {
        tx: ttx,
        database: dst,
        sql,
    };
    let out = |sql| CopyEnd {
        tx: client,
        database: from,
        sql,
    };
    let n = pipe(out(&sql[0]), to(&sql[1]), &purpose).await?;
    pipe(out(&sql[2]), to(&sql[3]), &purpose).await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_counts_are_quoted_and_summed() {
        let mut t =
            crate::round::plan::test_plan("public", "h", &[("a b", "int"), ("x", "float8")], 0);
        t.target_oids.insert("d".into(), 7);
        let del = delete_sql(&t, "d");
        assert!(del.contains("DELETE FROM \"public\".\"h\""), "{del}");
        assert!(del.contains("pg_temp.drover_imgnet_7"), "{del}");
        let fill = fill_net_sql(&t, "d");
        assert!(
            fill.contains("sum(n)") && fill.contains("pg_temp.drover_imgrows_7"),
            "{fill}"
        );
        let ins = insert_sql(&t, "d");
        assert!(
            ins.contains("x.\"a b\"") && ins.contains("coalesce(g.n, 0)"),
            "{ins}"
        );
        let gone = gone_sql(&t, "drover.\"delta_1\"", "true", -1);
        assert!(gone.contains("(-1 * sum(drover_sign))"), "{gone}");
    }
}
