//! The sync's lease: an advisory lock held by a dedicated session on the first source, that
//! expires when its holder stops proving it is alive. The server, not the (maybe frozen)
//! holder, releases it:
//! - PostgreSQL 14+: the session sets `idle_session_timeout` to `daemon.lease_timeout` and the
//!   holder heartbeats every third of it; a silent holder's session is ended by the server.
//! - older servers: the heartbeat lands in `drover.leases`; a standby that finds it older than
//!   `lease_timeout` ends the holder's lease backend with `pg_terminate_backend`.
//!
//! The row in `drover.leases` also names the holder (host, pid, since) for a standby's status,
//! and its instance id, so the next holder can end the sessions it left open (`round::evict`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::pg::error::PgError;
use crate::pg::instance;
use crate::pg::Endpoint;
use crate::status::LeaseHolder as Holder;

/// First server version with `idle_session_timeout`.
const IDLE_SESSION_TIMEOUT_SINCE: i32 = 140_000;

/// How a lease on one server expires when its holder goes silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The server ends the silent session (`idle_session_timeout`, PostgreSQL 14+).
    IdleSessionTimeout,
    /// A standby ends it (`pg_terminate_backend`) once the heartbeat row is stale.
    StandbyTerminates,
}

impl Expiry {
    pub fn for_version(server_version_num: i32) -> Expiry {
        if server_version_num >= IDLE_SESSION_TIMEOUT_SINCE {
            Expiry::IdleSessionTimeout
        } else {
            Expiry::StandbyTerminates
        }
    }

    /// For `drover check`: what happens when the holder freezes.
    pub fn describe(self) -> &'static str {
        match self {
            Expiry::IdleSessionTimeout => {
                "idle_session_timeout: the server ends a silent holder's lease session"
            }
            Expiry::StandbyTerminates => {
                "heartbeat row: a standby ends a silent holder's lease session with \
                 pg_terminate_backend (needs the same role or pg_signal_backend)"
            }
        }
    }
}

/// The holder's side: the heartbeat task owns the lease session; dropping this ends both.
pub struct Lease {
    task: actix_rt::task::JoinHandle<()>,
    pub expiry: Expiry,
    /// The instance id of the daemon that held the lease before, when another process.
    pub former: Option<String>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The outcome of one attempt to take the lease.
pub enum Attempt {
    Taken(Lease),
    /// Another session holds it; its holder when the heartbeat row says.
    Busy(Option<Holder>),
}

/// Everything one attempt needs.
pub struct Request {
    pub endpoint: Endpoint,
    pub sync: String,
    pub key: i64,
    pub timeout: Duration,
}

/// Why a held lease session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The heartbeat found the lease row taken over by another daemon.
    TakenOver,
    /// The session failed or went silent: the server ended it, or cannot be reached.
    SessionLost,
}

/// Tries to take the lease. `lost` runs when the lease session ends, whoever ends it.
pub async fn try_take(
    req: Request,
    lost: impl FnOnce(Ended) + Send + 'static,
) -> Result<Attempt, PgError> {
    let db = req.endpoint.name.clone();
    let (client, conn) = req
        .endpoint
        .connect_raw(&format!("{}:lease", req.sync))
        .await?;
    let taken_over = Arc::new(AtomicBool::new(false));
    let seen = taken_over.clone();
    actix_rt::spawn(async move {
        let _ = conn.await;
        lost(match seen.load(Ordering::SeqCst) {
            true => Ended::TakenOver,
            false => Ended::SessionLost,
        });
    });
    let q = |what: &'static str| {
        let db = db.clone();
        move |e: tokio_postgres::Error| PgError::query(&db, what, e)
    };
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(q("read the server version"))?
        .get(0);
    let expiry = Expiry::for_version(version);
    if expiry == Expiry::IdleSessionTimeout {
        let ms = req.timeout.as_millis();
        client
            .batch_execute(&format!("SET idle_session_timeout = {ms}"))
            .await
            .map_err(q("set idle_session_timeout on the lease session"))?;
    }
    let held: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&req.key])
        .await
        .map_err(q("take the sync lease"))?
        .get(0);
    if !held {
        let holder = read_holder(&client, &req, expiry).await;
        return Ok(Attempt::Busy(holder));
    }
    let former = record_holder(&client, &req.sync)
        .await
        .map_err(|e| missing_catalog(&db, e))?;
    let task = actix_rt::spawn(heartbeat(client, req.sync, req.timeout / 3, taken_over));
    Ok(Attempt::Taken(Lease {
        task,
        expiry,
        former,
    }))
}

/// Writes this process into the lease row; returns the former holder's instance id when it
/// was another process (the statement's snapshot still shows the row it replaces).
async fn record_holder(
    client: &Client,
    sync: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    let former: Option<String> = client
        .query_one(
            "WITH former AS (SELECT instance FROM drover.leases WHERE sync = $1) \
             INSERT INTO drover.leases (sync, host, pid, backend_pid, since, heartbeat_at, instance) \
             VALUES ($1, $2, $3, pg_backend_pid(), now(), now(), $4) \
             ON CONFLICT (sync) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, \
             backend_pid = EXCLUDED.backend_pid, since = now(), heartbeat_at = now(), \
             instance = EXCLUDED.instance \
             RETURNING (SELECT instance FROM former)",
            &[
                &sync,
                &host_name(),
                &(std::process::id() as i32),
                &instance::id(),
            ],
        )
        .await?
        .get(0);
    Ok(former.filter(|f| f != instance::id()))
}

/// Proves the holder alive every `every` until a heartbeat fails or finds its row taken
/// over (then sets `taken_over`); then drops the session, which releases the lock and reports
/// the loss.
async fn heartbeat(client: Client, sync: String, every: Duration, taken_over: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(every).await;
        // A heartbeat that takes longer than its interval (a black-holed network) counts as
        // failed: the server ends the session at the timeout anyway.
        let res = tokio::time::timeout(
            every,
            client.execute(
                "UPDATE drover.leases SET heartbeat_at = now() \
                 WHERE sync = $1 AND backend_pid = pg_backend_pid()",
                &[&sync],
            ),
        )
        .await;
        match res {
            Ok(Ok(1)) => {}
            Err(_) => {
                tracing::warn!(sync = %sync, "lease heartbeat got no answer in time: giving the lease up");
                return;
            }
            Ok(Ok(_)) => {
                tracing::warn!(sync = %sync, "lease row taken over by another daemon: giving the lease up");
                taken_over.store(true, Ordering::SeqCst);
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(sync = %sync, error = %e, "lease heartbeat failed: giving the lease up");
                return;
            }
        }
    }
}

/// The holder from the heartbeat row; on servers without `idle_session_timeout`, also ends
/// the holder's lease session when its heartbeat is older than the timeout.
async fn read_holder(client: &Client, req: &Request, expiry: Expiry) -> Option<Holder> {
    let row = client
        .query_opt(
            "SELECT host, pid, since, backend_pid, \
             heartbeat_at < now() - make_interval(secs => $2::float8) \
             FROM drover.leases WHERE sync = $1",
            &[&req.sync, &req.timeout.as_secs_f64()],
        )
        .await
        .ok()??;
    let stale: bool = row.get(4);
    if stale && expiry == Expiry::StandbyTerminates {
        let backend: i32 = row.get(3);
        terminate_stale(client, req, backend).await;
    }
    Some(Holder {
        host: row.get(0),
        pid: row.get(1),
        since: row.get(2),
    })
}

async fn terminate_stale(client: &Client, req: &Request, backend: i32) {
    let ended = client
        .query_opt(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE pid = $1 AND application_name LIKE 'drover:%lease%'",
            &[&backend],
        )
        .await;
    match ended {
        Ok(Some(_)) => {
            tracing::warn!(sync = %req.sync, backend, "lease holder silent longer than lease_timeout: ended its lease session")
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(sync = %req.sync, backend, error = %e, "could not end a silent lease holder's session: grant pg_signal_backend to the drover role")
        }
    }
}

fn missing_catalog(db: &str, e: tokio_postgres::Error) -> PgError {
    if e.code() == Some(&SqlState::UNDEFINED_TABLE) {
        return PgError::install(
            db,
            "table drover.leases is missing: run `drover install` to add it",
        );
    }
    if e.code() == Some(&SqlState::UNDEFINED_COLUMN) {
        return PgError::install(
            db,
            "table drover.leases lacks the column instance (an older install): \
             run `drover install` to add it",
        );
    }
    PgError::query(db, "record the lease holder", e)
}

/// This machine's name, for the holder row (no secret; best effort).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_by_server_version() {
        assert_eq!(Expiry::for_version(130_012), Expiry::StandbyTerminates);
        assert_eq!(Expiry::for_version(140_000), Expiry::IdleSessionTimeout);
        assert_eq!(Expiry::for_version(180_001), Expiry::IdleSessionTimeout);
    }
}
