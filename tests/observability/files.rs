//! Reading the shipped observability files: YAML and TOML (through Python's parsers, from the
//! Debian packages python3 and python3-yaml) into serde_json values, the PromQL of the Grafana
//! dashboard and the alert rules, and the metric names that src/metrics/mod.rs defines.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::prometheus::require_tool;
use crate::support::run_with_timeout;

pub const DASHBOARD: &str = "grafana/dashboards/drover.json";
pub const RULES: &str = "alerts/drover.rules.yml";
pub const PROMETHEUS_CONFIG: &str = "deploy/prometheus.yml";
pub const COMPOSE: &str = "docker-compose.yml";
pub const DEPLOY_CONFIG: &str = "deploy/drover.toml";

/// What a Grafana variable or macro becomes when the test runs a dashboard query: every
/// template variable matches everything, and the range macros get fixed windows that span the
/// test's workload.
const MACROS: &[(&str, &str)] = &[
    ("$__rate_interval", "30s"),
    ("${__rate_interval}", "30s"),
    ("$__interval", "5s"),
    ("${__interval}", "5s"),
    ("$__range", "5m"),
    ("${__range}", "5m"),
];

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Parses a YAML (or, with `toml`, a TOML) file with Python into JSON.
fn python_load(path: &Path, toml: bool) -> Value {
    let python = require_tool("python3", "python3");
    let script = if toml {
        "import json, sys, tomllib; json.dump(tomllib.load(open(sys.argv[1], 'rb')), sys.stdout)"
    } else {
        "import json, sys\n\
         try:\n    import yaml\n\
         except ImportError:\n    sys.exit('PyYAML is missing: run scripts/test, which installs the Debian package python3-yaml')\n\
         json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)"
    };
    let mut cmd = Command::new(python);
    cmd.args(["-c", script]).arg(path);
    let out = run_with_timeout(&mut cmd, None, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{} does not parse: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

pub fn yaml(rel: &str) -> Value {
    python_load(&repo().join(rel), false)
}

pub fn toml(rel: &str) -> Value {
    python_load(&repo().join(rel), true)
}

pub fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// One query target of a dashboard panel.
#[derive(Debug)]
pub struct PanelQuery {
    pub panel: String,
    pub ref_id: String,
    /// As written in the dashboard.
    pub expr: String,
}

/// Every `targets[].expr` of every panel, rows' nested panels included.
pub fn dashboard_queries(dash: &Value) -> Vec<PanelQuery> {
    fn walk(panels: &Value, out: &mut Vec<PanelQuery>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push(PanelQuery {
                        panel: p["title"].as_str().unwrap_or("").to_string(),
                        ref_id: t["refId"].as_str().unwrap_or("").to_string(),
                        expr: expr.to_string(),
                    });
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// The dashboard's query variables: (name, query). The `datasource` variable picks the
/// datasource; it is no PromQL (tests/packaging.rs checks that every panel uses it).
pub fn dashboard_variables(dash: &Value) -> Vec<(String, String)> {
    dash["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] != "datasource")
        .map(|v| {
            let query = v["query"]["query"]
                .as_str()
                .or_else(|| v["query"].as_str())
                .unwrap_or_else(|| panic!("variable without a query: {v}"));
            (v["name"].as_str().unwrap().to_string(), query.to_string())
        })
        .collect()
}

/// `expr` with Grafana's macros and the dashboard's variables replaced, ready for Prometheus.
pub fn runnable(expr: &str, variables: &[(String, String)]) -> String {
    let mut out = expr.to_string();
    for (from, to) in MACROS {
        out = out.replace(from, to);
    }
    for (name, _) in variables {
        out = out.replace(&format!("${{{name}}}"), ".*");
        out = out.replace(&format!("${name}"), ".*");
    }
    assert!(
        !out.contains('$'),
        "unhandled Grafana variable in {expr:?} (after substitution: {out:?})"
    );
    out
}

/// (alert name, expr) of every rule in the rules file.
pub fn alert_rules(rules: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for g in rules["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            let name = r["alert"]
                .as_str()
                .or_else(|| r["record"].as_str())
                .expect("alert or record name");
            out.push((
                name.to_string(),
                r["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    out
}

/// The metric names src/metrics/mod.rs defines (`pub const X: &str = "drover_...";`).
pub fn defined_metrics() -> BTreeSet<String> {
    read("src/metrics/mod.rs")
        .lines()
        .filter(|l| l.trim_start().starts_with("pub const") && l.contains(": &str"))
        .filter_map(|l| l.split('"').nth(1))
        .filter(|n| n.starts_with("drover_"))
        .map(str::to_string)
        .collect()
}

/// Every `drover_...` name an expression uses, with histogram suffixes removed.
pub fn used_metrics(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("drover_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let mut name = &tail[..end];
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                name = base;
            }
        }
        out.insert(name.to_string());
        rest = &tail[end..];
    }
    out
}

/// One line of a Prometheus text exposition.
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn has(&self, label: &str, value: &str) -> bool {
        self.labels.iter().any(|(k, v)| k == label && v == value)
    }
}

/// The samples of a Prometheus text exposition.
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
        let value: f64 = value.parse().unwrap_or(f64::NAN);
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, parse_labels(l.trim_end_matches('}'))),
            None => (series, Vec::new()),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// `a="x",b="y\"z"` into pairs, with the exposition format's escapes undone.
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if name.is_empty() {
            return out;
        }
        assert_eq!(
            chars.next(),
            Some('"'),
            "label {name} without a quoted value"
        );
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((name.trim_start_matches(',').to_string(), value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}
