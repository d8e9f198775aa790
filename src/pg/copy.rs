//! COPY streaming between two sessions: rows leave the source as COPY text and enter the target
//! unparsed, chunk by chunk, so a table of any size passes with constant memory.

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio_postgres::{Client, CopyInSink, CopyOutStream, ToStatement};

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
    forward(out, sink, |_| {})
        .await
        .map_err(|e| e.into_pg(from.database, to.database, purpose))
}

/// Bytes gathered before they are handed to the target as one CopyData message. The source
/// sends one message per row; COPY text may be split anywhere, so the target gets a few large
/// messages instead (what psql sends too). Measured within noise on a 5M-row copy, where the
/// target's single backend writing the table is the bottleneck.
const COALESCE_BYTES: usize = 64 * 1024;

/// A COPY stream that failed, on the side it failed.
pub enum ForwardError {
    Read(tokio_postgres::Error),
    Write(tokio_postgres::Error),
}

impl ForwardError {
    pub fn into_pg(self, src: &str, dst: &str, purpose: &str) -> PgError {
        match self {
            ForwardError::Read(e) => PgError::query(src, format!("{purpose} (read)"), e),
            ForwardError::Write(e) => PgError::query(dst, format!("{purpose} (write)"), e),
        }
    }
}

/// Feeds a `COPY ... TO STDOUT` stream into a `COPY ... FROM STDIN` sink in chunks of about
/// `COALESCE_BYTES`, then finishes the sink (without finish() the server aborts the COPY).
/// `rows` is called with the count of source rows so far, every 10,000 rows. Returns the rows
/// the target stored.
pub async fn forward(
    out: CopyOutStream,
    sink: CopyInSink<Bytes>,
    mut rows: impl FnMut(u64),
) -> Result<u64, ForwardError> {
    futures::pin_mut!(out);
    futures::pin_mut!(sink);
    let mut buf = BytesMut::new();
    let mut n: u64 = 0;
    while let Some(chunk) = out.next().await {
        let chunk = chunk.map_err(ForwardError::Read)?;
        buf.extend_from_slice(&chunk);
        n += 1;
        if n % 10_000 == 0 {
            rows(n);
        }
        if buf.len() >= COALESCE_BYTES {
            // feed() buffers without flushing; the sink flushes when its buffer fills.
            sink.feed(buf.split().freeze())
                .await
                .map_err(ForwardError::Write)?;
        }
    }
    if !buf.is_empty() {
        sink.feed(buf.freeze()).await.map_err(ForwardError::Write)?;
    }
    sink.as_mut().finish().await.map_err(ForwardError::Write)
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

/// Reads all of `COPY ... TO STDOUT` into chunks of about `COALESCE_BYTES`, or None once it
/// passes `cap` bytes (the rest is not kept: dropping the stream discards it).
pub async fn read_all<S: ?Sized + ToStatement>(
    from: CopyEnd<'_, S>,
    cap: usize,
    purpose: &str,
) -> Result<Option<Vec<Bytes>>, PgError> {
    let err = |e| PgError::query(from.database, purpose, e);
    let out = from.tx.copy_out(from.sql).await.map_err(err)?;
    futures::pin_mut!(out);
    let (mut chunks, mut buf, mut total) = (Vec::new(), BytesMut::new(), 0usize);
    while let Some(chunk) = out.next().await {
        let chunk = chunk.map_err(err)?;
        total += chunk.len();
        if total > cap {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
        if buf.len() >= COALESCE_BYTES {
            chunks.push(buf.split().freeze());
        }
    }
    if !buf.is_empty() {
        chunks.push(buf.freeze());
    }
    Ok(Some(chunks))
}

/// Feeds chunks already read (`read_all`) to `COPY ... FROM STDIN`; returns the rows stored.
pub async fn write_all<S: ?Sized + ToStatement>(
    to: CopyEnd<'_, S>,
    chunks: &[Bytes],
    purpose: &str,
) -> Result<u64, PgError> {
    let err = |e| PgError::query(to.database, purpose, e);
    let sink = to.tx.copy_in::<_, Bytes>(to.sql).await.map_err(err)?;
    futures::pin_mut!(sink);
    for c in chunks {
        // Cheap clones: the bytes are shared with every other target of the batch.
        sink.feed(c.clone()).await.map_err(err)?;
    }
    sink.as_mut().finish().await.map_err(err)
}
