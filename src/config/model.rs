//! The validated configuration as the rest of drover sees it: every default
//! applied, every name checked, every table name parsed. Produced only by
//! [`super::load`] / [`super::load_from_str`]; see `config/drover.toml` for
//! the file format.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use super::ConfigError;
use crate::pg::ident::TableName;
use crate::pg::tls::SslMode;

/// Default `databases.*.port`: PostgreSQL's (and libpq's) default port.
pub const DEFAULT_PORT: u16 = 5432;

/// Default `databases.*.sslmode`: `prefer`, libpq's own default, so that a
/// connection described here behaves like the same `psql` command line (TLS
/// when the server offers it, unverified). Production setups across networks
/// should say `verify-full`.
pub const DEFAULT_SSLMODE: SslMode = SslMode::Prefer;

/// Default `daemon.listen`: loopback only, because `/status` reveals the
/// replication topology and nothing should be exposed to the network unless
/// the operator asks; port 9187 is the customary PostgreSQL-exporter port, so
/// existing Prometheus scrape configs find it (change it if
/// `postgres_exporter` runs on the same host: it uses 9187 too).
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 9187));

/// The whole, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it was loaded from (as given, not canonicalized), for
    /// messages.
    pub path: PathBuf,
    /// `[daemon]`: process-wide settings. The section is optional.
    pub daemon: Daemon,
    /// `[databases.NAME]`: the PostgreSQL databases drover connects to.
    pub databases: BTreeMap<String, Database>,
    /// `[relgroups.NAME]`: named sets of tables replicated together.
    pub relgroups: BTreeMap<String, Relgroup>,
    /// `[syncs.NAME]`: which relgroup flows from which databases to which.
    pub syncs: BTreeMap<String, SyncConfig>,
}

/// `[daemon]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// `listen`: address of the HTTP endpoint serving `/metrics`, `/status`
    /// and `/health`, as `IP:PORT` (`[::1]:9187` for IPv6; host names are
    /// not resolved). Default [`DEFAULT_LISTEN`] (`127.0.0.1:9187`).
    pub listen: SocketAddr,
}

impl Default for Daemon {
    fn default() -> Self {
        Daemon {
            listen: DEFAULT_LISTEN,
        }
    }
}

/// `[databases.NAME]`: how to connect to one PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    /// `host` (required): host name, IP address, or the directory of a Unix
    /// socket (a value starting with `/`), as libpq's `host`.
    pub host: String,
    /// `port`: TCP port (or Unix socket file suffix). Default
    /// [`DEFAULT_PORT`] (5432).
    pub port: u16,
    /// `dbname` (required): database name.
    pub dbname: String,
    /// `user` (required): role to connect as. It must be allowed to create
    /// triggers on the replicated tables and, on targets, to set
    /// `session_replication_role`.
    pub user: String,
    /// `password`: the password itself. Optional; prefer `password_env` or
    /// `~/.pgpass`, which keep it out of the file. Use
    /// [`Database::resolve_password`] rather than reading this directly.
    pub password: Option<Secret>,
    /// `password_env`: name of an environment variable holding the password,
    /// read when connecting. Optional; cannot be combined with `password`.
    pub password_env: Option<String>,
    /// `sslmode`: `disable`, `prefer`, `require`, `verify-ca` or
    /// `verify-full`, as in libpq. Default [`DEFAULT_SSLMODE`] (`prefer`).
    pub sslmode: SslMode,
    /// `sslrootcert`: PEM file of CA certificates to verify the server with
    /// (e.g. the Amazon RDS bundle), for `verify-ca` / `verify-full`.
    /// Optional; without it the system's trust roots are used. Not allowed
    /// with `sslmode = "disable"`. Relative paths are relative to the
    /// daemon's working directory.
    pub sslrootcert: Option<PathBuf>,
}

impl Database {
    /// The password to connect with: `password` if set, else the value of the
    /// environment variable named by `password_env` (an error naming
    /// `databases.NAME.password_env` and the variable if it is unset, empty or
    /// not UTF-8), else `Ok(None)`, and the caller falls back to `~/.pgpass`
    /// / `PGPASSFILE`. `name` is this database's key in `[databases]`, for
    /// the message.
    pub fn resolve_password(&self, name: &str) -> Result<Option<Secret>, ConfigError> {
        self.resolve_password_with(name, |var| std::env::var(var))
    }

    pub(super) fn resolve_password_with(
        &self,
        name: &str,
        lookup: impl Fn(&str) -> Result<String, std::env::VarError>,
    ) -> Result<Option<Secret>, ConfigError> {
        if let Some(password) = &self.password {
            return Ok(Some(password.clone()));
        }
        let Some(var) = &self.password_env else {
            return Ok(None);
        };
        let problem = match lookup(var) {
            Ok(value) if !value.is_empty() => return Ok(Some(Secret::new(value))),
            Ok(_) => "is set but empty",
            Err(std::env::VarError::NotPresent) => "is not set",
            Err(std::env::VarError::NotUnicode(_)) => "is not valid UTF-8",
        };
        Err(ConfigError::PasswordEnv {
            database: name.to_owned(),
            var: var.clone(),
            problem,
        })
    }
}

/// `[relgroups.NAME]`: a set of tables replicated together, in one
/// transaction per batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relgroup {
    /// `tables` (required, non-empty): `table` or `schema.table`, parsed with
    /// PostgreSQL's rules (unquoted names fold to lower case; an unqualified
    /// name is in `public`), each at most once, in file order.
    pub tables: Vec<TableName>,
}

/// `[syncs.NAME]`: replicate one relgroup between databases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// `relgroup` (required): name of the `[relgroups.NAME]` to replicate.
    pub relgroup: String,
    /// `sources` (required, non-empty): databases whose changes are captured.
    /// With two or more sources the sync is multi-master: each source also
    /// receives the others' changes.
    pub sources: Vec<String>,
    /// `targets`: databases that only receive changes. Default empty (then
    /// at least two sources are needed).
    pub targets: Vec<String>,
}

impl SyncConfig {
    /// The databases this sync writes into: its targets, plus its sources
    /// when it has more than one (multi-master).
    pub fn written_databases(&self) -> impl Iterator<Item = &str> {
        let sources: &[String] = if self.sources.len() > 1 {
            &self.sources
        } else {
            &[]
        };
        self.targets.iter().chain(sources).map(String::as_str)
    }
}

impl Config {
    /// Names of the databases a sync touches, sources first then targets, in
    /// file order; empty if there is no such sync.
    pub fn sync_databases(&self, sync: &str) -> Vec<&str> {
        self.syncs
            .get(sync)
            .map(|s| {
                s.sources
                    .iter()
                    .chain(&s.targets)
                    .map(String::as_str)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A password. `Debug` and `Display` print `***`, and it is deliberately
/// not `Serialize`, so it cannot leak into logs or `/status` by accident;
/// call [`Secret::expose`] where the real value is needed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::env::VarError;

    fn db() -> Database {
        Database {
            host: "h".into(),
            port: DEFAULT_PORT,
            dbname: "d".into(),
            user: "u".into(),
            password: None,
            password_env: None,
            sslmode: DEFAULT_SSLMODE,
            sslrootcert: None,
        }
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(s.expose(), "hunter2");
        let d = Database {
            password: Some(s),
            ..db()
        };
        let shown = format!("{d:?} {d:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn resolve_password_prefers_password_then_env_then_none() {
        let unset = |_: &str| Err(VarError::NotPresent);
        assert_eq!(db().resolve_password_with("x", unset).unwrap(), None);

        let d = Database {
            password: Some(Secret::new("p")),
            password_env: Some("PW".into()),
            ..db()
        };
        let got = d.resolve_password_with("x", unset).unwrap().unwrap();
        assert_eq!(got.expose(), "p");

        let d = Database {
            password_env: Some("LEGACY_PW".into()),
            ..db()
        };
        let got = d
            .resolve_password_with("legacy", |v| {
                assert_eq!(v, "LEGACY_PW");
                Ok("007".into())
            })
            .unwrap()
            .unwrap();
        assert_eq!(got.expose(), "007");

        let msg = d
            .resolve_password_with("legacy", unset)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("databases.legacy.password_env"), "{msg}");
        assert!(
            msg.contains("LEGACY_PW") && msg.contains("not set"),
            "{msg}"
        );
        let msg = d
            .resolve_password_with("legacy", |_| Ok(String::new()))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("empty"), "{msg}");
    }

    #[test]
    fn resolve_password_reads_the_real_environment() {
        // PATH is set in any test environment; reading it needs no mutation
        // of the process-global environment.
        let d = Database {
            password_env: Some("PATH".into()),
            ..db()
        };
        let got = d.resolve_password("x").unwrap().unwrap();
        assert_eq!(got.expose(), std::env::var("PATH").unwrap());
        let d = Database {
            password_env: Some("DROVER_TEST_SURELY_UNSET_5f0c2a".into()),
            ..db()
        };
        assert!(d.resolve_password("x").is_err());
    }

    #[test]
    fn written_databases_counts_sources_only_when_multi_master() {
        let one = SyncConfig {
            relgroup: "g".into(),
            sources: vec!["a".into()],
            targets: vec!["b".into(), "c".into()],
        };
        assert_eq!(one.written_databases().collect::<Vec<_>>(), ["b", "c"]);
        let multi = SyncConfig {
            relgroup: "g".into(),
            sources: vec!["a".into(), "b".into()],
            targets: vec!["c".into()],
        };
        assert_eq!(
            multi.written_databases().collect::<Vec<_>>(),
            ["c", "a", "b"]
        );
    }
}
