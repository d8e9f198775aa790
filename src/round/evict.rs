//! Ends the sessions a former lease holder left inside target transactions. A holder frozen
//! mid-round (or mid-copy) keeps its transaction open and its row locks (the sync's
//! `drover.progress` rows, a copied table) held: a frozen process's kernel still answers TCP,
//! so the server never sees it gone, and the new holder's first round or copy would wait on
//! those locks until the old one resumes. The epoch fence already keeps the old holder from
//! committing anything after the takeover, so ending its transactions loses nothing.
//!
//! Only the former holder named by the lease row (its instance id, see `pg::instance`) is
//! touched, only once the lease was taken from it, only on this sync's receivers, and only
//! its sessions inside a transaction that began before the takeover could have happened
//! (older than half the lease timeout: a frozen holder's lease lasts at least two thirds of
//! it after its last heartbeat). Idle sessions hold no row locks and are left alone, so a
//! former holder that is alive and runs other syncs loses at most a transaction it retries.

use std::time::Duration;

use crate::pg::connect::checkout;
use crate::pg::instance::SESSION_OF_SQL;
use crate::round::side::TargetSide;

/// The daemon that held the lease before this one took it.
#[derive(Clone)]
pub struct Former {
    /// Its instance id, from the lease row.
    pub instance: String,
    /// `daemon.lease_timeout`.
    pub lease_timeout: Duration,
}

/// Ends the former holder's open transactions on every receiver. Best effort: a refusal
/// (another role without `pg_signal_backend`, or sessions it cannot see without
/// `pg_read_all_stats`) is logged with its fix, and the new holder then waits for those
/// transactions as before.
pub async fn end_former_sessions(sync: &str, former: &Former, receivers: &[TargetSide]) {
    for r in receivers {
        let (db, instance) = (&r.name, &former.instance);
        match end_on(former, r).await {
            Ok(o) => {
                if o.ended > 0 {
                    tracing::warn!(sync, database = %db, instance = %instance, ended = o.ended,
                        "ended the former holder's sessions left inside transactions");
                }
                if o.hidden > 0 || o.refused.is_some() {
                    let error = o.refused.unwrap_or_default();
                    tracing::warn!(sync, database = %db, instance = %instance, hidden = o.hidden,
                        error = %error,
                        "could not end every session the former holder left (another role): \
                         rounds may wait for them; run every daemon as one role, or grant \
                         pg_signal_backend and pg_read_all_stats to the drover role");
                }
            }
            Err(e) => tracing::warn!(sync, database = %db, error = %e,
                "could not look for the former holder's sessions: rounds may wait for them"),
        }
    }
}

/// What happened on one receiver.
#[derive(Default)]
struct Outcome {
    ended: usize,
    /// Sessions of the former holder whose state this role may not read (another role).
    hidden: usize,
    /// The first refusal to end one.
    refused: Option<String>,
}

async fn end_on(former: &Former, r: &TargetSide) -> Result<Outcome, crate::pg::PgError> {
    let client = checkout(&r.pool, &r.name).await?;
    let older_than = former.lease_timeout.as_secs_f64() / 2.0;
    let rows = client
        .query(
            &format!(
                "SELECT pid, state IS NULL FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                 AND {SESSION_OF_SQL} AND (state IS NULL \
                   OR (state <> 'idle' AND xact_start < now() - make_interval(secs => $2)))"
            ),
            &[&former.instance, &older_than],
        )
        .await
        .map_err(|e| crate::pg::PgError::query(&r.name, "find the former holder's sessions", e))?;
    let mut out = Outcome::default();
    for row in rows {
        if row.get::<_, bool>(1) {
            out.hidden += 1;
            continue;
        }
        let pid: i32 = row.get(0);
        match client
            .query_one("SELECT pg_terminate_backend($1)", &[&pid])
            .await
        {
            Ok(row) if row.get::<_, bool>(0) => out.ended += 1,
            Ok(_) => {}
            Err(e) => {
                out.refused.get_or_insert_with(|| e.to_string());
            }
        }
    }
    Ok(out)
}
