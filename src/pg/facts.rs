//! What a server is and what drover's user may do on it: version, superuser, whether
//! `session_replication_role` can be set (which also silences user triggers and FK checks
//! while applying), and whether `drover install` has run.

use tokio_postgres::Client;

use crate::pg::error::PgError;

/// How apply transactions keep their writes from being captured again (loop prevention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaRole {
    /// `SET LOCAL session_replication_role = replica`: no user triggers, no FK checks.
    Set,
    /// Only `SET LOCAL drover.origin`: drover's capture triggers skip, user triggers still fire.
    OriginOnly,
}

impl ReplicaRole {
    pub fn describe(self) -> &'static str {
        match self {
            ReplicaRole::Set => "session_replication_role = replica (user triggers and FK checks off while applying)",
            ReplicaRole::OriginOnly => "drover.origin guard only (no privilege for session_replication_role: user triggers and FK checks fire while applying)",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerFacts {
    pub version_num: i32,
    pub version: String,
    pub user: String,
    pub superuser: bool,
    pub replica_role: ReplicaRole,
    pub installed: bool,
}

impl ServerFacts {
    /// Statement-level triggers with transition tables exist from PostgreSQL 10 on.
    pub fn has_transition_tables(&self) -> bool {
        self.version_num >= 100_000
    }

    /// `attgenerated` (generated columns) exists from PostgreSQL 12 on.
    pub fn has_generated_columns(&self) -> bool {
        self.version_num >= 120_000
    }
}

/// Reads the facts. Probes `session_replication_role` by setting it inside a transaction that is
/// rolled back, which is the only reliable test (PostgreSQL 15 can GRANT SET on it).
pub async fn read(client: &mut Client, database: &str) -> Result<ServerFacts, PgError> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('server_version'), \
             current_user::text, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), \
             EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'drover')",
            &[],
        )
        .await
        .map_err(|e| PgError::query(database, "read server version", e))?;
    let mut facts = ServerFacts {
        version_num: row.get(0),
        version: row.get(1),
        user: row.get(2),
        superuser: row.get::<_, Option<bool>>(3).unwrap_or(false),
        replica_role: ReplicaRole::OriginOnly,
        installed: row.get(4),
    };
    let tx = client
        .transaction()
        .await
        .map_err(|e| PgError::query(database, "probe session_replication_role", e))?;
    if tx
        .batch_execute("SET LOCAL session_replication_role = replica")
        .await
        .is_ok()
    {
        facts.replica_role = ReplicaRole::Set;
    }
    tx.rollback().await.ok();
    Ok(facts)
}
