//! The validated configuration as the rest of drover sees it: every default
//! applied, every name checked, every table name parsed. Produced only by
//! [`super::load`] / [`super::load_from_str`]; see `config/drover.toml` for
//! the file format.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use super::choices::{
    ConflictStrategy, InitialCopy, LogFormat, ReplicaRoleConfig, SequenceMode, DEFAULT_LOG_FORMAT,
};
use super::secret::resolve_secret;
pub use super::secret::Secret;
use super::ConfigError;
use crate::pg::ident::TableName;
use crate::pg::tls::{ChannelBinding, RootCert, SslMode, TlsOptions};

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
    /// `api_token`: the bearer token the HTTP endpoint requires for its
    /// `POST` endpoints (`/syncs/NAME/kick`). Optional, but one of
    /// `api_token` / `api_token_env` is required when `listen` is not a
    /// loopback address. Use [`Daemon::resolve_api_token`] rather than
    /// reading this directly.
    pub api_token: Option<Secret>,
    /// `api_token_env`: name of an environment variable holding the token,
    /// read at start-up. Optional; cannot be combined with `api_token`.
    pub api_token_env: Option<String>,
    /// `api_token_for_reads`: when true, every HTTP endpoint but `/health` (so also `GET
    /// /status` and `/metrics`) requires the token. Default false; needs a token.
    pub api_token_for_reads: bool,
    /// `log_format`: how log lines on stderr are written, `text` or `json`.
    /// Default [`DEFAULT_LOG_FORMAT`] (`text`).
    pub log_format: LogFormat,
    /// `lease_timeout`: how long a sync's lease outlives a holder that stops
    /// proving it is alive (frozen, paused, cut off); a standby takes over
    /// after it. A duration such as "10s" or "1500ms". Default
    /// [`DEFAULT_LEASE_TIMEOUT`].
    pub lease_timeout: Duration,
    /// `lock_timeout`: how long a target's apply may wait for a lock before
    /// its round fails and is retried (PostgreSQL's `lock_timeout` of the
    /// apply session). Default [`super::timeouts::DEFAULT_LOCK_TIMEOUT`].
    pub lock_timeout: Duration,
    /// `statement_timeout`: the longest one statement of a round may run
    /// (PostgreSQL's `statement_timeout`); `None` when set to `0` (off).
    /// Default [`super::timeouts::DEFAULT_STATEMENT_TIMEOUT`].
    pub statement_timeout: Option<Duration>,
    /// `round_deadline`: how long one round may take, source snapshot
    /// included, before it is abandoned (so a stuck target cannot hold the
    /// source's snapshot open). Default [`super::timeouts::DEFAULT_ROUND_DEADLINE`].
    pub round_deadline: Duration,
    /// `round_pacing`: the longest pause before the next round of a target
    /// whose rounds run back to back (the pause is as long as the last round
    /// took, at most this), so that a busy source pays the per-round cost less
    /// often; zero (`0`) turns pacing off. Multi-master syncs are not paced.
    /// Default [`super::timeouts::DEFAULT_ROUND_PACING`].
    pub round_pacing: Duration,
    /// `auto_install`: when true, a reload (SIGHUP, `drover reload`) runs `drover install`
    /// itself before starting what the new config adds. Default false.
    pub auto_install: bool,
}

/// Default `daemon.lease_timeout`: long enough that a busy server or a short
/// network hiccup does not move the lease (the holder heartbeats every third
/// of it), short enough that a frozen holder stops replication for seconds,
/// not minutes.
pub const DEFAULT_LEASE_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for Daemon {
    fn default() -> Self {
        Daemon {
            listen: DEFAULT_LISTEN,
            api_token: None,
            api_token_env: None,
            api_token_for_reads: false,
            log_format: DEFAULT_LOG_FORMAT,
            lease_timeout: DEFAULT_LEASE_TIMEOUT,
            lock_timeout: super::timeouts::DEFAULT_LOCK_TIMEOUT,
            statement_timeout: Some(super::timeouts::DEFAULT_STATEMENT_TIMEOUT),
            round_deadline: super::timeouts::DEFAULT_ROUND_DEADLINE,
            round_pacing: super::timeouts::DEFAULT_ROUND_PACING,
            auto_install: false,
        }
    }
}

impl Daemon {
    /// The API token: `api_token` if set, else the value of the environment
    /// variable named by `api_token_env` (an error naming
    /// `daemon.api_token_env` and the variable if it is unset, empty or not
    /// UTF-8), else `Ok(None)`: no token, which validation allows only on a
    /// loopback `listen` address.
    pub fn resolve_api_token(&self) -> Result<Option<Secret>, ConfigError> {
        self.resolve_api_token_with(|var| std::env::var(var))
    }

    pub(super) fn resolve_api_token_with(
        &self,
        lookup: impl Fn(&str) -> Result<String, std::env::VarError>,
    ) -> Result<Option<Secret>, ConfigError> {
        resolve_secret(
            self.api_token.as_ref(),
            self.api_token_env.as_deref(),
            lookup,
        )
        .map_err(|(var, problem)| ConfigError::ApiTokenEnv { var, problem })
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
    /// (e.g. the Amazon RDS bundle), or `system` for the operating system's
    /// store (only with `verify-full`, which it then defaults to). Optional;
    /// without it `~/.postgresql/root.crt` is used when it exists, as libpq
    /// does, and `verify-ca` / `verify-full` are refused when it does not.
    /// Not allowed with `sslmode = "disable"`. Relative paths are relative to
    /// the daemon's working directory.
    pub sslrootcert: Option<RootCert>,
    /// `sslcert`: PEM client certificate presented when the server asks for
    /// one. Optional; default `~/.postgresql/postgresql.crt` if it exists.
    pub sslcert: Option<PathBuf>,
    /// `sslkey`: the client certificate's unencrypted PEM private key, which
    /// must be 0600 or stricter (0640 if owned by root). Optional; default
    /// `~/.postgresql/postgresql.key`.
    pub sslkey: Option<PathBuf>,
    /// `channel_binding`: `disable`, `prefer` or `require`, as in libpq.
    /// Default `prefer`.
    pub channel_binding: ChannelBinding,
    /// `replica_role`: how to set `session_replication_role = replica` when
    /// applying changes here: `auto`, `set`, `function:NAME` or `off` (see
    /// [`ReplicaRoleConfig`]). Default [`DEFAULT_REPLICA_ROLE`](super::DEFAULT_REPLICA_ROLE) (`auto`).
    pub replica_role: ReplicaRoleConfig,
    /// `application_name` (or `PGAPPNAME`): added to the name drover gives its sessions.
    /// Optional.
    pub application_name: Option<String>,
    /// Where each connection setting came from (key, `DROVER__...`, `url`, service,
    /// `PGHOST`, default), for `drover check`; never the values.
    pub sources: super::ConnectionSources,
}

impl Database {
    /// The TLS settings to connect with; unset files take libpq's defaults.
    pub fn tls_options(&self) -> TlsOptions {
        TlsOptions {
            rootcert: self.sslrootcert.clone(),
            cert: self.sslcert.clone(),
            key: self.sslkey.clone(),
            ..TlsOptions::new(self.sslmode)
        }
    }

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
        resolve_secret(self.password.as_ref(), self.password_env.as_deref(), lookup).map_err(
            |(var, problem)| ConfigError::PasswordEnv {
                database: name.to_owned(),
                var,
                problem,
            },
        )
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
    /// `sequences`: sequences replicated with the tables, parsed like
    /// `tables`, each at most once and none also in `tables`, in file order.
    /// Default empty.
    pub sequences: Vec<TableName>,
    /// `[relgroups.NAME.keys]`: for tables of `tables` without a usable
    /// primary key, the columns identifying a row, e.g.
    /// `"public.t" = ["a", "b"]`. A table is written in any spelling
    /// `tables` accepts; columns are catalog names as written (case kept, no
    /// quotes), each at most once, at least one. Default empty: every table
    /// uses its primary key. Not settable from the environment.
    pub keys: BTreeMap<TableName, Vec<String>>,
    /// `sequence_mode`: `follow` or `interleave` (see [`SequenceMode`]).
    /// Default [`DEFAULT_SEQUENCE_MODE`](super::DEFAULT_SEQUENCE_MODE) (`follow`).
    pub sequence_mode: SequenceMode,
    /// `sequence_step`: with `interleave`, the `INCREMENT BY` of every
    /// master's sequences; at least the number of masters of each
    /// multi-master sync of this relgroup (a larger one leaves residues free
    /// for masters added later). Default `None`: the sync's number of masters.
    pub sequence_step: Option<i64>,
    /// `[relgroups.NAME.delta_columns]`: numeric columns whose concurrent changes on
    /// several masters add up (each change is sent as an increment), e.g.
    /// `"public.accounts" = ["balance"]`. Tables and columns are written as in `keys`;
    /// types are checked against the databases (`drover check`, install). Default empty.
    /// Not settable from the environment.
    pub delta_columns: BTreeMap<TableName, Vec<String>>,
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
    /// `conflict_strategy`: who wins when a key changed on two sources since
    /// they last exchanged changes: `latest`, `priority`, `abort` or `skip`
    /// (see [`ConflictStrategy`]). Only matters with two or more sources.
    /// Default [`DEFAULT_CONFLICT_STRATEGY`](super::DEFAULT_CONFLICT_STRATEGY) (`latest`).
    pub conflict_strategy: ConflictStrategy,
    /// `priority`: with `conflict_strategy = "priority"` (and then
    /// required, non-empty), sources in order of precedence, first wins.
    /// Each is one of `sources`, at most once; it need not list them all:
    /// unlisted sources rank after the listed ones, in `sources` order
    /// ([`SyncConfig::priority_order`]). Empty with any other strategy.
    pub priority: Vec<String>,
    /// `initial_copy`: whether to copy whole tables to the targets first:
    /// `never`, `if-empty` or `always` (see [`InitialCopy`]). Default
    /// [`DEFAULT_INITIAL_COPY`](super::DEFAULT_INITIAL_COPY) (`never`).
    pub initial_copy: InitialCopy,
    /// `[syncs.NAME.table_strategy]`: per-table overrides of
    /// `conflict_strategy`, e.g. `"public.accounts" = "priority"`. Each table
    /// is one of the relgroup's; `priority` needs the sync's `priority` list.
    /// Default empty. Not settable from the environment.
    pub table_strategy: BTreeMap<TableName, ConflictStrategy>,
}

impl SyncConfig {
    /// The strategy deciding conflicts on `table`: its `table_strategy`
    /// entry, else the sync's `conflict_strategy`.
    pub fn strategy_for(&self, table: &TableName) -> &ConflictStrategy {
        self.table_strategy
            .get(table)
            .unwrap_or(&self.conflict_strategy)
    }

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

    /// Every source, highest precedence first: those in `priority` in its
    /// order, then the others in `sources` order. With no `priority` list,
    /// simply `sources`.
    pub fn priority_order(&self) -> Vec<&str> {
        let mut order: Vec<&str> = self.priority.iter().map(String::as_str).collect();
        for source in &self.sources {
            if !order.contains(&source.as_str()) {
                order.push(source);
            }
        }
        order
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

#[cfg(test)]
mod tests {
    use super::super::choices::{
        DEFAULT_CONFLICT_STRATEGY, DEFAULT_INITIAL_COPY, DEFAULT_REPLICA_ROLE,
    };
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
            sslcert: None,
            sslkey: None,
            channel_binding: ChannelBinding::default(),
            replica_role: DEFAULT_REPLICA_ROLE,
            application_name: None,
            sources: Default::default(),
        }
    }

    fn sync(sources: &[&str], targets: &[&str], priority: &[&str]) -> SyncConfig {
        let strings = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        SyncConfig {
            relgroup: "g".into(),
            sources: strings(sources),
            targets: strings(targets),
            conflict_strategy: if priority.is_empty() {
                DEFAULT_CONFLICT_STRATEGY
            } else {
                ConflictStrategy::Priority
            },
            priority: strings(priority),
            initial_copy: DEFAULT_INITIAL_COPY,
            table_strategy: BTreeMap::new(),
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
        let daemon = Daemon {
            api_token: Some(Secret::new("t0ken")),
            ..Daemon::default()
        };
        let shown = format!("{daemon:?} {daemon:#?}");
        assert!(!shown.contains("t0ken") && shown.contains("***"), "{shown}");
    }

    #[test]
    fn resolve_api_token_prefers_token_then_env_then_none() {
        let unset = |_: &str| Err(VarError::NotPresent);
        let none = Daemon::default();
        assert_eq!(none.resolve_api_token_with(unset).unwrap(), None);
        assert_eq!(none.resolve_api_token().unwrap(), None);

        let inline = Daemon {
            api_token: Some(Secret::new("inline")),
            api_token_env: Some("TOKEN".into()),
            ..Daemon::default()
        };
        let got = inline.resolve_api_token_with(unset).unwrap().unwrap();
        assert_eq!(got.expose(), "inline");

        let env = Daemon {
            api_token_env: Some("DROVER_TOKEN".into()),
            ..Daemon::default()
        };
        let got = env
            .resolve_api_token_with(|v| {
                assert_eq!(v, "DROVER_TOKEN");
                Ok("from-env".into())
            })
            .unwrap()
            .unwrap();
        assert_eq!(got.expose(), "from-env");
        let msg = env.resolve_api_token_with(unset).unwrap_err().to_string();
        assert_eq!(
            msg,
            "daemon.api_token_env: environment variable DROVER_TOKEN is not set"
        );
        let msg = env
            .resolve_api_token_with(|_| Ok(String::new()))
            .unwrap_err()
            .to_string();
        assert!(msg.ends_with("DROVER_TOKEN is set but empty"), "{msg}");

        // The real environment: PATH is always set.
        let path = Daemon {
            api_token_env: Some("PATH".into()),
            ..Daemon::default()
        };
        let got = path.resolve_api_token().unwrap().unwrap();
        assert_eq!(got.expose(), std::env::var("PATH").unwrap());
    }

    #[test]
    fn priority_order_ranks_unlisted_sources_last_in_sources_order() {
        let s = sync(&["a", "b", "c", "d"], &[], &["c", "a"]);
        assert_eq!(s.priority_order(), ["c", "a", "b", "d"]);
        let s = sync(&["a", "b"], &["t"], &[]);
        assert_eq!(s.priority_order(), ["a", "b"]);
        let s = sync(&["a", "b"], &[], &["b", "a"]);
        assert_eq!(s.priority_order(), ["b", "a"]);
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
        let one = sync(&["a"], &["b", "c"], &[]);
        assert_eq!(one.written_databases().collect::<Vec<_>>(), ["b", "c"]);
        let multi = sync(&["a", "b"], &["c"], &[]);
        assert_eq!(
            multi.written_databases().collect::<Vec<_>>(),
            ["c", "a", "b"]
        );
    }
}
