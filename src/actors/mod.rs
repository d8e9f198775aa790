//! The daemon's actors (one actix System, single-threaded):
//!
//! - `DatabaseActor`, one per database: its pool, its server facts, its LISTEN session; it
//!   forwards change notifications to the syncs reading from it, and holds the doorbell that
//!   makes capture triggers notify only while a sync waits (`doorbell`).
//! - `TableActor`, one per (sync, table): the table's plan (columns, key, SQL) and counters.
//! - `SyncActor`, one per sync: the lease, round scheduling, status, error backoff.
//! - `MetricsActor`: the only writer of the Prometheus recorder.
//! - `WatchdogActor`: systemd's watchdog pings, only while this System runs (`crate::systemd`).
//!
//! A round runs inside its SyncActor as one future that spans every table, so one target's
//! round is always one transaction. `daemon` wires them together and handles signals;
//! `reload` owns the running set and applies a re-read config.

pub mod daemon;
pub mod database;
pub mod doorbell;
pub mod metrics;
pub mod reload;
pub mod sync;
pub mod table;
pub mod watchdog;
