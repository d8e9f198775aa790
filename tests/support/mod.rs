//! Shared integration-test harness: throwaway PostgreSQL clusters, the `drover`
//! binary and its daemon. Every test file pulls it in with `mod support;`.

// Each test file uses a different subset of the harness.
#![allow(dead_code)]

mod cluster;
mod daemon;
mod process;

// Re-exports count as unused in test files that do not use them.
#[allow(unused_imports)]
pub use cluster::{Cluster, ClusterOptions, DEFAULT_BIN_DIR};
#[allow(unused_imports)]
pub use daemon::{drover, drover_bin, drover_ok, Daemon, DROVER_TIMEOUT};
#[allow(unused_imports)]
pub use process::run_with_timeout;

use std::collections::hash_map::RandomState;
use std::collections::BTreeSet;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Polls `f` every 50 ms until it returns true; panics naming `what` once
/// `timeout` has passed. Tests wait with this instead of sleeping.
pub fn eventually<F: FnMut() -> bool>(timeout: Duration, what: &str, mut f: F) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A loopback TCP port that is free right now and that this process has not
/// handed out before.
///
/// Ports come from below the kernel's ephemeral range: a port picked by
/// binding port 0 lies inside that range, where any of the many outgoing
/// loopback connections (psql, pgbench, drover) may take it as its local port
/// before the server binds it. Callers that can must still retry on
/// "address in use" (`Cluster` does), since another process may take it.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let floor: u16 = 10_000;
    let ceiling = ephemeral_floor().max(floor + 1_000);
    for _ in 0..1_000 {
        let port = floor + (random_u64() % u64::from(ceiling - floor)) as u16;
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("found no free loopback port in {floor}..{ceiling}");
}

/// Writes `toml` to `dir/drover.toml` (replacing it) and returns the path.
pub fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("drover.toml");
    fs::write(&path, toml).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

/// Lower bound of the kernel's ephemeral port range (Linux default 32768).
fn ephemeral_floor() -> u16 {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Random enough for picking ports, without a `rand` dependency: every
/// `RandomState` gets fresh keys.
fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// The last `n` lines of `text`, for failure messages.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
pub mod proxy;
pub mod scenario;
pub mod versions;
