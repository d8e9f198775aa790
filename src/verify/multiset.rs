//! Comparing a table with no key (whole-row replication): the rows of each database are a
//! multiset, duplicates and all-NULL rows included, and two databases agree when every row hash
//! occurs as often on both.
//!
//! Each side first sums its row hashes on the server (count and two 64-bit sums, no sort), so an
//! identical table costs one sequential read per database and a few numbers on the wire. Only a
//! side whose sums differ from the reference's streams its distinct hashes with their counts, in
//! byte order, merged against the reference's stream: memory stays constant whatever the size.
//! A row the reference holds more often is "missing" on the other side, one it holds less often
//! is "extra", once per surplus copy; the key shown is the row hash (`row_md5`).

use std::cmp::Ordering;

use futures::future::join_all;
use futures::{pin_mut, StreamExt, TryStreamExt};
use tokio_postgres::types::ToSql;

use crate::pg::error::PgError;
use crate::verify::compare::{Collector, Found, Side};
use crate::verify::Kind;

/// The key column differences of a whole-row table are listed under.
pub const ROW_HASH: &str = "row_md5";

/// Compares the table on `reference` with each of `others`; returns the row count of each
/// database (reference first) and adds the differences to `out`.
pub async fn compare(
    display: &str,
    reference: &Side<'_>,
    others: &[Side<'_>],
    out: &mut Collector,
) -> Result<Vec<i64>, PgError> {
    let sums = join_all(
        std::iter::once(reference)
            .chain(others)
            .map(|s| sum(display, s)),
    )
    .await
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    for (other, s) in others.iter().zip(&sums[1..]) {
        if *s != sums[0] {
            merge(display, reference, other, out).await?;
        }
    }
    Ok(sums.into_iter().map(|(count, _)| count).collect())
}

async fn sum(display: &str, side: &Side<'_>) -> Result<(i64, String), PgError> {
    let row = side
        .client
        .query_one(&side.sql.multiset_sum(), &[])
        .await
        .map_err(|e| PgError::query(side.name, format!("hash the rows of {display}"), e))?;
    Ok((row.get(0), row.get(1)))
}

/// Walks both sides' sorted (hash, count) lists and records every count that differs.
async fn merge(
    display: &str,
    reference: &Side<'_>,
    other: &Side<'_>,
    out: &mut Collector,
) -> Result<(), PgError> {
    let (a, b) = futures::future::try_join(list(display, reference), list(display, other)).await?;
    pin_mut!(a, b);
    let mut next_a = a.try_next().await?;
    let mut next_b = b.try_next().await?;
    loop {
        let order = match (&next_a, &next_b) {
            (None, None) => return Ok(()),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((ha, _)), Some((hb, _))) => ha.as_bytes().cmp(hb.as_bytes()),
        };
        match order {
            Ordering::Less => {
                let (h, n) = next_a.take().expect("present");
                record(out, other.name, &h, n, Kind::Missing);
                next_a = a.try_next().await?;
            }
            Ordering::Greater => {
                let (h, n) = next_b.take().expect("present");
                record(out, other.name, &h, n, Kind::Extra);
                next_b = b.try_next().await?;
            }
            Ordering::Equal => {
                let (h, na) = next_a.take().expect("present");
                let (_, nb) = next_b.take().expect("present");
                match na.cmp(&nb) {
                    Ordering::Greater => record(out, other.name, &h, na - nb, Kind::Missing),
                    Ordering::Less => record(out, other.name, &h, nb - na, Kind::Extra),
                    Ordering::Equal => {}
                }
                next_a = a.try_next().await?;
                next_b = b.try_next().await?;
            }
        }
    }
}

/// One side's (hash, count) list, streamed.
async fn list<'a>(
    display: &'a str,
    side: &Side<'a>,
) -> Result<impl futures::Stream<Item = Result<(String, i64), PgError>> + 'a, PgError> {
    let name = side.name;
    let err = move |e| PgError::query(name, format!("list the row hashes of {display}"), e);
    let rows = side
        .client
        .query_raw(
            &side.sql.multiset_list(),
            std::iter::empty::<&(dyn ToSql + Sync)>(),
        )
        .await
        .map_err(err)?;
    Ok(rows.map(move |r| {
        r.map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
            .map_err(err)
    }))
}

fn record(out: &mut Collector, database: &str, hash: &str, copies: i64, kind: Kind) {
    for _ in 0..copies {
        out.push(Found {
            key: vec![hash.to_string()],
            kind,
            database: database.to_string(),
        });
    }
}
