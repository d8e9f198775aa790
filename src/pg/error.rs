//! One error type for database work, carrying the database name and the purpose of the failing
//! statement, plus the single place that decides what kind of failure an error is.

use tokio_postgres::error::SqlState;

/// A failed database operation: which database, what drover was doing, and the server's answer.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("database \"{database}\": cannot connect: {}", describe(.source))]
    Connect {
        database: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("database \"{database}\": no connection available from the pool: {message}")]
    Pool { database: String, message: String },
    #[error("database \"{database}\": {purpose}: {}", describe(.source))]
    Query {
        database: String,
        purpose: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("database \"{database}\": {message}")]
    Setup { database: String, message: String },
    /// A round outlived `daemon.round_deadline` on this database and was abandoned.
    #[error("database \"{database}\": round still running after daemon.round_deadline ({secs} s): abandoned and rolled back; the database is locked or not answering, the round is retried")]
    Deadline { database: String, secs: u64 },
    /// Multi-master conflicts the sync's strategy refuses to resolve (`abort`).
    #[error("conflict between {databases}: {message}{keys}")]
    Conflict {
        databases: String,
        message: String,
        /// The conflicting keys (row values), left out of [`PgError::redacted`].
        keys: String,
    },
}

/// What kind of failure an error is, for metrics labels and retry decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The server is unreachable or the session died: retry after a pause.
    Connection,
    /// A table or column is missing or different: needs a person, retried anyway.
    Schema,
    /// A row was refused by the target (constraint, bad value): needs a person, retried anyway.
    Data,
    /// Lost a race (serialization failure, deadlock, lock timeout): retry soon.
    Contention,
    /// Conflicting changes under `conflict_strategy = "abort"`: needs a person.
    Conflict,
    /// Anything else.
    Other,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connection => "connection",
            ErrorKind::Schema => "schema",
            ErrorKind::Data => "data",
            ErrorKind::Contention => "contention",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Other => "other",
        }
    }
}

impl PgError {
    pub fn query(
        database: &str,
        purpose: impl Into<String>,
        source: tokio_postgres::Error,
    ) -> Self {
        PgError::Query {
            database: database.to_string(),
            purpose: purpose.into(),
            source,
        }
    }

    pub fn setup(database: &str, message: impl Into<String>) -> Self {
        PgError::Setup {
            database: database.to_string(),
            message: message.into(),
        }
    }

    /// The database this error happened on.
    pub fn database(&self) -> &str {
        match self {
            PgError::Connect { database, .. }
            | PgError::Pool { database, .. }
            | PgError::Query { database, .. }
            | PgError::Setup { database, .. }
            | PgError::Deadline { database, .. } => database,
            PgError::Conflict { databases, .. } => databases,
        }
    }

    /// The error without row data, for logs above debug level and readers of the HTTP API
    /// without the token: the server's DETAIL (`Key (email)=(...) already exists`) and
    /// conflicting keys are left out; everything else is as in `Display`.
    pub fn redacted(&self) -> String {
        match self {
            PgError::Connect { database, source } => {
                format!(
                    "database \"{database}\": cannot connect: {}",
                    describe_with(source, false)
                )
            }
            PgError::Query {
                database,
                purpose,
                source,
            } => format!(
                "database \"{database}\": {purpose}: {}",
                describe_with(source, false)
            ),
            PgError::Conflict {
                databases, message, ..
            } => format!("conflict between {databases}: {message} (keys not shown)"),
            PgError::Pool { .. } | PgError::Setup { .. } | PgError::Deadline { .. } => {
                self.to_string()
            }
        }
    }

    /// The text for a log line above debug level: logs the full error (with DETAIL) at debug
    /// level, then returns [`PgError::redacted`] for the caller's own line.
    pub fn for_log(&self) -> String {
        tracing::debug!(database = self.database(), error = %self, "error in full");
        self.redacted()
    }

    /// Classifies by SQLSTATE class, never by message text.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PgError::Connect { .. } | PgError::Pool { .. } | PgError::Deadline { .. } => {
                ErrorKind::Connection
            }
            PgError::Setup { .. } => ErrorKind::Schema,
            PgError::Conflict { .. } => ErrorKind::Conflict,
            PgError::Query { source, .. } => classify(source),
        }
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

/// The server's message with its detail and hint, or the client-side error.
fn describe(err: &tokio_postgres::Error) -> String {
    describe_with(err, true)
}

/// Like [`describe`]; `with_detail` false leaves out the DETAIL, which may carry row values.
fn describe_with(err: &tokio_postgres::Error, with_detail: bool) -> String {
    match err.as_db_error() {
        Some(db) => {
            let mut s = format!("{} ({})", db.message(), db.code().code());
            if db.detail().is_some() && !with_detail {
                s.push_str("; detail hidden as it may hold row data (shown to API callers with the token and in debug logs)");
            } else if let Some(detail) = db.detail() {
                s.push_str(&format!("; detail: {detail}"));
            }
            if let Some(hint) = db.hint() {
                s.push_str(&format!("; hint: {hint}"));
            }
            s
        }
        // Client-side errors keep their cause (I/O, TLS) in the source chain.
        None => {
            let mut s = err.to_string();
            let mut cause = std::error::Error::source(err);
            while let Some(c) = cause {
                s.push_str(&format!(": {c}"));
                cause = c.source();
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_conflict_leaves_out_the_keys() {
        let e = PgError::Conflict {
            databases: "a, b".into(),
            message: "1 conflicting key(s)".into(),
            keys: "; public.t (id)=(42)".into(),
        };
        assert_eq!(
            e.to_string(),
            "conflict between a, b: 1 conflicting key(s); public.t (id)=(42)"
        );
        assert!(!e.redacted().contains("42"), "{}", e.redacted());
        assert!(e.redacted().contains("1 conflicting key(s)"));
    }
}
