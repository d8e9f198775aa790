//! Observability, checked against the real tools: promtool accepts the alert rules and the
//! compose stack's Prometheus config; a real Prometheus scraping a running drover answers every
//! query of the Grafana dashboard and of the alert rules; /metrics counts exactly the rows a
//! known workload changed; the compose file names only files and services that exist.
//!
//! Needs the Debian packages `prometheus` (prometheus, promtool), `python3-yaml` and `curl`;
//! scripts/test installs them. A missing tool fails the test with that advice.

#[path = "observability/compose.rs"]
mod compose;
#[path = "observability/files.rs"]
mod files;
#[path = "observability/prometheus.rs"]
mod prometheus;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use files::*;
use prometheus::{curl_get, place, require_tool, sample_value, Prometheus};
use support::scenario::*;
use support::*;

/// What a healthy one-way run must show for each dashboard query.
#[derive(Clone, Copy, Debug)]
enum Check {
    /// At least one series, and some value above zero.
    Positive,
    /// At least one series (a value of 0 is fine: counters known in advance start at 0).
    NonEmpty,
    /// Multi-master only: the test's one-way run has no series; the query must still run.
    MultiMaster,
}

/// Every dashboard panel (by title) and the check its queries get. The test fails on a panel
/// missing here, so a new panel needs a decision.
const PANEL_CHECKS: &[(&str, Check)] = &[
    ("Sync state", Check::Positive),            // 1 = good
    ("Lease held", Check::Positive),            // the one daemon holds the lease
    ("Since last good round", Check::NonEmpty), // 0 right after a round
    ("Daemon up", Check::Positive),             // up = 1
    ("Version", Check::Positive),               // drover_build_info = 1
    ("Rows inserted / s", Check::Positive),     // pgbench updates: delete + insert
    ("Rows deleted / s", Check::Positive),      // the delete half of those updates
    ("Rounds / s by result", Check::Positive),  // rounds ran
    ("Conflicts / s", Check::NonEmpty),         // one-way sync: 0, exported from startup
    ("Lag", Check::NonEmpty),                   // set by every round, may be 0
    ("Pending rows", Check::NonEmpty),          // set by every round, may be 0
    ("Round duration", Check::Positive),        // p50/p90/p99 of real rounds
    ("Errors / s", Check::NonEmpty),            // nothing fails: 0, exported from startup
    ("Errors / s by stage", Check::NonEmpty),   // the same zeros, by stage
    ("Resident memory", Check::Positive),       // process metrics of the daemon
    ("CPU", Check::Positive),                   // it did work during pgbench
    ("Open file descriptors", Check::Positive), // sockets and files
    ("Clock offset", Check::MultiMaster),       // measured by multi-master rounds only
];

/// Every alert and the left side of its condition. A healthy run fires none of them, so the
/// full expression must evaluate to nothing while the left side has data.
const ALERT_LEFT_SIDES: &[(&str, &str)] = &[
    ("DroverSyncBad", "drover_sync_state"),
    ("DroverTargetFailing", "drover_target_state"),
    ("DroverTableHeld", "drover_table_held"),
    ("DroverLagHigh", "drover_lag_seconds"),
    (
        "DroverNoGoodRound",
        "time() - drover_last_good_round_timestamp_seconds",
    ),
    ("DroverDown", "up{job=\"drover\"}"),
    ("DroverNoLeaseHolder", "max by (sync) (drover_lease_held)"),
];

/// The value each dashboard variable must offer in the test's run.
const VARIABLE_VALUES: &[(&str, &str)] = &[("job", "drover"), ("sync", "legacy_to_new")];

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn promtool_accepts_the_rules_and_the_compose_prometheus_config() {
    let promtool = require_tool("promtool", "prometheus");
    let rules = files::repo().join(RULES);
    let out = run_with_timeout(
        Command::new(&promtool)
            .arg("check")
            .arg("rules")
            .arg(&rules),
        None,
        Duration::from_secs(60),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check rules: {text}");
    let n = alert_rules(&yaml(RULES)).len();
    assert!(
        text.contains(&format!("SUCCESS: {n} rules found")),
        "{text}"
    );

    // A copy of the config with the rules where its relative rule_files point, as the compose
    // mounts lay them out beside /etc/prometheus/prometheus.yml.
    let dir = tempfile::tempdir().unwrap();
    let config = place(
        dir.path(),
        "prometheus.yml",
        read(PROMETHEUS_CONFIG).as_bytes(),
    );
    let rule_files = yaml(PROMETHEUS_CONFIG)["rule_files"].clone();
    let rule_files = rule_files
        .as_array()
        .expect("rule_files in the compose config");
    assert!(
        !rule_files.is_empty(),
        "the compose Prometheus loads no rules"
    );
    for r in rule_files {
        let r = r.as_str().unwrap();
        assert!(
            !r.starts_with('/'),
            "rule file {r} should be relative to the config"
        );
        place(dir.path(), r, read(RULES).as_bytes());
    }
    let out = run_with_timeout(
        Command::new(&promtool)
            .arg("check")
            .arg("config")
            .arg(&config),
        None,
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "promtool check config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dashboard_and_alerts_use_only_metrics_that_drover_defines() {
    let defined = defined_metrics();
    assert!(
        defined.len() >= 11,
        "read too few metric names: {defined:?}"
    );
    let dash = dashboard();
    let mut used = BTreeSet::new();
    for q in dashboard_queries(&dash) {
        used.extend(used_metrics(&q.expr));
    }
    for (_, expr) in alert_rules(&yaml(RULES)) {
        used.extend(used_metrics(&expr));
    }
    let unknown: Vec<_> = used.difference(&defined).collect();
    assert!(
        unknown.is_empty(),
        "not defined in src/metrics/mod.rs: {unknown:?}"
    );
    // Every drover metric has a panel (build info included).
    let unused: Vec<_> = defined.difference(&used).collect();
    assert!(
        unused.is_empty(),
        "metrics no panel or alert shows: {unused:?}"
    );
}

/// Prometheus config for the test: the compose one, scraping this daemon every second and
/// evaluating the repository's rules every second.
fn test_prometheus_config(drover_port: u16) -> Value {
    let mut cfg = yaml(PROMETHEUS_CONFIG);
    cfg["global"]["scrape_interval"] = json!("1s");
    cfg["global"]["evaluation_interval"] = json!("1s");
    cfg["rule_files"] = json!([files::repo().join(RULES)]);
    let jobs = cfg["scrape_configs"]
        .as_array_mut()
        .expect("scrape_configs");
    let job = jobs
        .iter_mut()
        .find(|j| j["job_name"] == "drover")
        .expect("a scrape job named drover");
    job["static_configs"] = json!([{ "targets": [format!("127.0.0.1:{drover_port}")] }]);
    cfg
}

#[test]
fn every_dashboard_and_alert_query_answers_from_prometheus_scraping_drover() {
    let (src, dst) = pgbench_pair();
    let setup = one_way((&src, "repdb"), (&dst, "repdb"), &PGBENCH_TABLES);
    drover_ok(&setup.config, &["install"]);
    let _daemon = Daemon::start(&setup.config);
    wait_for_daemon(&setup.config);
    let prom = Prometheus::start(&test_prometheus_config(setup.listen));
    eventually(
        Duration::from_secs(60),
        "Prometheus to scrape drover",
        || {
            let up = prom.query_at("up{job=\"drover\"}", now_unix());
            up.first().is_some_and(|s| sample_value(s) == 1.0)
        },
    );

    src.pgbench("repdb", &["-n", "-c", "2", "-T", "10", "-R", "50"]);
    // Queries are evaluated at the end of the workload, so their windows cover it whenever
    // they run.
    let at = now_unix();
    drover_wait(&setup.config, "legacy_to_new", 120);
    assert_pgbench_same(&src, &dst);
    eventually(
        Duration::from_secs(30),
        "a scrape after the workload",
        || {
            let ts = prom.query_at("timestamp(up{job=\"drover\"})", now_unix());
            ts.first().is_some_and(|s| sample_value(s) > at + 1.0)
        },
    );

    let dash = dashboard();
    let variables = dashboard_variables(&dash);
    let checks: BTreeMap<&str, Check> = PANEL_CHECKS.iter().copied().collect();
    let queries = dashboard_queries(&dash);
    let panels: BTreeSet<&str> = queries.iter().map(|q| q.panel.as_str()).collect();
    let listed: BTreeSet<&str> = checks.keys().copied().collect();
    assert_eq!(
        panels, listed,
        "PANEL_CHECKS and the dashboard's panels differ"
    );
    let mut failures = Vec::new();
    for q in &queries {
        let expr = runnable(&q.expr, &variables);
        let result = prom.query_at(&expr, at);
        let values: Vec<f64> = result.iter().map(sample_value).collect();
        eprintln!("{} [{}]: {expr} -> {values:?}", q.panel, q.ref_id);
        let ok = match checks[q.panel.as_str()] {
            Check::Positive => values.iter().any(|v| v.is_finite() && *v > 0.0),
            Check::NonEmpty => !values.is_empty(),
            Check::MultiMaster => true,
        };
        if !ok {
            failures.push(format!(
                "{} [{}] ({:?}): {expr} -> {values:?}",
                q.panel,
                q.ref_id,
                checks[q.panel.as_str()]
            ));
        }
    }

    let rules = alert_rules(&yaml(RULES));
    let names: BTreeSet<&str> = rules.iter().map(|(n, _)| n.as_str()).collect();
    let listed: BTreeSet<&str> = ALERT_LEFT_SIDES.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, listed, "ALERT_LEFT_SIDES and the rules file differ");
    for (name, expr) in &rules {
        let left = ALERT_LEFT_SIDES.iter().find(|(n, _)| n == name).unwrap().1;
        assert!(
            expr.starts_with(left),
            "{name}: {expr:?} does not start with {left:?}"
        );
        let firing = prom.query_at(expr, at);
        let left_values: Vec<f64> = prom.query_at(left, at).iter().map(sample_value).collect();
        eprintln!(
            "{name}: {expr} -> {} series; {left} -> {left_values:?}",
            firing.len()
        );
        if !firing.is_empty() || left_values.is_empty() {
            failures.push(format!(
                "{name}: want no series from {expr} (got {firing:?}) and data from {left} \
                 (got {left_values:?})"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "queries that do not answer as a healthy run should:\n{}\n--- Prometheus log ---\n{}",
        failures.join("\n"),
        prom.log()
    );

    // Prometheus itself evaluated the rules without error, and nothing is pending or firing.
    let groups = prom.api("rules", &[]);
    let mut evaluated = BTreeSet::new();
    for g in groups["data"]["groups"].as_array().expect("rule groups") {
        for r in g["rules"].as_array().expect("rules") {
            assert_eq!(r["health"], "ok", "rule not healthy: {r}");
            evaluated.insert(r["name"].as_str().unwrap().to_string());
        }
    }
    let wanted: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
    assert_eq!(evaluated, wanted, "rules Prometheus loaded");
    let alerts = prom.api("alerts", &[]);
    assert_eq!(
        alerts["data"]["alerts"],
        json!([]),
        "alerts in a healthy run"
    );

    // The variables' label_values() queries offer the run's job and sync.
    for (name, query) in &variables {
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {name}: not label_values(metric, label): {query}"));
        let (metric, label) = inner.split_once(',').expect("label_values(metric, label)");
        let doc = prom.api(
            &format!("label/{}/values", label.trim()),
            &[("match[]", metric.trim())],
        );
        let want = VARIABLE_VALUES
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no expected value for variable {name}"))
            .1;
        let got = doc["data"].as_array().cloned().unwrap_or_default();
        assert!(
            got.contains(&json!(want)),
            "variable {name} offers {got:?}, want {want}"
        );
    }
}

/// `name{labels...}` from a /metrics text, where `labels` must all match; None if absent.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for s in parse_exposition(text) {
        if s.name == name && labels.iter().all(|(k, v)| s.has(k, v)) {
            assert!(found.is_none(), "two series match {name} {labels:?}");
            found = Some(s.value);
        }
    }
    found
}

const FAN_OUT_TABLES: [&str; 2] = ["public.items", "public.notes"];
const FAN_OUT_TARGETS: [&str; 2] = ["new", "copy"];

/// One step of the known workload and the cumulative (inserted, deleted) it leaves per table
/// on every target.
struct Step {
    what: &'static str,
    sql: String,
    items: (u64, u64),
    notes: (u64, u64),
}

#[test]
fn metrics_count_exactly_the_rows_a_known_workload_changed() {
    let src = Cluster::start();
    let dst = Cluster::start();
    src.create_db("repdb");
    dst.create_db("repdb");
    dst.create_db("copydb");
    let schema = "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL); \
                  CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL);";
    for (c, db) in [(&src, "repdb"), (&dst, "repdb"), (&dst, "copydb")] {
        c.psql(db, schema);
    }
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let config = write_config(
        dir.path(),
        &format!(
            "[daemon]\nlisten = \"127.0.0.1:{listen}\"\n{}{}{}\
             [relgroups.herd]\ntables = [\"public.items\", \"public.notes\"]\n\
             [syncs.fan_out]\nrelgroup = \"herd\"\nsources = [\"legacy\"]\n\
             targets = [\"new\", \"copy\"]\n",
            src.database_toml("legacy", "repdb"),
            dst.database_toml("new", "repdb"),
            dst.database_toml("copy", "copydb"),
        ),
    );
    drover_ok(&config, &["install"]);
    let _daemon = Daemon::start(&config);
    wait_for_daemon(&config);
    let url = format!("http://127.0.0.1:{listen}/metrics");

    let inserts: String = (1..=500)
        .map(|i| format!("INSERT INTO items VALUES ({i}, 'item {i}');\n"))
        .collect();
    // An update is a delete and an insert on the target; a delete only deletes, and an insert
    // of a new key deletes nothing.
    let steps = [
        Step {
            what: "500 single-row inserts into items, one transaction each",
            sql: inserts,
            items: (500, 0),
            notes: (0, 0),
        },
        Step {
            what: "20 notes in one statement",
            sql: "INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 20) g".into(),
            items: (500, 0),
            notes: (20, 0),
        },
        Step {
            what: "update 100 distinct items in one statement",
            sql: "UPDATE items SET v = v || ' updated' WHERE id <= 100".into(),
            items: (600, 100),
            notes: (20, 0),
        },
        Step {
            what: "delete 50 items in one statement",
            sql: "DELETE FROM items WHERE id > 450".into(),
            items: (600, 150),
            notes: (20, 0),
        },
        Step {
            what: "delete 5 notes in one statement",
            sql: "DELETE FROM notes WHERE id <= 5".into(),
            items: (600, 150),
            notes: (20, 5),
        },
    ];
    for step in &steps {
        src.psql("repdb", &step.sql);
        drover_wait(&config, "fan_out", 120);
        let want = |table: &str| {
            if table == "public.items" {
                step.items
            } else {
                step.notes
            }
        };
        let wanted_total: u64 = FAN_OUT_TABLES
            .iter()
            .map(|t| want(t).0 + want(t).1)
            .sum::<u64>()
            * FAN_OUT_TARGETS.len() as u64;
        let counted = |text: &str, name: &str| -> u64 {
            parse_exposition(text)
                .iter()
                .filter(|s| s.name == name && s.has("sync", "fan_out"))
                .map(|s| s.value as u64)
                .sum()
        };
        // The round's report reaches the metrics just after its commit, which `wait` sees.
        eventually(
            Duration::from_secs(30),
            "the metrics to count the step",
            || {
                let text = curl_get(&url, &[]);
                counted(&text, "drover_rows_inserted_total")
                    + counted(&text, "drover_rows_deleted_total")
                    >= wanted_total
            },
        );
        // Two more good rounds: nothing may be counted twice.
        let good_rounds = |text: &str| {
            metric(
                text,
                "drover_rounds_total",
                &[("sync", "fan_out"), ("result", "good")],
            )
            .unwrap_or(0.0)
        };
        let before = good_rounds(&curl_get(&url, &[]));
        eventually(Duration::from_secs(30), "two more rounds", || {
            good_rounds(&curl_get(&url, &[])) >= before + 2.0
        });
        let text = curl_get(&url, &[]);
        for table in FAN_OUT_TABLES {
            for target in FAN_OUT_TARGETS {
                let labels = [("sync", "fan_out"), ("table", table), ("target", target)];
                let got = (
                    metric(&text, "drover_rows_inserted_total", &labels),
                    metric(&text, "drover_rows_deleted_total", &labels),
                );
                let (ins, del) = want(table);
                assert_eq!(
                    got,
                    (Some(ins as f64), Some(del as f64)),
                    "after \"{}\": (inserted, deleted) of {table} on {target}",
                    step.what
                );
            }
        }
        assert_eq!(
            metric(
                &text,
                "drover_rounds_total",
                &[("sync", "fan_out"), ("result", "bad")]
            ),
            Some(0.0),
            "a round failed (the series exists at 0 from startup)"
        );
        for (table, key) in [("items", "id"), ("notes", "id")] {
            let want = table_md5(&src, "repdb", table, key);
            assert_eq!(table_md5(&dst, "repdb", table, key), want, "{table} on new");
            assert_eq!(
                table_md5(&dst, "copydb", table, key),
                want,
                "{table} on copy"
            );
        }
        // The status counters add up all tables and targets: the same totals.
        let s = sync_status(&config, "fan_out");
        let total = |name: &str| counted(&text, name);
        assert_eq!(
            s["rows_inserted"].as_u64(),
            Some(total("drover_rows_inserted_total")),
            "{s}"
        );
        assert_eq!(
            s["rows_deleted"].as_u64(),
            Some(total("drover_rows_deleted_total")),
            "{s}"
        );
        eprintln!("after \"{}\": {s}", step.what);
    }
    let text = curl_get(&url, &[]);
    assert_eq!(
        metric(&text, "drover_sync_state", &[("sync", "fan_out")]),
        Some(1.0)
    );
    for target in FAN_OUT_TARGETS {
        let lag = metric(
            &text,
            "drover_lag_seconds",
            &[
                ("sync", "fan_out"),
                ("source", "legacy"),
                ("target", target),
            ],
        );
        assert!(lag.is_some_and(|l| l >= 0.0), "lag for {target}: {lag:?}");
    }
    for table in FAN_OUT_TABLES {
        let pending = metric(
            &text,
            "drover_pending_rows",
            &[("sync", "fan_out"), ("source", "legacy"), ("table", table)],
        );
        assert!(pending.is_some(), "pending rows for {table}");
    }
}

#[test]
fn compose_file_names_only_files_and_services_that_exist() {
    let doc = yaml(COMPOSE);
    let c = compose::Compose::new(&doc);
    let names: BTreeSet<&str> = c.services.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = [
        "legacy",
        "new",
        "init",
        "drover",
        "prometheus",
        "grafana",
        "pgbench",
    ]
    .into();
    assert_eq!(names, want, "compose services");
    c.check_all();

    compose::check_wiring(&c);
}

#[test]
fn deploy_config_is_a_valid_drover_config() {
    // `status` loads and validates the config (exit 2 on any problem) before it asks the
    // daemon, which does not run here (exit 1).
    let mut cmd = Command::new(drover_bin());
    cmd.arg("--config")
        .arg(files::repo().join(DEPLOY_CONFIG))
        .arg("status")
        .env(
            "DROVER__DAEMON__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("DROVER_API_TOKEN", "test-token")
        .env("LEGACY_PGPASSWORD", "x")
        .env("NEW_PGPASSWORD", "x");
    let out = run_with_timeout(&mut cmd, None, DROVER_TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no drover daemon answers"), "{stderr}");
}
