//! A read-only transaction whose BEGIN travels with its first queries.
//!
//! tokio-postgres's `Transaction` waits for BEGIN's answer before anything else is sent: a
//! round trip of its own, in every round. Here BEGIN is the head of the first pipelined
//! flight (`ReadTx::BEGIN_RR` prefixes the first statement's text), and the guard rolls the
//! transaction back when dropped, error paths and cancelled rounds included, so a pooled
//! session never goes back to its pool inside a transaction.

use futures::FutureExt;
use tokio_postgres::Client;

/// Guard over a session on which a transaction was begun.
pub struct ReadTx<'a> {
    client: &'a Client,
}

impl<'a> ReadTx<'a> {
    /// Starts a REPEATABLE READ READ ONLY transaction; prefix the first statement with it.
    pub const BEGIN_RR: &'static str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; ";

    /// Guards `client`, whose next statement must begin with `BEGIN_RR`.
    pub fn new(client: &'a Client) -> ReadTx<'a> {
        ReadTx { client }
    }

    pub fn client(&self) -> &'a Client {
        self.client
    }
}

impl Drop for ReadTx<'_> {
    fn drop(&mut self) {
        // The first poll queues ROLLBACK on the session (requests are sent in order); its
        // answer is not awaited, like tokio-postgres's own `Transaction` drop. Outside a
        // transaction (BEGIN never ran) ROLLBACK only warns.
        let _ = self.client.batch_execute("ROLLBACK").now_or_never();
    }
}
