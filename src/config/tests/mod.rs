//! Loading tests: every error case names the file and the dotted key; the
//! shipped example loads; environment overrides deserialize. Environment
//! tests inject variables through the `config` crate's `Environment::source`,
//! so nothing here mutates the process-global environment. This module holds
//! the helpers and whole-file tests; `problems` the error reports of the
//! original keys, `env` environment overrides and internals, `daemon_db` and
//! `relgroup_sync` the keys added for replica roles, API tokens, sequences,
//! key columns and conflict handling.

mod chains;
mod daemon_db;
mod env;
mod multi_master;
mod problems;
mod relgroup_sync;
mod timeouts;
mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::raw::{self, split_list};
use super::*;
use crate::pg::ident::TableName;
use crate::pg::tls::{ChannelBinding, RootCert, SslMode};

const FILE: &str = "conf/test.toml";

/// Three databases, one relgroup, one sync: valid.
const BASE: &str = r#"
[databases.a]
host = "h1"
dbname = "d"
user = "u"
[databases.b]
host = "h2"
dbname = "d"
user = "u"
[databases.c]
host = "h3"
dbname = "d"
user = "u"
[relgroups.g]
tables = ["t1", "s.t2"]
[syncs.s]
relgroup = "g"
sources = ["a"]
targets = ["b"]
"#;

fn load_text_only(text: &str) -> Result<Config, ConfigError> {
    load_from_str(text, Path::new(FILE))
}

fn with_env(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: config::Map<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    load_text(
        text,
        Path::new(FILE),
        Some(environment().source(Some(map))),
        &|_| None,
    )
}

fn errors(text: &str) -> String {
    match load_text_only(text) {
        Ok(c) => panic!("expected an error, loaded {c:#?}"),
        Err(e) => e.to_string(),
    }
}

/// Asserts that some line is `FILE: key: ...fragment...`.
#[track_caller]
fn assert_problem(all: &str, key: &str, fragment: &str) {
    let prefix = format!("{FILE}: {key}: ");
    assert!(
        all.lines()
            .any(|l| l.starts_with(&prefix) && l.contains(fragment)),
        "no line `{prefix}...{fragment}...` in:\n{all}"
    );
}

#[track_caller]
fn assert_lines(all: &str, n: usize) {
    assert_eq!(all.lines().count(), n, "expected {n} problems:\n{all}");
    for line in all.lines() {
        assert!(line.starts_with(&format!("{FILE}: ")), "{line}");
    }
}

#[test]
fn shipped_example_loads() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/drover.toml");
    let cfg = load(Some(&path)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.path, path);
    assert_eq!(cfg.daemon.listen, DEFAULT_LISTEN);
    let legacy = &cfg.databases["legacy"];
    assert_eq!(legacy.port, 5432);
    assert_eq!(legacy.password_env.as_deref(), Some("LEGACY_PGPASSWORD"));
    assert_eq!(cfg.databases["new"].sslmode, SslMode::VerifyFull);
    assert_eq!(cfg.relgroups["herd"].tables.len(), 3);
    assert_eq!(
        cfg.relgroups["herd"].tables[0],
        TableName::new("public", "pgbench_accounts")
    );
    assert_eq!(cfg.sync_databases("legacy_to_new"), ["legacy", "new"]);
    assert!(cfg.sync_databases("nope").is_empty());
    assert_eq!(cfg.daemon.log_format, LogFormat::Text);
    assert_eq!(cfg.daemon.api_token, None);
    assert_eq!(legacy.replica_role, ReplicaRoleConfig::Auto);
    assert_eq!(
        cfg.databases["new"].replica_role.sql_call("replica"),
        r#"SELECT "public"."rds_session_replication_role"('replica')"#
    );
    let ledger = &cfg.relgroups["ledger"];
    assert_eq!(
        ledger.sequences,
        [TableName::new("accounting", "accounts_id_seq")]
    );
    assert_eq!(
        ledger.keys[&TableName::new("accounting", "entries")],
        ["entry_date", "entry_no"]
    );
    let migration = &cfg.syncs["legacy_to_new"];
    assert_eq!(migration.initial_copy, InitialCopy::IfEmpty);
    assert_eq!(migration.conflict_strategy, ConflictStrategy::Latest);
    let mm = &cfg.syncs["ledger"];
    assert_eq!(mm.conflict_strategy, ConflictStrategy::Priority);
    assert_eq!(mm.priority_order(), ["legacy", "new"]);
    assert_eq!(ledger.sequence_mode, SequenceMode::Interleave);
    assert_eq!(
        *mm.strategy_for(&TableName::new("accounting", "entries")),
        ConflictStrategy::Latest
    );
}

#[test]
fn defaults_apply() {
    let cfg = load_text_only(
        r#"
        [databases.a]
        host = "h"
        dbname = "d"
        user = "u"
        [databases.b]
        host = "/var/run/postgresql"
        dbname = "d"
        user = "u"
        [relgroups.g]
        tables = ["T"]
        [syncs.mm]
        relgroup = "g"
        sources = ["a", "b"]
        "#,
    )
    .unwrap();
    assert_eq!(cfg.path, Path::new(FILE));
    assert_eq!(
        cfg.daemon.listen,
        "127.0.0.1:9187".parse::<SocketAddr>().unwrap()
    );
    let a = &cfg.databases["a"];
    assert_eq!(
        (
            a.port,
            a.sslmode,
            &a.password,
            &a.password_env,
            &a.sslrootcert
        ),
        (5432, SslMode::Prefer, &None, &None, &None)
    );
    assert_eq!(a.replica_role, ReplicaRoleConfig::Auto);
    assert_eq!(cfg.daemon.log_format, LogFormat::Text);
    assert_eq!(
        (&cfg.daemon.api_token, &cfg.daemon.api_token_env),
        (&None, &None)
    );
    let mm = &cfg.syncs["mm"];
    assert!(mm.targets.is_empty() && mm.priority.is_empty());
    assert_eq!(
        (mm.conflict_strategy, mm.initial_copy),
        (ConflictStrategy::Latest, InitialCopy::Never)
    );
    assert_eq!(cfg.relgroups["g"].tables, [TableName::new("public", "t")]);
    assert!(cfg.relgroups["g"].sequences.is_empty() && cfg.relgroups["g"].keys.is_empty());
    assert_eq!(cfg.sync_databases("mm"), ["a", "b"]);
}

#[test]
fn every_key_is_read() {
    let cfg = load_text_only(
        r#"
        [daemon]
        listen = "[::1]:9999"
        api_token = "tok-67890"
        log_format = "json"
        lease_timeout = "4s"
        [databases.a]
        host = "h"
        port = 6543
        dbname = "d"
        user = "u"
        password = "12345"
        sslmode = "verify-ca"
        sslrootcert = "/ca.pem"
        sslcert = "/client.crt"
        sslkey = "/client.key"
        channel_binding = "require"
        replica_role = "set"
        [databases.b]
        host = "h"
        dbname = "d"
        user = "u"
        password_env = "B_PW"
        sslmode = "disable"
        replica_role = "function:public.f"
        [relgroups.g]
        tables = ['"Sales Dept"."Order ""Lines"" ü"', "x.y"]
        sequences = ["x.y_id_seq"]
        [relgroups.g.keys]
        "X.Y" = ["k"]
        [syncs.s]
        relgroup = "g"
        sources = ["a"]
        targets = ["b"]
        conflict_strategy = "skip"
        initial_copy = "always"
        "#,
    )
    .unwrap();
    assert_eq!(
        cfg.daemon.listen,
        "[::1]:9999".parse::<SocketAddr>().unwrap()
    );
    let a = &cfg.databases["a"];
    assert_eq!(a.port, 6543);
    assert_eq!(a.password.as_ref().unwrap().expose(), "12345");
    assert_eq!(a.sslmode, SslMode::VerifyCa);
    assert_eq!(a.sslrootcert, Some(RootCert::File("/ca.pem".into())));
    assert_eq!(a.sslcert.as_deref(), Some(Path::new("/client.crt")));
    assert_eq!(a.sslkey.as_deref(), Some(Path::new("/client.key")));
    assert_eq!(a.channel_binding, ChannelBinding::Require);
    assert_eq!(cfg.databases["b"].channel_binding, ChannelBinding::Prefer);
    assert_eq!(cfg.databases["b"].password_env.as_deref(), Some("B_PW"));
    assert_eq!(cfg.databases["b"].sslmode, SslMode::Disable);
    assert_eq!(
        cfg.relgroups["g"].tables[0].to_string(),
        r#""Sales Dept"."Order ""Lines"" ü""#
    );
    assert_eq!(cfg.daemon.api_token.as_ref().unwrap().expose(), "tok-67890");
    assert_eq!(cfg.daemon.log_format, LogFormat::Json);
    assert_eq!(cfg.daemon.lease_timeout, std::time::Duration::from_secs(4));
    assert_eq!(a.replica_role, ReplicaRoleConfig::Set);
    assert_eq!(
        cfg.databases["b"].replica_role,
        ReplicaRoleConfig::Function {
            schema: Some("public".into()),
            name: "f".into()
        }
    );
    let g = &cfg.relgroups["g"];
    assert_eq!(g.sequences, [TableName::new("x", "y_id_seq")]);
    assert_eq!(g.keys[&TableName::new("x", "y")], ["k"]);
    let s = &cfg.syncs["s"];
    assert_eq!(
        (s.conflict_strategy, s.initial_copy),
        (ConflictStrategy::Skip, InitialCopy::Always)
    );
    let shown = format!("{cfg:?}");
    assert!(
        !shown.contains("12345") && !shown.contains("67890"),
        "{shown}"
    );
}

#[test]
fn missing_file_names_the_file_and_how_it_was_chosen() {
    let path = Path::new("/nonexistent/drover-test.toml");
    let msg = load(Some(path)).unwrap_err().to_string();
    assert!(
        msg.starts_with("/nonexistent/drover-test.toml: cannot read config file (from --config): "),
        "{msg}"
    );
    let dir = tempfile::tempdir().unwrap();
    let msg = load(Some(dir.path())).unwrap_err().to_string();
    assert!(msg.contains("cannot read config file"), "{msg}");
}

#[test]
fn config_path_precedence() {
    let cli = Path::new("/cli.toml");
    assert_eq!(
        choose_path(Some(cli), Some("/env.toml".into())),
        (cli.to_owned(), "from --config")
    );
    assert_eq!(
        choose_path(None, Some("/env.toml".into())),
        (PathBuf::from("/env.toml"), "from $DROVER_CONFIG")
    );
    assert_eq!(
        choose_path(None, Some("".into())),
        (PathBuf::from(DEFAULT_CONFIG_PATH), "the default path")
    );
    assert_eq!(
        choose_path(None, None),
        (PathBuf::from("config/drover.toml"), "the default path")
    );
}

#[test]
fn syntax_error_keeps_line_and_column() {
    let e = load_text_only("[daemon]\nlisten = \"127.0.0.1:9187\nx = 1\n").unwrap_err();
    let msg = e.to_string();
    match e {
        ConfigError::Syntax { line, column, .. } => assert_eq!((line, column), (2, 25)),
        other => panic!("{other:?}"),
    }
    assert!(
        msg.starts_with(&format!("{FILE}: line 2, column 25: TOML syntax error: ")),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1, "{msg}");

    let msg = errors("[databases.a]\nhost = \"x\"\n[databases.a]\n");
    assert!(msg.starts_with(&format!("{FILE}: line 3, ")), "{msg}");
    assert!(msg.contains("duplicate"), "{msg}");
}
