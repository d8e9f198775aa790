//! A real Prometheus server (the Debian `prometheus` package) run by a test: started on a free
//! loopback port with a temp config and data dir, queried over its HTTP API with curl, and
//! stopped on Drop even when the test panics (it is a harness `Daemon`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::support::{eventually, free_port, run_with_timeout, Daemon};

/// How long one curl request may take.
const CURL_TIMEOUT: Duration = Duration::from_secs(30);

/// `name` from PATH; fails the test, never skips it, when the tool is missing.
pub fn require_tool(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{name}` is not installed: run scripts/test, which installs the Debian package \
             `{package}` (or `apt-get install {package}`)"
        )
    })
}

/// GETs `url` with the query parameters URL-encoded; returns the body.
pub fn curl_get(url: &str, params: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(require_tool("curl", "curl"));
    cmd.args(["-sS", "--max-time", "20", "-G", url]);
    for (k, v) in params {
        cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
    }
    let out = run_with_timeout(&mut cmd, None, CURL_TIMEOUT);
    assert!(
        out.status.success(),
        "curl {url} {params:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Prometheus {
    pub port: u16,
    // Declared before `_dir`: the process stops before its data dir is removed.
    process: Daemon,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts `prometheus` with `config` (a JSON document, which is valid YAML) and waits until
    /// it is ready.
    pub fn start(config: &Value) -> Prometheus {
        let bin = require_tool("prometheus", "prometheus");
        let dir = tempfile::Builder::new()
            .prefix("drover-prometheus-")
            .tempdir()
            .expect("temp dir for Prometheus");
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, serde_json::to_string_pretty(config).unwrap())
            .expect("write the Prometheus config");
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .current_dir(dir.path());
        let mut prom = Prometheus {
            port,
            process: Daemon::spawn(cmd),
            _dir: dir,
        };
        prom.wait_ready();
        prom
    }

    fn wait_ready(&mut self) {
        let url = format!("http://127.0.0.1:{}/-/ready", self.port);
        eventually(Duration::from_secs(60), "Prometheus to be ready", || {
            assert!(
                self.process.is_running(),
                "prometheus exited: {}",
                self.process.log()
            );
            curl_status(&url) == "200"
        });
    }

    pub fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let url = format!("http://127.0.0.1:{}/api/v1/{path}", self.port);
        let body = curl_get(&url, params);
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("Prometheus answered {path} with non-JSON ({e}): {body}"))
    }

    /// An instant query at unix time `at`; panics unless Prometheus says `success`. Returns
    /// the result vector.
    pub fn query_at(&self, expr: &str, at: f64) -> Vec<Value> {
        let doc = self.api("query", &[("query", expr), ("time", &format!("{at:.3}"))]);
        assert_eq!(
            doc["status"], "success",
            "query failed: {expr}\nanswer: {doc}"
        );
        assert_eq!(
            doc["data"]["resultType"], "vector",
            "not an instant vector: {expr}\nanswer: {doc}"
        );
        doc["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("no result array for {expr}: {doc}"))
    }

    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// The HTTP status code of a GET, or "000" when nothing answers.
fn curl_status(url: &str) -> String {
    let mut cmd = Command::new(require_tool("curl", "curl"));
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "5",
        url,
    ]);
    let out = run_with_timeout(&mut cmd, None, CURL_TIMEOUT);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The value of one sample of a query result (`"NaN"` parses as NaN).
pub fn sample_value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("sample without a value: {sample}"))
}

/// Path of the test's temp copy layout: `dir/rel`, with parent dirs created.
pub fn place(dir: &Path, rel: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, contents).unwrap();
    path
}
