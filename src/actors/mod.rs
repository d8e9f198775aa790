//! The daemon's actors (one actix System, single-threaded):
//!
//! - `DatabaseActor`, one per database: its pool, its server facts, its LISTEN session; it
//!   forwards change notifications to the syncs reading from it, and holds the doorbell that
//!   makes capture triggers notify only while a sync waits (`doorbell`).
//! - `TableActor`, one per (sync, table): the table's plan (columns, key, SQL) and counters.
//! - `SyncActor`, one per sync: the lease, its lifecycle (`Phase`), fan-out of kicks to its
//!   lanes (one per target of a one-source sync), purge, status, error backoff.
//! - `TargetActor`, one per (sync, target) of a one-source sync: that target's progress and
//!   rounds, each applying a batch its SourceActor shares (or, for a batch too large to
//!   share, read under its own source snapshot), within the round deadline.
//! - `SourceActor`, one per (sync, source) of a one-source sync: reads a batch of changes
//!   once under one snapshot and hands it to every target actor at that batch's start.
//! - `MetricsActor`: the only writer of the Prometheus recorder.
//! - `WatchdogActor`: systemd's watchdog pings, only while this System runs (`crate::systemd`).
//!
//! A target's round runs inside its TargetActor as one future that spans every table, so it
//! is always one transaction; targets run concurrently. A multi-master round runs inside its
//! SyncActor and spans every database. `daemon` wires them together and
//! handles signals; `reload` owns the running set and applies a re-read config.

pub mod daemon;
pub mod database;
pub mod doorbell;
pub mod metrics;
pub mod reload;
pub mod source;
pub mod sync;
pub mod table;
pub mod target;
pub mod watchdog;
