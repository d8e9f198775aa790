//! One error type for database work, carrying the database name and the purpose of the failing
//! statement, plus the single place that decides what kind of failure an error is.

mod kind;

pub use kind::{classify, ErrorKind};

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
    /// A replicated table, column or key is missing or differs between databases.
    #[error("database \"{database}\": {message}")]
    Schema { database: String, message: String },
    /// drover's own objects are missing, outdated or untrusted: `drover install` is needed.
    #[error("database \"{database}\": {message}")]
    Install { database: String, message: String },
    /// Another daemon or command holds what this one needs (lease, epoch, progress, a round).
    #[error("database \"{database}\": {message}")]
    Concurrency { database: String, message: String },
    /// The server answered something drover did not expect.
    #[error("database \"{database}\": {message}")]
    Protocol { database: String, message: String },
    /// A bug or a stopped part of drover (an actor gone).
    #[error("database \"{database}\": {message}")]
    Internal { database: String, message: String },
    /// The configuration cannot work with this database (TLS, password, `replica_role`).
    #[error("database \"{database}\": {message}")]
    Config { database: String, message: String },
    /// A source or target moved back in time or lost deltas: progress no longer holds.
    #[error("database \"{database}\": {message}")]
    Diverged { database: String, message: String },
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

    /// A replicated table, column or key is missing or differs: plans are read again.
    pub fn schema(database: &str, message: impl Into<String>) -> Self {
        let (database, message) = (database.to_string(), message.into());
        PgError::Schema { database, message }
    }

    /// drover's objects are missing or outdated: the message names `drover install`.
    pub fn install(database: &str, message: impl Into<String>) -> Self {
        let (database, message) = (database.to_string(), message.into());
        PgError::Install { database, message }
    }

    /// Lost the lease, a fenced epoch, progress moved by another holder, a round still running.
    pub fn concurrency(database: &str, message: impl Into<String>) -> Self {
        let (database, message) = (database.to_string(), message.into());
        PgError::Concurrency { database, message }
    }

    /// The server's answer was not what the statement drover sent should give.
    pub fn protocol(database: &str, message: impl Into<String>) -> Self {
        let (database, message) = (database.to_string(), message.into());
        PgError::Protocol { database, message }
    }

    /// An actor gone, or another bug in drover.
    pub fn internal(database: &str, message: impl Into<String>) -> Self {
        let (database, message) = (database.to_string(), message.into());
        PgError::Internal { database, message }
    }

    /// The database's configuration cannot work (TLS files, password, `replica_role`).
    pub fn config(database: &str, message: impl Into<String>) -> Self {
        let (database, message) = (database.to_string(), message.into());
        PgError::Config { database, message }
    }

    /// Progress no longer holds: a failover, a restore, or purged deltas a target needs.
    pub fn diverged(database: &str, message: impl Into<String>) -> Self {
        let (database, message) = (database.to_string(), message.into());
        PgError::Diverged { database, message }
    }

    /// The database this error happened on.
    pub fn database(&self) -> &str {
        match self {
            PgError::Connect { database, .. }
            | PgError::Pool { database, .. }
            | PgError::Query { database, .. }
            | PgError::Deadline { database, .. } => database,
            PgError::Schema { database, .. }
            | PgError::Install { database, .. }
            | PgError::Concurrency { database, .. }
            | PgError::Protocol { database, .. }
            | PgError::Internal { database, .. }
            | PgError::Config { database, .. }
            | PgError::Diverged { database, .. } => database,
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
            // Messages drover wrote itself: no server DETAIL, no row data.
            _ => self.to_string(),
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
            PgError::Conflict { .. } => ErrorKind::Conflict,
            PgError::Query { source, .. } => classify(source),
            PgError::Schema { .. } => ErrorKind::Schema,
            PgError::Install { .. } => ErrorKind::Install,
            PgError::Concurrency { .. } => ErrorKind::Concurrency,
            PgError::Protocol { .. } => ErrorKind::Protocol,
            PgError::Internal { .. } => ErrorKind::Internal,
            PgError::Config { .. } => ErrorKind::Config,
            PgError::Diverged { .. } => ErrorKind::Diverged,
        }
    }

    /// Whether the sync reads its table plans again before retrying (`ErrorKind`).
    pub fn needs_reprepare(&self) -> bool {
        self.kind().needs_reprepare()
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

    #[test]
    fn each_constructor_says_its_kind_and_whether_plans_are_read_again() {
        type Make = fn(&str, String) -> PgError;
        let cases: [(Make, &str, bool); 7] = [
            (|d, m| PgError::schema(d, m), "schema", true),
            (|d, m| PgError::install(d, m), "install", false),
            (|d, m| PgError::concurrency(d, m), "concurrency", false),
            (|d, m| PgError::protocol(d, m), "protocol", false),
            (|d, m| PgError::internal(d, m), "internal", false),
            (|d, m| PgError::config(d, m), "config", false),
            (|d, m| PgError::diverged(d, m), "diverged", false),
        ];
        for (make, label, reprepare) in cases {
            let e = make("dst", "what happened".into());
            assert_eq!(e.kind().as_str(), label);
            assert_eq!(e.needs_reprepare(), reprepare, "{label}");
            assert_eq!(e.database(), "dst");
            assert_eq!(e.to_string(), "database \"dst\": what happened");
            assert_eq!(e.redacted(), e.to_string());
        }
    }
}
