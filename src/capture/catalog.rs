//! Catalog tables `drover install` creates beside the capture objects, defined here so the
//! install SQL (`sql::catalog`) needs nothing from the modules that read and write them.

/// `drover.sync_pause` (`crate::pause`): a stored pause; the daemon reads it on a sync's first
/// source.
pub const SYNC_PAUSE: &str = "
CREATE TABLE IF NOT EXISTS drover.sync_pause (
    sync text PRIMARY KEY,
    paused_by text NOT NULL,
    paused_at timestamptz NOT NULL DEFAULT now(),
    reason text NOT NULL DEFAULT '');
";

/// `drover.ddl_log` (`crate::ddl`): one row per database a `drover ddl` script ran on.
pub const DDL_LOG: &str = "
CREATE TABLE IF NOT EXISTS drover.ddl_log (
    id bigserial PRIMARY KEY,
    sync text NOT NULL,
    database text NOT NULL,
    databases text[] NOT NULL,
    ran_at timestamptz NOT NULL DEFAULT now(),
    ran_by text NOT NULL,
    script_sha256 text NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('ok', 'failed')),
    error text);
";

/// `drover.partitions` (`partition_list`): each captured partition tree as install recorded it;
/// created on every install, so existing installs get it on re-install.
pub const PARTITIONS: &str = "CREATE TABLE IF NOT EXISTS drover.partitions (
    table_name text NOT NULL,
    partition oid NOT NULL,
    partition_name text NOT NULL,
    PRIMARY KEY (table_name, partition));
";

/// Upgrades `drover.tables` of earlier installs: the delta columns recorded per table
/// (`increments`).
pub const DELTA_COLUMNS: &str = "ALTER TABLE drover.tables ADD COLUMN IF NOT EXISTS delta_columns text[] NOT NULL DEFAULT '{}';\n";
