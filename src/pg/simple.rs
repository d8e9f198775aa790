//! Reading answers of the simple query protocol. A statement sent as text with its values
//! inlined costs one round trip; with parameters (the extended protocol) tokio-postgres first
//! prepares it, which costs a second. Rounds send their small queries this way.

use tokio_postgres::{SimpleQueryMessage, SimpleQueryRow};

/// The data rows of a `simple_query` answer, in order (every statement's rows).
pub fn rows(messages: Vec<SimpleQueryMessage>) -> Vec<SimpleQueryRow> {
    messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// The answer of a multi-statement query, one part per statement (each ends with its
/// CommandComplete).
pub fn split(messages: Vec<SimpleQueryMessage>) -> Vec<Vec<SimpleQueryMessage>> {
    let mut parts = Vec::new();
    let mut part = Vec::new();
    for m in messages {
        let end = matches!(m, SimpleQueryMessage::CommandComplete(_));
        part.push(m);
        if end {
            parts.push(std::mem::take(&mut part));
        }
    }
    parts
}

/// Column `i` of a text row parsed as `T`; None when NULL or unparsable.
pub fn get<T: std::str::FromStr>(row: &SimpleQueryRow, i: usize) -> Option<T> {
    row.get(i).and_then(|v| v.parse().ok())
}

/// A boolean column (`t`/`f`).
pub fn get_bool(row: &SimpleQueryRow, i: usize) -> bool {
    row.get(i) == Some("t")
}
