//! The accept loop of `daemon.listen` and its limits, so that a client that stalls or a flood of
//! connections cannot tie up the daemon: a header-read timeout, a header size limit, a body
//! size limit (enforced in [`super::server`]) and a cap on open connections.

use std::convert::Infallible;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::server::{route, Routes};

/// A request's headers must arrive within this (a stalled client is disconnected).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers) read; hyper's minimum is 8 KiB.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// A request's body (none is needed) must arrive within this, else 408.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body accepted (no endpoint needs one): larger gets 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Connections open at once; one more is answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 64;
/// How long writing the 503 to a connection over the limit may take.
const REFUSE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
content-length: 21\r\nconnection: close\r\n\r\ntoo many connections\n";

pub async fn serve(listener: tokio::net::TcpListener, routes: Routes) {
    let routes = Rc::new(routes);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            actix_rt::spawn(refuse(stream));
            continue;
        };
        let routes = routes.clone();
        actix_rt::spawn(async move {
            serve_connection(stream, routes).await;
            drop(slot);
        });
    }
}

async fn serve_connection(stream: TcpStream, routes: Rc<Routes>) {
    let svc = hyper::service::service_fn(move |req| {
        let routes = routes.clone();
        async move { Ok::<_, Infallible>(route(&routes, req).await) }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), svc)
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// Answers a connection over [`MAX_CONNECTIONS`] with 503 and closes it.
async fn refuse(mut stream: TcpStream) {
    tracing::debug!(
        limit = MAX_CONNECTIONS,
        "HTTP connection refused: too many open"
    );
    let _ = tokio::time::timeout(REFUSE_WRITE_TIMEOUT, async {
        stream.write_all(TOO_MANY).await?;
        stream.shutdown().await?;
        // Read what the client sent: closing with unread input would reset the connection
        // and could discard the 503 before the client reads it.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}
