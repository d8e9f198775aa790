//! The runbook as data: docs/migration.md's marked blocks, and a runner that executes them
//! against test servers with the substitutions described in the page's last section.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::*;

pub const DOC: &str = include_str!("../../docs/migration.md");
/// Client tools of the new server's major (the runbook's `pg_dump` must be the new one's).
pub const PG15_BIN: &str = "/usr/lib/postgresql/15/bin";
/// Fenced blocks in these languages are commands or files: each needs a runbook marker.
const RUNNABLE: [&str; 5] = ["sh", "bash", "toml", "ini", "sql"];
const STEP_TIMEOUT: Duration = Duration::from_secs(600);
/// The passwords the runbook's shell expects in DROVER_PASSWORD and APP_PASSWORD.
const DROVER_PASSWORD: &str = "drover-runbook-pw";
pub const APP_PASSWORD: &str = "app-runbook-pw";

/// The runbook's blocks, by marker.
pub struct Doc {
    pub env: String,
    pub steps: Vec<(String, String)>,
    pub files: Vec<(String, String)>,
}

/// Reads the blocks of the runbook. A marker `<!-- runbook: env | step NAME | file PATH -->`
/// must be the line right before a fence; a runnable block without a marker is an error, so
/// the page cannot gain a command this test does not run.
pub fn parse(text: &str) -> Doc {
    let mut doc = Doc {
        env: String::new(),
        steps: Vec::new(),
        files: Vec::new(),
    };
    let mut lines = text.lines().enumerate();
    let mut marker: Option<(usize, String)> = None;
    while let Some((n, line)) = lines.next() {
        if let Some(m) = line
            .strip_prefix("<!-- runbook: ")
            .and_then(|r| r.strip_suffix(" -->"))
        {
            marker = Some((n + 1, m.to_string()));
            continue;
        }
        let Some(lang) = line.strip_prefix("```") else {
            if let Some((at, m)) = marker.take() {
                panic!("docs/migration.md:{at}: marker {m:?} is not followed by a code block");
            }
            continue;
        };
        let mut body = String::new();
        for (_, l) in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        match marker.take() {
            None if RUNNABLE.contains(&lang) => {
                panic!(
                    "docs/migration.md:{}: a {lang} block without a runbook marker",
                    n + 1
                )
            }
            None => {}
            Some((_, m)) if m == "env" => doc.env = body,
            Some((at, m)) => match m.split_once(' ') {
                Some(("step", name)) => doc.steps.push((name.to_string(), body)),
                Some(("file", path)) => doc.files.push((path.to_string(), body)),
                _ => panic!("docs/migration.md:{at}: unknown marker {m:?}"),
            },
        }
    }
    assert!(!doc.env.is_empty(), "the runbook has no env block");
    doc
}

/// The runbook against two test servers: substitutions, environment, emulated units, and a
/// record of which blocks ran.
pub struct Runbook {
    doc: Doc,
    pub work: tempfile::TempDir,
    subs: Vec<(String, String)>,
    env: Vec<(String, String)>,
    ran: BTreeSet<String>,
    written: BTreeSet<String>,
    units: HashMap<String, Daemon>,
}

/// A finished block: exit code and output.
pub struct Ran {
    pub code: Option<i32>,
    pub out: String,
}

impl Runbook {
    pub fn new(legacy: &Cluster, new: &Cluster) -> Runbook {
        let work = tempfile::Builder::new()
            .prefix("drover-runbook-")
            .tempdir()
            .expect("temp dir");
        let root = work.path().display().to_string();
        let drover = drover_bin();
        let subs = vec![
            ("/etc/systemd/system/".into(), format!("{root}/systemd/")),
            ("/etc/drover/".into(), format!("{root}/etc/")),
            ("/usr/local/bin/drover".into(), drover.display().to_string()),
            (
                "host=legacy-db.example.internal port=5432".into(),
                format!("host=127.0.0.1 port={}", legacy.port),
            ),
            (
                "host=new-db.example.internal port=5432".into(),
                format!("host=127.0.0.1 port={}", new.port),
            ),
            (
                "legacy-db.example.internal:5432:".into(),
                format!("127.0.0.1:{}:", legacy.port),
            ),
            (
                "new-db.example.internal:5432:".into(),
                format!("127.0.0.1:{}:", new.port),
            ),
        ];
        let path = format!(
            "{}:{PG15_BIN}:{}",
            drover.parent().expect("bin dir").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), path),
            ("PGCONNECT_TIMEOUT".into(), "10".into()),
            ("DROVER_PASSWORD".into(), DROVER_PASSWORD.into()),
            ("APP_PASSWORD".into(), APP_PASSWORD.into()),
            (
                "DROVER__DAEMON__LISTEN".into(),
                format!("127.0.0.1:{}", free_port()),
            ),
            // The test servers have no TLS; `prefer` still loads sslrootcert.
            ("DROVER__DATABASES__NEW__SSLMODE".into(), "prefer".into()),
        ];
        for (name, c) in [("LEGACY", legacy), ("NEW", new)] {
            env.push((
                format!("DROVER__DATABASES__{name}__HOST"),
                "127.0.0.1".into(),
            ));
            env.push((
                format!("DROVER__DATABASES__{name}__PORT"),
                c.port.to_string(),
            ));
        }
        let rb = Runbook {
            doc: parse(DOC),
            work,
            subs,
            env,
            ran: BTreeSet::new(),
            written: BTreeSet::new(),
            units: HashMap::new(),
        };
        assert!(
            !rb.subst(&rb.doc.env).contains("example.internal"),
            "a host in the env block is not substituted"
        );
        // Stands in for the RDS bundle: any valid CA file.
        fs::create_dir_all(rb.work.path().join("etc")).unwrap();
        fs::copy(
            "/etc/ssl/certs/ca-certificates.crt",
            rb.subst("/etc/drover/rds-global-bundle.pem"),
        )
        .expect("copy the system CA bundle");
        rb
    }

    pub fn subst(&self, text: &str) -> String {
        self.subs
            .iter()
            .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
    }

    /// Writes the file block for `path`; returns where it went.
    pub fn file(&mut self, path: &str) -> PathBuf {
        let (_, body) = self
            .doc
            .files
            .iter()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("no file block {path} in docs/migration.md"));
        let target = PathBuf::from(self.subst(path));
        assert!(
            target.starts_with(self.work.path()),
            "{path} is not mapped into the temp dir"
        );
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::write(&target, self.subst(body)).unwrap();
        self.written.insert(path.to_string());
        target
    }

    /// Runs step `name`: `systemctl` lines are emulated, anything else runs in bash after the
    /// env block, with errors fatal.
    pub fn step(&mut self, name: &str) -> Ran {
        let body = self
            .doc
            .steps
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no step {name} in docs/migration.md"))
            .1
            .clone();
        assert!(self.ran.insert(name.to_string()), "step {name} ran twice");
        let lines: Vec<&str> = body.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.iter().all(|l| l.starts_with("systemctl ")) {
            for l in lines {
                self.systemctl(l);
            }
            return Ran {
                code: Some(0),
                out: String::new(),
            };
        }
        let script = format!(
            "set -eo pipefail\n{}\n{}",
            self.subst(&self.doc.env),
            self.subst(&body)
        );
        let started = Instant::now();
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(&script)
            .current_dir(self.work.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let out = run_with_timeout(&mut cmd, None, STEP_TIMEOUT);
        let ran = Ran {
            code: out.status.code(),
            out: text(&out),
        };
        eprintln!(
            "--- step {name}: exit {:?} in {:.1} s ---\n{}",
            ran.code,
            started.elapsed().as_secs_f64(),
            ran.out.trim_end()
        );
        ran
    }

    /// `step`, asserting exit 0; returns the output.
    pub fn step_ok(&mut self, name: &str) -> String {
        let ran = self.step(name);
        assert_eq!(ran.code, Some(0), "step {name} failed:\n{}", ran.out);
        ran.out
    }

    fn systemctl(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[1..] {
            ["daemon-reload"] => assert!(
                self.written.contains("/etc/systemd/system/drover@.service"),
                "daemon-reload before the unit file was written"
            ),
            ["enable", "--now", unit] => self.start_unit(unit),
            ["disable", "--now", unit] => {
                let mut daemon = self
                    .units
                    .remove(unit)
                    .unwrap_or_else(|| panic!("{unit} is not running"));
                daemon.stop();
                assert_eq!(
                    daemon.status().and_then(|s| s.code()),
                    Some(0),
                    "{unit} did not exit 0 on SIGTERM:\n{}",
                    daemon.log()
                );
            }
            _ => panic!("cannot emulate {line:?}"),
        }
    }

    /// Starts `drover@INSTANCE` the way systemd would from the template unit.
    fn start_unit(&mut self, unit: &str) {
        let instance = unit
            .strip_prefix("drover@")
            .unwrap_or_else(|| panic!("unexpected unit {unit}"));
        let unit_text = fs::read_to_string(self.subst("/etc/systemd/system/drover@.service"))
            .expect("the unit file is written before it is started");
        let creds = self.work.path().join("credentials").join(unit);
        fs::create_dir_all(&creds).unwrap();
        let expand = |s: &str| {
            s.replace("%i", instance)
                .replace("%d", &creds.display().to_string())
        };
        let mut env = Vec::new();
        let mut exec = None;
        for line in unit_text.lines() {
            if let Some(v) = line.strip_prefix("Environment=") {
                let (k, v) = v.split_once('=').expect("Environment=K=V");
                env.push((k.to_string(), expand(v)));
            } else if let Some(v) = line.strip_prefix("LoadCredential=") {
                let (id, src) = v.split_once(':').expect("LoadCredential=ID:PATH");
                let dst = creds.join(id);
                fs::copy(expand(src), &dst).expect("copy the credential");
                fs::set_permissions(&dst, fs::Permissions::from_mode(0o400)).unwrap();
            } else if let Some(v) = line.strip_prefix("ExecStart=") {
                exec = Some(expand(v));
            }
        }
        let exec = exec.expect("the unit has ExecStart");
        let argv: Vec<&str> = exec.split_whitespace().collect();
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]).envs(env).envs(
            self.env
                .iter()
                .filter(|(k, _)| k.starts_with("DROVER__"))
                .map(|(k, v)| (k, v)),
        );
        self.units.insert(unit.to_string(), Daemon::spawn(cmd));
    }

    /// `drover ARGS` with the runbook's environment, for the test's own polling.
    pub fn drover(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(drover_bin());
        cmd.args(args)
            .current_dir(self.work.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("PGPASSFILE", self.subst("/etc/drover/pgpass"));
        run_with_timeout(&mut cmd, None, DROVER_TIMEOUT)
    }

    pub fn status(&self, config: &str, sync: &str) -> Option<serde_json::Value> {
        let out = self.drover(&["--config", config, "status", sync, "--json"]);
        if !out.status.success() {
            return None;
        }
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        doc["syncs"].as_array()?.first().cloned()
    }

    /// Every block of the runbook was run or written.
    pub fn assert_all_used(&self) {
        let steps: BTreeSet<String> = self.doc.steps.iter().map(|(n, _)| n.clone()).collect();
        let files: BTreeSet<String> = self.doc.files.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(steps, self.ran, "steps of docs/migration.md not run");
        assert_eq!(
            files, self.written,
            "files of docs/migration.md not written"
        );
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
