//! drover: trigger-based PostgreSQL replication.
//!
//! Triggers on source tables record changed keys in delta tables (`capture`); a daemon of
//! actix actors (`actors`) runs rounds (`round`) that copy the changed rows to targets under
//! one source snapshot, one transaction per target, with progress stored beside the data.
//! `config` reads the one config file, `topology` derives who sends to whom, `pg` holds the
//! PostgreSQL plumbing, `http` the daemon's API, `cli` the commands.

pub mod actors;
pub mod capture;
pub mod cli;
pub mod config;
pub mod ddl;
pub mod http;
pub mod metrics;
pub mod pause;
pub mod pg;
pub mod round;
pub mod status;
pub mod systemd;
pub mod topology;
pub mod verify;
