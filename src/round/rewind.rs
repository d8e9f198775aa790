//! Sources and targets that move backwards. Progress is a source snapshot, so it holds only
//! while the source's transaction ids keep growing and the deltas it still needs exist:
//!
//! - A source restored to an earlier point, or failed over to a standby that had not received
//!   everything, hands out transaction ids again that targets have recorded as applied: their
//!   new changes would be skipped and purged. Caught by the round's snapshot being behind a
//!   target's progress, and by the source's identity (system identifier and timeline, recorded
//!   beside progress) changing, which also catches a failover whose ids have caught up.
//! - A target restored to an earlier point has progress below the source's purge horizon
//!   (`drover.consumers`): deltas it needs are gone. An install that rebuilds a delta table
//!   (the key changed) moves the horizon past the changes it dropped, which stops the table
//!   the same way until it is copied again.
//!
//! Each stops the target's rounds with an error saying what happened and what to do; nothing
//! is applied or purged meanwhile. `drover copy` (which records progress and identity afresh)
//! resumes; after a failover to an up-to-date standby, clearing the recorded identity does.

use std::collections::HashMap;

use tokio_postgres::GenericClient;

use crate::pg::error::PgError;
use crate::pg::ident::quote_literal;
use crate::round::snapshot::Snapshot;

/// The source's timeline, readable by any role (`pg_control_checkpoint()` and
/// `pg_control_system()` may be revoked from public on managed services).
const TIMELINE_SQL: &str = "substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)";

/// Stands for a system identifier the role may not read.
const UNKNOWN_SYSTEM: &str = "?";

/// What the daemon knows of each source's identity and of what targets recorded.
#[derive(Debug, Default)]
pub struct Identities {
    /// Per source: whether the role may call `pg_control_system()`.
    readable: HashMap<String, bool>,
    /// Per (source, target, table): the identity recorded with progress (None: not yet).
    recorded: HashMap<(String, String, String), Option<String>>,
    /// Per source: the identity read by the current round.
    current: HashMap<String, String>,
}

impl Identities {
    pub fn record(&mut self, source: &str, target: &str, table: &str, id: Option<String>) {
        self.recorded
            .insert((source.into(), target.into(), table.into()), id);
    }

    pub fn current(&self, source: &str) -> Option<&str> {
        self.current.get(source).map(String::as_str)
    }

    pub fn set_current(&mut self, source: &str, id: String) {
        self.current.insert(source.into(), id);
    }

    fn recorded(&self, source: &str, target: &str, table: &str) -> Option<&str> {
        self.recorded
            .get(&(source.into(), target.into(), table.into()))
            .and_then(|r| r.as_deref())
    }

    /// The identity's SQL once the source was asked whether its system identifier is
    /// readable (a round of its own asks); None before.
    pub fn known_sql(&self, source: &str) -> Option<String> {
        self.readable.get(source).map(|r| identity_sql(*r))
    }

    /// The SQL expression of the source's identity (`system/timeline`); asks the source once
    /// whether its system identifier is readable.
    pub async fn sql(
        &mut self,
        client: &impl GenericClient,
        source: &str,
    ) -> Result<String, PgError> {
        let readable = match self.readable.get(source) {
            Some(r) => *r,
            None => {
                let r = system_readable(client, source).await?;
                self.readable.insert(source.into(), r);
                r
            }
        };
        Ok(identity_sql(readable))
    }
}

fn identity_sql(readable: bool) -> String {
    let system = if readable {
        "(SELECT system_identifier::text FROM pg_control_system())".to_string()
    } else {
        quote_literal(UNKNOWN_SYSTEM)
    };
    format!("{system} || '/' || {TIMELINE_SQL}")
}

async fn system_readable(client: &impl GenericClient, source: &str) -> Result<bool, PgError> {
    let row = client
        .query_one(
            "SELECT has_function_privilege('pg_control_system()', 'EXECUTE')",
            &[],
        )
        .await
        .map_err(|e| PgError::query(source, "check access to pg_control_system()", e))?;
    Ok(row.get(0))
}

/// Reads the source's identity in one statement (for a copy).
pub async fn read_identity(client: &impl GenericClient, source: &str) -> Result<String, PgError> {
    let sql = identity_sql(system_readable(client, source).await?);
    let row = client
        .query_one(&format!("SELECT {sql}"), &[])
        .await
        .map_err(|e| PgError::query(source, "read the source's identity", e))?;
    Ok(row.get(0))
}

/// The same server history: timelines equal, and system identifiers equal where both known.
fn same_source(recorded: &str, current: &str) -> bool {
    let (rs, rt) = recorded
        .split_once('/')
        .unwrap_or((UNKNOWN_SYSTEM, recorded));
    let (cs, ct) = current.split_once('/').unwrap_or((UNKNOWN_SYSTEM, current));
    rt == ct && (rs == cs || rs == UNKNOWN_SYSTEM || cs == UNKNOWN_SYSTEM)
}

/// The purge horizons of a sync's receivers, read in the round's source snapshot.
pub fn horizons_sql(sync: &str) -> String {
    format!(
        "SELECT target, table_name, horizon FROM drover.consumers WHERE sync = {}",
        quote_literal(sync)
    )
}

/// Per (target, table): the purge horizon.
pub type Horizons = HashMap<(String, String), i64>;

pub fn parse_horizons(rows: &[tokio_postgres::SimpleQueryRow]) -> Horizons {
    rows.iter()
        .filter_map(|r| {
            let h = r.get(2)?.parse().ok()?;
            Some(((r.get(0)?.to_string(), r.get(1)?.to_string()), h))
        })
        .collect()
}

/// What one target's check needs.
pub struct Check<'a> {
    pub sync: &'a str,
    pub source: &'a str,
    pub target: &'a str,
    pub cur: &'a Snapshot,
    pub identities: &'a Identities,
    pub horizons: &'a Horizons,
}

/// Fails when the source moved back behind this target's progress, changed identity, or
/// purged deltas this target still needs. `tables` holds each table's name and progress.
pub fn check_target<'t>(
    c: &Check<'_>,
    tables: impl IntoIterator<Item = (&'t str, Snapshot)>,
) -> Result<(), PgError> {
    let current = c.identities.current(c.source);
    for (table, prev) in tables {
        if let (Some(rec), Some(cur)) = (c.identities.recorded(c.source, c.target, table), current)
        {
            if !same_source(rec, cur) {
                return Err(identity_changed(c, table, rec, cur));
            }
        }
        if c.cur.xmax() < prev.xmax() {
            return Err(source_behind(c, table, &prev));
        }
        let horizon = c
            .horizons
            .get(&(c.target.to_string(), table.to_string()))
            .copied()
            .unwrap_or(0);
        if prev.xmin() < horizon {
            return Err(deltas_purged(c, table, &prev, horizon));
        }
    }
    Ok(())
}

fn source_behind(c: &Check<'_>, table: &str, prev: &Snapshot) -> PgError {
    PgError::diverged(
        c.source,
        format!(
            "sync {sync}: the source's transaction ids went backwards (failover to a lagging \
             standby, or a restore): its snapshot {cur} is behind what target \"{target}\" \
             recorded as applied for {table} ({prev}); changes written now would be taken as \
             applied. Nothing is applied or purged. Run `drover verify {sync}`, then \
             `drover copy {sync}` to re-seed the target from the source as it is now",
            sync = c.sync,
            cur = c.cur.as_str(),
            target = c.target,
            prev = prev.as_str(),
        ),
    )
}

fn identity_changed(c: &Check<'_>, table: &str, rec: &str, cur: &str) -> PgError {
    PgError::diverged(
        c.source,
        format!(
            "sync {sync}: the source is not the server target \"{target}\" applied {table} \
             from: system/timeline was {rec}, is now {cur} (failover, or a point-in-time \
             restore). Nothing is applied or purged. If the new primary had every commit (a \
             synchronous standby), accept it on the target: UPDATE drover.progress SET \
             source_identity = NULL WHERE sync = {sync_l} AND source = {source_l}; otherwise \
             run `drover verify {sync}`, then `drover copy {sync}`",
            sync = c.sync,
            target = c.target,
            sync_l = quote_literal(c.sync),
            source_l = quote_literal(c.source),
        ),
    )
}

fn deltas_purged(c: &Check<'_>, table: &str, prev: &Snapshot, horizon: i64) -> PgError {
    PgError::diverged(
        c.target,
        format!(
            "sync {sync}: target \"{target}\" is behind what source \"{source}\" keeps for \
             {table}: its progress {prev} is below the purge horizon {horizon}, so changes it \
             needs were purged (the target was restored from a backup, or `drover install` \
             rebuilt the table's capture after its key changed). Nothing is applied to this \
             target. Run `drover copy {sync} --table {table}` (or `drover verify {sync}` first)",
            sync = c.sync,
            target = c.target,
            source = c.source,
            prev = prev.as_str(),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<'a>(ids: &'a Identities, h: &'a Horizons, cur: &'a Snapshot) -> Check<'a> {
        Check {
            sync: "s",
            source: "a",
            target: "b",
            cur,
            identities: ids,
            horizons: h,
        }
    }

    #[test]
    fn same_source_ignores_an_unreadable_system_id() {
        assert!(same_source("1/00000001", "1/00000001"));
        assert!(!same_source("1/00000001", "1/00000002"));
        assert!(!same_source("1/00000001", "2/00000001"));
        assert!(same_source("?/00000001", "2/00000001"));
        assert!(!same_source("?/00000001", "?/00000002"));
    }

    #[test]
    fn finds_each_way_of_moving_back() {
        let cur = Snapshot::parse("100:110:").unwrap();
        let mut ids = Identities::default();
        ids.set_current("a", "7/00000002".into());
        let mut h = Horizons::new();
        let ok = |s: &str| vec![("t", Snapshot::parse(s).unwrap())];
        assert!(check_target(&check(&ids, &h, &cur), ok("90:95:")).is_ok());
        let e = check_target(&check(&ids, &h, &cur), ok("120:130:")).unwrap_err();
        assert!(e.to_string().contains("went backwards"), "{e}");
        h.insert(("b".into(), "t".into()), 92);
        let e = check_target(&check(&ids, &h, &cur), ok("90:95:")).unwrap_err();
        assert!(e.to_string().contains("purged"), "{e}");
        ids.record("a", "b", "t", Some("7/00000001".into()));
        let e = check_target(&check(&ids, &h, &cur), ok("95:95:")).unwrap_err();
        assert!(e.to_string().contains("timeline"), "{e}");
        ids.record("a", "b", "t", None);
        assert!(check_target(&check(&ids, &h, &cur), ok("95:95:")).is_ok());
    }
}
