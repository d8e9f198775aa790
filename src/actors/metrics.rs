//! MetricsActor: turns round reports into Prometheus updates, exports the counters known in
//! advance at 0 when it starts (`metrics::initial`), and reads the process metrics
//! (`metrics-process`) when `/metrics` is scraped. Failures are counted where they are logged
//! (`metrics::failures`), not here.

use actix::prelude::*;
use metrics_process::Collector;

use crate::metrics::initial::Series;
use crate::metrics::*;

/// What a finished round changed, per table and target.
#[derive(Message, Debug, Default)]
#[rtype(result = "()")]
pub struct RoundMetrics {
    pub sync: String,
    pub source: String,
    pub good: bool,
    pub duration_secs: f64,
    /// (table, target, inserted, deleted)
    pub rows: Vec<(String, String, u64, u64)>,
    /// (table, pending rows)
    pub pending: Vec<(String, u64)>,
    /// (target, lag seconds)
    pub lag: Vec<(String, f64)>,
    /// (table, strategy, winner) per conflict
    pub conflicts: Vec<(String, String, String)>,
    pub last_good_unix: Option<f64>,
    /// The sync as a whole is good (no target failing): `drover_sync_state`.
    pub sync_good: bool,
    /// (target, its round was good): `drover_target_state`.
    pub targets: Vec<(String, bool)>,
    /// (database, clock offset seconds) of each master a multi-master round measured.
    pub clock_offsets: Vec<(String, f64)>,
    /// Source transactions the round opened to read changes (`drover_source_reads_total`).
    pub source_reads: u64,
}

/// A source actor read a batch that targets share (`actors::source`).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SourceReads {
    pub sync: String,
    pub source: String,
}

impl Handler<SourceReads> for MetricsActor {
    type Result = ();

    fn handle(&mut self, m: SourceReads, _: &mut Context<Self>) {
        metrics::counter!(SOURCE_READS, "sync" => m.sync, "source" => m.source).increment(1);
    }
}

#[derive(Default)]
pub struct MetricsActor {
    process: Collector,
}

/// Counter series to export at 0 (`metrics::initial`), sent for each sync as it starts, at
/// startup and on reload; a series that already counts keeps its value.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ZeroSeries(pub Vec<Series>);

impl Handler<ZeroSeries> for MetricsActor {
    type Result = ();

    fn handle(&mut self, m: ZeroSeries, _: &mut Context<Self>) {
        // increment(0) creates the series at 0 without resetting one that already counts.
        for (name, labels) in m.0 {
            metrics::counter!(name, &labels).increment(0);
        }
    }
}

/// Reads the process metrics (CPU, memory, file descriptors, threads) into the recorder; the
/// `/metrics` handler awaits it before rendering.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct CollectProcess;

impl Handler<CollectProcess> for MetricsActor {
    type Result = ();

    fn handle(&mut self, _: CollectProcess, _: &mut Context<Self>) {
        self.process.collect();
        crate::metrics::record_peak_rss();
    }
}

/// This daemon took (true) or lost / could not take (false) a sync's lease.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct LeaseMetrics {
    pub sync: String,
    pub held: bool,
}

impl Handler<LeaseMetrics> for MetricsActor {
    type Result = ();

    fn handle(&mut self, m: LeaseMetrics, _: &mut Context<Self>) {
        metrics::gauge!(LEASE_HELD, "sync" => m.sync).set(if m.held { 1.0 } else { 0.0 });
    }
}

/// Which tables of a target are held (`round::hold`): `drover_table_held`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct HeldMetrics {
    pub sync: String,
    pub target: String,
    /// (table, held) for every table of the sync.
    pub tables: Vec<(String, bool)>,
}

impl Handler<HeldMetrics> for MetricsActor {
    type Result = ();

    fn handle(&mut self, m: HeldMetrics, _: &mut Context<Self>) {
        for (table, held) in m.tables {
            let labels = [
                ("sync", m.sync.clone()),
                ("table", table),
                ("target", m.target.clone()),
            ];
            metrics::gauge!(TABLE_HELD, &labels).set(if held { 1.0 } else { 0.0 });
        }
    }
}

impl Actor for MetricsActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        self.process.describe();
        self.process.collect();
    }
}

impl Handler<RoundMetrics> for MetricsActor {
    type Result = ();

    fn handle(&mut self, m: RoundMetrics, _: &mut Context<Self>) {
        let sync = m.sync.clone();
        for (table, target, ins, del) in m.rows {
            let labels = [("sync", sync.clone()), ("table", table), ("target", target)];
            metrics::counter!(ROWS_INSERTED, &labels).increment(ins);
            metrics::counter!(ROWS_DELETED, &labels).increment(del);
        }
        for (table, n) in m.pending {
            metrics::gauge!(PENDING, "sync" => sync.clone(), "source" => m.source.clone(), "table" => table)
                .set(n as f64);
        }
        for (target, lag) in m.lag {
            metrics::gauge!(LAG, "sync" => sync.clone(), "source" => m.source.clone(), "target" => target)
                .set(lag);
        }
        for (table, strategy, winner) in m.conflicts {
            metrics::counter!(CONFLICTS, "sync" => sync.clone(), "table" => table, "strategy" => strategy, "winner" => winner)
                .increment(1);
        }
        let result = if m.good { "good" } else { "bad" };
        metrics::counter!(ROUNDS, "sync" => sync.clone(), "result" => result).increment(1);
        metrics::gauge!(SYNC_STATE, "sync" => sync.clone()).set(if m.sync_good {
            1.0
        } else {
            0.0
        });
        for (target, good) in m.targets {
            metrics::gauge!(TARGET_STATE, "sync" => sync.clone(), "target" => target)
                .set(if good { 1.0 } else { 0.0 });
        }
        for (database, offset) in m.clock_offsets {
            metrics::gauge!(CLOCK_OFFSET, "database" => database).set(offset);
        }
        if m.source_reads > 0 {
            metrics::counter!(SOURCE_READS, "sync" => sync.clone(), "source" => m.source.clone())
                .increment(m.source_reads);
        }
        metrics::histogram!(ROUND_DURATION, "sync" => sync.clone()).record(m.duration_secs);
        if let Some(t) = m.last_good_unix {
            metrics::gauge!(LAST_GOOD, "sync" => sync).set(t);
        }
    }
}
