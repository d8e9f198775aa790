//! Schema changes through drover (`drover ddl`): the order a script runs in across a sync's
//! databases, running it on one database, and the record of each run in `drover.ddl_log`.

use crate::pg::error::PgError;
use crate::pg::Endpoint;
use crate::topology::SyncPlan;

/// The order a script runs in: receive-only databases first, then the sources (so a new
/// column exists wherever rows will arrive before any source can write it).
pub fn order(plan: &SyncPlan) -> Vec<String> {
    plan.targets
        .iter()
        .chain(plan.sources.iter())
        .cloned()
        .collect()
}

/// Lower-case hex sha256 of the script text.
pub fn sha256_hex(script: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, script.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One run, as recorded.
pub struct Run<'a> {
    pub sync: &'a str,
    pub script: &'a str,
    pub sha256: &'a str,
    pub by: &'a str,
    /// Every database of the run, in order.
    pub databases: &'a [String],
}

const LOG_SQL: &str = "INSERT INTO drover.ddl_log \
     (sync, database, databases, ran_by, script_sha256, outcome, error) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Runs the script on one database in one transaction, with the session defaults the user's
/// role has there (not drover's pinned `search_path`), and records the outcome in its
/// `drover.ddl_log`: in the same transaction when it succeeds, afterwards when it failed.
pub async fn run_on(endpoint: &Endpoint, run: &Run<'_>) -> Result<(), PgError> {
    let db = endpoint.name.as_str();
    let mut client = endpoint.connect_unpinned("ddl").await?;
    let log = |outcome: &'static str, error: Option<String>| {
        (
            run.sync.to_string(),
            db.to_string(),
            run.databases.to_vec(),
            run.by.to_string(),
            run.sha256.to_string(),
            outcome,
            error,
        )
    };
    let tx = client
        .transaction()
        .await
        .map_err(|e| PgError::query(db, "begin the ddl transaction", e))?;
    let result = tx.batch_execute(run.script).await;
    match result {
        Ok(()) => {
            let (s, d, ds, by, h, o, e) = log("ok", None);
            tx.execute(LOG_SQL, &[&s, &d, &ds, &by, &h, &o, &e])
                .await
                .map_err(|e| PgError::query(db, "record the run in drover.ddl_log", e))?;
            tx.commit()
                .await
                .map_err(|e| PgError::query(db, "commit the ddl transaction", e))
        }
        Err(script_error) => {
            drop(tx);
            let err = PgError::query(db, "run the ddl script", script_error);
            let (s, d, ds, by, h, o, e) = log("failed", Some(err.to_string()));
            if let Err(log_error) = client
                .execute(LOG_SQL, &[&s, &d, &ds, &by, &h, &o, &e])
                .await
            {
                tracing::warn!(database = %db, error = %log_error, "could not record the failed ddl run");
            }
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_a_known_text() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
