//! Environment overrides, list splitting, and the loader's internals
//! (raw struct fields, suggestions, variable names).

use super::*;

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
            ("DROVER__DAEMON__API_TOKEN_ENV", "DROVER_API_TOKEN"),
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
    assert_eq!(
        raw::struct_fields::<raw::RawDaemon>(),
        [
            "listen",
            "api_token",
            "api_token_env",
            "api_token_for_reads",
            "log_format",
            "lease_timeout",
            "lock_timeout",
            "statement_timeout",
            "round_deadline",
            "round_pacing",
            "auto_install"
        ]
    );
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
            "sslrootcert",
            "sslcert",
            "sslkey",
            "channel_binding",
            "replica_role",
            "application_name",
            "url",
            "conninfo",
            "service"
        ]
    );
    assert_eq!(
        raw::struct_fields::<raw::RawRelgroup>(),
        [
            "tables",
            "sequences",
            "keys",
            "sequence_mode",
            "delta_columns",
            "sequence_step"
        ]
    );
    assert_eq!(
        raw::struct_fields::<raw::RawSync>(),
        [
            "relgroup",
            "sources",
            "targets",
            "conflict_strategy",
            "priority",
            "initial_copy",
            "table_strategy"
        ]
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
