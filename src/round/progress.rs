//! `drover.progress` on a receiving database: one row per (sync, source, table) holding the
//! source snapshot applied there. This module reads the rows into the cache a target keeps
//! between rounds, builds the statements an apply locks, checks and moves them with, and holds
//! the cache itself.

use std::collections::HashMap;
use std::sync::Arc;

use crate::pg::connect::checkout;
use crate::pg::error::PgError;
use crate::pg::ident::quote_literal;
use crate::round::plan::TablePlan;
use crate::round::side::TargetSide;
use crate::round::snapshot::Snapshot;

/// Progress of one sync, per (source, target, table), as last read from or written to targets.
#[derive(Debug, Default)]
pub struct ProgressCache {
    entries: HashMap<(String, String, String), Snapshot>,
    loaded: HashMap<(String, String), bool>,
    /// Sequence values last sent to each target.
    pub sequences: crate::round::sequences::SentValues,
    /// Tables whose changes the next round reads in its first flight.
    pub busy: crate::round::small::Busy,
    /// Targets whose next round applies the whole backlog (see `backlog`).
    pub unbounded: crate::round::backlog::Unbounded,
    /// Source identities, current and as recorded with progress.
    pub identity: crate::round::rewind::Identities,
    /// Multi-master: databases left out of the rounds while unreachable.
    pub down: crate::round::multi_down::Down,
}

impl ProgressCache {
    pub fn is_loaded(&self, source: &str, target: &str) -> bool {
        self.loaded
            .get(&(source.to_string(), target.to_string()))
            .copied()
            .unwrap_or(false)
    }

    pub fn get(&self, source: &str, target: &str, table: &str) -> Snapshot {
        self.entries
            .get(&(source.to_string(), target.to_string(), table.to_string()))
            .cloned()
            .unwrap_or_else(Snapshot::nothing_applied)
    }

    pub fn set(&mut self, source: &str, target: &str, table: &str, snap: Snapshot) {
        self.entries.insert(
            (source.to_string(), target.to_string(), table.to_string()),
            snap,
        );
    }

    pub fn mark_loaded(&mut self, source: &str, target: &str, loaded: bool) {
        self.loaded
            .insert((source.to_string(), target.to_string()), loaded);
    }

    /// Forget a pair after an error, so the next round re-reads what the target really has.
    pub fn invalidate(&mut self, source: &str, target: &str) {
        self.mark_loaded(source, target, false);
    }
}

/// Reads a target's progress rows for this sync and source into the cache.
pub(crate) async fn load_progress(
    sync: &str,
    source: &str,
    target: &TargetSide,
    cache: &mut ProgressCache,
) -> Result<(), PgError> {
    let client = checkout(&target.pool, &target.name).await?;
    let rows = client
        .query(
            "SELECT table_name, snapshot, source_identity FROM drover.progress WHERE sync = $1 AND source = $2",
            &[&sync, &source],
        )
        .await
        .map_err(|e| {
            PgError::query(&target.name, "read progress (has this version's drover install run?)", e)
        })?;
    for r in rows {
        let table: String = r.get(0);
        let snap: String = r.get(1);
        cache
            .identity
            .record(source, &target.name, &table, r.get(2));
        let snap = Snapshot::parse(&snap).ok_or_else(|| {
            PgError::protocol(
                &target.name,
                format!("drover.progress holds a bad snapshot {snap:?} for {table}"),
            )
        })?;
        cache.set(source, &target.name, &table, snap);
    }
    cache.mark_loaded(source, &target.name, true);
    Ok(())
}

/// The statements that open an apply, sent in one flight in this order: the session settings,
/// the progress lock (its rows are what `check_progress` reads: a helper function named by
/// `replica_role` returns a row of its own) and the progress update.
pub(crate) struct ProgressSql {
    pub session: String,
    pub lock: String,
    pub update: String,
}

/// Whose progress an apply locks, checks and moves: one sync's rows for one source.
pub(crate) struct Rows<'a> {
    pub sync: &'a str,
    pub source: &'a str,
    pub tables: &'a [Arc<TablePlan>],
    /// The source's identity, recorded with the progress (`rewind`).
    pub identity: Option<&'a str>,
}

/// `session` opens the apply; progress moves to `cur`.
pub(crate) fn progress_sql(p: &Rows<'_>, session: String, cur: &Snapshot) -> ProgressSql {
    let (sync, source) = (quote_literal(p.sync), quote_literal(p.source));
    let names: Vec<String> = p.tables.iter().map(|t| quote_literal(&t.display)).collect();
    ProgressSql {
        session,
        lock: format!(
            "SELECT table_name, snapshot FROM drover.progress WHERE sync = {sync} AND source = {source} FOR UPDATE"
        ),
        update: format!(
            "UPDATE drover.progress SET snapshot = {snap}, applied_at = now(){identity} \
             WHERE sync = {sync} AND source = {source} AND table_name IN ({names})",
            snap = quote_literal(cur.as_str()),
            names = names.join(", "),
            identity = match p.identity {
                Some(id) => format!(", source_identity = {}", quote_literal(id)),
                None => String::new(),
            },
        ),
    }
}
/// Checks the progress rows locked at the start of the apply against the cache: if another
/// daemon applied meanwhile, this round stops before writing anything (the rollback also undoes
/// the progress update sent with the lock).
pub(crate) fn check_progress<'s>(
    rows: &[tokio_postgres::SimpleQueryRow],
    p: &Rows<'_>,
    dst: &str,
    prevs: impl IntoIterator<Item = &'s Snapshot>,
) -> Result<(), PgError> {
    let found: HashMap<&str, &str> = rows
        .iter()
        .filter_map(|r| Some((r.get(0)?, r.get(1)?)))
        .collect();
    for (t, prev) in p.tables.iter().zip(prevs) {
        match found.get(t.display.as_str()) {
            None => {
                return Err(PgError::install(
                    dst,
                    format!("no progress row for table {} of sync {}: run drover install", t.display, p.sync),
                ))
            }
            Some(s) if *s != prev.as_str() => {
                return Err(PgError::concurrency(
                    dst,
                    format!(
                        "progress of table {} moved under this daemon (another daemon running this sync?): will re-read",
                        t.display
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Multi-master: moves `dst`'s progress from each source of `from` (source, its round
/// snapshot, its identity) for every table, in the apply transaction.
pub(crate) async fn record_from(
    ttx: &tokio_postgres::Transaction<'_>,
    dst: &str,
    sync: &str,
    tables: &[Arc<TablePlan>],
    from: &[(&str, &Snapshot, Option<&str>)],
) -> Result<(), PgError> {
    let names: Vec<&str> = tables.iter().map(|t| t.display.as_str()).collect();
    for (source, snap, identity) in from {
        ttx.execute(
            "UPDATE drover.progress SET snapshot = $1, applied_at = now(), \
             source_identity = coalesce($5, source_identity) \
             WHERE sync = $2 AND source = $3 AND table_name = ANY($4)",
            &[&snap.as_str(), &sync, source, &names, identity],
        )
        .await
        .map_err(|e| PgError::query(dst, "record progress", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_defaults_to_nothing_applied() {
        let mut c = ProgressCache::default();
        assert_eq!(c.get("a", "b", "t"), Snapshot::nothing_applied());
        c.set("a", "b", "t", Snapshot::parse("5:9:").unwrap());
        assert_eq!(c.get("a", "b", "t").xmin(), 5);
        assert!(!c.is_loaded("a", "b"));
        c.mark_loaded("a", "b", true);
        assert!(c.is_loaded("a", "b"));
        c.invalidate("a", "b");
        assert!(!c.is_loaded("a", "b"));
    }
}
