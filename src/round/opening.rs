//! The flight that opens an apply transaction on a target: the session settings, the lock and
//! check of this sync's progress rows against the cache, their update to the round's snapshot,
//! and whatever else goes with them (temp tables, a small round's changes). Every apply path
//! (a round's own, a shared batch's as text or as COPY data) opens this way.

use tokio_postgres::SimpleQueryMessage;

use crate::pg::error::PgError;
use crate::pg::simple;
use crate::round::apply_steps::TableWork;
use crate::round::input::RoundInput;
use crate::round::progress::{self, check_progress, ProgressSql};
use crate::round::session::session_settings;
use crate::round::side::TargetSide;
use crate::round::snapshot::Snapshot;

/// The statements that open an apply, and `extra` statements (temp tables) and a `batch` (a
/// small round's changes) that go in the same flight.
pub(crate) struct Opening<'a> {
    pub sql: &'a ProgressSql,
    pub extra: &'a str,
    pub batch: Option<&'a str>,
}

/// The progress rows of this round's sync and source on its targets.
fn progress_rows<'a>(input: &'a RoundInput<'_>) -> progress::Rows<'a> {
    progress::Rows {
        sync: input.sync,
        source: &input.source.name,
        tables: input.tables,
        identity: input.progress.identity.current(&input.source.name),
    }
}

/// The statements that open an apply on `target`, moving progress to `cur`. No wait for the
/// WAL flush (the purge waits instead: see `purge`).
pub(crate) fn progress_for(
    input: &RoundInput<'_>,
    target: &TargetSide,
    cur: &Snapshot,
) -> ProgressSql {
    let mut settings = input.limits.settings();
    settings.push(("synchronous_commit", "off".to_string()));
    let session = session_settings(input.sync, &target.replica_role, &settings);
    progress::progress_sql(&progress_rows(input), session, cur)
}

/// Sends the session setup (with `extra` statements), the progress lock, the update and then
/// `batch`, if any, in one flight; checks the locked progress against the cache (a mismatch
/// fails the apply, and the rollback undoes the batch too). Returns the batch's answer.
pub(crate) async fn open_apply(
    ttx: &tokio_postgres::Transaction<'_>,
    input: &RoundInput<'_>,
    target: &TargetSide,
    work: &[TableWork],
    o: Opening<'_>,
) -> Result<Vec<SimpleQueryMessage>, PgError> {
    let dst = target.name.as_str();
    let (sql, batch) = (o.sql, o.batch);
    let setup = format!("{}\n{}", sql.session, o.extra);
    let what = |e| PgError::query(dst, "lock and record progress", e);
    let (_, locked, _, done) = tokio::try_join!(
        // In statement order: after the first error the later statements of the flight
        // fail with 25P02, and the first error is the one to report.
        biased;
        async { ttx.simple_query(&setup).await.map_err(what) },
        async { ttx.simple_query(&sql.lock).await.map_err(what) },
        async { ttx.simple_query(&sql.update).await.map_err(what) },
        async {
            match batch {
                Some(b) => ttx
                    .simple_query(b)
                    .await
                    .map_err(|e| PgError::query(dst, "apply changed rows", e)),
                None => Ok(Vec::new()),
            }
        }
    )?;
    let prevs = work.iter().map(|w| &w.prev);
    check_progress(&simple::rows(locked), &progress_rows(input), dst, prevs)?;
    Ok(done)
}
