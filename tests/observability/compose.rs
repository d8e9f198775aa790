//! Static checks of docker-compose.yml (no Docker engine runs here): every host path it mounts
//! or builds from exists in the repository, every dependency names a service, and the files
//! the services read inside their containers resolve through the mounts to the shipped files.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::files::*;

/// A bind mount: a path in the repository seen at `container` inside a service.
#[derive(Debug, Clone)]
pub struct Mount {
    pub host: String,
    pub container: String,
}

pub struct Compose {
    pub services: Map<String, Value>,
    volumes: BTreeSet<String>,
}

const CONDITIONS: &[&str] = &[
    "service_started",
    "service_healthy",
    "service_completed_successfully",
];

impl Compose {
    pub fn new(doc: &Value) -> Compose {
        let services = doc["services"]
            .as_object()
            .expect("docker-compose.yml has services")
            .clone();
        let volumes = doc["volumes"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        Compose { services, volumes }
    }

    pub fn service(&self, name: &str) -> &Value {
        self.services
            .get(name)
            .unwrap_or_else(|| panic!("docker-compose.yml has no service {name:?}"))
    }

    /// The repository's bind mounts of `service`; asserts each host path exists and each
    /// named volume is declared.
    pub fn mounts(&self, service: &str) -> Vec<Mount> {
        let mut out = Vec::new();
        for v in self.service(service)["volumes"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let (source, target, bind) = match v {
                Value::String(s) => {
                    let mut parts = s.splitn(3, ':');
                    let source = parts.next().unwrap_or_default().to_string();
                    let target = parts.next().unwrap_or_else(|| {
                        panic!("{service}: anonymous volume {s:?}; declare a named one")
                    });
                    let bind = source.starts_with('.') || source.starts_with('/');
                    (source, target.to_string(), bind)
                }
                Value::Object(m) => (
                    m["source"].as_str().expect("volume source").to_string(),
                    m["target"].as_str().expect("volume target").to_string(),
                    m["type"] == "bind",
                ),
                other => panic!("{service}: unreadable volume {other}"),
            };
            if bind {
                let host = in_repo(service, &source);
                assert!(
                    repo().join(&host).exists(),
                    "{service} mounts {source}, which does not exist in the repository"
                );
                out.push(Mount {
                    host,
                    container: target,
                });
            } else {
                assert!(
                    self.volumes.contains(&source),
                    "{service} uses volume {source:?}, not declared under top-level volumes"
                );
            }
        }
        out
    }

    /// Checks every service: build context and Dockerfile, env files, mounts, dependencies.
    pub fn check_all(&self) {
        for (name, svc) in &self.services {
            assert!(
                svc.get("image").is_some() || svc.get("build").is_some(),
                "service {name} has neither image nor build"
            );
            if let Some(build) = svc.get("build") {
                let (context, dockerfile) = match build {
                    Value::String(c) => (c.as_str(), "Dockerfile"),
                    b => (
                        b["context"].as_str().unwrap_or("."),
                        b["dockerfile"].as_str().unwrap_or("Dockerfile"),
                    ),
                };
                let context = in_repo(name, context);
                assert!(
                    repo().join(&context).is_dir(),
                    "{name}: no build context {context}"
                );
                let file = repo().join(&context).join(dockerfile);
                assert!(file.is_file(), "{name}: no Dockerfile {}", file.display());
            }
            for env_file in list(&svc["env_file"]) {
                let path = env_file
                    .as_str()
                    .or_else(|| env_file["path"].as_str())
                    .expect("env_file path");
                let path = in_repo(name, path);
                assert!(repo().join(&path).is_file(), "{name}: no env file {path}");
            }
            self.mounts(name);
            for (dep, condition) in self.depends_on(name) {
                let target = self.services.get(&dep).unwrap_or_else(|| {
                    panic!("service {name} depends on {dep:?}, which is not a service")
                });
                assert!(
                    CONDITIONS.contains(&condition.as_str()),
                    "{name} depends on {dep} with unknown condition {condition:?}"
                );
                if condition == "service_healthy" {
                    assert!(
                        target.get("healthcheck").is_some(),
                        "{name} waits for {dep} to be healthy, but {dep} has no healthcheck"
                    );
                }
            }
        }
        self.assert_acyclic();
    }

    /// (dependency, condition) pairs of a service, short or long syntax.
    pub fn depends_on(&self, service: &str) -> Vec<(String, String)> {
        match &self.service(service)["depends_on"] {
            Value::Null => Vec::new(),
            Value::Array(a) => a
                .iter()
                .map(|d| (d.as_str().unwrap().to_string(), CONDITIONS[0].to_string()))
                .collect(),
            Value::Object(m) => m
                .iter()
                .map(|(d, spec)| {
                    let c = spec["condition"].as_str().unwrap_or(CONDITIONS[0]);
                    (d.clone(), c.to_string())
                })
                .collect(),
            other => panic!("{service}: unreadable depends_on {other}"),
        }
    }

    fn assert_acyclic(&self) {
        fn visit(c: &Compose, s: &str, path: &mut Vec<String>) {
            assert!(
                !path.contains(&s.to_string()),
                "dependency cycle: {path:?} -> {s}"
            );
            path.push(s.to_string());
            for (d, _) in c.depends_on(s) {
                visit(c, &d, path);
            }
            path.pop();
        }
        for s in self.services.keys() {
            visit(self, s, &mut Vec::new());
        }
    }

    /// The environment of a service as (name, value) pairs, map or list syntax.
    pub fn environment(&self, service: &str) -> Vec<(String, String)> {
        match &self.service(service)["environment"] {
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().map_or(v.to_string(), String::from)))
                .collect(),
            Value::Array(a) => a
                .iter()
                .filter_map(|kv| kv.as_str()?.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// `container_path` inside a service, as the repository path its mounts make it; panics when
/// no mount covers it.
pub fn resolve(mounts: &[Mount], service: &str, container_path: &str) -> PathBuf {
    let best = mounts
        .iter()
        .filter(|m| {
            container_path == m.container
                || container_path.starts_with(&format!("{}/", m.container.trim_end_matches('/')))
        })
        .max_by_key(|m| m.container.len())
        .unwrap_or_else(|| panic!("no mount of {service} covers {container_path}: {mounts:?}"));
    let rest = container_path[best.container.len()..].trim_start_matches('/');
    let path = repo().join(&best.host);
    if rest.is_empty() {
        path
    } else {
        path.join(rest)
    }
}

/// A relative host path that stays inside the repository, normalised ("./a/b" -> "a/b").
fn in_repo(service: &str, path: &str) -> String {
    let p = Path::new(path);
    assert!(
        p.is_relative(),
        "{service} uses the host path {path}: the stack may only use files of the repository"
    );
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            _ => panic!("{service}: host path {path} leaves the repository"),
        }
    }
    parts.join("/")
}

/// A value that may be absent, one item, or a list.
fn list(v: &Value) -> Vec<Value> {
    match v {
        Value::Null => Vec::new(),
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    }
}

/// Every `--config PATH` in a service's entrypoint, command and healthcheck.
pub fn config_args(svc: &Value) -> Vec<String> {
    let mut words = Vec::new();
    for key in ["entrypoint", "command"] {
        for item in list(&svc[key]) {
            words.extend(
                item.as_str()
                    .unwrap_or("")
                    .split_whitespace()
                    .map(String::from),
            );
        }
    }
    for item in list(&svc["healthcheck"]["test"]) {
        words.extend(
            item.as_str()
                .unwrap_or("")
                .split_whitespace()
                .map(String::from),
        );
    }
    words
        .windows(2)
        .filter(|w| w[0] == "--config")
        .map(|w| w[1].clone())
        .collect()
}

/// The files each service reads inside its container resolve through its mounts to the
/// shipped ones, and the services find each other by the names and ports the files use.
pub fn check_wiring(c: &Compose) {
    // Prometheus: its config and rules come from the repository, and it scrapes drover on the
    // port the daemon listens on.
    let prom_mounts = c.mounts("prometheus");
    let config = resolve(&prom_mounts, "prometheus", "/etc/prometheus/prometheus.yml");
    assert_eq!(config, repo().join(PROMETHEUS_CONFIG));
    let prom_cfg = yaml(PROMETHEUS_CONFIG);
    for r in prom_cfg["rule_files"].as_array().expect("rule_files") {
        let path = resolve(
            &prom_mounts,
            "prometheus",
            &format!("/etc/prometheus/{}", r.as_str().unwrap()),
        );
        assert_eq!(path, repo().join(RULES), "rule file {r}");
    }
    let deploy = toml(DEPLOY_CONFIG);
    let listen = deploy["daemon"]["listen"].as_str().expect("daemon.listen");
    let port = listen.rsplit_once(':').unwrap().1;
    assert!(
        listen.starts_with("0.0.0.0:"),
        "drover must listen beyond loopback: {listen}"
    );
    let job = prom_cfg["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job_name"] == "drover")
        .expect("job drover");
    assert_eq!(
        job["static_configs"][0]["targets"],
        json!([format!("drover:{port}")]),
        "the scrape target is the drover service on its listen port"
    );
    assert!(
        read("Dockerfile")
            .lines()
            .any(|l| l.trim() == format!("EXPOSE {port}")),
        "the Dockerfile exposes {port}"
    );

    // drover: every --config path is the mounted deploy config; every environment variable the
    // config names is set; its databases are services.
    let drover = c.service("drover");
    let mounts = c.mounts("drover");
    let config_paths = config_args(drover);
    assert!(!config_paths.is_empty(), "drover's commands pass --config");
    for p in config_paths {
        assert_eq!(resolve(&mounts, "drover", &p), repo().join(DEPLOY_CONFIG));
    }
    let env: BTreeMap<String, String> = c.environment("drover").into_iter().collect();
    let mut needed = vec![deploy["daemon"]["api_token_env"]
        .as_str()
        .expect("api_token_env")];
    for db in deploy["databases"].as_object().unwrap().values() {
        needed.extend(db["password_env"].as_str());
        let host = db["host"].as_str().unwrap();
        assert!(
            c.services.contains_key(host),
            "database host {host} is not a service"
        );
    }
    for var in needed {
        assert!(
            env.get(var).is_some_and(|v| !v.is_empty()),
            "drover's environment lacks {var}"
        );
    }

    // Grafana: provisioning from the repository, the dashboards directory where the provider
    // looks, and the datasource uid the dashboard uses.
    let mounts = c.mounts("grafana");
    let prov = resolve(&mounts, "grafana", "/etc/grafana/provisioning");
    assert_eq!(prov, repo().join("grafana/provisioning"));
    let providers = yaml("grafana/provisioning/dashboards/drover.yml");
    for p in providers["providers"].as_array().unwrap() {
        let dir = resolve(&mounts, "grafana", p["options"]["path"].as_str().unwrap());
        assert!(
            dir.join("drover.json").is_file(),
            "{} has no drover.json",
            dir.display()
        );
    }
    let sources = yaml("grafana/provisioning/datasources/prometheus.yml");
    let ds = &sources["datasources"][0];
    assert_eq!(
        ds["url"], "http://prometheus:9090",
        "the compose Prometheus"
    );
    let uid = ds["uid"].as_str().unwrap();
    let dash = dashboard();
    let mut refs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        if p["type"] != "row" {
            refs.push(&p["datasource"]);
            refs.extend(
                p["targets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| &t["datasource"]),
            );
        }
    }
    let vars = dash["templating"]["list"].as_array().unwrap();
    refs.extend(
        vars.iter()
            .filter(|v| v["type"] != "datasource")
            .map(|v| &v["datasource"]),
    );
    for r in refs {
        assert_eq!(r["uid"], "${datasource}", "datasource of the dashboard");
    }
    // The datasource variable starts on the provisioned datasource.
    let var = vars.iter().find(|v| v["name"] == "datasource").unwrap();
    assert_eq!(
        var["current"]["value"], uid,
        "the datasource variable's default"
    );
}
