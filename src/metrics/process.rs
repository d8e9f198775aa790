//! Process metrics in the names Prometheus client libraries use, read from /proc when
//! `/metrics` is rendered: resident memory, CPU seconds, open file descriptors, start time.

use std::fs;

/// Kernel clock ticks per second for /proc CPU times (USER_HZ, 100 on every Linux port that
/// drover targets).
const TICKS_PER_SECOND: f64 = 100.0;
/// /proc/self/status reports memory in KiB.
const KIB: f64 = 1024.0;

/// Sets the process gauges; silently skips any value /proc does not provide (non-Linux).
pub fn update() {
    if let Some(rss) = status_kib("VmRSS:") {
        metrics::gauge!("process_resident_memory_bytes").set(rss * KIB);
    }
    if let Some(hwm) = status_kib("VmHWM:") {
        metrics::gauge!("process_resident_memory_max_bytes").set(hwm * KIB);
    }
    if let Some(n) = fs::read_dir("/proc/self/fd").ok().map(|d| d.count()) {
        metrics::gauge!("process_open_fds").set(n as f64);
    }
    if let Ok(stat) = fs::read_to_string("/proc/self/stat") {
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
        // utime and stime are fields 14 and 15 of stat; here indexes 11 and 12.
        if let (Some(u), Some(s)) = (num(11), num(12)) {
            metrics::gauge!("process_cpu_seconds_total").set((u + s) / TICKS_PER_SECOND);
        }
        // starttime, field 22: ticks after boot.
        if let (Some(start), Some(boot)) = (num(19), boot_time()) {
            metrics::gauge!("process_start_time_seconds").set(boot + start / TICKS_PER_SECOND);
        }
    }
}

fn status_kib(field: &str) -> Option<f64> {
    let s = fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn boot_time() -> Option<f64> {
    let s = fs::read_to_string("/proc/stat").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}
