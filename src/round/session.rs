//! An apply (or copy) transaction's session on a receiving database: its settings (loop
//! guard, sync name, replica role, time limits), emptying a table, and the fenced commit.

use crate::pg::error::PgError;
use crate::pg::facts::ReplicaRole;
use crate::pg::ident::quote_literal;
use crate::round::limits::Limits;
use crate::round::plan::TablePlan;

/// Opens an apply (or copy) transaction's session state: the loop guard and the replica role.
pub(crate) fn apply_session(sync: &str, role: &ReplicaRole) -> String {
    session_settings(sync, role, &[])
}

/// `apply_session` under a round's time limits (multi-master applies).
pub(crate) fn limited_session(sync: &str, role: &ReplicaRole, limits: &Limits) -> String {
    session_settings(sync, role, &limits.settings())
}

/// Changed rows are found through the key's index, as PostgreSQL's own apply worker finds
/// each row. At the default random_page_cost (4, a spinning disk's) the planner hashes the
/// changed keys and scans the whole target table instead: at 1 % of a 1M-row table that took
/// four times as long as the index, and the gap grows with the table. 1.1 is the usual SSD
/// setting; a lower one the DBA chose is kept. The planner still hashes when most rows
/// changed.
const INDEX_LOOKUPS: &str = "set_config('random_page_cost', \
    least(current_setting('random_page_cost')::float8, 1.1)::text, true)";

/// `apply_session` with `extra` transaction-local settings: one statement (each statement of a
/// round costs the server a parse and a plan), plus the replica-role helper when one is named.
pub(crate) fn session_settings(sync: &str, role: &ReplicaRole, extra: &[(&str, String)]) -> String {
    // No planner switches beyond INDEX_LOOKUPS: the COPY path ANALYZEs its temp tables once
    // loaded and the small path's VALUES lists carry exact counts, so a delete by key is a
    // nested loop over the key index when few keys changed, and a hash join where there is no
    // index or many keys.
    // The loop guard's value is the database's secret, read on the server: it never
    // travels, nor shows in statement text (see `capture::secret`).
    let mut calls = vec![
        crate::capture::secret::SET_ORIGIN.to_string(),
        INDEX_LOOKUPS.to_string(),
    ];
    let mut settings = vec![("drover.sync", sync.to_string())];
    if *role == ReplicaRole::Set {
        settings.push(("session_replication_role", "replica".to_string()));
    }
    settings.extend_from_slice(extra);
    calls.extend(settings.iter().map(|(k, v)| {
        format!(
            "set_config({}, {}, true)",
            quote_literal(k),
            quote_literal(v.as_str())
        )
    }));
    let helper = match role {
        ReplicaRole::Set => String::new(),
        other => other.begin_sql(),
    };
    format!("SELECT {}; {helper}", calls.join(", "))
}

/// How `empty_table` emptied a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Emptied {
    /// TRUNCATE of a plain table: a COPY in the same transaction may use FREEZE.
    Truncated,
    /// TRUNCATE of a partitioned table (COPY FREEZE refuses those), or DELETE.
    Other,
}

/// Empties a target table: TRUNCATE, or DELETE when a foreign key references it (PostgreSQL
/// refuses to truncate a referenced table; in replica mode the DELETE skips the FK checks).
pub(crate) async fn empty_table(
    ttx: &tokio_postgres::Transaction<'_>,
    dst: &str,
    t: &TablePlan,
) -> Result<Emptied, PgError> {
    let purpose = format!("empty {}", t.display);
    let row = ttx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE contype = 'f' \
             AND confrelid = $1::text::regclass AND conrelid <> confrelid), \
             (SELECT relkind = 'r' FROM pg_class WHERE oid = $1::text::regclass)",
            &[&t.quoted],
        )
        .await
        .map_err(|e| PgError::query(dst, &purpose, e))?;
    let (referenced, plain): (bool, bool) = (row.get(0), row.get(1));
    let (sql, how) = if referenced {
        (format!("DELETE FROM {}", t.quoted), Emptied::Other)
    } else if plain {
        (t.truncate(), Emptied::Truncated)
    } else {
        (t.truncate(), Emptied::Other)
    };
    ttx.batch_execute(&sql)
        .await
        .map_err(|e| PgError::query(dst, &purpose, e))?;
    Ok(how)
}

/// Commits an apply (or copy) transaction, first putting a helper-set replica role back.
pub(crate) async fn commit_apply(
    ttx: tokio_postgres::Transaction<'_>,
    role: &ReplicaRole,
    db: &str,
) -> Result<(), PgError> {
    if let Some(end) = role.end_sql() {
        ttx.batch_execute(&end)
            .await
            .map_err(|e| PgError::query(db, "reset session_replication_role", e))?;
    }
    crate::round::fence::check(&ttx, db).await?;
    ttx.commit()
        .await
        .map_err(|e| PgError::query(db, "commit apply", e))
}
