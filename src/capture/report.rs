//! What `drover install` did to one database, for the command's report.

use super::sql::CaptureMode;

/// What an install did to one database, for the command's report.
#[derive(Debug, Default)]
pub struct InstallReport {
    pub added: Vec<String>,
    pub kept: Vec<String>,
    pub rebuilt: Vec<String>,
    pub removed: Vec<String>,
    /// Partitions of already captured tables that this install captured (created or attached
    /// since the last install); the rows they held are sent.
    pub new_partitions: Vec<String>,
    /// Recorded partitions since detached or dropped: their tables are reloaded on targets.
    pub gone_partitions: Vec<String>,
    pub progress_rows: usize,
    pub capture: Option<CaptureMode>,
}
