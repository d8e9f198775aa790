//! The stored pause of a sync: a row in `drover.sync_pause` on the sync's first source (the
//! database that also holds its lease). A row means "paused"; it survives daemon restarts and
//! is honoured by whichever daemon holds the lease, at the start of every round.
//!
//! The round gate: each round holds a shared advisory lock (`gate_key`) on a session of the
//! first source from its pause check to its end. `wait_idle` takes the same key exclusively:
//! once it gets it after the pause row committed, no round is running and every later round
//! start sees the row. `drover ddl` relies on this instead of on a daemon answering, so it
//! also holds when the daemon is down or another daemon holds the lease.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::pg::error::PgError;
use crate::pg::Endpoint;

/// A stored pause.
#[derive(Debug, Clone, PartialEq)]
pub struct Pause {
    pub by: String,
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// The advisory-lock key of a sync's round gate (FNV-1a, like the lease key, another prefix).
pub fn gate_key(sync: &str) -> i64 {
    crate::pg::advisory::key("drover:round:", sync)
}

/// Who asks, for `paused_by`: the OS user and the tool (never a secret).
pub fn who(via: &str) -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("{user} via {via}")
}

fn missing(db: &str, e: tokio_postgres::Error, what: &'static str) -> PgError {
    if e.code() == Some(&SqlState::UNDEFINED_TABLE) {
        return PgError::install(
            db,
            "table drover.sync_pause is missing (an older install): run `drover install` to add it",
        );
    }
    PgError::query(db, what, e)
}

/// The stored pause of `sync`, if any.
pub async fn read(client: &Client, db: &str, sync: &str) -> Result<Option<Pause>, PgError> {
    let row = client
        .query_opt(
            "SELECT paused_by, paused_at, reason FROM drover.sync_pause WHERE sync = $1",
            &[&sync],
        )
        .await
        .map_err(|e| missing(db, e, "read drover.sync_pause"))?;
    Ok(row.map(|r| Pause {
        by: r.get(0),
        at: r.get(1),
        reason: r.get(2),
    }))
}

/// Stores a pause; an existing one is kept (its author and time stay). Returns the stored one.
pub async fn write(
    client: &Client,
    db: &str,
    sync: &str,
    by: &str,
    reason: &str,
) -> Result<Pause, PgError> {
    client
        .execute(
            "INSERT INTO drover.sync_pause (sync, paused_by, reason) VALUES ($1, $2, $3) \
             ON CONFLICT (sync) DO NOTHING",
            &[&sync, &by, &reason],
        )
        .await
        .map_err(|e| missing(db, e, "write drover.sync_pause"))?;
    read(client, db, sync).await?.ok_or_else(|| {
        PgError::concurrency(db, format!("the pause of {sync} vanished while written"))
    })
}

/// Deletes the stored pause; true when there was one.
pub async fn delete(client: &Client, db: &str, sync: &str) -> Result<bool, PgError> {
    let n = client
        .execute("DELETE FROM drover.sync_pause WHERE sync = $1", &[&sync])
        .await
        .map_err(|e| missing(db, e, "delete from drover.sync_pause"))?;
    Ok(n > 0)
}

/// Waits (at most `timeout`) until no round of `sync` runs, by taking its gate exclusively.
/// Call after the pause row committed: rounds starting later see it and do not run.
pub async fn wait_idle(
    client: &Client,
    db: &str,
    sync: &str,
    timeout: Duration,
) -> Result<(), PgError> {
    client
        .batch_execute(&format!(
            "SET lock_timeout = {}",
            timeout.as_millis().max(1)
        ))
        .await
        .map_err(|e| PgError::query(db, "set lock_timeout", e))?;
    let key = gate_key(sync);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&key])
        .await
        .map_err(|e| {
            if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
                PgError::concurrency(
                    db,
                    format!(
                        "a round of {sync} still ran after {} s: try again, or raise --timeout",
                        timeout.as_secs()
                    ),
                )
            } else {
                PgError::query(db, "wait for the running round", e)
            }
        })?;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .await
        .map_err(|e| PgError::query(db, "release the round gate", e))?;
    Ok(())
}

/// What a round start learns from the first source.
#[derive(Debug)]
pub struct GateView {
    pub pause: Option<Pause>,
    /// The newest `drover.ddl_log` id: a change means table plans must be read again.
    pub ddl_mark: i64,
}

struct GateState {
    client: Option<Client>,
    /// Shared holds taken on `client`: one per running round (PostgreSQL stacks them).
    held: u32,
}

/// The daemon's side of the round gate: one session per sync on its first source.
#[derive(Clone)]
pub struct Gate {
    endpoint: Endpoint,
    sync: String,
    state: Arc<Mutex<GateState>>,
}

impl Gate {
    pub fn new(endpoint: Endpoint, sync: &str) -> Gate {
        Gate {
            endpoint,
            sync: sync.to_string(),
            state: Arc::new(Mutex::new(GateState {
                client: None,
                held: 0,
            })),
        }
    }

    /// Checks the pause at a round start; when not paused, the round holds the gate until
    /// [`Gate::leave`]. Rounds of several targets each hold it (the holds stack on one
    /// session), so `drover ddl` passes only once every round has ended; a round starting
    /// while another holds it is granted at once and still reads the pause.
    pub async fn enter(&self) -> Result<GateView, PgError> {
        let mut st = self.state.lock().await;
        if !st.client.as_ref().is_some_and(|c| !c.is_closed()) {
            // A new session holds nothing: holds of a dead one died with it.
            st.held = 0;
            st.client = Some(
                self.endpoint
                    .connect(&format!("{}:gate", self.sync))
                    .await?,
            );
        }
        let client = st.client.as_ref().expect("connected above");
        let db = &self.endpoint.name;
        // One round trip: the lock first (FROM), then the pause row and the ddl mark.
        let res = client
            .query_one(
                "SELECT (SELECT coalesce(max(id), 0) FROM drover.ddl_log), \
                 p.paused_by, p.paused_at, p.reason \
                 FROM pg_advisory_lock_shared($1) AS g \
                 LEFT JOIN drover.sync_pause p ON p.sync = $2",
                &[&self.gate_key(), &self.sync],
            )
            .await;
        let row = match res {
            Ok(row) => row,
            Err(e) => {
                // Whether the lock was taken is unknown: end the session, which releases it.
                st.client = None;
                st.held = 0;
                return Err(missing_gate_table(db, e));
            }
        };
        st.held += 1;
        let by: Option<String> = row.get(1);
        let view = GateView {
            pause: by.map(|by| Pause {
                by,
                at: row.get(2),
                reason: row.get(3),
            }),
            ddl_mark: row.get(0),
        };
        if view.pause.is_some() {
            release(&mut st, self.gate_key()).await;
        }
        Ok(view)
    }

    /// The round ended: its hold is released (`wait_idle` passes once none is left).
    pub async fn leave(&self) {
        let mut st = self.state.lock().await;
        release(&mut st, self.gate_key()).await;
    }

    fn gate_key(&self) -> i64 {
        gate_key(&self.sync)
    }
}

fn missing_gate_table(db: &str, e: tokio_postgres::Error) -> PgError {
    if e.code() == Some(&SqlState::UNDEFINED_TABLE) {
        return PgError::install(
            db,
            "table drover.sync_pause or drover.ddl_log is missing (an older install): \
             run `drover install` to add them",
        );
    }
    PgError::query(db, "check the sync's pause", e)
}

/// Releases one shared hold; a failed unlock drops the session (which releases them all).
async fn release(st: &mut GateState, key: i64) {
    if st.held == 0 {
        return;
    }
    st.held -= 1;
    if let Some(c) = &st.client {
        if c.execute("SELECT pg_advisory_unlock_shared($1)", &[&key])
            .await
            .is_err()
        {
            st.client = None;
            st.held = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_key_differs_from_lease_key() {
        let s = "legacy_to_new";
        assert_ne!(gate_key(s), crate::actors::sync::lease_key(s));
        assert_ne!(gate_key(s), gate_key("other"));
    }
}
