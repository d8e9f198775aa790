//! Bad configs through the real binary: exit code 2 and a message naming the file and the key.
//! (The config module's unit tests cover each rule; these prove the CLI wiring.)

mod support;

use support::*;

const GOOD: &str = r#"
[daemon]
listen = "127.0.0.1:9187"
[databases.legacy]
host = "127.0.0.1"
dbname = "repdb"
user = "postgres"
[databases.new]
host = "127.0.0.1"
dbname = "repdb"
user = "postgres"
[relgroups.herd]
tables = ["public.pgbench_accounts", "public.pgbench_branches"]
[syncs.legacy_to_new]
relgroup = "herd"
sources = ["legacy"]
targets = ["new"]
"#;

fn expect_config_error(toml: &str, key: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), toml);
    let out = drover(&path, &["check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit code for {key}: {stderr}");
    assert!(
        stderr.contains(&path.display().to_string()),
        "message names the file: {stderr}"
    );
    assert!(stderr.contains(key), "message names {key}: {stderr}");
}

#[test]
fn unknown_key() {
    expect_config_error(&GOOD.replace("host = ", "hots = "), "databases.legacy.hots");
}

#[test]
fn missing_required_key() {
    expect_config_error(
        &GOOD.replacen("user = \"postgres\"\n", "", 1),
        "databases.legacy.user",
    );
    expect_config_error(
        &GOOD.replace("relgroup = \"herd\"\n", ""),
        "syncs.legacy_to_new.relgroup",
    );
}

#[test]
fn undefined_names() {
    expect_config_error(
        &GOOD.replace("relgroup = \"herd\"", "relgroup = \"herd2\""),
        "syncs.legacy_to_new.relgroup",
    );
    expect_config_error(
        &GOOD.replace("targets = [\"new\"]", "targets = [\"nwe\"]"),
        "syncs.legacy_to_new.targets",
    );
}

#[test]
fn table_listed_twice() {
    expect_config_error(
        &GOOD.replace(
            "\"public.pgbench_branches\"]",
            "\"public.pgbench_branches\", \"pgbench_accounts\"]",
        ),
        "relgroups.herd.tables",
    );
}

#[test]
fn sync_needs_two_databases() {
    expect_config_error(
        &GOOD.replace("targets = [\"new\"]", "targets = []"),
        "syncs.legacy_to_new",
    );
}

#[test]
fn missing_file_is_a_config_error() {
    let out = drover(std::path::Path::new("/nonexistent/drover.toml"), &["check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/drover.toml"));
}

#[test]
fn env_override_reaches_the_config() {
    // An invalid port set through the environment is reported with the variable's name.
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), GOOD);
    let out = std::process::Command::new(drover_bin())
        .arg("--config")
        .arg(&path)
        .arg("check")
        .env("DROVER__DATABASES__LEGACY__PORT", "notaport")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("DROVER__DATABASES__LEGACY__PORT"),
        "{stderr}"
    );
}

#[test]
fn unreachable_database_is_a_problem_not_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = GOOD.replace(
        "host = \"127.0.0.1\"\n",
        &format!("host = \"127.0.0.1\"\nport = {port}\n"),
    );
    let path = write_config(dir.path(), &toml);
    let out = drover(&path, &["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("database \"legacy\": cannot connect"),
        "{stdout}"
    );
    assert!(
        stdout.contains("database \"new\": cannot connect"),
        "{stdout}"
    );
}
