//! Each master's clock offset from the daemon's. `latest` compares the masters' commit
//! clocks (`drover_changed_at`), so a master whose clock runs ahead wins ties it should lose.
//! The statement that opens a source's round snapshot also reads the server's
//! `clock_timestamp()`; the daemon's clock is read just before and just after it, and the
//! offset is the server's time minus the midpoint (the network's round trip bounds the error).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_postgres::Transaction;

use crate::pg::error::PgError;
use crate::round::plan::TablePlan;
use crate::round::snapshot::Snapshot;
use crate::round::source_snapshot;

/// The extra column of the snapshot statement: the server's clock, as unix seconds.
const SERVER_CLOCK: &str = "extract(epoch from clock_timestamp())::text";

/// Offsets above this many seconds (either way) are warned in the sync's status.
pub const WARN_SECS: f64 = 1.0;

/// Opens `source`'s round snapshot in `tx` (`source_snapshot`) and puts its clock offset in
/// `offsets` on the way (unless the answer had no readable clock).
pub async fn open_snapshot(
    tx: &Transaction<'_>,
    source: &str,
    tables: &[Arc<TablePlan>],
    offsets: &mut BTreeMap<String, f64>,
) -> Result<Snapshot, PgError> {
    let sql = source_snapshot::snapshot_sql("", source, tables, SERVER_CLOCK);
    let before = unix_now();
    let answer = (tx.simple_query(&sql).await)
        .map_err(|e| PgError::query(source, "read the source snapshot", e))?;
    let after = unix_now();
    let (cur, server) = source_snapshot::snapshot(source, tables, answer)?;
    if let Some(server) = server.and_then(|s| s.parse::<f64>().ok()) {
        offsets.insert(source.to_string(), offset(server, before, after));
    }
    Ok(cur)
}

/// The daemon's clock, as unix seconds.
fn unix_now() -> f64 {
    (SystemTime::now().duration_since(UNIX_EPOCH)).map_or(0.0, |d| d.as_secs_f64())
}

/// The server's clock minus the daemon's at the midpoint of the statement that read it.
fn offset(server: f64, before: f64, after: f64) -> f64 {
    server - (before + after) / 2.0
}

/// A warning for each database whose clock is off by more than [`WARN_SECS`].
pub fn warnings(offsets: &BTreeMap<String, f64>) -> Vec<String> {
    (offsets.iter())
        .filter(|(_, o)| o.abs() > WARN_SECS)
        .map(|(db, o)| {
            format!(
                "clock of database {db:?} is {:.3} s {} the daemon's: conflict_strategy \"latest\" \
                 favours the master whose clock runs ahead; synchronize the clocks (NTP)",
                o.abs(),
                if *o > 0.0 { "ahead of" } else { "behind" }
            )
        })
        .collect()
}

/// Whether a status warning is one of [`warnings`] (replaced at every round).
pub fn is_clock_warning(w: &str) -> bool {
    w.starts_with("clock of database ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_is_taken_at_the_midpoint_of_the_statement() {
        // The statement took 0.2 s; the server read its clock 2.5 s ahead of the midpoint.
        let o = offset(1_000_002.6, 1_000_000.0, 1_000_000.2);
        assert!((o - 2.5).abs() < 1e-6, "{o}");
        let behind = offset(999_998.0, 1_000_000.0, 1_000_000.0);
        assert!((behind + 2.0).abs() < 1e-6, "{behind}");
    }

    #[test]
    fn only_offsets_over_a_second_are_warned() {
        let offsets = BTreeMap::from([
            ("a".to_string(), 0.004),
            ("b".to_string(), -1.5),
            ("c".to_string(), 1.0),
            ("d".to_string(), 3.25),
        ]);
        let w = warnings(&offsets);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("\"b\" is 1.500 s behind"), "{}", w[0]);
        assert!(w[1].contains("\"d\" is 3.250 s ahead of"), "{}", w[1]);
        assert!(w.iter().all(|x| is_clock_warning(x)));
    }
}
