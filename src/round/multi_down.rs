//! A multi-master round goes on without the databases it cannot reach. A database whose
//! session failed with a connection error is left out of the following rounds: its own changes
//! wait in its delta tables, and the others' changes wait for it in theirs (the purge horizon
//! of every source is the smallest over its receivers, the missing one included, whose progress
//! does not move). Checking a dead server out of the pool takes the whole connect timeout, so a
//! left-out database is probed beside the rounds; once a probe answers, the next round takes it
//! back and it catches up both ways like any receiver that fell behind.

use std::collections::HashMap;
use std::time::Instant;

use futures::FutureExt;
use tokio::task::JoinHandle;

use crate::pg::connect::checkout;
use crate::pg::error::{ErrorKind, PgError};
use crate::pg::Pool;
use crate::round::side::{SourceSide, TargetSide};

/// The databases of a multi-master sync that are left out of its rounds, by name.
#[derive(Debug, Default)]
pub struct Down {
    dbs: HashMap<String, Gone>,
}

#[derive(Debug)]
struct Gone {
    /// The connection error that left it out (redacted: no row values).
    error: String,
    since: Instant,
    /// A probe in flight: true when it reached the database.
    probe: Option<JoinHandle<bool>>,
}

/// The part of the sync a round runs on, and what it leaves out.
pub struct Live {
    pub sources: Vec<SourceSide>,
    pub databases: Vec<TargetSide>,
    /// Each left-out database with the error its status shows.
    pub left_out: Vec<PgError>,
}

impl Down {
    /// Leaves the database of `e` out of the next rounds when `e` is a connection failure;
    /// true when it did.
    pub fn note(&mut self, e: &PgError) -> bool {
        if e.kind() != ErrorKind::Connection {
            return false;
        }
        let name = e.database().to_string();
        self.dbs.entry(name).or_insert_with(|| {
            tracing::warn!(database = %e.database(), error = %e.redacted(), "unreachable: left out of the multi-master rounds until it answers; the others go on");
            Gone {
                error: e.redacted(),
                since: Instant::now(),
                probe: None,
            }
        });
        true
    }

    /// Splits the sync into the databases this round uses and those still unreachable;
    /// starts a probe for each of the latter that has none in flight.
    pub fn live(&mut self, sources: &[SourceSide], databases: &[TargetSide]) -> Live {
        let mut left_out = Vec::new();
        for d in databases {
            let Some(g) = self.dbs.get_mut(&d.name) else {
                continue;
            };
            let answered = g.probe.as_mut().and_then(|p| p.now_or_never());
            match answered {
                Some(Ok(true)) => {
                    tracing::info!(database = %d.name, "reachable again: back in the multi-master rounds");
                    self.dbs.remove(&d.name);
                    continue;
                }
                Some(_) => g.probe = None,
                None => {}
            }
            if g.probe.is_none() {
                g.probe = Some(tokio::spawn(probe(d.pool.clone(), d.name.clone())));
            }
            left_out.push(PgError::Pool {
                database: d.name.clone(),
                message: format!(
                    "unreachable for {} s ({}): left out of the rounds, the other masters go on; its changes and theirs for it wait in the delta tables",
                    g.since.elapsed().as_secs(),
                    g.error
                ),
            });
        }
        let out = |n: &str| self.dbs.contains_key(n);
        Live {
            sources: (sources.iter())
                .filter(|s| !out(&s.name))
                .cloned()
                .collect(),
            databases: (databases.iter())
                .filter(|d| !out(&d.name))
                .cloned()
                .collect(),
            left_out,
        }
    }
}

/// One session and one statement: the database answers again.
async fn probe(pool: Pool, name: String) -> bool {
    match checkout(&pool, &name).await {
        Ok(c) => c.simple_query("SELECT 1").await.is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connection_failures_leave_a_database_out() {
        let mut d = Down::default();
        assert!(!d.note(&PgError::install("b", "no progress row")));
        let gone = PgError::Pool {
            database: "c".into(),
            message: "timed out waiting for a connection".into(),
        };
        assert!(d.note(&gone));
        assert!(d.dbs.contains_key("c") && !d.dbs.contains_key("b"));
    }
}
