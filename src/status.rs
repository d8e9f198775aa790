//! The status of a sync as `/status` serves it and `drover status` prints it. Field names are a
//! contract (scripts parse `drover status --json`): add fields, never rename them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncStatus {
    pub name: String,
    /// "good" | "bad" | "starting" | "standby" (another daemon holds the lease: not a fault) |
    /// "paused" (stored pause honoured, no round running)
    pub state: String,
    pub last_good: Option<DateTime<Utc>>,
    pub last_bad: Option<DateTime<Utc>>,
    /// Without row data (no DETAIL), unless the request carried the API token.
    pub last_error: Option<String>,
    /// `last_error` with the server's DETAIL; served as `last_error` only to callers with the
    /// token (see [`SyncStatus::for_reader`]).
    #[serde(skip)]
    pub last_error_full: Option<String>,
    /// Cumulative since the daemon started.
    pub rows_inserted: u64,
    pub rows_deleted: u64,
    pub conflicts: u64,
    /// Age of the oldest change not yet applied (0 when all applied).
    pub lag_seconds: f64,
    /// Changes found pending that are not applied yet.
    pub pending_rows: u64,
    /// "held" when this daemon runs the sync, "waiting" when another daemon holds its lease.
    #[serde(default)]
    pub lease: String,
    #[serde(default)]
    pub relgroup: String,
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub tables: usize,
    #[serde(default)]
    pub rounds: u64,
    /// Duration of the last round, in milliseconds.
    #[serde(default)]
    pub last_round_ms: Option<f64>,
    /// Paused (a row in `drover.sync_pause`, or `POST /syncs/{name}/pause`): no rounds until
    /// resumed.
    #[serde(default)]
    pub paused: bool,
    /// Who paused it (e.g. `alice via drover pause`), when paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_by: Option<String>,
    /// When it was paused, when paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<DateTime<Utc>>,
    /// Why (`ddl`, or `drover pause --reason`), when paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_reason: Option<String>,
    /// Initial copies of this daemon's life: per (target, table), state and rows copied/total.
    #[serde(default)]
    pub copy: Vec<crate::round::copy::CopyStatus>,
    /// Copy runs finished (or failed) since the daemon started.
    #[serde(default)]
    pub copy_runs: u64,
    /// Who holds the lease, when this daemon waits and the holder's heartbeat row is readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_holder: Option<LeaseHolder>,
    /// Per target of a one-source sync (each runs its own rounds), or one entry for a
    /// multi-master sync's rounds (named "*").
    #[serde(default)]
    pub target_states: Vec<TargetStatus>,
    /// Per table, from its TableActor: how rows are identified and what was applied.
    #[serde(default)]
    pub table_states: Vec<TableStatus>,
    /// Multi-master: each master's clock offset from the daemon's at its last round, in
    /// seconds (positive: ahead). `latest` compares these clocks.
    #[serde(default)]
    pub clock_offsets: std::collections::BTreeMap<String, f64>,
    /// Conditions that do not stop the sync but need a person (a master's clock off by more
    /// than 1 s).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// One table of a sync, as its TableActor keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableStatus {
    pub table: String,
    /// Key columns (empty before the plan is read); for a key-less table, every column.
    pub key: Vec<String>,
    /// "key" (primary key, unique index or configured key) or "whole_row" (no key: rows are
    /// matched by all their columns); "unknown" before the plan is read.
    pub key_method: String,
    /// Rows applied to every receiver together since the daemon started.
    pub rows_inserted: u64,
    pub rows_deleted: u64,
    pub last_applied: Option<DateTime<Utc>>,
}

/// One target's rounds: a failing target falls behind alone while the others go on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TargetStatus {
    pub target: String,
    /// "starting" | "ok" | "behind" (its last round applied a bounded part of a backlog) |
    /// "failing" (its last round failed; it is retried) | "held" (good, but some tables are
    /// held: see `held`)
    pub state: String,
    pub last_good: Option<DateTime<Utc>>,
    /// As the sync's `last_error`: redacted unless the reader has the token.
    pub last_error: Option<String>,
    #[serde(skip)]
    pub last_error_full: Option<String>,
    /// Age of the oldest change not yet applied to this target (0 when all applied).
    pub lag_seconds: f64,
    pub pending_rows: u64,
    pub rounds: u64,
    /// Tables this target refused rows of, held back while the others go on (`drover retry`).
    #[serde(default)]
    pub held: Vec<crate::round::hold::HeldTable>,
}

/// The daemon holding a sync's lease, from its heartbeat row in `drover.leases`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseHolder {
    pub host: String,
    pub pid: i32,
    pub since: DateTime<Utc>,
}

impl SyncStatus {
    /// The status as a reader may see it: with the full error text when `trusted` (the
    /// request carried the API token), else with the redacted one.
    pub fn for_reader(mut self, trusted: bool) -> Self {
        for h in self
            .target_states
            .iter_mut()
            .flat_map(|t| t.held.iter_mut())
        {
            h.for_reader(trusted);
        }
        if trusted {
            if let Some(full) = self.last_error_full.take() {
                self.last_error = Some(full);
            }
            for t in &mut self.target_states {
                if let Some(full) = t.last_error_full.take() {
                    t.last_error = Some(full);
                }
            }
        }
        self
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusDoc {
    pub syncs: Vec<SyncStatus>,
}
