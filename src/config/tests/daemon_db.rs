//! `[daemon]` keys `api_token`, `api_token_env`, `log_format` (and the
//! token rule for non-loopback `listen`), and `databases.*.replica_role`.

use super::*;

fn daemon(keys: &str) -> String {
    format!("{BASE}\n[daemon]\n{keys}\n")
}

#[test]
fn daemon_keys_are_read_with_defaults() {
    let cfg = load_text_only(BASE).unwrap();
    assert_eq!(cfg.daemon, Daemon::default());
    assert_eq!(cfg.daemon.log_format, LogFormat::Text);
    assert_eq!(DEFAULT_LOG_FORMAT, LogFormat::Text);
    assert_eq!(cfg.daemon.api_token, None);
    assert_eq!(cfg.daemon.resolve_api_token().unwrap(), None);

    let cfg = load_text_only(&daemon(
        "listen = \"0.0.0.0:9187\"\napi_token = \"s3cr3t-t0ken\"\nlog_format = \"json\"",
    ))
    .unwrap();
    assert_eq!(cfg.daemon.log_format, LogFormat::Json);
    let token = cfg.daemon.resolve_api_token().unwrap().unwrap();
    assert_eq!(token.expose(), "s3cr3t-t0ken");
    assert!(!format!("{cfg:?}").contains("s3cr3t"));

    let cfg = load_text_only(&daemon(
        "listen = \"10.1.2.3:9187\"\napi_token_env = \"DROVER_API_TOKEN\"",
    ))
    .unwrap();
    assert_eq!(
        cfg.daemon.api_token_env.as_deref(),
        Some("DROVER_API_TOKEN")
    );
    assert_eq!(cfg.daemon.api_token, None);
}

#[test]
fn api_token_is_required_unless_listening_on_loopback() {
    for listen in [
        "127.0.0.1:9187",
        "127.0.0.2:80",
        "[::1]:9187",
        "[::ffff:127.0.0.1]:9187",
    ] {
        load_text_only(&daemon(&format!("listen = \"{listen}\"")))
            .unwrap_or_else(|e| panic!("{listen}: {e}"));
    }
    for listen in ["0.0.0.0:9187", "[::]:9187", "192.168.1.5:9187"] {
        let msg = errors(&daemon(&format!("listen = \"{listen}\"")));
        assert_problem(
            &msg,
            "daemon.api_token",
            &format!("api_token or api_token_env is required because listen = \"{listen}\" is not a loopback address: without a token the POST endpoints"),
        );
        assert_problem(&msg, "daemon.api_token", "would be open to the network");
        assert_lines(&msg, 1);
    }
    // A broken token is reported as such, not again as missing.
    let msg = errors(&daemon("listen = \"0.0.0.0:1\"\napi_token = 5"));
    assert_problem(&msg, "daemon.api_token", "expected a string, found integer");
    assert_lines(&msg, 1);

    // The same rule when listen comes from the environment.
    let msg = with_env(BASE, &[("DROVER__DAEMON__LISTEN", "0.0.0.0:9100")])
        .unwrap_err()
        .to_string();
    assert_problem(&msg, "daemon.api_token", "is not a loopback address");
    assert_lines(&msg, 1);
    let cfg = with_env(
        BASE,
        &[
            ("DROVER__DAEMON__LISTEN", "0.0.0.0:9100"),
            ("DROVER__DAEMON__API_TOKEN", "from-env"),
            ("DROVER__DAEMON__LOG_FORMAT", "json"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.daemon.api_token.as_ref().unwrap().expose(), "from-env");
    assert_eq!(cfg.daemon.log_format, LogFormat::Json);
    let cfg = with_env(
        BASE,
        &[
            ("DROVER__DAEMON__LISTEN", "0.0.0.0:9100"),
            ("DROVER__DAEMON__API_TOKEN_ENV", "TOKEN_VAR"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.daemon.api_token_env.as_deref(), Some("TOKEN_VAR"));
}

#[test]
fn daemon_bad_values_are_reported_without_the_token() {
    let msg = errors(&daemon(
        "api_token = \"hunter2\"\napi_token_env = \"T\"\nlog_format = \"xml\"",
    ));
    assert_problem(
        &msg,
        "daemon.api_token_env",
        "set either api_token or api_token_env, not both",
    );
    assert_problem(
        &msg,
        "daemon.log_format",
        "invalid log_format \"xml\", expected one of `text`, `json`",
    );
    assert_lines(&msg, 2);
    assert!(!msg.contains("hunter2"), "{msg}");

    let msg = errors(&daemon("api_token = \"  \"\napi_token_env = \"\""));
    assert_problem(&msg, "daemon.api_token", "must not be empty");
    assert_problem(
        &msg,
        "daemon.api_token_env",
        "\"\" is not a valid environment variable name",
    );
    assert_problem(&msg, "daemon.api_token_env", "not both");
    assert_lines(&msg, 3);

    let msg = errors(&daemon("api_token = 12345\nlog_format = [\"json\"]"));
    assert_problem(
        &msg,
        "daemon.api_token",
        "expected a string, found integer (value not shown",
    );
    assert_problem(
        &msg,
        "daemon.log_format",
        "expected a string, found an array",
    );
    assert!(!msg.contains("12345"), "token leaked:\n{msg}");
    assert_lines(&msg, 2);
}

#[test]
fn api_token_env_error_names_key_and_variable() {
    let cfg = load_text_only(&daemon("api_token_env = \"DROVER_TEST_UNSET_TOKEN_3c1d\"")).unwrap();
    let msg = cfg.daemon.resolve_api_token().unwrap_err().to_string();
    assert_eq!(
        msg,
        "daemon.api_token_env: environment variable DROVER_TEST_UNSET_TOKEN_3c1d is not set"
    );
}

#[test]
fn replica_role_is_read_in_every_form() {
    let cfg = load_text_only(BASE).unwrap();
    assert_eq!(cfg.databases["a"].replica_role, ReplicaRoleConfig::Auto);
    assert_eq!(DEFAULT_REPLICA_ROLE, ReplicaRoleConfig::Auto);
    let cfg = load_text_only(
        &BASE
            .replace(
                "[databases.a]",
                "[databases.a]\nreplica_role = \"function:Public.RDS_Session_Replication_Role\"",
            )
            .replace(
                "[databases.b]",
                "[databases.b]\nreplica_role = 'function:ops.\"Set Role\"'",
            )
            .replace("[databases.c]", "[databases.c]\nreplica_role = \"off\""),
    )
    .unwrap();
    let a = &cfg.databases["a"].replica_role;
    assert_eq!(
        *a,
        ReplicaRoleConfig::Function {
            schema: Some("public".into()),
            name: "rds_session_replication_role".into()
        }
    );
    assert_eq!(
        a.sql_call("replica"),
        r#"SELECT "public"."rds_session_replication_role"('replica')"#
    );
    let b = &cfg.databases["b"].replica_role;
    assert_eq!(
        *b,
        ReplicaRoleConfig::Function {
            schema: Some("ops".into()),
            name: "Set Role".into()
        }
    );
    assert_eq!(b.sql_call("origin"), r#"SELECT "ops"."Set Role"('origin')"#);
    assert_eq!(cfg.databases["c"].replica_role, ReplicaRoleConfig::Off);

    let cfg = with_env(
        BASE,
        &[(
            "DROVER__DATABASES__A__REPLICA_ROLE",
            "function:ops.set_role",
        )],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cfg.databases["a"].replica_role.sql_call("replica"),
        r#"SELECT "ops"."set_role"('replica')"#
    );
    let cfg = with_env(BASE, &[("DROVER__DATABASES__B__REPLICA_ROLE", "set")]).unwrap();
    assert_eq!(cfg.databases["b"].replica_role, ReplicaRoleConfig::Set);
}

#[test]
fn replica_role_mistakes_are_reported() {
    let msg = errors(
        &BASE
            .replace(
                "[databases.a]",
                "[databases.a]\nreplica_role = \"function:\"",
            )
            .replace(
                "[databases.b]",
                "[databases.b]\nreplica_role = \"function:a.b.c\"",
            )
            .replace(
                "[databases.c]",
                "[databases.c]\nreplica_role = \"superuser\"",
            ),
    );
    assert_problem(
        &msg,
        "databases.a.replica_role",
        "\"function:\" names no function",
    );
    assert_problem(
        &msg,
        "databases.b.replica_role",
        "invalid function name \"a.b.c\": 3 dotted parts",
    );
    assert_problem(
        &msg,
        "databases.c.replica_role",
        "invalid replica_role \"superuser\", expected one of `auto`, `set`, `function:NAME`, `off`",
    );
    assert_lines(&msg, 3);

    let msg = with_env(
        BASE,
        &[("DROVER__DATABASES__A__REPLICA_ROLE", "function:\"x")],
    )
    .unwrap_err()
    .to_string();
    assert_problem(
        &msg,
        "databases.a.replica_role",
        "unterminated quoted identifier starting at character 1 (set by environment variable DROVER__DATABASES__A__REPLICA_ROLE)",
    );
    let msg = errors(&BASE.replace("[databases.a]", "[databases.a]\nreplica_role = true"));
    assert_problem(
        &msg,
        "databases.a.replica_role",
        "expected a string, found boolean true",
    );
    assert_lines(&msg, 1);
}

#[test]
fn api_token_for_reads_is_a_boolean_that_needs_a_token() {
    assert!(!load_text_only(BASE).unwrap().daemon.api_token_for_reads);
    let on = daemon("api_token = \"t\"\napi_token_for_reads = true");
    assert!(load_text_only(&on).unwrap().daemon.api_token_for_reads);
    let off = daemon("api_token_for_reads = false");
    assert!(!load_text_only(&off).unwrap().daemon.api_token_for_reads);

    let msg = errors(&daemon("api_token_for_reads = true"));
    assert_problem(&msg, "daemon.api_token_for_reads", "needs a token");
    assert_lines(&msg, 1);
    let msg = errors(&daemon("api_token = \"t\"\napi_token_for_reads = \"true\""));
    assert_problem(
        &msg,
        "daemon.api_token_for_reads",
        "expected a boolean, found string \"true\"",
    );
    assert_lines(&msg, 1);

    // From the environment, `true` / `false` are booleans; other words are not.
    let env = [
        ("DROVER__DAEMON__API_TOKEN", "t"),
        ("DROVER__DAEMON__API_TOKEN_FOR_READS", "true"),
    ];
    let cfg = with_env(BASE, &env).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.daemon.api_token_for_reads);
    let msg = with_env(BASE, &[("DROVER__DAEMON__API_TOKEN_FOR_READS", "yes")])
        .unwrap_err()
        .to_string();
    assert_problem(&msg, "daemon.api_token_for_reads", "expected a boolean");
}

#[test]
fn lease_timeout_default_parse_and_errors() {
    assert_eq!(
        load_text_only(&daemon("")).unwrap().daemon.lease_timeout,
        std::time::Duration::from_secs(10)
    );
    assert_eq!(
        load_text_only(&daemon("lease_timeout = \"1500ms\""))
            .unwrap()
            .daemon
            .lease_timeout,
        std::time::Duration::from_millis(1500)
    );
    assert_eq!(
        load_text_only(&daemon("lease_timeout = \"1m\""))
            .unwrap()
            .daemon
            .lease_timeout,
        std::time::Duration::from_secs(60)
    );
    let msg = errors(&daemon("lease_timeout = \"ten\""));
    assert!(
        msg.contains("daemon.lease_timeout: \"ten\" is not a duration"),
        "{msg}"
    );
    let msg = errors(&daemon("lease_timeout = \"200ms\""));
    assert!(
        msg.contains("daemon.lease_timeout: \"200ms\" is too short"),
        "{msg}"
    );
}

#[test]
fn auto_install_defaults_off_and_takes_a_boolean() {
    assert!(!load_text_only(&daemon("")).unwrap().daemon.auto_install);
    assert!(
        load_text_only(&daemon("auto_install = true"))
            .unwrap()
            .daemon
            .auto_install
    );
    let msg = errors(&daemon("auto_install = \"sometimes\""));
    assert!(msg.contains("daemon.auto_install"), "{msg}");
}
