//! Who may switch capture off. Capture triggers skip a write when its transaction set
//! `drover.origin`, so drover's own apply writes are not captured again (no loops). Any
//! session may set a custom setting, so the value must be one only drover's sessions know:
//! a random secret kept in `drover.secret`, which only its owner (the role that ran
//! `drover install`, who also owns the SECURITY DEFINER capture functions) can read. Apply
//! sessions copy it into `drover.origin` on the server (`SET_ORIGIN`), so it never travels to
//! the daemon and never shows in statement text, logs or `pg_stat_activity`.
//!
//! Cost: an application write pays one `current_setting` comparison with '' (a simple
//! expression, as before); only a session that set `drover.origin` reads the one-row table.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use tokio_postgres::Transaction;

use crate::pg::error::PgError;

/// The table, created with the catalog. One row at most (`one` is its key and always true);
/// nobody but its owner may read it.
pub const CREATE: &str = "CREATE TABLE IF NOT EXISTS drover.secret (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    value text NOT NULL);
REVOKE ALL ON drover.secret FROM PUBLIC;
";

/// PL/pgSQL that ends a capture call when the transaction carries the database's secret.
pub const GUARD: &str = "IF coalesce(current_setting('drover.origin', true), '') <> '' THEN
    IF current_setting('drover.origin') = (SELECT s.value FROM drover.secret s) THEN RETURN NULL; END IF;
  END IF;";

/// The `set_config` call that marks an apply transaction as drover's (a select-list item).
/// A missing secret fails the statement (reading an unset setting raises "unrecognized
/// configuration parameter", naming the fix) instead of leaving the guard open.
pub const SET_ORIGIN: &str =
    "set_config('drover.origin', coalesce((SELECT s.value FROM drover.secret s), \
     current_setting('drover.secret_missing_run_drover_install')), true)";

/// Stores a new secret unless the database has one (it stays the same across installs, so
/// running daemons keep working).
pub async fn ensure(tx: &Transaction<'_>, db: &str) -> Result<(), PgError> {
    tx.execute(
        "INSERT INTO drover.secret (value) SELECT $1 WHERE NOT EXISTS (SELECT 1 FROM drover.secret)",
        &[&random_secret()],
    )
    .await
    .map_err(|e| PgError::query(db, "store the capture guard's secret", e))?;
    Ok(())
}

/// 256 bits from SipHash under keys the standard library draws from the operating system's
/// random source, mixed with the time and process id.
fn random_secret() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    (0..4u64)
        .map(|i| {
            let mut h = RandomState::new().build_hasher();
            h.write_u64(i);
            h.write_u128(nanos);
            h.write_u32(std::process::id());
            format!("{:016x}", h.finish())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_and_differ() {
        let (a, b) = (random_secret(), random_secret());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
