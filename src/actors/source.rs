//! SourceActor: one per (sync, source) of a one-source sync. Target actors ask it for the
//! batch after their progress (`ReadBatch`); requests that a read in flight, or one finished
//! within the last tick, answers share that read (`round::batch_share`), so under steady load
//! the source is read once per round whatever the number of targets. With several targets a
//! backlog too large for text is read once too, as COPY data held in memory up to a cap
//! (`round::batch_copy`). A target it cannot answer (lagging, held tables, a batch too large
//! to share, a failed read) gets None and runs a round of its own, as before; after a batch
//! too large to share, every request does for `LARGE_PAUSE`. Each read it makes is counted in
//! `drover_source_reads_total`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::actors::metrics::{MetricsActor, SourceReads};
use crate::round::batch::{self, Batch, BatchRequest, ReadShared};
use crate::round::batch_share::{Asked, Sharing, LARGE_PAUSE};

type Reply = oneshot::Sender<Option<Arc<Batch>>>;

/// The batch after the request's start, or None: read your own.
#[derive(Message)]
#[rtype(result = "Option<Arc<Batch>>")]
pub struct ReadBatch(pub BatchRequest);

pub struct SourceActor {
    sync: String,
    source: String,
    metrics: Addr<MetricsActor>,
    /// A read that takes longer is dropped (its transaction rolls back): `round_deadline`.
    deadline: Duration,
    /// Several targets: a larger batch is read once as COPY data (`batch_copy`). With one
    /// target its own round pipes the rows instead, overlapping read and write.
    copy_large: bool,
    sharing: Sharing<BatchRequest, Arc<Batch>, Reply>,
    /// Tables the last batch found changed: the next read reads their rows in its first flight.
    busy: Vec<String>,
    /// Until then requests get None at once: the last batch was too large to share (a backlog
    /// is applied through each target's own rounds).
    own_until: Option<Instant>,
}

impl SourceActor {
    pub fn new(sync: &str, source: &str, metrics: Addr<MetricsActor>, targets: usize) -> Self {
        SourceActor {
            sync: sync.to_string(),
            source: source.to_string(),
            metrics,
            deadline: Duration::MAX,
            copy_large: targets > 1,
            sharing: Sharing::default(),
            busy: Vec::new(),
            own_until: None,
        }
    }

    /// Reads that take longer than `deadline` are dropped.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// What a target's rounds call to ask this actor.
    pub fn reader(addr: Addr<SourceActor>) -> ReadShared {
        Arc::new(move |req| {
            let addr = addr.clone();
            Box::pin(async move { addr.send(ReadBatch(req)).await.ok().flatten() })
        })
    }

    fn start_read(&mut self, id: u64, req: BatchRequest, ctx: &mut Context<Self>) {
        self.metrics.do_send(SourceReads {
            sync: self.sync.clone(),
            source: self.source.clone(),
        });
        let (busy, deadline, large) = (self.busy.clone(), self.deadline, self.copy_large);
        let read = async move {
            let got = tokio::time::timeout(deadline, batch::read(&req, &busy, large)).await;
            let batch = match got {
                Ok(Ok(b)) => Some(Arc::new(b)),
                Ok(Err(e)) => {
                    // Each waiter's own round reads again and reports the error.
                    tracing::debug!(sync = %req.sync, error = %e.for_log(), "shared source read failed");
                    None
                }
                Err(_) => None,
            };
            (req, batch)
        };
        ctx.spawn(read.into_actor(self).map(move |(req, batch), act, _| {
            if let Some(b) = &batch {
                act.busy = b.busy(&req.tables);
                if !b.shareable() {
                    act.own_until = Some(Instant::now() + LARGE_PAUSE);
                }
            }
            for (reply, b) in act.sharing.done(id, batch, Instant::now()) {
                let _ = reply.send(b);
            }
        }));
    }
}

impl Actor for SourceActor {
    type Context = Context<Self>;
}

impl Handler<ReadBatch> for SourceActor {
    type Result = ResponseFuture<Option<Arc<Batch>>>;

    fn handle(&mut self, msg: ReadBatch, ctx: &mut Context<Self>) -> Self::Result {
        let now = Instant::now();
        if self.own_until.is_some_and(|t| now < t) {
            return Box::pin(async { None });
        }
        let (tx, rx) = oneshot::channel();
        match self.sharing.ask(msg.0, tx, now) {
            Asked::Ready(b, tx) => {
                let _ = tx.send(Some(b));
            }
            Asked::Joined => {}
            Asked::Read(id, req) => self.start_read(id, req, ctx),
        }
        Box::pin(async move { rx.await.ok().flatten() })
    }
}
