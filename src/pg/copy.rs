//! COPY streaming between two sessions: rows leave the source as COPY text and enter the target
//! unparsed, chunk by chunk, so a table of any size passes with constant memory.

use futures::{SinkExt, StreamExt};
use tokio_postgres::Client;

use crate::pg::error::PgError;

/// One side of a COPY: the session, its database name, and the statement.
pub struct CopyEnd<'a> {
    /// The session (inside its transaction: `Transaction::client()`).
    pub tx: &'a Client,
    pub database: &'a str,
    pub sql: &'a str,
}

/// Runs `COPY (...) TO STDOUT` on `from` and feeds its output to `COPY ... FROM STDIN` on `to`.
/// Returns the number of rows the target stored. `purpose` names the step in errors.
pub async fn pipe(from: CopyEnd<'_>, to: CopyEnd<'_>, purpose: &str) -> Result<u64, PgError> {
    let out = from
        .tx
        .copy_out(from.sql)
        .await
        .map_err(|e| PgError::query(from.database, format!("{purpose} (read)"), e))?;
    let sink = to
        .tx
        .copy_in::<_, bytes::Bytes>(to.sql)
        .await
        .map_err(|e| PgError::query(to.database, format!("{purpose} (write)"), e))?;
    futures::pin_mut!(out);
    futures::pin_mut!(sink);
    while let Some(chunk) = out.next().await {
        let chunk =
            chunk.map_err(|e| PgError::query(from.database, format!("{purpose} (read)"), e))?;
        // feed() buffers without flushing each row; the sink flushes when its buffer fills.
        sink.feed(chunk)
            .await
            .map_err(|e| PgError::query(to.database, format!("{purpose} (write)"), e))?;
    }
    // Without finish() the server aborts the COPY.
    sink.as_mut()
        .finish()
        .await
        .map_err(|e| PgError::query(to.database, format!("{purpose} (write)"), e))
}

/// Sends bytes already in COPY text format to `COPY ... FROM STDIN`; returns rows stored.
pub async fn copy_in_bytes(
    client: &Client,
    database: &str,
    sql: &str,
    data: bytes::Bytes,
    purpose: &str,
) -> Result<u64, PgError> {
    let sink = client
        .copy_in::<_, bytes::Bytes>(sql)
        .await
        .map_err(|e| PgError::query(database, purpose, e))?;
    futures::pin_mut!(sink);
    if !data.is_empty() {
        sink.send(data)
            .await
            .map_err(|e| PgError::query(database, purpose, e))?;
    }
    sink.as_mut()
        .finish()
        .await
        .map_err(|e| PgError::query(database, purpose, e))
}
