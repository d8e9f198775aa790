//! A multi-master round goes on without the databases it cannot reach. A database whose
//! session failed with a connection error is left out of the following rounds: its own changes
//! wait in its delta tables, and the others' changes wait for it in theirs (the purge horizon
//! of every source is the smallest over its receivers, the missing one included, whose progress
//! does not move). Checking a dead server out of the pool takes the whole connect timeout, so a
//! left-out database is probed beside the rounds; once a probe answers, the next round takes it
//! back and it catches up both ways like any receiver that fell behind.
//!
//! A master that was down when the plans were read is in no plan yet (`unprepared`): it is
//! probed the same way, and when it answers the round asks for the plans to be read again
//! (`Live::rejoin`), which checks it against them before it takes part.

use std::collections::HashMap;
use std::time::{Duration, Instant};

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
    /// Not prepared (down when the plans were read): its pool, for the probe.
    unprepared: Option<Pool>,
    /// No probe before then (a rejoin that failed other than by connection waits).
    not_before: Instant,
}

/// A rejoin refused for another cause than the connection (a schema that differs) is tried
/// again after this long, not every round.
const REJOIN_RETRY: Duration = Duration::from_secs(30);

/// The part of the sync a round runs on, and what it leaves out.
pub struct Live {
    pub sources: Vec<SourceSide>,
    pub databases: Vec<TargetSide>,
    /// Each left-out database with the error its status shows.
    pub left_out: Vec<PgError>,
    /// Unprepared masters that answer again: the plans are to be read with them.
    pub rejoin: Vec<String>,
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
                unprepared: None,
                not_before: Instant::now(),
            }
        });
        true
    }

    /// A master the plans were read without, because of `e`: left out and probed with `pool`
    /// until it answers.
    pub fn unprepared(&mut self, e: &PgError, pool: Pool) {
        let wait = match e.kind() {
            ErrorKind::Connection => Duration::ZERO,
            _ => REJOIN_RETRY,
        };
        let name = e.database().to_string();
        tracing::warn!(database = %name, error = %e.redacted(), "not prepared: left out of the multi-master rounds until it answers; the others go on");
        self.dbs.insert(
            name,
            Gone {
                error: e.redacted(),
                since: Instant::now(),
                probe: None,
                unprepared: Some(pool),
                not_before: Instant::now() + wait,
            },
        );
    }

    /// Splits the sync into the databases this round uses and those still unreachable;
    /// starts a probe for each of the latter that has none in flight.
    pub fn live(&mut self, sources: &[SourceSide], databases: &[TargetSide]) -> Live {
        let mut left_out = Vec::new();
        let mut rejoin = Vec::new();
        let unprepared = (self.dbs.iter())
            .filter_map(|(n, g)| Some((n.clone(), g.unprepared.clone()?)))
            .collect::<Vec<_>>();
        let known = databases.iter().map(|d| (d.name.clone(), d.pool.clone()));
        for (name, pool) in known.chain(unprepared) {
            let Some(g) = self.dbs.get_mut(&name) else {
                continue;
            };
            if g.answered(&name, pool) {
                if g.unprepared.is_some() {
                    // Out until the plans are read with it, and not probed meanwhile.
                    g.not_before = Instant::now() + REJOIN_RETRY;
                    rejoin.push(name.clone());
                } else {
                    tracing::info!(database = %name, "reachable again: back in the multi-master rounds");
                    self.dbs.remove(&name);
                    continue;
                }
            }
            left_out.push(g.left_out(&name));
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
            rejoin,
        }
    }
}

impl Gone {
    /// True once a probe reached the database; else starts one if none is in flight.
    fn answered(&mut self, name: &str, pool: Pool) -> bool {
        match self.probe.as_mut().and_then(|p| p.now_or_never()) {
            Some(Ok(true)) => {
                self.probe = None;
                return true;
            }
            Some(_) => self.probe = None,
            None => {}
        }
        if self.probe.is_none() && Instant::now() >= self.not_before {
            self.probe = Some(tokio::spawn(probe(pool, name.to_string())));
        }
        false
    }

    fn left_out(&self, name: &str) -> PgError {
        let what = match self.unprepared {
            Some(_) => "not prepared",
            None => "unreachable",
        };
        PgError::Pool {
            database: name.to_string(),
            message: format!(
                "{what} for {} s ({}): left out of the rounds, the other masters go on; its changes and theirs for it wait in the delta tables",
                self.since.elapsed().as_secs(),
                self.error
            ),
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
