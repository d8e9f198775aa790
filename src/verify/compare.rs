//! Comparing one table between the reference and every other database, range by range.
//!
//! The reference walks its primary key in ranges of [`RANGE_ROWS`] rows (keyset pagination,
//! never OFFSET), hashing each range on the server: count and md5 of the row hashes in key
//! order. Every other database hashes the same key range `(lo, hi]` the same way. While they do,
//! the reference already reads its next range, so in the common case (identical) each table is
//! read once per database, as index range scans, and only a few numbers cross the network.
//!
//! A range whose count or hash differs is narrowed: when both sides have at most [`LEAF_ROWS`]
//! rows in it, their key and row-hash lists are fetched and diffed in memory; when the other side
//! has more (rows the reference lacks), that side splits the range into pieces of `RANGE_ROWS`
//! of its own rows and each differing piece is diffed. Memory therefore stays bounded by
//! `LEAF_ROWS` keys whatever the table size.
//!
//! Two servers with different collations (or collation library versions, as after a glibc
//! upgrade) can sort text keys differently, so the reference's range ends need not be in order on
//! another server. Each side therefore starts its next range after the greatest range end so far
//! *in its own order*: the ranges of every side stay disjoint and cover all its rows, so each row
//! is examined exactly once per side. A key seen on one side of a range only is then looked up by
//! equality (which does not depend on collation) on the other side before it is reported: present
//! on the reference means the reference's range that holds it reports it, absent means it really
//! is missing or extra.

use std::collections::HashMap;

use futures::future::{join, join_all};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use crate::pg::error::PgError;
use crate::verify::key::KeyShape;
use crate::verify::sql::{Bounds, KeyText, TableSql};
use crate::verify::Kind;

/// Rows per range the reference hashes at a time.
pub const RANGE_ROWS: usize = 10_000;

/// Most rows one side may have in a range that is diffed by listing its keys.
const LEAF_ROWS: i64 = 2 * RANGE_ROWS as i64;

/// One database's session, inside its verify snapshot, with the table's SQL for it.
pub struct Side<'a> {
    pub name: &'a str,
    pub client: &'a Client,
    pub sql: &'a TableSql,
}

/// What a side holds in a key range.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Agg {
    count: i64,
    /// md5 of the row hashes in key order; None for an empty range.
    hash: Option<String>,
}

/// A range as the leader read it: its aggregate and its last key (None when empty).
struct Led {
    agg: Agg,
    last: Option<KeyText>,
}

/// One differing key, as found.
#[derive(Debug, Clone)]
pub struct Found {
    pub key: KeyText,
    pub kind: Kind,
    pub database: String,
}

/// Collects differences: all are counted, the first `limit` are kept.
#[derive(Debug)]
pub struct Collector {
    limit: usize,
    pub shown: Vec<Found>,
    pub count: u64,
}

impl Collector {
    pub fn new(limit: usize) -> Collector {
        Collector {
            limit,
            shown: Vec::new(),
            count: 0,
        }
    }

    pub fn push(&mut self, f: Found) {
        self.count += 1;
        if self.shown.len() < self.limit {
            self.shown.push(f);
        }
    }
}

/// A table's comparison: its key, and the name errors give it.
pub struct Table<'a> {
    pub shape: &'a KeyShape,
    pub display: &'a str,
}

impl Table<'_> {
    /// Compares the table on `reference` with each of `others`; returns the row count of each
    /// database (reference first) and adds the differences to `out`.
    pub async fn compare(
        &self,
        reference: &Side<'_>,
        others: &[Side<'_>],
        out: &mut Collector,
    ) -> Result<Vec<i64>, PgError> {
        let mut rows = vec![0i64; 1 + others.len()];
        let mut ref_lo: Option<KeyText> = None;
        // Each other side's next range starts after the greatest range end so far, in its order.
        let mut other_lo: Vec<Option<KeyText>> = vec![None; others.len()];
        let mut cur = self.lead(reference, &Bounds::default()).await?;
        loop {
            // A short range is the last one: it runs to the end of the key space.
            let hi = if cur.agg.count < RANGE_ROWS as i64 {
                None
            } else {
                cur.last.clone()
            };
            rows[0] += cur.agg.count;
            let his: Vec<KeyText> = hi.iter().cloned().collect();
            let ref_bounds = Bounds {
                lo: ref_lo.clone(),
                his: his.clone(),
            };
            let other_bounds: Vec<Bounds> = other_lo
                .iter()
                .map(|lo| Bounds {
                    lo: lo.clone(),
                    his: his.clone(),
                })
                .collect();
            let follow = join_all(
                others
                    .iter()
                    .zip(&other_bounds)
                    .map(|(o, b)| self.follow(o, b)),
            );
            // While the others hash this range, the reference reads its next one.
            let next_bounds = Bounds {
                lo: hi.clone(),
                his: Vec::new(),
            };
            let (next, follows) = if hi.is_some() {
                let (n, f) = join(self.lead(reference, &next_bounds), follow).await;
                (Some(n?), f)
            } else {
                (None, follow.await)
            };
            for (i, (other, followed)) in others.iter().zip(follows).enumerate() {
                let (agg, advances) = followed?;
                rows[i + 1] += agg.count;
                if agg != cur.agg {
                    self.narrow(
                        reference,
                        &ref_bounds,
                        other,
                        &other_bounds[i],
                        agg.count,
                        out,
                    )
                    .await?;
                }
                if advances {
                    other_lo[i] = hi.clone();
                }
            }
            match (hi, next) {
                (Some(h), Some(n)) => {
                    ref_lo = Some(h);
                    cur = n;
                }
                _ => return Ok(rows),
            }
        }
    }

    /// Finds the differences of `other` against `reference` in a range that differs.
    async fn narrow(
        &self,
        reference: &Side<'_>,
        ref_bounds: &Bounds,
        other: &Side<'_>,
        other_bounds: &Bounds,
        other_count: i64,
        out: &mut Collector,
    ) -> Result<(), PgError> {
        if other_count <= LEAF_ROWS {
            return self
                .diff_lists(reference, ref_bounds, other, other_bounds, out)
                .await;
        }
        // `other` has many rows the reference lacks here: it cuts its range into pieces, and the
        // reference follows with pieces of its own range, again after its greatest end so far.
        let mut lead_lo = other_bounds.lo.clone();
        let mut ref_lo = ref_bounds.lo.clone();
        loop {
            let led = self
                .lead(
                    other,
                    &Bounds {
                        lo: lead_lo.clone(),
                        his: other_bounds.his.clone(),
                    },
                )
                .await?;
            let piece_end = if led.agg.count < RANGE_ROWS as i64 {
                None
            } else {
                led.last.clone()
            };
            // The piece end goes first: `follow` says whether the first hi lies after lo.
            let with_end = |his: &[KeyText]| -> Vec<KeyText> {
                piece_end.iter().chain(his).cloned().collect()
            };
            let ref_piece = Bounds {
                lo: ref_lo.clone(),
                his: with_end(&ref_bounds.his),
            };
            let other_piece = Bounds {
                lo: lead_lo.clone(),
                his: with_end(&other_bounds.his),
            };
            let (agg, advances) = self.follow(reference, &ref_piece).await?;
            if agg != led.agg {
                self.diff_lists(reference, &ref_piece, other, &other_piece, out)
                    .await?;
            }
            let Some(end) = piece_end else {
                return Ok(());
            };
            if advances {
                ref_lo = Some(end.clone());
            }
            lead_lo = Some(end);
        }
    }

    /// Diffs the key and row-hash lists of a small range, settling one-sided keys by lookup.
    async fn diff_lists(
        &self,
        reference: &Side<'_>,
        ref_bounds: &Bounds,
        other: &Side<'_>,
        other_bounds: &Bounds,
        out: &mut Collector,
    ) -> Result<(), PgError> {
        let mut ref_rows: HashMap<KeyText, String> = self
            .list(reference, ref_bounds)
            .await?
            .into_iter()
            .collect();
        let mut found = Vec::new();
        let mut only_other = Vec::new();
        for (key, hash) in self.list(other, other_bounds).await? {
            match ref_rows.remove(&key) {
                Some(h) if h == hash => {}
                Some(_) => found.push((key, Kind::Changed)),
                None => only_other.push(key),
            }
        }
        let only_ref: Vec<(KeyText, String)> = ref_rows.into_iter().collect();
        let keys: Vec<KeyText> = only_ref.iter().map(|(k, _)| k.clone()).collect();
        let there = self.lookup(other, &keys).await?;
        for ((key, hash), there) in only_ref.into_iter().zip(there) {
            match there {
                None => found.push((key, Kind::Missing)),
                Some(h) if h != hash => found.push((key, Kind::Changed)),
                Some(_) => {}
            }
        }
        let on_ref = self.lookup(reference, &only_other).await?;
        for (key, on_ref) in only_other.into_iter().zip(on_ref) {
            // Present on the reference: the reference's range that holds it reports it.
            if on_ref.is_none() {
                found.push((key, Kind::Extra));
            }
        }
        found.sort_by(|a, b| self.shape.compare(&a.0, &b.0));
        for (key, kind) in found {
            out.push(Found {
                key,
                kind,
                database: other.name.to_string(),
            });
        }
        Ok(())
    }

    /// The first `RANGE_ROWS` rows of `bounds` on a leading side.
    async fn lead(&self, side: &Side<'_>, bounds: &Bounds) -> Result<Led, PgError> {
        let sql = side
            .sql
            .leader_range(bounds.lo.is_some(), bounds.his.len(), RANGE_ROWS);
        let row = side
            .client
            .query_opt(&sql, &bounds.params())
            .await
            .map_err(|e| self.error(side, "hash a key range", e))?;
        Ok(match row {
            None => Led {
                agg: Agg {
                    count: 0,
                    hash: None,
                },
                last: None,
            },
            Some(r) => Led {
                agg: Agg {
                    count: r.get(0),
                    hash: r.get(1),
                },
                last: Some((0..side.sql.key_len()).map(|i| r.get(2 + i)).collect()),
            },
        })
    }

    /// A following side's aggregate of `bounds`, and whether its first hi lies after its lo.
    async fn follow(&self, side: &Side<'_>, bounds: &Bounds) -> Result<(Agg, bool), PgError> {
        let sql = side
            .sql
            .follower_range(bounds.lo.is_some(), bounds.his.len());
        let r = side
            .client
            .query_one(&sql, &bounds.params())
            .await
            .map_err(|e| self.error(side, "hash a key range", e))?;
        Ok((
            Agg {
                count: r.get(0),
                hash: r.get(1),
            },
            r.get(2),
        ))
    }

    /// Keys and row hashes of a range.
    async fn list(
        &self,
        side: &Side<'_>,
        bounds: &Bounds,
    ) -> Result<Vec<(KeyText, String)>, PgError> {
        let sql = side.sql.list_range(bounds.lo.is_some(), bounds.his.len());
        let n = side.sql.key_len();
        let rows = side
            .client
            .query(&sql, &bounds.params())
            .await
            .map_err(|e| self.error(side, "list the keys of a differing range", e))?;
        Ok(rows
            .into_iter()
            .map(|r| ((0..n).map(|i| r.get(i)).collect(), r.get(n)))
            .collect())
    }

    /// Row hash of each key on `side`, None where the key is absent.
    async fn lookup(
        &self,
        side: &Side<'_>,
        keys: &[KeyText],
    ) -> Result<Vec<Option<String>>, PgError> {
        let mut hashes = vec![None; keys.len()];
        if keys.is_empty() {
            return Ok(hashes);
        }
        let columns: Vec<Vec<&str>> = (0..side.sql.key_len())
            .map(|i| keys.iter().map(|k| k[i].as_str()).collect())
            .collect();
        let params: Vec<&(dyn ToSql + Sync)> =
            columns.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        let rows = side
            .client
            .query(&side.sql.lookup(), &params)
            .await
            .map_err(|e| self.error(side, "look up differing keys", e))?;
        for r in rows {
            let ord: i64 = r.get(0);
            if let Some(slot) = usize::try_from(ord - 1)
                .ok()
                .and_then(|i| hashes.get_mut(i))
            {
                *slot = Some(r.get(1));
            }
        }
        Ok(hashes)
    }

    fn error(&self, side: &Side<'_>, what: &str, e: tokio_postgres::Error) -> PgError {
        PgError::query(side.name, format!("verify {}: {what}", self.display), e)
    }
}
