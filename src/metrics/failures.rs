//! Failed attempts: the one function that logs a failure and counts it in
//! `drover_errors_total`, so the log and the Errors panels cannot disagree. Every failure the
//! daemon reports as a failed attempt goes through `failed`, once.

use super::ERRORS;
use crate::pg::error::PgError;

/// What the daemon was doing when the attempt failed (the `stage` label). The cause, such as
/// a refused or timed-out connection, is the `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Taking the sync's lease (its session and advisory lock).
    Lease,
    /// Reading server facts and table plans before rounds.
    Prepare,
    /// An initial or forced copy.
    Copy,
    /// A round: reading the source, applying to a target, sequences.
    Round,
    /// Purging applied deltas beside the rounds.
    Purge,
    /// A database's LISTEN session (no sync: it serves all syncs of the database).
    Listen,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Lease => "lease",
            Stage::Prepare => "prepare",
            Stage::Copy => "copy",
            Stage::Round => "round",
            Stage::Purge => "purge",
            Stage::Listen => "listen",
        }
    }
}

/// Logs `what` as one failed attempt (a WARN line with sync, stage, database, kind and error)
/// and counts it once. `sync` is empty for a database's own sessions.
pub fn failed(stage: Stage, sync: &str, e: &PgError, what: &str) {
    let (database, kind) = (e.database(), e.kind().as_str());
    // Row data in a DETAIL only at debug level (`PgError::for_log`).
    tracing::warn!(sync = %sync, stage = stage.as_str(), database, kind, error = %e.for_log(), "{what}");
    metrics::counter!(
        ERRORS,
        "sync" => sync.to_string(),
        "database" => database.to_string(),
        "kind" => kind,
        "stage" => stage.as_str()
    )
    .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_are_the_documented_label_values() {
        let all = [
            Stage::Lease,
            Stage::Prepare,
            Stage::Copy,
            Stage::Round,
            Stage::Purge,
            Stage::Listen,
        ];
        let names: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            ["lease", "prepare", "copy", "round", "purge", "listen"]
        );
    }
}
