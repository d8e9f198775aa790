//! Metric names (one constant each, with type and labels) and the Prometheus recorder setup.
//! The MetricsActor updates these, except `drover_errors_total`, which `failures::failed`
//! counts where the failure is logged; the Grafana dashboard and alert rules use these names.
//! Process metrics (`process_cpu_seconds_total`, ...) come from the `metrics-process` crate,
//! collected by the MetricsActor.

pub mod failures;
pub mod initial;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Peak resident memory, kept beside `metrics-process`'s gauges (a name users already scrape).
pub const PEAK_RSS: &str = "process_resident_memory_max_bytes";

/// Sets [`PEAK_RSS`] from /proc/self/status; nothing where /proc has no VmHWM (non-Linux).
pub fn record_peak_rss() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = (status.lines())
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok());
    if let Some(kib) = kib {
        metrics::gauge!(PEAK_RSS).set(kib * 1024.0);
    }
}
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Counter {sync, table, target}: rows written into targets (an update counts as one delete
/// and one insert, as in Bucardo).
pub const ROWS_INSERTED: &str = "drover_rows_inserted_total";
/// Counter {sync, table, target}: rows deleted on targets.
pub const ROWS_DELETED: &str = "drover_rows_deleted_total";
/// Counter {sync, table, strategy, winner}: conflicts resolved.
pub const CONFLICTS: &str = "drover_conflicts_total";
/// Counter {sync, result="good"|"bad"}: rounds run.
pub const ROUNDS: &str = "drover_rounds_total";
/// Counter {sync, source}: source transactions that read a one-source sync's changes; the
/// targets at the same progress share one (`actors::source`), so under steady load it grows
/// by one per round whatever the number of targets.
pub const SOURCE_READS: &str = "drover_source_reads_total";
/// Counter {sync, database, kind, stage}: failed attempts, each also logged once (see
/// `failures`).
pub const ERRORS: &str = "drover_errors_total";
/// Gauge {sync, source, target}: age in seconds of the oldest change not yet applied.
pub const LAG: &str = "drover_lag_seconds";
/// Gauge {sync, source, table}: delta rows pending when the last round started.
pub const PENDING: &str = "drover_pending_rows";
/// Gauge {sync}: 1 good, 0 bad.
pub const SYNC_STATE: &str = "drover_sync_state";
/// Gauge {sync, target}: 1 when the target's last round was good, 0 when it failed (the
/// sync's other targets go on without it).
pub const TARGET_STATE: &str = "drover_target_state";
/// Gauge {sync, table, target}: 1 while the target refuses the table's rows and the table is
/// held there (`round::hold`), 0 otherwise; every table of a one-source sync from its first round.
pub const TABLE_HELD: &str = "drover_table_held";
/// Gauge {sync}: 1 on the daemon holding the sync's lease (it runs the sync), 0 on a standby.
pub const LEASE_HELD: &str = "drover_lease_held";
/// Gauge {sync}: unix time of the last good round.
pub const LAST_GOOD: &str = "drover_last_good_round_timestamp_seconds";
/// Histogram {sync}: round duration in seconds.
pub const ROUND_DURATION: &str = "drover_round_duration_seconds";
/// Gauge {database}: a master's clock minus the daemon's, in seconds, measured at every
/// multi-master round (`round::clock`); `latest` compares the masters' clocks.
pub const CLOCK_OFFSET: &str = "drover_clock_offset_seconds";
/// Gauge {version}: always 1.
pub const BUILD_INFO: &str = "drover_build_info";

/// Round-duration buckets: from a quick single-row round to a large catch-up.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Installs the global recorder; the HTTP server renders the returned handle at /metrics.
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(ROUND_DURATION.to_string()), DURATION_BUCKETS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    describe_counter!(ROWS_INSERTED, Unit::Count, "Rows written into targets");
    describe_counter!(ROWS_DELETED, Unit::Count, "Rows deleted on targets");
    describe_counter!(CONFLICTS, Unit::Count, "Conflicts resolved between masters");
    describe_counter!(ROUNDS, Unit::Count, "Rounds run, by result");
    describe_counter!(
        SOURCE_READS,
        Unit::Count,
        "Source transactions that read changes (shared by the targets at the same progress)"
    );
    describe_counter!(
        ERRORS,
        Unit::Count,
        "Failed attempts, by database, kind and stage"
    );
    describe_gauge!(
        LAG,
        Unit::Seconds,
        "Age of the oldest change not yet applied"
    );
    describe_gauge!(
        PENDING,
        Unit::Count,
        "Delta rows pending when the last round started"
    );
    describe_gauge!(SYNC_STATE, "Sync state: 1 good, 0 bad");
    describe_gauge!(
        TARGET_STATE,
        "Target state: 1 when its last round was good, 0 when it failed"
    );
    describe_gauge!(
        TABLE_HELD,
        "1 while a table is held on a target (its rows refused there), 0 otherwise"
    );
    describe_gauge!(
        LEASE_HELD,
        "1 on the daemon holding the sync's lease, 0 on a standby"
    );
    describe_gauge!(LAST_GOOD, Unit::Seconds, "Unix time of the last good round");
    describe_histogram!(ROUND_DURATION, Unit::Seconds, "Round duration");
    describe_gauge!(
        CLOCK_OFFSET,
        Unit::Seconds,
        "A master's clock offset from the daemon's (multi-master rounds)"
    );
    describe_gauge!(BUILD_INFO, "Build information");
    describe_gauge!(
        PEAK_RSS,
        Unit::Bytes,
        "Peak resident memory (VmHWM): metrics-process has no such gauge"
    );
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}
