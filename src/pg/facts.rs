//! What a server is and what drover's user may do on it: version, superuser, whether
//! `session_replication_role` can be set (which also silences user triggers and FK checks
//! while applying), and whether `drover install` has run.

use tokio_postgres::Client;

use crate::config::ReplicaRoleConfig;
use crate::pg::error::PgError;

/// How apply transactions keep their writes from being captured again and from firing user
/// triggers and FK checks (the database's `replica_role` setting decides, `check` reports).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaRole {
    /// `SET LOCAL session_replication_role = replica`: no user triggers, no FK checks.
    Set,
    /// A SECURITY DEFINER helper sets it (managed services): the SQL that calls it with
    /// 'replica' and, before commit, with 'origin' (it sets the role for the session).
    Function { replica: String, origin: String },
    /// Only `SET LOCAL drover.origin`: drover's capture triggers skip, user triggers still fire.
    OriginOnly,
}

impl ReplicaRole {
    pub fn describe(&self) -> String {
        match self {
            ReplicaRole::Set => "session_replication_role = replica (user triggers and FK checks off while applying)".into(),
            ReplicaRole::Function { replica, .. } => format!("session_replication_role = replica through a SECURITY DEFINER function ({replica})"),
            ReplicaRole::OriginOnly => "drover.origin guard only (no session_replication_role: user triggers and FK checks fire while applying; updates are applied in place)".into(),
        }
    }

    /// Whether the apply session runs with session_replication_role = replica.
    pub fn is_replica(&self) -> bool {
        !matches!(self, ReplicaRole::OriginOnly)
    }

    /// SQL to run at the start of an apply transaction.
    pub fn begin_sql(&self) -> String {
        match self {
            ReplicaRole::Set => "SET LOCAL session_replication_role = replica;".into(),
            ReplicaRole::Function { replica, .. } => format!("{replica};"),
            ReplicaRole::OriginOnly => String::new(),
        }
    }

    /// SQL to run just before commit: a helper function's SET outlives the transaction, and the
    /// pooled session must not stay in replica mode.
    pub fn end_sql(&self) -> Option<String> {
        match self {
            ReplicaRole::Function { origin, .. } => Some(format!("{origin};")),
            _ => None,
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

/// Reads the facts. `replica_role` is the database's setting: `set` and `function:NAME` are
/// checked by trying them inside a transaction that is rolled back (the only reliable test:
/// PostgreSQL 15 can GRANT SET on the parameter); `auto` tries SET, then a SECURITY DEFINER
/// `rds_session_replication_role(text)` function the user may execute and only trusted roles
/// could have created (see `helper_function`), then falls back to the
/// origin guard; `off` uses the origin guard.
pub async fn read(
    client: &mut Client,
    database: &str,
    replica_role: &ReplicaRoleConfig,
) -> Result<ServerFacts, PgError> {
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
    let set = ReplicaRole::Set;
    facts.replica_role = match replica_role {
        ReplicaRoleConfig::Off => ReplicaRole::OriginOnly,
        ReplicaRoleConfig::Set => {
            probe(client, &set).await.map_err(|e| {
                PgError::config(database, format!("replica_role = \"set\" but {e}: grant it, or use replica_role = \"function:NAME\" or \"off\""))
            })?;
            set
        }
        ReplicaRoleConfig::Function { .. } => {
            let f = ReplicaRole::Function {
                replica: replica_role.sql_call("replica"),
                origin: replica_role.sql_call("origin"),
            };
            probe(client, &f).await.map_err(|e| {
                PgError::config(
                    database,
                    format!("replica_role = \"{replica_role}\" does not work: {e}"),
                )
            })?;
            f
        }
        ReplicaRoleConfig::Auto => {
            if probe(client, &set).await.is_ok() {
                set
            } else {
                match helper_function(client).await {
                    Some(f) if probe(client, &f).await.is_ok() => f,
                    _ => ReplicaRole::OriginOnly,
                }
            }
        }
    };
    Ok(facts)
}

/// Tries a method inside a rolled-back transaction and checks the role really is replica.
async fn probe(client: &mut Client, role: &ReplicaRole) -> Result<(), String> {
    let tx = client.transaction().await.map_err(|e| e.to_string())?;
    let result = async {
        tx.batch_execute(&role.begin_sql()).await?;
        tx.query_one("SELECT current_setting('session_replication_role')", &[])
            .await
            .map(|r| r.get::<_, String>(0))
    }
    .await;
    if let Some(end) = role.end_sql() {
        let _ = tx.batch_execute(&end).await;
    }
    tx.rollback().await.ok();
    match result {
        Ok(v) if v == "replica" => Ok(()),
        Ok(v) => Err(format!("session_replication_role stayed {v}")),
        Err(e) => Err(match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => e.to_string(),
        }),
    }
}

/// Roles trusted with the helper: a superuser, the user drover connects as, and
/// `pg_database_owner` when that user owns the database (its only member). `$r` is a pg_roles row.
const TRUSTED_ROLE: &str = "($r.rolsuper OR $r.rolname = current_user \
     OR ($r.rolname = 'pg_database_owner' AND pg_has_role(current_user, $r.oid, 'USAGE')))";

/// A SECURITY DEFINER `rds_session_replication_role(text)` the user may execute, as managed
/// services' users create (see the seed migration), owned by a trusted role, in a schema where
/// only trusted roles may create objects (else another role could own what drover calls).
async fn helper_function(client: &Client) -> Option<ReplicaRole> {
    let trusted = |r: &str| TRUSTED_ROLE.replace("$r", r);
    let sql = format!(
        "SELECT n.nspname::text, p.proname::text FROM pg_proc p \
         JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_roles o ON o.oid = p.proowner \
         JOIN pg_roles so ON so.oid = n.nspowner \
         WHERE p.proname = 'rds_session_replication_role' AND p.prosecdef AND p.pronargs = 1 \
         AND has_function_privilege(p.oid, 'EXECUTE') AND {owner} AND {schema_owner} \
         AND NOT EXISTS (SELECT 1 FROM aclexplode(n.nspacl) a LEFT JOIN pg_roles g ON g.oid = a.grantee \
             WHERE a.privilege_type = 'CREATE' AND NOT coalesce({grantee}, false)) \
         ORDER BY n.nspname = 'public' DESC LIMIT 1",
        owner = trusted("o"),
        schema_owner = trusted("so"),
        grantee = trusted("g"),
    );
    let row = client.query_opt(&sql, &[]).await.ok()??;
    let cfg = ReplicaRoleConfig::Function {
        schema: Some(row.get(0)),
        name: row.get(1),
    };
    Some(ReplicaRole::Function {
        replica: cfg.sql_call("replica"),
        origin: cfg.sql_call("origin"),
    })
}
