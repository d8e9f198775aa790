//! The DDL drover installs, as text: catalog tables, one delta table per captured table, its
//! capture function and triggers. Everything is generated from quoted identifiers.

use crate::pg::ident::{quote_ident, quote_literal, TableName};
use crate::pg::schema::Column;

/// Bumped when the layout of the `drover` schema changes.
pub const SCHEMA_VERSION: &str = "1";

/// The channel capture triggers notify and the daemon listens on.
pub const NOTIFY_CHANNEL: &str = "drover";

/// The doorbell: an advisory lock (two-int key space, per database) that a daemon's LISTEN
/// session holds while it waits for changes. Capture triggers notify only while it is held:
/// a notifying transaction's commit takes a database-wide lock (PreCommit_Notify), which
/// serializes the commits (and WAL flushes) of every writer, so under load, while the daemon
/// runs rounds back to back anyway, writers skip the NOTIFY. See `actors::doorbell`.
pub const DOORBELL_KEY: (i32, i32) = (0x6472_6f76, 1); // "drov", 1

/// Progress that means "nothing applied": a snapshot in which no transaction is visible.
pub const NOTHING_APPLIED: &str = "1:1:";

/// Which triggers call the capture function on the captured table itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTable {
    /// Statement triggers with transition tables.
    Statement,
    /// A row trigger.
    Row,
    /// A partitioned table (`partitions`): statement triggers, as on each of its partitions;
    /// its TRUNCATE trigger fires BEFORE, so ahead of the leaves' own.
    Partitioned,
}

impl OnTable {
    /// The capture function's body is the statement one unless a row trigger calls it.
    pub(crate) fn body_mode(self) -> CaptureMode {
        match self {
            OnTable::Row => CaptureMode::Row,
            _ => CaptureMode::Statement,
        }
    }
}

impl From<CaptureMode> for OnTable {
    fn from(mode: CaptureMode) -> OnTable {
        match mode {
            CaptureMode::Statement => OnTable::Statement,
            CaptureMode::Row => OnTable::Row,
        }
    }
}

/// Moves every receiver's purge horizon of a table (`$1`) past the changes a delta table
/// rebuild dropped: run after the DROP, whose lock waited for every writer of the old delta
/// table, so their transaction ids are all below this snapshot's xmax. Progress below it
/// then stops the table until a copy (see `round::rewind`).
pub const HORIZON_PAST_DROPPED: &str = "UPDATE drover.consumers SET \
     horizon = greatest(horizon, txid_snapshot_xmax(txid_current_snapshot())), updated_at = now() \
     WHERE table_name = $1";

/// How changes are captured on a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureMode {
    /// One trigger call per statement reading transition tables (PostgreSQL 10+).
    Statement,
    /// One trigger call per row (older servers).
    Row,
}

impl CaptureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMode::Statement => "statement",
            CaptureMode::Row => "row",
        }
    }
}

/// Catalog tables, created on every database drover touches.
pub fn catalog() -> String {
    format!(
        "CREATE SCHEMA IF NOT EXISTS drover;
CREATE TABLE IF NOT EXISTS drover.meta (key text PRIMARY KEY, value text NOT NULL);
INSERT INTO drover.meta VALUES ('schema_version', {v}) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
CREATE TABLE IF NOT EXISTS drover.tables (
    id serial PRIMARY KEY,
    table_name text NOT NULL UNIQUE,
    schema_name text NOT NULL,
    rel_name text NOT NULL,
    delta_name text NOT NULL UNIQUE,
    key_columns text[] NOT NULL,
    key_types text[] NOT NULL,
    capture text NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS drover.consumers (
    sync text NOT NULL,
    target text NOT NULL,
    table_name text NOT NULL,
    horizon bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sync, target, table_name));
CREATE TABLE IF NOT EXISTS drover.progress (
    sync text NOT NULL,
    source text NOT NULL,
    table_name text NOT NULL,
    snapshot text NOT NULL DEFAULT {nothing},
    applied_at timestamptz,
    PRIMARY KEY (sync, source, table_name));
ALTER TABLE drover.progress ADD COLUMN IF NOT EXISTS initial_copy text;
ALTER TABLE drover.progress ADD COLUMN IF NOT EXISTS source_identity text;
CREATE TABLE IF NOT EXISTS drover.conflicts (
    id bigserial PRIMARY KEY,
    sync text NOT NULL,
    table_name text NOT NULL,
    key jsonb NOT NULL,
    winner text,
    strategy text NOT NULL,
    versions jsonb NOT NULL,
    resolved_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS drover.leases (
    sync text PRIMARY KEY,
    host text NOT NULL,
    pid int NOT NULL,
    backend_pid int NOT NULL,
    since timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL);
ALTER TABLE drover.leases ADD COLUMN IF NOT EXISTS instance text;
CREATE TABLE IF NOT EXISTS drover.lease_epoch (
    sync text PRIMARY KEY,
    epoch bigint NOT NULL,
    taken_at timestamptz NOT NULL);
",
        v = quote_literal(SCHEMA_VERSION),
        nothing = quote_literal(NOTHING_APPLIED),
    ) + super::catalog::PARTITIONS
        + super::apply_errors::CATALOG
        + super::secret::CREATE
        + super::catalog::SYNC_PAUSE
        + super::catalog::DDL_LOG
        + super::catalog::DELTA_COLUMNS
}

/// Names of the objects that capture one table, from its catalog id.
pub struct CaptureObjects {
    pub delta: String,
    pub delta_quoted: String,
    pub function_quoted: String,
    /// What the TRUNCATE triggers of a partitioned table's leaves call (`partitions`).
    pub leaf_function_quoted: String,
}

impl CaptureObjects {
    pub fn for_id(id: i32) -> CaptureObjects {
        let delta = format!("delta_{id}");
        CaptureObjects {
            delta_quoted: format!("drover.{}", quote_ident(&delta)),
            function_quoted: format!("drover.{}", quote_ident(&format!("capture_{id}"))),
            leaf_function_quoted: format!(
                "drover.{}",
                quote_ident(&format!("capture_{id}_partition_truncate"))
            ),
            delta,
        }
    }
}

const TRIGGERS: [&str; 5] = [
    "drover_capture_ins",
    "drover_capture_upd",
    "drover_capture_del",
    "drover_capture_row",
    "drover_capture_trunc",
];

/// Drops every capture trigger drover may have put on a table.
pub fn drop_triggers(table: &TableName) -> String {
    TRIGGERS
        .iter()
        .map(|t| {
            format!(
                "DROP TRIGGER IF EXISTS {} ON {};\n",
                quote_ident(t),
                table.quoted()
            )
        })
        .collect()
}

/// The statements every capture function shares.
pub(crate) struct Pieces {
    /// The writer's transaction id and the change time.
    pub stamp: &'static str,
    /// Records a TRUNCATE.
    pub truncate: String,
    /// Writes made by drover's own apply transactions carry drover.origin set to the
    /// database's secret: not captured again.
    pub guard: &'static str,
    /// Wakes the daemon when it waits for changes (the doorbell lock is held); identical
    /// notifications of one transaction are merged.
    pub notify: String,
}

impl Pieces {
    pub(crate) fn new(delta: &str) -> Pieces {
        let stamp = "txid_current(), clock_timestamp()";
        Pieces {
            stamp,
            truncate: format!(
                "INSERT INTO {delta} (drover_xid, drover_changed_at, drover_truncate) VALUES ({stamp}, true);"
            ),
            guard: super::secret::GUARD,
            notify: ring_doorbell(),
        }
    }
}

/// PL/pgSQL that notifies only while a daemon holds the doorbell (a shared try-lock fails).
fn ring_doorbell() -> String {
    let (a, b) = DOORBELL_KEY;
    format!(
        "IF pg_try_advisory_lock_shared({a}, {b}) THEN PERFORM pg_advisory_unlock_shared({a}, {b}); \
         ELSE PERFORM pg_notify({}, ''); END IF;",
        quote_literal(NOTIFY_CHANNEL)
    )
}

/// The delta table: the key columns, the writer's transaction id and the change time.
pub fn create_delta(objects: &CaptureObjects, key: &[&Column]) -> String {
    let cols: Vec<String> = key
        .iter()
        .map(|c| format!("{} {}", quote_ident(&c.name), c.type_name))
        .collect();
    format!(
        "CREATE TABLE {delta} ({cols}{sep}drover_xid bigint NOT NULL, \
         drover_changed_at timestamptz NOT NULL, drover_truncate boolean NOT NULL DEFAULT false);
CREATE INDEX ON {delta} (drover_xid);
",
        delta = objects.delta_quoted,
        cols = cols.join(", "),
        sep = if cols.is_empty() { "" } else { ", " },
    )
}

/// The capture function and its triggers for one table.
pub fn create_capture(
    table: &TableName,
    objects: &CaptureObjects,
    key: &[&Column],
    on: OnTable,
) -> String {
    let keys: Vec<String> = key.iter().map(|c| quote_ident(&c.name)).collect();
    let klist = keys.join(", ");
    let delta = &objects.delta_quoted;
    let insert = format!("INSERT INTO {delta} ({klist}, drover_xid, drover_changed_at)");
    let Pieces {
        stamp,
        truncate,
        guard,
        notify,
    } = Pieces::new(delta);
    let body = match on.body_mode() {
        CaptureMode::Statement => format!(
            "BEGIN
  {guard}
  IF TG_OP = 'INSERT' THEN
    {insert} SELECT {klist}, {stamp} FROM drover_new;
  ELSIF TG_OP = 'UPDATE' THEN
    {insert} SELECT {klist}, {stamp} FROM (SELECT {klist} FROM drover_new UNION SELECT {klist} FROM drover_old) AS k;
  ELSIF TG_OP = 'DELETE' THEN
    {insert} SELECT {klist}, {stamp} FROM drover_old;
  ELSE
    {truncate}
  END IF;
  IF FOUND THEN {notify} END IF;
  RETURN NULL;
END"
        ),
        CaptureMode::Row => {
            let new_vals: Vec<String> = keys.iter().map(|k| format!("NEW.{k}")).collect();
            let old_vals: Vec<String> = keys.iter().map(|k| format!("OLD.{k}")).collect();
            let (nv, ov) = (new_vals.join(", "), old_vals.join(", "));
            format!(
                "BEGIN
  {guard}
  IF TG_OP = 'TRUNCATE' THEN
    {truncate}
  ELSE
    IF TG_OP <> 'DELETE' THEN
      {insert} VALUES ({nv}, {stamp});
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND ROW({ov}) IS DISTINCT FROM ROW({nv})) THEN
      {insert} VALUES ({ov}, {stamp});
    END IF;
  END IF;
  {notify}
  RETURN NULL;
END"
            )
        }
    };
    capture_function(table, objects, &body, on)
}

/// `CREATE FUNCTION` with `body`, and the triggers that call it. The function runs as its owner
/// (the role that ran `drover install`), so application roles need no rights on the `drover`
/// schema; its search_path is pinned and every name in it is qualified.
pub(crate) fn capture_function(
    table: &TableName,
    objects: &CaptureObjects,
    body: &str,
    on: OnTable,
) -> String {
    let f = &objects.function_quoted;
    let t = table.quoted();
    let mut sql = format!(
        "CREATE OR REPLACE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql \
         SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $drover$\n{body}\n$drover$;\n\
         REVOKE ALL ON FUNCTION {f}() FROM PUBLIC;\n"
    );
    sql.push_str(&drop_triggers(table));
    match on {
        OnTable::Statement | OnTable::Partitioned => sql.push_str(&statement_triggers(&t, f)),
        OnTable::Row => {
            sql.push_str(&format!(
                "CREATE TRIGGER drover_capture_row AFTER INSERT OR UPDATE OR DELETE ON {t} FOR EACH ROW EXECUTE PROCEDURE {f}();\n"
            ));
        }
    }
    let when = match on {
        OnTable::Partitioned => "BEFORE",
        _ => "AFTER",
    };
    sql.push_str(&format!(
        "CREATE TRIGGER drover_capture_trunc {when} TRUNCATE ON {t} FOR EACH STATEMENT EXECUTE PROCEDURE {f}();\n"
    ));
    sql
}

/// The statement triggers (INSERT, UPDATE, DELETE, with transition tables) on table `t` (quoted)
/// that call function `f` (quoted).
pub(crate) fn statement_triggers(t: &str, f: &str) -> String {
    format!(
        "CREATE TRIGGER drover_capture_ins AFTER INSERT ON {t} REFERENCING NEW TABLE AS drover_new FOR EACH STATEMENT EXECUTE PROCEDURE {f}();
CREATE TRIGGER drover_capture_upd AFTER UPDATE ON {t} REFERENCING OLD TABLE AS drover_old NEW TABLE AS drover_new FOR EACH STATEMENT EXECUTE PROCEDURE {f}();
CREATE TRIGGER drover_capture_del AFTER DELETE ON {t} REFERENCING OLD TABLE AS drover_old FOR EACH STATEMENT EXECUTE PROCEDURE {f}();
"
    )
}
