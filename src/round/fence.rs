//! Exact fencing of a sync's writes across databases. The lease lives on the first source,
//! but rounds and copies commit on targets, so holding the lease there proves nothing at
//! commit time. Each database that receives keeps `drover.lease_epoch(sync, epoch)`; a daemon
//! that takes the lease bumps it on every receiver before its first copy or round, and every
//! apply or copy transaction of this process locks the row (FOR SHARE) right before it
//! commits and refuses to commit unless the epoch is still the one it set. A former holder
//! that resumes after a takeover therefore commits nothing; a bump waits for a commit that
//! already passed its check, and rounds after it see that commit through the progress check.
//!
//! The expected epochs live in a process-wide table keyed by sync, so the commit path needs
//! no extra arguments: a sync this process never fenced (a CLI command) is not checked. A
//! target of a one-source sync is taken over on its own, when it is prepared: one that was
//! down has no epoch here yet, so nothing commits to it until it has been taken over.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use tokio_postgres::error::SqlState;
use tokio_postgres::Transaction;

use crate::pg::connect::checkout;
use crate::pg::error::PgError;
use crate::round::side::TargetSide;

#[derive(Debug, Clone, PartialEq)]
enum Fence {
    /// The epoch this process set, per receiving database, under one lease (`term`).
    Held {
        term: u64,
        epochs: HashMap<String, i64>,
    },
    /// The lease was lost: nothing may commit.
    Lost,
}

static FENCES: LazyLock<Mutex<HashMap<String, Fence>>> = LazyLock::new(Default::default);

fn fences() -> std::sync::MutexGuard<'static, HashMap<String, Fence>> {
    FENCES.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts fencing `sync` under the lease numbered `term`: until `take_over_target` runs for
/// a receiver, nothing commits there. Plans read again under the same lease keep the epochs
/// already taken.
pub fn begin(sync: &str, term: u64) {
    let mut f = fences();
    if !matches!(f.get(sync), Some(Fence::Held { term: t, .. }) if *t == term) {
        let epochs = HashMap::new();
        f.insert(sync.to_string(), Fence::Held { term, epochs });
    }
}

/// Takes over `sync` on one receiver: bumps its epoch there and remembers the new value, if
/// the lease `term` is still the one fenced (a take-over that outlived its lease is dropped,
/// so that receiver refuses this process's commits).
pub async fn take_over_target(sync: &str, term: u64, r: &TargetSide) -> Result<(), PgError> {
    let client = checkout(&r.pool, &r.name).await?;
    let epoch: i64 = client
        .query_one(
            "INSERT INTO drover.lease_epoch AS e (sync, epoch, taken_at) VALUES ($1, 1, now()) \
             ON CONFLICT (sync) DO UPDATE SET epoch = e.epoch + 1, taken_at = now() \
             RETURNING epoch",
            &[&sync],
        )
        .await
        .map_err(|e| catalog_error(&r.name, e))?
        .get(0);
    match fences().get_mut(sync) {
        Some(Fence::Held { term: t, epochs }) if *t == term => {
            epochs.insert(r.name.clone(), epoch);
            Ok(())
        }
        _ => Err(PgError::concurrency(
            &r.name,
            format!("sync {sync}: the lease was lost while taking over this database"),
        )),
    }
}

/// Takes over `sync` on every receiver (a multi-master sync needs them all). Called with the
/// lease held, before the first copy or round.
pub async fn take_over(sync: &str, term: u64, receivers: &[TargetSide]) -> Result<(), PgError> {
    begin(sync, term);
    for r in receivers {
        take_over_target(sync, term, r).await?;
    }
    Ok(())
}

/// The lease of `sync` is gone: refuse every commit until `take_over` runs again.
pub fn lost(sync: &str) {
    fences().insert(sync.to_string(), Fence::Lost);
}

/// In an apply or copy transaction on `db`, right before COMMIT: fails unless this process
/// still holds the sync's lease as far as `db` knows. The sync is the session's
/// `drover.sync`, which every apply and copy session sets.
pub async fn check(ttx: &Transaction<'_>, db: &str) -> Result<(), PgError> {
    if fences().is_empty() {
        return Ok(());
    }
    let row = ttx
        .query_one(
            "SELECT current_setting('drover.sync', true), \
             (SELECT epoch FROM drover.lease_epoch \
              WHERE sync = current_setting('drover.sync', true) FOR SHARE)",
            &[],
        )
        .await
        .map_err(|e| catalog_error(db, e))?;
    let sync: Option<String> = row.get(0);
    let found: Option<i64> = row.get(1);
    let Some(sync) = sync else { return Ok(()) };
    let expected = match fences().get(&sync) {
        None => return Ok(()),
        Some(Fence::Lost) => None,
        Some(Fence::Held { epochs, .. }) => epochs.get(db).copied(),
    };
    if expected.is_some() && expected == found {
        return Ok(());
    }
    Err(PgError::concurrency(
        db,
        format!(
            "sync {sync}: this daemon no longer holds the lease (another daemon took it over): \
             not committing; it waits as a standby"
        ),
    ))
}

fn catalog_error(db: &str, e: tokio_postgres::Error) -> PgError {
    if e.code() == Some(&SqlState::UNDEFINED_TABLE) {
        return PgError::install(
            db,
            "table drover.lease_epoch is missing: run `drover install` to add it",
        );
    }
    PgError::query(db, "check the lease epoch", e)
}
