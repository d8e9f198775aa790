//! A multi-master round's rewind checks (`rewind`): each source's identity and purge horizons,
//! read inside its round transaction, against every other database's progress; and each
//! apply's check that the progress it moves is what this daemon last saw (`check_progress`).

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::{GenericClient, Transaction};

use crate::pg::error::PgError;
use crate::round::plan::TablePlan;
use crate::round::progress::ProgressCache;
use crate::round::rewind::{check_target, horizons_sql, parse_horizons, Check};
use crate::round::snapshot::Snapshot;

/// One source's round snapshot, for `check_receivers`.
pub struct OnSource<'a> {
    pub sync: &'a str,
    pub source: &'a str,
    pub cur: &'a Snapshot,
}

/// Multi-master: reads the source's identity and horizons inside its round transaction and
/// checks every other database; on failure they re-read progress next round.
pub async fn check_receivers(
    tx: &impl GenericClient,
    on: &OnSource<'_>,
    databases: &[&str],
    tables: &[Arc<TablePlan>],
    progress: &mut ProgressCache,
) -> Result<(), PgError> {
    let id_sql = progress.identity.sql(tx, on.source).await?;
    let what = |e| {
        PgError::query(
            on.source,
            "read the source's identity and purge horizons",
            e,
        )
    };
    // One flight: both answer from the round's snapshot.
    let id_sql = format!("SELECT {id_sql}");
    let horizons_sql = horizons_sql(on.sync);
    let (id, rows) = tokio::try_join!(
        // In statement order: after the first error the later statements of the flight
        // fail with 25P02, and the first error is the one to report.
        biased;
        async { tx.query_one(&id_sql, &[]).await.map_err(what) },
        async { tx.simple_query(&horizons_sql).await.map_err(what) },
    )?;
    progress.identity.set_current(on.source, id.get(0));
    let horizons = parse_horizons(&crate::pg::simple::rows(rows));
    for target in databases.iter().filter(|d| **d != on.source) {
        let check = Check {
            sync: on.sync,
            source: on.source,
            target,
            cur: on.cur,
            identities: &progress.identity,
            horizons: &horizons,
        };
        let prevs = tables.iter().map(|t| {
            (
                t.display.as_str(),
                progress.get(on.source, target, &t.display),
            )
        });
        if let Err(e) = check_target(&check, prevs) {
            for d in databases.iter().filter(|d| **d != on.source) {
                progress.invalidate(on.source, d);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Locks the progress rows of every (source, this database) pair and checks them against the
/// cache, so two daemons never apply the same change twice.
pub async fn check_progress(
    ttx: &Transaction<'_>,
    (sync, dst, senders): (&str, &str, &[&str]),
    tables: &[Arc<TablePlan>],
    progress: &ProgressCache,
) -> Result<(), PgError> {
    let rows = ttx
        .query(
            "SELECT source, table_name, snapshot FROM drover.progress WHERE sync = $1 AND source = ANY($2) FOR UPDATE",
            &[&sync, &senders],
        )
        .await
        .map_err(|e| PgError::query(dst, "lock progress", e))?;
    let found: HashMap<(String, String), String> = rows
        .into_iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    for s in senders {
        for t in tables {
            let expected = progress.get(s, dst, &t.display);
            match found.get(&(s.to_string(), t.display.clone())) {
                None => {
                    return Err(PgError::install(
                        dst,
                        format!("no progress row for {} from {s} in sync {}: run drover install", t.display, sync),
                    ))
                }
                Some(snap) if snap != expected.as_str() => {
                    return Err(PgError::concurrency(
                        dst,
                        format!("progress of {} from {s} moved under this daemon (another daemon running this sync?): will re-read", t.display),
                    ))
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}
