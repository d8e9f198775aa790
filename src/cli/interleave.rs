//! `sequence_mode = "interleave"`: in a multi-master sync every master's sequences count in
//! steps of the sync's `sequence_step`, master i (in `sources` order, from 0) from values
//! ≡ i + 1 (mod step), so no two masters ever hand out the same value and nothing needs
//! copying between them. `install` sets this up, never moving a sequence backwards;
//! `check` verifies it. Receive-only targets' sequences are left alone.

use std::collections::{BTreeMap, HashMap};

use tokio_postgres::Client;

use crate::config::Config;
use crate::pg::ident::{quote_literal, TableName};
use crate::pg::Endpoint;
use crate::topology::SyncPlan;

/// One master's sequence as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqState {
    pub increment: i64,
    pub max: i64,
    /// The value the next `nextval` returns (for an ascending sequence; every value
    /// handed out so far is below it).
    pub next: i64,
}

/// The residue class master `index` takes.
pub fn residue(index: usize, step: i64) -> i64 {
    (index as i64 + 1).rem_euclid(step)
}

/// The smallest value ≥ `from` that is ≡ `r` (mod `step`).
pub fn first_in_class(from: i64, r: i64, step: i64) -> i64 {
    from + (r - from).rem_euclid(step)
}

/// Whether the masters' sequences (in `sources` order) interleave: each counts by `step`
/// and no two share a residue.
pub fn interleaved(states: &[SeqState], step: i64) -> bool {
    let mut seen = std::collections::BTreeSet::new();
    states
        .iter()
        .all(|s| s.increment == step && seen.insert(s.next.rem_euclid(step)))
}

/// Where each master's sequence starts: `None` for all when they already interleave (install
/// is idempotent). Otherwise every master moves to the first value of its class at or above
/// the largest next value of any master, so no value handed out before, on any master, comes
/// again, and no sequence moves backwards. Errors name the master whose sequence cannot.
pub fn starts(
    masters: &[(String, SeqState)],
    step: i64,
) -> Result<Vec<Option<i64>>, (String, String)> {
    if let Some((db, _)) = masters.iter().find(|(_, s)| s.increment < 0) {
        return Err((
            db.clone(),
            "counts downwards; sequence_mode = \"interleave\" supports ascending sequences only"
                .into(),
        ));
    }
    let states: Vec<SeqState> = masters.iter().map(|(_, s)| *s).collect();
    if interleaved(&states, step) {
        return Ok(vec![None; masters.len()]);
    }
    let floor = states.iter().map(|s| s.next).max().unwrap_or(1);
    let mut out = Vec::with_capacity(masters.len());
    for (i, (db, s)) in masters.iter().enumerate() {
        let start = floor
            .checked_add(step)
            .map(|_| first_in_class(floor, residue(i, step), step))
            .filter(|v| *v <= s.max)
            .ok_or_else(|| {
                (
                    db.clone(),
                    format!(
                        "has no value left in its class at or above {floor} (MAXVALUE {})",
                        s.max
                    ),
                )
            })?;
        out.push(Some(start));
    }
    Ok(out)
}

async fn read_state(client: &Client, seq: &TableName) -> Result<SeqState, tokio_postgres::Error> {
    let row = client
        .query_one(
            &format!(
                "SELECT p.seqincrement, p.seqmax, q.last_value, q.is_called \
                 FROM pg_catalog.pg_sequence p, {} q WHERE p.seqrelid = {}::regclass",
                seq.quoted(),
                quote_literal(&seq.quoted())
            ),
            &[],
        )
        .await?;
    let increment: i64 = row.get(0);
    let last: i64 = row.get(2);
    let called: bool = row.get(3);
    Ok(SeqState {
        increment,
        max: row.get(1),
        next: if called {
            last.saturating_add(increment)
        } else {
            last
        },
    })
}

/// Sets `seq` on one master to count by `step` from `start`, in one transaction.
async fn apply(client: &mut Client, seq: &TableName, step: i64, start: i64) -> anyhow::Result<()> {
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "ALTER SEQUENCE {} INCREMENT BY {step}",
        seq.quoted()
    ))
    .await?;
    // Re-read under the ALTER's lock: a nextval since the first read must not be undone.
    let now = read_state(tx.client(), seq).await?;
    let start = start.max(first_in_class(now.next, start.rem_euclid(step), step));
    tx.execute(
        &format!(
            "SELECT setval({}::regclass, $1, false)",
            quote_literal(&seq.quoted())
        ),
        &[&start],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// `drover install`: interleaves every interleaving sync's sequences on its masters. Prints one
/// line per sequence; returns how many failed.
pub async fn install(config: &Config, syncs: &[SyncPlan]) -> usize {
    let mut failed = 0;
    let mut clients: HashMap<String, Client> = HashMap::new();
    for sync in syncs
        .iter()
        .filter(|s| s.interleaves() && !s.sequences.is_empty())
    {
        for db in &sync.sources {
            if clients.contains_key(db) {
                continue;
            }
            let conn = match config.databases.get(db) {
                Some(d) => match Endpoint::new(db, d) {
                    Ok(ep) => ep.connect("install").await,
                    Err(e) => Err(e),
                },
                None => continue,
            };
            match conn {
                Ok(c) => {
                    clients.insert(db.clone(), c);
                }
                Err(e) => println!("{db}: cannot interleave sequences: {e}"),
            }
        }
        for seq in &sync.sequences {
            if let Err(e) = install_one(sync, seq, &mut clients).await {
                failed += 1;
                println!("sync {}: sequence {seq}: NOT interleaved: {e}", sync.name);
            }
        }
    }
    failed
}

async fn install_one(
    sync: &SyncPlan,
    seq: &TableName,
    clients: &mut HashMap<String, Client>,
) -> anyhow::Result<()> {
    let mut masters = Vec::new();
    for db in &sync.sources {
        let client = clients.get(db).ok_or_else(|| {
            anyhow::anyhow!("database \"{db}\" is unreachable; every master is needed, run install again when it is up")
        })?;
        let state = read_state(client, seq)
            .await
            .map_err(|e| anyhow::anyhow!("database \"{db}\": read the sequence: {e}"))?;
        masters.push((db.clone(), state));
    }
    let step = sync.sequence_step;
    let starts = starts(&masters, step)
        .map_err(|(db, why)| anyhow::anyhow!("database \"{db}\": the sequence {why}"))?;
    if starts.iter().all(Option::is_none) {
        println!(
            "sync {}: sequence {seq}: already interleaved, step {step}",
            sync.name
        );
        return Ok(());
    }
    for ((db, _), start) in masters.iter().zip(&starts) {
        let Some(start) = start else { continue };
        let client = clients.get_mut(db).expect("read above");
        apply(client, seq, step, *start).await.map_err(|e| {
            anyhow::anyhow!("database \"{db}\": {e} (the sequence's owner may ALTER it)")
        })?;
    }
    let shown: Vec<String> = masters
        .iter()
        .enumerate()
        .map(|(i, (db, _))| format!("{db} ≡ {}", residue(i, step)))
        .collect();
    println!(
        "sync {}: sequence {seq}: interleaved, INCREMENT BY {step}: {}",
        sync.name,
        shown.join(", ")
    );
    Ok(())
}

/// `drover check`: what is wrong with an interleaving sync's sequence `seq` (empty when
/// nothing), each problem with its fix.
pub async fn check(
    sync: &SyncPlan,
    seq: &TableName,
    clients: &HashMap<String, Client>,
) -> Vec<String> {
    let step = sync.sequence_step;
    let fix = "run `drover install` to set it (it never moves a sequence backwards)";
    let mut problems = Vec::new();
    let mut residues: BTreeMap<i64, &str> = BTreeMap::new();
    for db in &sync.sources {
        let Some(client) = clients.get(db) else {
            continue;
        };
        let s = match read_state(client, seq).await {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!(
                    "database \"{db}\": sequence {seq}: cannot read it: {e}"
                ));
                continue;
            }
        };
        if s.increment != step {
            problems.push(format!(
                "database \"{db}\": sequence {seq} counts by {}, but sync {} interleaves its masters' sequences with INCREMENT BY {step}: {fix}",
                s.increment, sync.name
            ));
            continue;
        }
        let r = s.next.rem_euclid(step);
        if let Some(other) = residues.insert(r, db) {
            problems.push(format!(
                "databases \"{other}\" and \"{db}\": sequence {seq} hands out values ≡ {r} (mod {step}) on both, so their keys collide: {fix}"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(increment: i64, next: i64) -> SeqState {
        SeqState {
            increment,
            max: i64::MAX,
            next,
        }
    }

    fn m(states: &[SeqState]) -> Vec<(String, SeqState)> {
        states
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("m{i}"), *s))
            .collect()
    }

    #[test]
    fn classes_and_first_values() {
        assert_eq!((residue(0, 2), residue(1, 2), residue(2, 3)), (1, 0, 0));
        assert_eq!(residue(1, 4), 2);
        assert_eq!(first_in_class(10, 1, 2), 11);
        assert_eq!(first_in_class(11, 1, 2), 11);
        assert_eq!(first_in_class(-5, 0, 3), -3);
    }

    #[test]
    fn fresh_sequences_start_at_their_class_past_every_used_value() {
        // a used 1..41 (next 42), b is fresh: both jump past 42, never backwards.
        let got = starts(&m(&[st(1, 42), st(1, 1)]), 2).unwrap();
        assert_eq!(got, [Some(43), Some(42)]);
        let got = starts(&m(&[st(1, 1), st(1, 1), st(1, 1)]), 4).unwrap();
        assert_eq!(got, [Some(1), Some(2), Some(3)]);
    }

    #[test]
    fn interleaved_sequences_are_left_alone_and_one_reset_moves_all() {
        assert_eq!(
            starts(&m(&[st(2, 101), st(2, 58)]), 2).unwrap(),
            [None, None]
        );
        // b was reset to INCREMENT BY 1 and ran ahead to 300: a must not hand out 101..299.
        assert_eq!(
            starts(&m(&[st(2, 101), st(1, 300)]), 2).unwrap(),
            [Some(301), Some(300)]
        );
        // Same residue on both: not interleaved.
        assert!(!interleaved(&[st(2, 101), st(2, 57)], 2));
    }

    #[test]
    fn descending_or_exhausted_sequences_are_refused() {
        let (db, why) = starts(&m(&[st(1, 5), st(-1, 5)]), 2).unwrap_err();
        assert_eq!(db, "m1");
        assert!(why.contains("ascending"), "{why}");
        let full = SeqState {
            increment: 1,
            max: 10,
            next: 10,
        };
        let (db, why) = starts(&m(&[full, full]), 2).unwrap_err();
        assert_eq!(db, "m0");
        assert!(why.contains("MAXVALUE 10"), "{why}");
    }
}
