//! Running the `drover` binary: one-shot subcommands and the `run` daemon.

use super::{run_with_timeout, tail};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long a one-shot `drover` command may run before the test fails.
pub const DROVER_TIMEOUT: Duration = Duration::from_secs(60);
/// Grace period between SIGTERM and SIGKILL in `Daemon::stop`.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub fn drover_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_drover"))
}

/// Runs `drover --config CONFIG ARGS...` to completion; panics if it takes
/// longer than `DROVER_TIMEOUT`. The exit status is left to the caller.
pub fn drover(config: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(drover_bin());
    cmd.arg("--config").arg(config).args(args);
    run_with_timeout(&mut cmd, None, DROVER_TIMEOUT)
}

/// Like `drover`, but panics (showing both streams) unless it exits 0;
/// returns stdout.
pub fn drover_ok(config: &Path, args: &[&str]) -> String {
    let out = drover(config, args);
    assert!(
        out.status.success(),
        "drover {args:?} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A background child process (normally `drover --config FILE run`) whose
/// stdout and stderr go to a log file in its own temp dir. Dropping it kills
/// the process if it still runs.
pub struct Daemon {
    child: Child,
    status: Option<ExitStatus>,
    log_path: PathBuf,
    // Holds the log; deleted on drop, so read `log()` before.
    _dir: TempDir,
}

impl Daemon {
    /// Starts `drover --config CONFIG run`.
    pub fn start(config: &Path) -> Daemon {
        Self::start_with(config, &[], &[])
    }

    /// Starts `drover --config CONFIG run EXTRA_ARGS...` with extra
    /// environment variables (e.g. `RUST_LOG`).
    pub fn start_with(config: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(drover_bin());
        cmd.arg("--config")
            .arg(config)
            .arg("run")
            .args(extra_args)
            .envs(env.iter().copied());
        Self::spawn(cmd)
    }

    /// Starts any command as a daemon; the harness self-tests use this.
    pub fn spawn(mut cmd: Command) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("drover-daemon-")
            .tempdir()
            .expect("cannot create a temp dir for the daemon log");
        let log_path = dir.path().join("daemon.log");
        let log = File::create(&log_path).expect("cannot create the daemon log");
        let log_err = log.try_clone().expect("cannot clone the daemon log handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Daemon {
            child,
            status: None,
            log_path,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Whether the process is still running (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        self.poll().is_none()
    }

    /// The exit status, once the process has exited and been reaped.
    pub fn status(&mut self) -> Option<ExitStatus> {
        self.poll()
    }

    /// Waits for the process to exit by itself; panics after `timeout`.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.poll() {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "daemon {} still running after {timeout:?}; log:\n{}",
                    self.pid(),
                    tail(&self.log(), 40)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as in a crash; waits for the process to be gone.
    pub fn kill9(&mut self) {
        if self.poll().is_none() {
            // kill() fails only if the process is already reaped.
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// SIGTERM, then SIGKILL if the process has not exited within 10 s.
    /// `status()` then tells which: a signal 9 death means it ignored TERM.
    pub fn stop(&mut self) {
        self.stop_within(STOP_GRACE);
    }

    /// `stop` with a custom grace period.
    pub fn stop_within(&mut self, grace: Duration) {
        if self.poll().is_some() {
            return;
        }
        // No libc in the dev-dependencies: procps' kill sends the signal.
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.poll().is_some() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
    }

    fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- last lines of the daemon log (pid {}) ---\n{}",
                self.pid(),
                tail(&self.log(), 60)
            );
        }
        // `DROVER_TEST_KEEP_LOGS=DIR` keeps every daemon's whole log (the temp dir goes):
        // for chasing a failure that shows once in many runs.
        if let Ok(dir) = std::env::var("DROVER_TEST_KEEP_LOGS") {
            let to = Path::new(&dir).join(format!("daemon-{}.log", self.pid()));
            let _ = fs::copy(&self.log_path, to);
        }
        self.kill9();
    }
}
