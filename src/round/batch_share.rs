//! Which read answers which target (the source actor's bookkeeping, PgQ ticker style): a
//! request joins a read in flight whose start covers it, or takes a batch read within the
//! last tick that serves it; otherwise it starts a read of its own. Plain struct, generic over
//! the request, the batch and the waiter so that it is tested without a database or System.

use std::time::{Duration, Instant};

/// How long a finished read answers the requests that arrive after it: targets that finish
/// their apply at nearly the same time share the next read without waiting for each other.
pub const TICK: Duration = Duration::from_millis(20);

/// After a batch too large to share, how long requests go straight to their own reads (as
/// before the source actor) instead of paying for a shared read of counts first.
pub const LARGE_PAUSE: Duration = Duration::from_secs(1);

/// How long a batch of COPY data (`batch_copy`) answers the requests at its start: its read
/// cost tens of milliseconds or more, so targets whose rounds end or start apart (a sync's
/// targets after the daemon starts) still share it.
pub const COPIED_KEEP: Duration = Duration::from_secs(1);

/// Most batches kept for the tick (different starts: lagging targets, held tables).
const KEPT: usize = 8;

/// A request for a read after some start.
pub trait Start: Clone {
    /// A read for `self` answers `other` too.
    fn covers(&self, other: &Self) -> bool;
}

/// A read's result.
pub trait Serves<R>: Clone {
    /// A target asking `req` may apply it.
    fn serves(&self, req: &R) -> bool;
    /// Whether it holds changes a target that asked `req` has not applied. One that
    /// applied them (or a batch without changes) would give that target nothing.
    fn brings(&self, req: &R) -> bool;
    /// Memory it holds beyond its text: at most one such batch is kept after its read.
    fn large(&self) -> bool {
        false
    }
    /// How long after its read it answers requests.
    fn keep(&self) -> Duration {
        if self.large() {
            COPIED_KEEP
        } else {
            TICK
        }
    }
}

impl Start for super::batch::BatchRequest {
    fn covers(&self, other: &Self) -> bool {
        super::batch::BatchRequest::covers(self, other)
    }
}

impl Serves<super::batch::BatchRequest> for std::sync::Arc<super::batch::Batch> {
    fn serves(&self, req: &super::batch::BatchRequest) -> bool {
        super::batch::Batch::serves(self, &req.prevs)
    }

    fn brings(&self, req: &super::batch::BatchRequest) -> bool {
        super::batch::Batch::brings(self, &req.prevs)
    }

    fn large(&self) -> bool {
        self.is_copied()
    }
}

struct Flight<R, W> {
    id: u64,
    start: R,
    waiters: Vec<(R, W)>,
}

/// What to do with a request.
pub enum Asked<R, B, W> {
    /// A batch of the last tick serves it: answer at once.
    Ready(B, W),
    /// It waits for a read in flight.
    Joined,
    /// Start this read; `done(id, ..)` answers its waiters.
    Read(u64, R),
}

pub struct Sharing<R, B, W> {
    flights: Vec<Flight<R, W>>,
    /// Batches that answer requests until their instant.
    recent: Vec<(R, Instant, B)>,
    next: u64,
}

impl<R, B, W> Default for Sharing<R, B, W> {
    fn default() -> Self {
        Sharing {
            flights: Vec::new(),
            recent: Vec::new(),
            next: 0,
        }
    }
}

impl<R: Start, B: Serves<R>, W> Sharing<R, B, W> {
    pub fn ask(&mut self, req: R, waiter: W, now: Instant) -> Asked<R, B, W> {
        self.recent.retain(|(_, until, _)| now < *until);
        // A kept batch without changes for the request is not given: the target that just
        // applied it would get it again, apply nothing and ask again at once, spinning until
        // the batch expired (up to a tick added to every change's lag) while newer changes
        // waited for a read.
        let recent = (self.recent.iter())
            .find(|(s, _, b)| s.covers(&req) && b.serves(&req) && b.brings(&req));
        if let Some((_, _, b)) = recent {
            return Asked::Ready(b.clone(), waiter);
        }
        if let Some(f) = self.flights.iter_mut().find(|f| f.start.covers(&req)) {
            f.waiters.push((req, waiter));
            return Asked::Joined;
        }
        self.next += 1;
        let id = self.next;
        self.flights.push(Flight {
            id,
            start: req.clone(),
            waiters: vec![(req.clone(), waiter)],
        });
        Asked::Read(id, req)
    }

    /// Read `id` ended: each waiter with the batch when it serves that waiter, else None (it
    /// reads on its own).
    pub fn done(&mut self, id: u64, batch: Option<B>, now: Instant) -> Vec<(W, Option<B>)> {
        let Some(i) = self.flights.iter().position(|f| f.id == id) else {
            return Vec::new();
        };
        let f = self.flights.swap_remove(i);
        let out = (f.waiters.into_iter())
            .map(|(req, w)| {
                let b = batch.as_ref().filter(|b| b.serves(&req)).cloned();
                (w, b)
            })
            .collect();
        if let Some(b) = batch {
            if b.large() {
                self.recent.retain(|(_, _, k)| !k.large());
            }
            if self.recent.len() == KEPT {
                self.recent.remove(0);
            }
            let until = now + b.keep();
            self.recent.push((f.start, until, b));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A start: a position in one total order.
    #[derive(Clone, Debug, PartialEq)]
    struct At(u32);
    impl Start for At {
        fn covers(&self, other: &At) -> bool {
            self.0 <= other.0
        }
    }
    /// A batch: (start, snapshot).
    #[derive(Clone, Debug, PartialEq)]
    struct B(u32, u32);
    impl Serves<At> for B {
        fn serves(&self, r: &At) -> bool {
            self.0 <= r.0 && r.0 <= self.1
        }

        fn brings(&self, r: &At) -> bool {
            r.0 < self.1
        }
    }

    #[test]
    fn requests_at_one_start_share_a_read() {
        let mut s: Sharing<At, B, &str> = Sharing::default();
        let now = Instant::now();
        let Asked::Read(id, At(5)) = s.ask(At(5), "t1", now) else {
            panic!("first request reads")
        };
        assert!(matches!(s.ask(At(5), "t2", now), Asked::Joined));
        // A target ahead of the read's start joins too (it converges with the others).
        assert!(matches!(s.ask(At(7), "t3", now), Asked::Joined));
        // A lagging one cannot: the read misses what it needs.
        assert!(matches!(s.ask(At(3), "t4", now), Asked::Read(_, At(3))));
        let got = s.done(id, Some(B(5, 9)), now);
        assert_eq!(
            got,
            vec![
                ("t1", Some(B(5, 9))),
                ("t2", Some(B(5, 9))),
                ("t3", Some(B(5, 9)))
            ]
        );
    }

    #[test]
    fn a_batch_serves_the_tick_after_it() {
        let mut s: Sharing<At, B, &str> = Sharing::default();
        let now = Instant::now();
        let Asked::Read(id, _) = s.ask(At(5), "t1", now) else {
            panic!("reads")
        };
        s.done(id, Some(B(5, 9)), now);
        assert!(matches!(
            s.ask(At(5), "t2", now),
            Asked::Ready(B(5, 9), "t2")
        ));
        // Not past its snapshot, and not after the tick.
        assert!(matches!(s.ask(At(10), "t3", now), Asked::Read(..)));
        let later = now + TICK;
        assert!(matches!(s.ask(At(5), "t4", later), Asked::Read(..)));
    }

    #[test]
    fn a_batch_is_not_given_again_to_a_target_that_applied_it() {
        let mut s: Sharing<At, B, &str> = Sharing::default();
        let now = Instant::now();
        let Asked::Read(id, _) = s.ask(At(5), "t1", now) else {
            panic!("reads")
        };
        s.done(id, Some(B(5, 9)), now);
        // t1 applied it and, kicked by a newer change, asks within the tick: a read, not
        // the same batch again (it would apply nothing and ask again at once).
        assert!(matches!(s.ask(At(9), "t1", now), Asked::Read(_, At(9))));
        // A target between its start and its snapshot still takes it.
        assert!(matches!(
            s.ask(At(7), "t2", now),
            Asked::Ready(B(5, 9), "t2")
        ));
    }

    #[test]
    fn a_failed_read_sends_every_waiter_to_its_own() {
        let mut s: Sharing<At, B, &str> = Sharing::default();
        let now = Instant::now();
        let Asked::Read(id, _) = s.ask(At(5), "t1", now) else {
            panic!("reads")
        };
        s.ask(At(5), "t2", now);
        assert_eq!(s.done(id, None, now), vec![("t1", None), ("t2", None)]);
        // Nothing kept: the next request reads again.
        assert!(matches!(s.ask(At(5), "t3", now), Asked::Read(..)));
    }

    #[test]
    fn a_batch_that_does_not_serve_a_joiner_sends_it_to_its_own() {
        let mut s: Sharing<At, B, &str> = Sharing::default();
        let now = Instant::now();
        let Asked::Read(id, _) = s.ask(At(5), "t1", now) else {
            panic!("reads")
        };
        s.ask(At(12), "t2", now);
        assert_eq!(
            s.done(id, Some(B(5, 9)), now),
            vec![("t1", Some(B(5, 9))), ("t2", None)]
        );
    }

    /// A batch of COPY data: (start, snapshot); serves its exact start only.
    #[derive(Clone, Debug, PartialEq)]
    struct L(u32, u32);
    impl Serves<At> for L {
        fn serves(&self, r: &At) -> bool {
            self.0 == r.0
        }

        fn brings(&self, r: &At) -> bool {
            self.0 == r.0
        }

        fn large(&self) -> bool {
            true
        }
    }

    #[test]
    fn a_large_batch_serves_its_start_for_its_keep_time_and_alone() {
        let mut s: Sharing<At, L, &str> = Sharing::default();
        let now = Instant::now();
        let Asked::Read(id, _) = s.ask(At(5), "t1", now) else {
            panic!("reads")
        };
        s.done(id, Some(L(5, 9)), now);
        // A target at its start well after the tick still takes it.
        let later = now + TICK * 10;
        assert!(matches!(
            s.ask(At(5), "t2", later),
            Asked::Ready(L(5, 9), "t2")
        ));
        // One past its start does not: COPY data cannot leave out what it applied.
        assert!(matches!(s.ask(At(7), "t3", later), Asked::Read(..)));
        assert!(matches!(
            s.ask(At(5), "t4", now + COPIED_KEEP),
            Asked::Read(..)
        ));
    }

    #[test]
    fn one_large_batch_is_kept_at_a_time() {
        let mut s: Sharing<At, L, &str> = Sharing::default();
        let now = Instant::now();
        for (start, t) in [(5, "t1"), (1, "t2")] {
            let Asked::Read(id, _) = s.ask(At(start), t, now) else {
                panic!("reads")
            };
            s.done(id, Some(L(start, 9)), now);
        }
        assert!(matches!(s.ask(At(5), "t3", now), Asked::Read(..)));
        assert!(matches!(
            s.ask(At(1), "t4", now),
            Asked::Ready(L(1, 9), "t4")
        ));
    }
}
