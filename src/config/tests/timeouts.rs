//! `[daemon]` round limits: `lock_timeout`, `statement_timeout`, `round_deadline`; and
//! `round_pacing`.

use std::time::Duration;

use super::*;

fn daemon(keys: &str) -> String {
    format!("{BASE}\n[daemon]\n{keys}\n")
}

fn loaded(keys: &str) -> Daemon {
    load_text_only(&daemon(keys))
        .unwrap_or_else(|e| panic!("{keys}: {e}"))
        .daemon
}

#[test]
fn round_limits_default_and_settings() {
    let d = loaded("");
    assert_eq!(d.lock_timeout, Duration::from_secs(10));
    assert_eq!(d.statement_timeout, Some(Duration::from_secs(600)));
    assert_eq!(d.round_deadline, Duration::from_secs(900));
    assert_eq!(d.lock_timeout, DEFAULT_LOCK_TIMEOUT);
    assert_eq!(d.statement_timeout, Some(DEFAULT_STATEMENT_TIMEOUT));
    assert_eq!(d.round_deadline, DEFAULT_ROUND_DEADLINE);
    assert_eq!(d, Daemon::default());
    assert_eq!(d.lock_timeout_setting(), "10000ms");
    assert_eq!(d.statement_timeout_setting(), "600000ms");
}

#[test]
fn round_limits_parse_units_and_zero_statement_timeout() {
    let d =
        loaded("lock_timeout = \"1500ms\"\nstatement_timeout = \"10min\"\nround_deadline = \"1h\"");
    assert_eq!(d.lock_timeout, Duration::from_millis(1500));
    assert_eq!(d.statement_timeout, Some(Duration::from_secs(600)));
    assert_eq!(d.round_deadline, Duration::from_secs(3600));
    let d = loaded("lock_timeout = \"1s\"\nround_deadline = \"5s\"\nstatement_timeout = \"2m\"");
    assert_eq!(d.lock_timeout, Duration::from_secs(1));
    assert_eq!(d.round_deadline, Duration::from_secs(5));
    assert_eq!(d.statement_timeout, Some(Duration::from_secs(120)));
    for off in ["0", "0ms", "0s"] {
        let d = loaded(&format!("statement_timeout = \"{off}\""));
        assert_eq!(d.statement_timeout, None, "{off}");
        assert_eq!(d.statement_timeout_setting(), "0");
    }
    // A statement timeout above the deadline is allowed: the deadline ends the round first.
    let d = loaded("lock_timeout = \"1s\"\nround_deadline = \"5s\"");
    assert_eq!(d.statement_timeout, Some(Duration::from_secs(600)));
}

#[test]
fn round_limits_from_the_environment() {
    let env = [
        ("DROVER__DAEMON__LOCK_TIMEOUT", "2s"),
        ("DROVER__DAEMON__STATEMENT_TIMEOUT", "0"),
        ("DROVER__DAEMON__ROUND_DEADLINE", "30s"),
    ];
    let d = with_env(BASE, &env)
        .unwrap_or_else(|e| panic!("{e}"))
        .daemon;
    assert_eq!(d.lock_timeout, Duration::from_secs(2));
    assert_eq!(d.statement_timeout, None);
    assert_eq!(d.round_deadline, Duration::from_secs(30));
    let msg = with_env(BASE, &[("DROVER__DAEMON__ROUND_DEADLINE", "soon")])
        .unwrap_err()
        .to_string();
    assert_problem(&msg, "daemon.round_deadline", "\"soon\" is not a duration");
    assert_problem(
        &msg,
        "daemon.round_deadline",
        "DROVER__DAEMON__ROUND_DEADLINE",
    );
}

#[test]
fn zero_is_refused_where_it_is_not_off() {
    let msg = errors(&daemon("lock_timeout = \"0\""));
    assert_problem(
        &msg,
        "daemon.lock_timeout",
        "\"0\" is too short: at least 1ms",
    );
    assert_lines(&msg, 1);
    let msg = errors(&daemon("round_deadline = \"0s\""));
    assert_problem(
        &msg,
        "daemon.round_deadline",
        "\"0s\" is too short: at least 1s",
    );
    assert_lines(&msg, 1);
    let msg = errors(&daemon("round_deadline = \"900ms\""));
    assert_problem(&msg, "daemon.round_deadline", "\"900ms\" is too short");
}

#[test]
fn round_limit_errors_name_the_key() {
    let msg = errors(&daemon(
        "lock_timeout = \"ten\"\nstatement_timeout = \"5 parsecs\"\nround_deadline = \"-1s\"",
    ));
    assert_problem(
        &msg,
        "daemon.lock_timeout",
        "\"ten\" is not a duration: expected e.g.",
    );
    assert_problem(
        &msg,
        "daemon.statement_timeout",
        "\"5 parsecs\" is not a duration",
    );
    assert_problem(&msg, "daemon.round_deadline", "\"-1s\" is not a duration");
    assert_lines(&msg, 3);
    let msg = errors(&daemon("statement_timeout = \"600h\""));
    assert_problem(
        &msg,
        "daemon.statement_timeout",
        "\"600h\" is too long: PostgreSQL accepts at most 2147483647ms",
    );
    let msg = errors(&daemon("lock_timeout = 10"));
    assert!(msg.contains("daemon.lock_timeout"), "{msg}");
}

#[test]
fn lock_timeout_must_be_below_round_deadline() {
    let msg = errors(&daemon("lock_timeout = \"20s\"\nround_deadline = \"20s\""));
    assert_problem(
        &msg,
        "daemon.lock_timeout",
        "\"20s\" must be below daemon.round_deadline (\"20s\"): a round waiting for a lock would always run into its deadline",
    );
    assert_lines(&msg, 1);
    // Against the defaults, the message says which value it compared with.
    let msg = errors(&daemon("lock_timeout = \"20min\""));
    assert_problem(
        &msg,
        "daemon.lock_timeout",
        "\"20min\" must be below daemon.round_deadline (the default 900000ms)",
    );
    let msg = errors(&daemon("round_deadline = \"5s\""));
    assert_problem(
        &msg,
        "daemon.lock_timeout",
        "the default 10000ms must be below daemon.round_deadline (\"5s\")",
    );
    loaded("lock_timeout = \"4999ms\"\nround_deadline = \"5s\"");
}

#[test]
fn round_pacing_default_units_off_and_errors() {
    assert_eq!(loaded("").round_pacing, Duration::from_millis(20));
    assert_eq!(loaded("").round_pacing, DEFAULT_ROUND_PACING);
    assert_eq!(
        loaded("round_pacing = \"50ms\"").round_pacing,
        Duration::from_millis(50)
    );
    assert_eq!(
        loaded("round_pacing = \"1s\"").round_pacing,
        Duration::from_secs(1)
    );
    for off in ["0", "0ms", "0s"] {
        assert_eq!(
            loaded(&format!("round_pacing = \"{off}\"")).round_pacing,
            Duration::ZERO
        );
    }
    let msg = errors(&daemon("round_pacing = \"fast\""));
    assert_problem(
        &msg,
        "daemon.round_pacing",
        "\"fast\" is not a duration: expected e.g.",
    );
    assert_lines(&msg, 1);
    let msg = errors(&daemon("round_pacing = \"-5ms\"\nlock_timeout = \"ten\""));
    assert_problem(&msg, "daemon.round_pacing", "\"-5ms\" is not a duration");
    assert_problem(&msg, "daemon.lock_timeout", "\"ten\" is not a duration");
    assert_lines(&msg, 2);
    let msg = errors(&daemon("round_pacing = 20"));
    assert!(msg.contains("daemon.round_pacing"), "{msg}");
    let d = with_env(BASE, &[("DROVER__DAEMON__ROUND_PACING", "5ms")])
        .unwrap_or_else(|e| panic!("{e}"))
        .daemon;
    assert_eq!(d.round_pacing, Duration::from_millis(5));
}
