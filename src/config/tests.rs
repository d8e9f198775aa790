//! Loading tests: every error case names the file and the dotted key; the
//! shipped example loads; environment overrides deserialize. Environment
//! tests inject variables through the `config` crate's `Environment::source`,
//! so nothing here mutates the process-global environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::raw::{self, split_list};
use super::*;
use crate::pg::ident::TableName;
use crate::pg::tls::SslMode;

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
    load_text(text, Path::new(FILE), Some(environment().source(Some(map))))
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
    assert!(cfg.syncs["mm"].targets.is_empty());
    assert_eq!(cfg.relgroups["g"].tables, [TableName::new("public", "t")]);
    assert_eq!(cfg.sync_databases("mm"), ["a", "b"]);
}

#[test]
fn every_key_is_read() {
    let cfg = load_text_only(
        r#"
        [daemon]
        listen = "[::1]:9999"
        [databases.a]
        host = "h"
        port = 6543
        dbname = "d"
        user = "u"
        password = "12345"
        sslmode = "verify-ca"
        sslrootcert = "/ca.pem"
        [databases.b]
        host = "h"
        dbname = "d"
        user = "u"
        password_env = "B_PW"
        sslmode = "disable"
        [relgroups.g]
        tables = ['"Sales Dept"."Order ""Lines"" ü"', "x.y"]
        [syncs.s]
        relgroup = "g"
        sources = ["a"]
        targets = ["b"]
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
    assert_eq!(a.sslrootcert.as_deref(), Some(Path::new("/ca.pem")));
    assert_eq!(cfg.databases["b"].password_env.as_deref(), Some("B_PW"));
    assert_eq!(cfg.databases["b"].sslmode, SslMode::Disable);
    assert_eq!(
        cfg.relgroups["g"].tables[0].to_string(),
        r#""Sales Dept"."Order ""Lines"" ü""#
    );
    assert!(!format!("{cfg:?}").contains("12345"));
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

#[test]
fn unknown_keys_are_named_with_their_full_path() {
    let msg = errors(&format!(
        r#"{BASE}
        [databases.x]
        hots = "h"
        host = "h"
        dbname = "d"
        user = "u"
        sslmoed = "require"
        [database.y]
        host = "h"
        [daemon]
        listen_addr = "1.2.3.4:5"
        [relgroups.h]
        table = ["t"]
        [syncs.z]
        relgroup = "g"
        sources = ["a"]
        target = ["c"]
        "#
    ));
    assert_problem(
        &msg,
        "databases.x.hots",
        r#"unknown key "hots" (did you mean "host"?)"#,
    );
    assert_problem(&msg, "databases.x.sslmoed", r#"did you mean "sslmode"?"#);
    assert_problem(
        &msg,
        "database",
        r#"unknown key "database" (did you mean "databases"?)"#,
    );
    assert_problem(&msg, "daemon.listen_addr", r#"unknown key "listen_addr""#);
    assert_problem(&msg, "relgroups.h.table", r#"did you mean "tables"?"#);
    assert_problem(&msg, "syncs.z.target", r#"did you mean "targets"?"#);
    // relgroups.h then also lacks "tables"; syncs.z needs 2 databases.
    assert_problem(&msg, "relgroups.h.tables", "missing required key");
    assert_problem(&msg, "syncs.z", "at least two distinct databases");
    assert_lines(&msg, 8);

    let msg = errors("[databases.a]\nfrobnicate = 1\n");
    assert_problem(
        &msg,
        "databases.a.frobnicate",
        "expected one of: host, port, dbname",
    );
}

#[test]
fn missing_required_keys_are_all_reported() {
    let msg = errors(
        r#"
        [databases.a]
        port = 5432
        [relgroups.g]
        [syncs.s]
        targets = ["a"]
        "#,
    );
    for key in [
        "databases.a.host",
        "databases.a.dbname",
        "databases.a.user",
        "relgroups.g.tables",
        "syncs.s.relgroup",
        "syncs.s.sources",
    ] {
        let name = key.rsplit('.').next().unwrap();
        assert_problem(&msg, key, &format!("missing required key {name:?}"));
    }
    assert_lines(&msg, 6);
}

#[test]
fn wrong_types_are_all_reported() {
    let msg = errors(
        r#"
        [daemon]
        listen = 9187
        [databases.a]
        host = 5
        port = "5432"
        dbname = true
        user = ["u"]
        password = 12345
        [databases.b]
        host = "h"
        dbname = "d"
        user = "u"
        port = 54.32
        sslmode = { x = 1 }
        [relgroups.g]
        tables = "public.t"
        [relgroups.h]
        tables = ["t", 1, "u", false]
        [syncs.s]
        relgroup = "g"
        sources = "a"
        targets = ["b"]
        "#,
    );
    assert_problem(
        &msg,
        "daemon.listen",
        "expected a string, found integer 9187",
    );
    assert_problem(
        &msg,
        "databases.a.host",
        "expected a string, found integer 5",
    );
    assert_problem(
        &msg,
        "databases.a.port",
        r#"expected an integer, found string "5432""#,
    );
    assert_problem(
        &msg,
        "databases.a.dbname",
        "expected a string, found boolean true",
    );
    assert_problem(
        &msg,
        "databases.a.user",
        "expected a string, found an array",
    );
    assert_problem(
        &msg,
        "databases.a.password",
        "expected a string, found integer",
    );
    assert!(!msg.contains("12345"), "password leaked:\n{msg}");
    assert_problem(
        &msg,
        "databases.b.port",
        "expected an integer, found float 54.32",
    );
    assert_problem(
        &msg,
        "databases.b.sslmode",
        "expected a string, found a table",
    );
    assert_problem(
        &msg,
        "relgroups.g.tables",
        r#"expected an array of strings, found string "public.t""#,
    );
    assert_problem(
        &msg,
        "relgroups.h.tables[1]",
        "expected a string, found integer 1",
    );
    assert_problem(&msg, "syncs.s.sources", "expected an array of strings");
    // Broken keys are not reported again as missing.
    assert!(!msg.contains("missing required"), "{msg}");
    // One problem per key: tables[3] (false) is not reached once tables[1]
    // is found wrong.
    assert_lines(&msg, 11);

    let msg = errors("databases = 5\nrelgroups = []\n[syncs]\nx = \"y\"\n");
    assert_problem(
        &msg,
        "databases",
        "expected a table of databases ([databases.NAME] sections), found an integer",
    );
    assert_problem(&msg, "relgroups", "found an array");
    assert_problem(
        &msg,
        "syncs.x",
        "expected a table ([syncs.x]), found a string",
    );
    assert_lines(&msg, 3);
}

#[test]
fn bad_values_are_reported() {
    let msg = errors(&format!(
        r#"{BASE}
        [daemon]
        listen = "localhost:9187"
        [databases.x]
        host = ""
        port = 70000
        dbname = "d"
        user = "u"
        sslmode = "verify_full"
        [databases.y]
        host = "h"
        port = 0
        dbname = "d"
        user = " "
        sslmode = "disable"
        sslrootcert = "/ca.pem"
        password = "p"
        password_env = "P"
        "#
    ));
    assert_problem(
        &msg,
        "daemon.listen",
        r#""localhost:9187" is not a socket address"#,
    );
    assert_problem(&msg, "databases.x.host", "must not be empty");
    assert_problem(
        &msg,
        "databases.x.port",
        "port 70000 is out of range (1-65535)",
    );
    assert_problem(
        &msg,
        "databases.x.sslmode",
        r#"invalid sslmode "verify_full", expected one of `disable`, `prefer`, `require`, `verify-ca`, `verify-full`"#,
    );
    assert_problem(&msg, "databases.y.port", "port 0 is out of range");
    assert_problem(&msg, "databases.y.user", "must not be empty");
    assert_problem(&msg, "databases.y.sslrootcert", r#"sslmode is "disable""#);
    assert_problem(
        &msg,
        "databases.y.password_env",
        "either password or password_env, not both",
    );
    assert_lines(&msg, 8);
}

#[test]
fn invalid_section_names_are_reported() {
    let msg = errors(&format!(
        r#"{BASE}
        [databases.Legacy]
        host = "h"
        dbname = "d"
        user = "u"
        [relgroups."my group"]
        tables = ["t"]
        [relgroups.a__b]
        tables = ["t"]
        "#
    ));
    assert_problem(
        &msg,
        "databases.Legacy",
        r#"invalid database name "Legacy": names must be a lower-case"#,
    );
    assert_problem(
        &msg,
        "relgroups.my group",
        r#"invalid relgroup name "my group""#,
    );
    assert_problem(&msg, "relgroups.a__b", r#"must not contain "__""#);
    assert_lines(&msg, 3);
}

#[test]
fn relgroup_tables_are_checked() {
    let msg = errors(&format!(
        r#"{BASE}
        [relgroups.h]
        tables = ["t", "public.t", '"t"', "a.b.c", 'x."y', "", "Other.T", 'other."T"', "other.t"]
        [relgroups.e]
        tables = []
        "#
    ));
    assert_problem(
        &msg,
        "relgroups.h.tables[1]",
        r#"table public.t is listed twice (also tables[0] as "t")"#,
    );
    assert_problem(
        &msg,
        "relgroups.h.tables[2]",
        r#"table public.t is listed twice (also tables[0] as "t")"#,
    );
    assert_problem(
        &msg,
        "relgroups.h.tables[3]",
        r#"invalid table name "a.b.c": 3 dotted parts"#,
    );
    assert_problem(
        &msg,
        "relgroups.h.tables[4]",
        "unterminated quoted identifier",
    );
    assert_problem(
        &msg,
        "relgroups.h.tables[5]",
        r#"invalid table name "": it is empty"#,
    );
    assert_problem(
        &msg,
        "relgroups.h.tables[8]",
        r#"table other.t is listed twice (also tables[6] as "Other.T")"#,
    );
    assert_problem(&msg, "relgroups.e.tables", "must list at least one table");
    assert_lines(&msg, 7);
}

#[test]
fn sync_references_are_checked() {
    let msg = errors(&format!(
        r#"{BASE}
        [syncs.legacy_to_new]
        relgroup = "herd2"
        sources = ["a", "zz"]
        targets = ["b", "b", "a"]
        [syncs.alone]
        relgroup = "g"
        sources = ["c"]
        [syncs.nothing]
        relgroup = "g"
        sources = []
        targets = ["c"]
        [syncs.self]
        relgroup = "g"
        sources = ["c"]
        targets = ["c"]
        "#
    ));
    assert_problem(
        &msg,
        "syncs.legacy_to_new.relgroup",
        r#"no relgroup named "herd2""#,
    );
    assert_problem(
        &msg,
        "syncs.legacy_to_new.sources[1]",
        r#"no database named "zz" (defined: "a", "b", "c")"#,
    );
    assert_problem(
        &msg,
        "syncs.legacy_to_new.targets[1]",
        r#"database "b" is listed twice (also targets[0])"#,
    );
    assert_problem(
        &msg,
        "syncs.legacy_to_new.targets[2]",
        r#"database "a" is both a source and a target (sources[0])"#,
    );
    assert_problem(
        &msg,
        "syncs.alone",
        "a sync needs at least two distinct databases among sources and targets, found 1: \"c\"",
    );
    assert_problem(
        &msg,
        "syncs.nothing.sources",
        "must list at least one database",
    );
    assert_problem(&msg, "syncs.self.targets[0]", "both a source and a target");
    assert_problem(&msg, "syncs.self", "found 1");
    assert_lines(&msg, 8);

    // The exact wording promised in the module documentation.
    let msg = errors(&BASE.replace(r#"relgroup = "g""#, r#"relgroup = "herd2""#));
    assert_eq!(
        msg,
        format!(r#"{FILE}: syncs.s.relgroup: no relgroup named "herd2" (defined: "g")"#)
    );
    let msg = errors(&BASE.replace(r#"relgroup = "g""#, r#"relgroup = "gg""#));
    assert!(
        msg.ends_with(r#"no relgroup named "gg" (did you mean "g"?)"#),
        "{msg}"
    );
}

#[test]
fn two_syncs_writing_one_table_into_one_database_conflict() {
    let msg = errors(&format!(
        r#"{BASE}
        [relgroups.h]
        tables = ["public.t1", "other"]
        [syncs.second]
        relgroup = "h"
        sources = ["c"]
        targets = ["b"]
        [syncs.third]
        relgroup = "g"
        sources = ["a", "b"]
        "#
    ));
    assert_problem(
        &msg,
        "syncs.second.targets[0]",
        r#"syncs "s" and "second" both write into database "b" the same table: public.t1"#,
    );
    // third is multi-master: it writes into its sources a and b.
    assert_problem(
        &msg,
        "syncs.third.sources[1]",
        r#"syncs "s" and "third" both write into database "b" the same tables: public.t1, s.t2"#,
    );
    assert_lines(&msg, 2);

    // Different targets, or one source shared, are fine.
    let ok = format!(
        r#"{BASE}
        [syncs.fanout]
        relgroup = "g"
        sources = ["a"]
        targets = ["c"]
        "#
    );
    load_text_only(&ok).unwrap();
}

#[test]
fn every_problem_is_on_its_own_line() {
    let msg = errors(
        r#"
        bogus = 1
        [daemon]
        listen = "nope"
        [databases.a]
        hots = "x"
        [relgroups.g]
        tables = ["a.b.c"]
        [syncs.s]
        relgroup = "nope"
        sources = ["nope"]
        "#,
    );
    assert_lines(&msg, 10);
    // Sorted by key, so grouped by section entry.
    let keys: Vec<&str> = msg.lines().map(|l| l.split(": ").nth(1).unwrap()).collect();
    assert_eq!(
        keys,
        [
            "bogus",
            "daemon.listen",
            "databases.a.dbname",
            "databases.a.host",
            "databases.a.hots",
            "databases.a.user",
            "relgroups.g.tables[0]",
            "syncs.s",
            "syncs.s.relgroup",
            "syncs.s.sources[0]",
        ]
    );
}

#[test]
fn env_overrides_deserialize_with_the_right_types() {
    let cfg = with_env(
        BASE,
        &[
            ("DROVER__DATABASES__A__PORT", "5433"),
            ("DROVER__DATABASES__A__PASSWORD", "007"),
            ("DROVER__DATABASES__B__PASSWORD", "true"),
            ("DROVER__DATABASES__B__SSLMODE", "require"),
            ("drover__daemon__listen", "0.0.0.0:9100"),
            ("DROVER__SYNCS__S__TARGETS", "b, c"),
            ("DROVER__RELGROUPS__G__TABLES", r#"public.x,"Odd, Name".y"#),
            ("DROVER_CONFIG", "ignored.toml"),
            ("OTHER__DATABASES__A__PORT", "1"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.databases["a"].port, 5433);
    assert_eq!(
        cfg.databases["a"].password.as_ref().unwrap().expose(),
        "007"
    );
    assert_eq!(
        cfg.databases["b"].password.as_ref().unwrap().expose(),
        "true"
    );
    assert_eq!(cfg.databases["b"].sslmode, SslMode::Require);
    assert_eq!(
        cfg.daemon.listen,
        "0.0.0.0:9100".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(cfg.syncs["s"].targets, ["b", "c"]);
    assert_eq!(
        cfg.relgroups["g"].tables,
        [
            TableName::new("public", "x"),
            TableName::new("Odd, Name", "y")
        ]
    );
    // Untouched keys keep their file values.
    assert_eq!(cfg.databases["b"].port, 5432);
    assert_eq!(cfg.databases["a"].host, "h1");

    // A whole database from the environment; an emptied list.
    let cfg = with_env(
        BASE,
        &[
            ("DROVER__DATABASES__D__HOST", "h4"),
            ("DROVER__DATABASES__D__DBNAME", "12"),
            ("DROVER__DATABASES__D__USER", "u"),
            ("DROVER__SYNCS__S__SOURCES", "a,d"),
            ("DROVER__SYNCS__S__TARGETS", ""),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.databases["d"].dbname, "12");
    assert_eq!(cfg.sync_databases("s"), ["a", "d"]);
}

#[test]
fn env_problems_name_the_variable() {
    let msg = with_env(
        BASE,
        &[
            ("DROVER__DATABASES__A__PORT", "fivefourthreetwo"),
            ("DROVER__DATABASES__B__HOTS", "x"),
            ("DROVER__DATABASES__LEGAC__PORT", "5433"),
            ("DROVER__SYNCS__S__TARGETS", "b,nope"),
            ("DROVER__DAEMON__LISTEN", "everywhere"),
            ("DROVER__LOGLEVEL", "debug"),
        ],
    )
    .unwrap_err()
    .to_string();
    assert_problem(
        &msg,
        "databases.a.port",
        r#"expected an integer, found string "fivefourthreetwo" (set by environment variable DROVER__DATABASES__A__PORT)"#,
    );
    assert_problem(
        &msg,
        "databases.b.hots",
        "(set by environment variable DROVER__DATABASES__B__HOTS)",
    );
    assert_problem(
        &msg,
        "databases.legac.host",
        "databases.legac is set only by environment variables: is its name misspelt?",
    );
    assert_problem(
        &msg,
        "syncs.s.targets[1]",
        r#"no database named "nope" (defined: "a", "b", "c", "legac") (set by environment variable DROVER__SYNCS__S__TARGETS)"#,
    );
    assert_problem(&msg, "daemon.listen", "DROVER__DAEMON__LISTEN");
    assert_problem(&msg, "loglevel", "DROVER__LOGLEVEL");
    assert_lines(&msg, 8);
}

#[test]
fn load_from_str_ignores_the_environment() {
    // Whatever DROVER__ variables the test runner has, load_from_str must not
    // see them; with_env(.., &[]) sees none either.
    load_text_only(BASE).unwrap();
    with_env(BASE, &[]).unwrap();
}

#[test]
fn list_splitting_respects_quotes() {
    assert_eq!(split_list(""), Vec::<String>::new());
    assert_eq!(split_list("  "), Vec::<String>::new());
    assert_eq!(split_list("a"), ["a"]);
    assert_eq!(split_list(" a , b ,c"), ["a", "b", "c"]);
    assert_eq!(split_list(r#""x,y".z, w"#), [r#""x,y".z"#, "w"]);
    assert_eq!(split_list("a,,b"), ["a", "", "b"]);
}

#[test]
fn raw_structs_expose_their_fields() {
    assert_eq!(raw::struct_fields::<raw::RawDaemon>(), ["listen"]);
    assert_eq!(
        raw::struct_fields::<raw::RawDatabase>(),
        [
            "host",
            "port",
            "dbname",
            "user",
            "password",
            "password_env",
            "sslmode",
            "sslrootcert"
        ]
    );
    assert_eq!(raw::struct_fields::<raw::RawRelgroup>(), ["tables"]);
    assert_eq!(
        raw::struct_fields::<raw::RawSync>(),
        ["relgroup", "sources", "targets"]
    );
}

#[test]
fn raw_structs_deny_unknown_fields_by_themselves() {
    // The loader removes unknown keys before deserializing (to report them
    // all); serde's own check stays as a backstop.
    let mut table = config::Map::new();
    table.insert("relgroup".to_owned(), config::Value::from("g"));
    table.insert("bogus".to_owned(), config::Value::from("x"));
    let Err(err) = raw::RawSync::deserialize(config::Value::from(table)) else {
        panic!("unknown field accepted");
    };
    assert!(err.to_string().contains("unknown field `bogus`"), "{err}");
}

#[test]
fn suggestions_only_for_near_misses() {
    assert_eq!(suggest("hots", ["host", "port"]), Some("host"));
    assert_eq!(suggest("dbnmae", ["dbname", "user"]), Some("dbname"));
    assert_eq!(suggest("frobnicate", ["host", "port"]), None);
    assert_eq!(suggest("x", ["y"]), None);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("ab", "ba"), 1);
}

#[test]
fn env_var_names() {
    assert_eq!(
        env_var_for("databases.legacy.port"),
        "DROVER__DATABASES__LEGACY__PORT"
    );
    assert_eq!(env_var_for("daemon.listen"), "DROVER__DAEMON__LISTEN");
}

#[test]
fn password_env_error_names_key_and_variable() {
    let cfg = load_text_only(&BASE.replace(
        "[databases.b]",
        "[databases.b]\npassword_env = \"DROVER_TEST_UNSET_VAR_91e4\"",
    ))
    .unwrap();
    let msg = cfg.databases["b"]
        .resolve_password("b")
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        "databases.b.password_env: environment variable DROVER_TEST_UNSET_VAR_91e4 is not set"
    );
    assert_eq!(cfg.databases["a"].resolve_password("a").unwrap(), None);
}
