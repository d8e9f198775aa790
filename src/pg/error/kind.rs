//! What kind of failure an error is: the `kind` label of `drover_errors_total` and the one
//! retry decision that depends on it (whether the sync reads its table plans again).

use tokio_postgres::error::SqlState;

/// What kind of failure an error is, for metrics labels and retry decisions. The label
/// values (`as_str`) are a contract with dashboards and alerts: add, never rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The server is unreachable or the session died: retry after a pause.
    Connection,
    /// A replicated table, column or key is missing or differs: the plans are read again.
    Schema,
    /// A row was refused by the target (constraint, bad value): needs a person, retried anyway.
    Data,
    /// Lost a race (serialization failure, deadlock, lock timeout): retry soon.
    Contention,
    /// Conflicting changes under `conflict_strategy = "abort"`: needs a person.
    Conflict,
    /// Anything else.
    Other,
    /// drover's own objects are missing, outdated or untrusted: `drover install` (or fixing
    /// the `drover` schema) is needed; retried with backoff, re-reading plans cannot help.
    Install,
    /// Another daemon or command holds what this one needs (the lease was lost, the fencing
    /// epoch moved, progress moved, a round still runs): stand by, retry.
    Concurrency,
    /// The server answered something drover did not expect (row counts, snapshot text).
    Protocol,
    /// A bug or a stopped part of drover itself (an actor gone).
    Internal,
    /// drover's configuration cannot work with this database (TLS files, password,
    /// `replica_role`): fix the config or grant what it names.
    Config,
    /// A source or target moved back in time (failover, restore) or lost deltas a target
    /// needs: progress no longer holds; `drover verify` / `drover copy` are needed.
    Diverged,
}

impl ErrorKind {
    /// Every kind, in label order (tests and docs).
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::Connection,
        ErrorKind::Schema,
        ErrorKind::Data,
        ErrorKind::Contention,
        ErrorKind::Conflict,
        ErrorKind::Other,
        ErrorKind::Install,
        ErrorKind::Concurrency,
        ErrorKind::Protocol,
        ErrorKind::Internal,
        ErrorKind::Config,
        ErrorKind::Diverged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connection => "connection",
            ErrorKind::Schema => "schema",
            ErrorKind::Data => "data",
            ErrorKind::Contention => "contention",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Other => "other",
            ErrorKind::Install => "install",
            ErrorKind::Concurrency => "concurrency",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Internal => "internal",
            ErrorKind::Config => "config",
            ErrorKind::Diverged => "diverged",
        }
    }

    /// Whether the sync reads its table plans again before retrying. Only a schema change
    /// is fixed by that; for the rest a re-prepare is a loop that cannot help (and after a
    /// lost lease it would take the fence back from the new holder).
    pub fn needs_reprepare(self) -> bool {
        matches!(self, ErrorKind::Schema)
    }
}

/// Decides the kind of a tokio-postgres error from its SQLSTATE.
pub fn classify(err: &tokio_postgres::Error) -> ErrorKind {
    let Some(code) = err.code() else {
        // No SQLSTATE: the connection broke or the protocol failed.
        return ErrorKind::Connection;
    };
    let class = &code.code()[..2];
    if *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::QUERY_CANCELED
    {
        return ErrorKind::Contention;
    }
    match class {
        "08" | "57" | "53" => ErrorKind::Connection,
        "42" => ErrorKind::Schema,
        "22" | "23" => ErrorKind::Data,
        "40" => ErrorKind::Contention,
        _ => ErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_the_documented_ones() {
        let names: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "connection",
                "schema",
                "data",
                "contention",
                "conflict",
                "other",
                "install",
                "concurrency",
                "protocol",
                "internal",
                "config",
                "diverged"
            ]
        );
        let docs = include_str!("../../../docs/observability.md");
        for n in names {
            assert!(
                docs.contains(&format!("`{n}`")),
                "docs/observability.md lacks `{n}`"
            );
        }
    }

    #[test]
    fn only_schema_re_reads_the_plans() {
        let re: Vec<ErrorKind> = (ErrorKind::ALL.into_iter())
            .filter(|k| k.needs_reprepare())
            .collect();
        assert_eq!(re, [ErrorKind::Schema]);
    }
}
