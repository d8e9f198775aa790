//! Sequences listed in a relgroup: after each round, every target's sequence is moved up to
//! the source's value with `setval`, never backwards (a target may have used values of its own
//! during a test cutover; it keeps the larger).

use std::collections::HashMap;

use crate::pg::connect::checkout;
use crate::pg::error::PgError;
use crate::pg::ident::{quote_literal, TableName};
use crate::round::side::{SourceSide, TargetSide};

/// Last value sent per (target, sequence): a target is only written when the source moved.
pub type SentValues = HashMap<(String, String), (i64, bool)>;

/// Reads each sequence's (last_value, is_called) on the source.
pub async fn read(
    source: &SourceSide,
    sequences: &[TableName],
) -> Result<Vec<(i64, bool)>, PgError> {
    let client = checkout(&source.pool, &source.name).await?;
    let mut out = Vec::with_capacity(sequences.len());
    for s in sequences {
        let row = client
            .query_one(
                &format!("SELECT last_value, is_called FROM {}", s.quoted()),
                &[],
            )
            .await
            .map_err(|e| PgError::query(&source.name, format!("read sequence {s}"), e))?;
        out.push((row.get(0), row.get(1)));
    }
    Ok(out)
}

/// Moves every target's sequences up to the source's values.
pub async fn sync(
    source: &SourceSide,
    targets: &[TargetSide],
    sequences: &[TableName],
    sent: &mut SentValues,
) -> Result<(), PgError> {
    if sequences.is_empty() {
        return Ok(());
    }
    let values = read(source, sequences).await?;
    for target in targets {
        let mut client = None;
        for (s, &(value, called)) in sequences.iter().zip(&values) {
            let k = (target.name.clone(), s.to_string());
            if sent.get(&k) == Some(&(value, called)) {
                continue;
            }
            if client.is_none() {
                client = Some(checkout(&target.pool, &target.name).await?);
            }
            let c = client.as_ref().expect("checked out above");
            // setval only when the target is behind: never move a sequence backwards.
            c.execute(
                &format!(
                    "SELECT setval({q}::regclass, $1, $2) FROM {t} \
                     WHERE last_value < $1 OR (last_value = $1 AND $2 AND NOT is_called)",
                    q = quote_literal(&s.quoted()),
                    t = s.quoted()
                ),
                &[&value, &called],
            )
            .await
            .map_err(|e| PgError::query(&target.name, format!("advance sequence {s}"), e))?;
            sent.insert(k, (value, called));
        }
    }
    Ok(())
}
