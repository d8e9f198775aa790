//! COPY streaming between two sessions: rows leave the source as COPY text and enter the target
//! unparsed, chunk by chunk, so a table of any size passes with constant memory.

use futures::{SinkExt, StreamExt};
use tokio_postgres::{Client, ToStatement};

use crate::pg::error::PgError;

/// One side of a COPY: the session, its database name, and the statement (SQL text, or a
/// statement prepared ahead, which saves the round trip that preparing costs).
pub struct CopyEnd<'a, S: ?Sized + ToStatement> {
    /// The session (inside its transaction: `Transaction::client()`).
    pub tx: &'a Client,
    pub database: &'a str,
    pub sql: &'a S,
}

/// Runs `COPY (...) TO STDOUT` on `from` and feeds its output to `COPY ... FROM STDIN` on `to`.
/// Returns the number of rows the target stored. `purpose` names the step in errors.
pub async fn pipe<A, B>(
    from: CopyEnd<'_, A>,
    to: CopyEnd<'_, B>,
    purpose: &str,
) -> Result<u64, PgError>
where
    A: ?Sized + ToStatement,
    B: ?Sized + ToStatement,
{
    // Both sides start at once: their round trips overlap.
    let (out, sink) = tokio::try_join!(
        async {
            from.tx
                .copy_out(from.sql)
                .await
                .map_err(|e| PgError::query(from.database, format!("{purpose} (read)"), e))
        },
        async {
            to.tx
                .copy_in::<_, bytes::Bytes>(to.sql)
                .await
                .map_err(|e| PgError::query(to.database, format!("{purpose} (write)"), e))
        },
    )?;
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
