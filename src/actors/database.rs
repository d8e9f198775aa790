//! DatabaseActor: owns one database's pool, its server facts and its LISTEN session, on which
//! it holds the doorbell while a subscribed sync waits for changes (see `actors::doorbell`).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::StreamExt;
use tokio_postgres::AsyncMessage;

use crate::actors::doorbell::{self, Action, Bell, Doorbell};
use crate::capture::sql::NOTIFY_CHANNEL;
use crate::metrics::failures::{self, Stage};
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

/// The database's pool, without connecting (a probe of a database that is down).
#[derive(Message)]
#[rtype(result = "Pool")]
pub struct GetPool;

/// Subscribes a sync to change notifications; starts listening on first use.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub sync: String,
    pub kicks: Recipient<Kick>,
}

/// A sync waits for changes (true) or runs rounds back to back and needs no notification.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Waiting {
    pub sync: String,
    pub waiting: bool,
}

pub struct DatabaseActor {
    endpoint: Endpoint,
    pool: Pool,
    facts: Option<ServerFacts>,
    subscribers: Vec<Recipient<Kick>>,
    listening: bool,
    listen_failures: u32,
    /// The LISTEN session's client; dropping it ends the session.
    listen_client: Option<Arc<tokio_postgres::Client>>,
    /// Counts LISTEN sessions, so answers from an ended one are ignored.
    session_id: u64,
    bell: Doorbell,
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
            session_id: 0,
            bell: Doorbell::default(),
        }
    }

    /// Runs what the doorbell asks for on the LISTEN session.
    fn ring(&mut self, action: Action, ctx: &mut Context<Self>) {
        let Some(client) = self.listen_client.clone() else {
            return;
        };
        let session = self.session_id;
        match action {
            Action::None => {}
            Action::Acquire => {
                let fut = async move {
                    match client.query_one(&doorbell::acquire_sql(), &[]).await {
                        Ok(row) => Ok((true, row.get::<_, String>(1))),
                        Err(e) if doorbell::contended(&e) => Ok((false, String::new())),
                        Err(e) => Err(e),
                    }
                };
                ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
                    if session != act.session_id {
                        return;
                    }
                    match res {
                        Ok((got, snapshot)) => {
                            let next = act.bell.acquired(got);
                            match act.bell.bell {
                                Bell::Held => {
                                    tracing::debug!(database = %act.endpoint.name, snapshot = %snapshot, "doorbell taken");
                                    let xip = doorbell::in_progress(&snapshot);
                                    act.settle(xip, act.bell.generation, doorbell::SETTLE_FIRST, ctx);
                                }
                                Bell::Contended => {
                                    tracing::debug!(database = %act.endpoint.name, "doorbell held by another session");
                                    ctx.run_later(doorbell::CONTENDED_RETRY, |act, ctx| {
                                        let next = act.bell.retry();
                                        act.ring(next, ctx);
                                    });
                                }
                                _ => {}
                            }
                            act.ring(next, ctx);
                        }
                        Err(e) => {
                            tracing::debug!(database = %act.endpoint.name, error = %e, "cannot take the doorbell");
                            act.bell.failed();
                        }
                    }
                }));
            }
            Action::Release => {
                let fut = async move { client.simple_query(doorbell::RELEASE_SQL).await };
                ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
                    if session != act.session_id {
                        return;
                    }
                    match res {
                        Ok(_) => {
                            tracing::debug!(database = %act.endpoint.name, "doorbell released");
                            let next = act.bell.released();
                            act.ring(next, ctx);
                        }
                        Err(e) => {
                            tracing::debug!(database = %act.endpoint.name, error = %e, "cannot release the doorbell");
                            act.bell.failed();
                        }
                    }
                }));
            }
        }
    }

    /// Kicks the syncs once no writer that may have skipped its notification (`xip`, in
    /// progress when the bell was taken) is still running. Stops when the bell is released.
    fn settle(&mut self, xip: Vec<i64>, generation: u64, wait: Duration, ctx: &mut Context<Self>) {
        if xip.is_empty() {
            self.kick_all();
            return;
        }
        ctx.run_later(wait, move |act, ctx| {
            let Some(client) = act.listen_client.clone() else {
                return;
            };
            if generation != act.bell.generation {
                return;
            }
            let fut = async move {
                let done: bool = client.query_one(doorbell::SETTLED_SQL, &[&xip]).await?.get(0);
                Ok::<_, tokio_postgres::Error>((done, xip))
            };
            ctx.spawn(fut.into_actor(act).map(move |res, act, ctx| {
                if generation != act.bell.generation {
                    return;
                }
                match res {
                    Ok((true, _)) => {
                        tracing::debug!(database = %act.endpoint.name, waited_ms = wait.as_millis() as u64, "doorbell settled");
                        act.kick_all()
                    }
                    Ok((false, xip)) => {
                        act.settle(xip, generation, (wait * 2).min(doorbell::SETTLE_MAX), ctx)
                    }
                    // The session is failing; its reconnect kicks everyone.
                    Err(_) => {}
                }
            }));
        });
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
                            let e = PgError::query(&name, "LISTEN session lost", e);
                            failures::failed(Stage::Listen, "", &e, "LISTEN session lost");
                            break;
                        }
                    }
                }
            });
            client
                .batch_execute(&format!(
                    "LISTEN {NOTIFY_CHANNEL}; {}",
                    doorbell::LOCK_TIMEOUT_SQL
                ))
                .await
                .map_err(|e| PgError::query(&endpoint.name, "LISTEN for changes", e))?;
            Ok::<_, PgError>((client, rx))
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok((client, rx)) => {
                act.listen_failures = 0;
                act.listen_client = Some(Arc::new(client));
                act.session_id += 1;
                ctx.add_stream(tokio_stream_from(rx));
                // Changes made while not listening would otherwise wait for the poll timer.
                act.kick_all();
                let next = act.bell.session_up();
                act.ring(next, ctx);
            }
            Err(e) => {
                act.listen_failures += 1;
                let wait = backoff(act.listen_failures);
                let what = format!("cannot LISTEN, retrying in {} ms", wait.as_millis());
                failures::failed(Stage::Listen, "", &e, &what);
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
        // The LISTEN session ended (and with it the bell): reconnect with backoff.
        self.listen_client = None;
        self.session_id += 1;
        self.bell.session_lost();
        self.listen_failures += 1;
        let wait = backoff(self.listen_failures);
        ctx.run_later(wait, |act, ctx| act.listen(ctx));
    }
}

impl Handler<Subscribe> for DatabaseActor {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, ctx: &mut Context<Self>) {
        // Syncs stopped by a reload leave their recipient behind.
        self.subscribers.retain(|s| s.connected());
        self.subscribers.push(msg.kicks);
        let next = self.bell.subscribe(&msg.sync);
        self.ring(next, ctx);
        if !self.listening {
            self.listen(ctx);
        }
    }
}

impl Handler<Waiting> for DatabaseActor {
    type Result = ();

    fn handle(&mut self, msg: Waiting, ctx: &mut Context<Self>) {
        let next = self.bell.set_waiting(&msg.sync, msg.waiting);
        self.ring(next, ctx);
    }
}

impl Handler<GetPool> for DatabaseActor {
    type Result = MessageResult<GetPool>;

    fn handle(&mut self, _: GetPool, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.pool.clone())
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
