//! DatabaseActor: owns one database's pool, its server facts and its LISTEN session.

use std::time::Duration;

use actix::prelude::*;
use futures::StreamExt;
use tokio_postgres::AsyncMessage;

use crate::capture::sql::NOTIFY_CHANNEL;
use crate::pg::connect::checkout;
use crate::pg::error::PgError;
use crate::pg::facts::{self, ServerFacts};
use crate::pg::{Endpoint, Pool};

/// Sessions per database pool: a round uses one per side; spare ones serve status and purge.
const POOL_SIZE: u32 = 4;

/// Longest pause between LISTEN reconnect attempts.
const MAX_LISTEN_BACKOFF: Duration = Duration::from_secs(30);

/// "Something changed on this database": sent to every subscribed sync.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Kick;

/// What a sync needs from a database to run rounds.
#[derive(Clone)]
pub struct DbHandle {
    pub name: String,
    pub pool: Pool,
    pub facts: ServerFacts,
}

#[derive(Message)]
#[rtype(result = "Result<DbHandle, PgError>")]
pub struct GetHandle;

/// Subscribes a sync to change notifications; starts listening on first use.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Recipient<Kick>);

pub struct DatabaseActor {
    endpoint: Endpoint,
    pool: Pool,
    facts: Option<ServerFacts>,
    subscribers: Vec<Recipient<Kick>>,
    listening: bool,
    listen_failures: u32,
    /// The LISTEN session's client; dropping it ends the session.
    listen_client: Option<tokio_postgres::Client>,
}

impl DatabaseActor {
    pub fn new(endpoint: Endpoint) -> Self {
        let pool = endpoint.pool("pool", POOL_SIZE);
        DatabaseActor {
            endpoint,
            pool,
            facts: None,
            subscribers: Vec::new(),
            listening: false,
            listen_failures: 0,
            listen_client: None,
        }
    }

    fn kick_all(&self) {
        for s in &self.subscribers {
            // A full mailbox already holds a kick: dropping this one loses nothing.
            let _ = s.try_send(Kick);
        }
    }

    /// Opens the LISTEN session; its notifications arrive as a stream on this actor.
    fn listen(&mut self, ctx: &mut Context<Self>) {
        self.listening = true;
        let endpoint = self.endpoint.clone();
        let fut = async move {
            let (client, mut conn) = endpoint.connect_raw("listen").await?;
            let (tx, rx) = tokio::sync::mpsc::channel::<()>(1);
            let name = endpoint.name.clone();
            actix_rt::spawn(async move {
                let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
                while let Some(m) = messages.next().await {
                    match m {
                        Ok(AsyncMessage::Notification(_)) => {
                            // Capacity 1: a waiting wake-up already covers this change.
                            let _ = tx.try_send(());
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(database = %name, error = %e, "LISTEN session lost");
                            break;
                        }
                    }
                }
            });
            client
                .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
                .await
                .map_err(|e| PgError::query(&endpoint.name, "LISTEN for changes", e))?;
            Ok::<_, PgError>((client, rx))
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok((client, rx)) => {
                act.listen_failures = 0;
                act.listen_client = Some(client);
                ctx.add_stream(tokio_stream_from(rx));
                // Changes made while not listening would otherwise wait for the poll timer.
                act.kick_all();
            }
            Err(e) => {
                act.listen_failures += 1;
                let wait = backoff(act.listen_failures);
                tracing::warn!(database = %act.endpoint.name, error = %e, retry_in_ms = wait.as_millis() as u64, "cannot LISTEN");
                ctx.run_later(wait, |act, ctx| act.listen(ctx));
            }
        }));
    }
}

fn tokio_stream_from(mut rx: tokio::sync::mpsc::Receiver<()>) -> impl Stream<Item = Notified> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(|_| Notified)))
}

fn backoff(failures: u32) -> Duration {
    let ms = 250u64.saturating_mul(1 << failures.min(8));
    Duration::from_millis(ms).min(MAX_LISTEN_BACKOFF)
}

/// A notification arrived on the LISTEN session.
pub struct Notified;

impl Actor for DatabaseActor {
    type Context = Context<Self>;
}

impl StreamHandler<Notified> for DatabaseActor {
    fn handle(&mut self, _: Notified, _ctx: &mut Context<Self>) {
        self.kick_all();
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The LISTEN session ended: reconnect with backoff.
        self.listen_client = None;
        self.listen_failures += 1;
        let wait = backoff(self.listen_failures);
        ctx.run_later(wait, |act, ctx| act.listen(ctx));
    }
}

impl Handler<Subscribe> for DatabaseActor {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, ctx: &mut Context<Self>) {
        self.subscribers.push(msg.0);
        if !self.listening {
            self.listen(ctx);
        }
    }
}

impl Handler<GetHandle> for DatabaseActor {
    type Result = ResponseActFuture<Self, Result<DbHandle, PgError>>;

    fn handle(&mut self, _: GetHandle, _ctx: &mut Context<Self>) -> Self::Result {
        let name = self.endpoint.name.clone();
        let pool = self.pool.clone();
        let role = self.endpoint.replica_role.clone();
        if let Some(facts) = self.facts.clone() {
            return Box::pin(fut::ready(Ok(DbHandle { name, pool, facts })));
        }
        let fut = async move {
            let mut client = checkout(&pool, &name).await?;
            let facts = facts::read(&mut client, &name, &role).await?;
            drop(client);
            Ok(DbHandle { name, pool, facts })
        };
        Box::pin(
            fut.into_actor(self)
                .map(|res: Result<DbHandle, PgError>, act, _| {
                    if let Ok(h) = &res {
                        act.facts = Some(h.facts.clone());
                    }
                    res
                }),
        )
    }
}
