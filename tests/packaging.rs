//! Packaging and conventions, checked without PostgreSQL: the systemd unit passes
//! `systemd-analyze verify`; the man page and shell completions are generated from the CLI
//! and name every command; the Grafana dashboard queries only its datasource variable; the
//! Dockerfile has a HEALTHCHECK and pinned bases; `scripts/bench --help` installs and builds
//! nothing.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use support::drover_bin;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn drover_stdout(args: &[&str]) -> String {
    let out = run(Command::new(drover_bin()).args(args));
    assert!(
        out.status.success(),
        "drover {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The commands `drover --help` lists (the CLI definition itself), except `help`.
fn commands() -> BTreeSet<String> {
    let help = drover_stdout(&["--help"]);
    let section = help.split_once("Commands:").expect("a Commands section").1;
    let names: BTreeSet<String> = section
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_string)
        .collect();
    for expected in ["run", "check", "install", "status", "completions", "man"] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
    names
}

#[test]
fn man_page_and_completions_name_every_command() {
    let commands = commands();
    let man = drover_stdout(&["man"]);
    assert!(
        man.starts_with(".ie") || man.contains(".TH drover 1"),
        "{man}"
    );
    for c in &commands {
        assert!(
            man.contains(&format!(".SS \"drover {c}\"")),
            "the man page has no section for {c}"
        );
    }
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = drover_stdout(&["completions", shell]);
        for c in &commands {
            assert!(script.contains(c.as_str()), "{shell} completions lack {c}");
        }
    }
    // Without a config file: packagers run these at build time.
    let dir = tempfile::tempdir().unwrap();
    let out = run(Command::new(drover_bin())
        .args(["completions", "bash"])
        .current_dir(dir.path())
        .env("DROVER_CONFIG", dir.path().join("missing.toml")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn man_page_renders_with_man() {
    if Command::new("man").arg("--version").output().is_err() {
        eprintln!("man not installed: rendering not checked");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("drover.1");
    fs::write(&page, drover_stdout(&["man"])).unwrap();
    let out = run(Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANWIDTH", "100"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("EXIT STATUS"), "{text}");
}

/// The unit, with ExecStart pointing at the built binary (verify checks that it exists).
fn unit_copy(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let unit =
        read("deploy/drover.service").replace("/usr/bin/drover", drover_bin().to_str().unwrap());
    let path = dir.join("drover.service");
    fs::write(&path, edit(unit)).unwrap();
    path
}

fn verify(unit: &Path) -> Output {
    // --man=no: the man page is installed by the package, not on this machine.
    run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .current_dir(unit.parent().unwrap()))
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("systemd-analyze not found: install the Debian package systemd (scripts/test does)");
    }
    let unit = read("deploy/drover.service");
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "RestartPreventExitStatus=2",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ExecStart=/usr/bin/drover --config /etc/drover/drover.toml run",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(line)),
            "the unit lacks {line}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let out = verify(&unit_copy(dir.path(), |u| u));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The check has teeth: a misspelt type fails it.
    let bad = verify(&unit_copy(dir.path(), |u| {
        u.replace("Type=notify", "Type=notfy")
    }));
    assert!(
        !bad.status.success() || !bad.stderr.is_empty(),
        "systemd-analyze accepted Type=notfy"
    );
}

/// Every `datasource` object under `v`, with where it is.
fn datasources<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "datasource" {
                    out.push((at.clone(), x));
                }
                datasources(x, format!("{at}.{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                datasources(x, format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn dashboard_panels_query_the_datasource_variable() {
    let dash: Value = serde_json::from_str(&read("grafana/dashboards/drover.json")).unwrap();
    let vars = dash["templating"]["list"].as_array().unwrap();
    let var = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource template variable");
    assert_eq!(
        var["query"], "prometheus",
        "it lists Prometheus datasources"
    );
    let reference = format!("${{{}}}", var["name"].as_str().unwrap());

    let mut found = Vec::new();
    datasources(&dash["panels"], "panels".into(), &mut found);
    datasources(&dash["templating"], "templating".into(), &mut found);
    let panels = dash["panels"].as_array().unwrap();
    let queried = panels.iter().filter(|p| p["type"] != "row").count();
    assert!(
        found.len() >= queried,
        "{} datasources for {queried} panels",
        found.len()
    );
    for (at, ds) in found {
        assert_eq!(
            ds["uid"],
            reference.as_str(),
            "{at} does not use {reference}"
        );
    }
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(
            p["datasource"]["uid"],
            reference.as_str(),
            "panel {}",
            p["title"]
        );
    }
}

#[test]
fn dockerfile_has_a_healthcheck_and_pinned_bases() {
    let docker = read("Dockerfile");
    let health = docker
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"))
        .take(2)
        .collect::<String>();
    // The URL inline, or through the DROVER_HEALTH_URL the image sets.
    let url_env = docker
        .lines()
        .find_map(|l| l.strip_prefix("ENV DROVER_HEALTH_URL="))
        .unwrap_or("");
    assert!(
        health.contains("/health")
            || (health.contains("$DROVER_HEALTH_URL") && url_env.ends_with("/health")),
        "HEALTHCHECK against /health: {health:?}"
    );
    for from in docker.lines().filter(|l| l.starts_with("FROM ")) {
        let image = from.split_whitespace().nth(1).unwrap();
        let tag = image.split_once(':').map(|(_, t)| t).unwrap_or("");
        let digits = tag.split('-').next().unwrap_or("");
        assert!(
            digits.matches('.').count() >= 1
                && digits.chars().all(|c| c.is_ascii_digit() || c == '.'),
            "{image}: pin an exact version tag"
        );
    }
}

#[test]
fn bench_help_installs_and_builds_nothing() {
    // A PATH where every tool that installs or builds fails loudly.
    let dir = tempfile::tempdir().unwrap();
    for tool in ["cargo", "apt-get", "dpkg-query", "flock"] {
        let p = dir.path().join(tool);
        fs::write(&p, format!("#!/bin/sh\necho {tool} called >&2\nexit 99\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap()
    );
    for flag in ["--help", "-h"] {
        let out = run(Command::new(repo().join("scripts/bench"))
            .arg(flag)
            .env("PATH", &path)
            .env("HOME", dir.path()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "scripts/bench {flag}: {stderr}");
        assert!(
            !stderr.contains("called"),
            "scripts/bench {flag} ran {stderr}"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("scripts/bench [--quick]"), "{stdout}");
    }
}

#[test]
fn demo_runs_postgresql_10_and_the_newest_major_from_the_tested_packages() {
    let demo = read("scripts/demo");
    let version = |var: &str| {
        demo.lines()
            .find_map(|l| l.strip_prefix(&format!("{var}=")))
            .unwrap_or_else(|| panic!("scripts/demo sets no {var}"))
            .to_string()
    };
    let newest = support::versions::PACKAGES
        .iter()
        .map(|(m, _)| *m)
        .max()
        .unwrap();
    assert_eq!(version("LEGACY_PG"), support::versions::npm_version(10));
    assert_eq!(version("NEW_PG"), support::versions::npm_version(newest));
}
