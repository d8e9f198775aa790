//! Which read answers which target (the source actor's bookkeeping, PgQ ticker style): a
//! request joins a read in flight whose start covers it, or takes a batch read within the
//! last tick that serves it; otherwise it starts a read of its own. Once a batch with changes
//! is handed to a target, the batch after it is read ahead (`ahead`) while the targets apply
//! it, and kept for the targets that ask with its start. Plain struct, generic over the
//! request, the batch and the waiter so that it is tested without a database or System.

use std::time::{Duration, Instant};

/// How long a finished read answers the requests that arrive after it: targets that finish
/// their apply at nearly the same time share the next read without waiting for each other.
pub const TICK: Duration = Duration::from_millis(20);

/// How long a finished read-ahead with changes answers the requests at its start. It is read
/// while the targets apply the batch before it, so they ask for it only once their apply
/// committed: tens of milliseconds under load, more on a slow target, far beyond the `TICK`.
/// Its rows stay a correct batch from that start however late it is asked (the apply checks
/// progress as always), only older; after a second a target that has not asked is treated
/// as gone elsewhere (its own round, a re-read plan) and the batch is dropped.
pub const AHEAD_KEEP: Duration = Duration::from_secs(1);

/// After a batch too large to share, how long requests go straight to their own reads (as
/// before the source actor) instead of paying for a shared read of counts first.
pub const LARGE_PAUSE: Duration = Duration::from_secs(1);

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
    /// What a target that asked `req` asks next once it applied this batch; None when there
    /// is nothing to read ahead (no changes: an idle source costs nothing; or a batch too
    /// large to share).
    fn next(&self, req: &R) -> Option<R>;
    /// Whether it holds changes a target that asked `req` has not applied. One that
    /// applied them (or a batch without changes) would give that target nothing.
    fn brings(&self, req: &R) -> bool;
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

    fn next(&self, req: &super::batch::BatchRequest) -> Option<super::batch::BatchRequest> {
        super::batch::Batch::next(self, req)
    }

    fn brings(&self, req: &super::batch::BatchRequest) -> bool {
        super::batch::Batch::brings(self, &req.prevs)
    }
}

struct Flight<R, W> {
    id: u64,
    start: R,
    waiters: Vec<(R, W)>,
    /// Read ahead, before any target asked for it.
    ahead: bool,
}

/// A finished read that answers requests until `until`.
struct Kept<R, B> {
    start: R,
    until: Instant,
    batch: B,
    ahead: bool,
    /// Given to requests (not an empty read-ahead).
    answers: bool,
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
    recent: Vec<Kept<R, B>>,
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

/// The same start: each covers the other.
fn same<R: Start>(a: &R, b: &R) -> bool {
    a.covers(b) && b.covers(a)
}

impl<R: Start, B: Serves<R>, W> Sharing<R, B, W> {
    pub fn ask(&mut self, req: R, waiter: W, now: Instant) -> Asked<R, B, W> {
        self.recent.retain(|k| now < k.until);
        // Read-ahead first. A kept batch whose snapshot is the request's start serves it
        // too, but brings it nothing new, and is not given: the target that just applied it
        // would get it again, apply nothing and ask again at once, until the batch expired
        // (a spin that added up to a tick to every change's lag), while the read after it is
        // in flight or due. A target between its start and its snapshot takes it and rejoins
        // the others.
        for ahead in [true, false] {
            let kept = (self.recent.iter()).find(|k| {
                k.ahead == ahead
                    && k.answers
                    && k.start.covers(&req)
                    && k.batch.serves(&req)
                    && k.batch.brings(&req)
            });
            if let Some(k) = kept {
                return Asked::Ready(k.batch.clone(), waiter);
            }
            let flight =
                (self.flights.iter_mut()).find(|f| f.ahead == ahead && f.start.covers(&req));
            if let Some(f) = flight {
                f.waiters.push((req, waiter));
                return Asked::Joined;
            }
        }
        let id = self.fly(req.clone(), vec![(req.clone(), waiter)], false);
        Asked::Read(id, req)
    }

    /// `batch` was handed to a target that asked `req`: the read to start now for what that
    /// target asks next (`Serves::next`), so that it runs while the targets apply `batch`.
    /// None when there is nothing to read ahead, a read-ahead is in flight already (at most
    /// one), a read in flight answers that request, or a kept batch has its start. Only a
    /// batch handed to a target leads here, never a read-ahead nobody asked for: the reads
    /// stay one batch ahead of the targets.
    pub fn ahead(&mut self, req: &R, batch: &B, now: Instant) -> Option<(u64, R)> {
        let next = batch.next(req)?;
        self.recent.retain(|k| now < k.until);
        if (self.flights.iter()).any(|f| f.ahead || f.start.covers(&next))
            || (self.recent.iter()).any(|k| same(&k.start, &next))
        {
            return None;
        }
        let id = self.fly(next.clone(), Vec::new(), true);
        Some((id, next))
    }

    fn fly(&mut self, start: R, waiters: Vec<(R, W)>, ahead: bool) -> u64 {
        self.next += 1;
        let id = self.next;
        self.flights.push(Flight {
            id,
            start,
            waiters,
            ahead,
        });
        id
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
        // An empty read-ahead answers nobody: it was read before the targets asked, and
        // those asking now were woken by newer changes (it would give them nothing). It is
        // kept for the tick all the same, so that the targets it was read for, handed the
        // batch before it one after the other, do not each read ahead again from its start.
        if let Some(b) = batch {
            let answers = !f.ahead || b.next(&f.start).is_some();
            let keep = if f.ahead && answers { AHEAD_KEEP } else { TICK };
            if self.recent.len() == KEPT {
                self.recent.remove(0);
            }
            self.recent.push(Kept {
                start: f.start,
                until: now + keep,
                batch: b,
                ahead: f.ahead,
                answers,
            });
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
    /// A batch: (start, snapshot); it has changes when they differ.
    #[derive(Clone, Debug, PartialEq)]
    struct B(u32, u32);
    impl Serves<At> for B {
        fn serves(&self, r: &At) -> bool {
            self.0 <= r.0 && r.0 <= self.1
        }
        fn next(&self, _: &At) -> Option<At> {
            (self.0 < self.1).then_some(At(self.1))
        }
        fn brings(&self, r: &At) -> bool {
            r.0 < self.1
        }
    }

    /// t1's read of B(5, 9) handed to it, and the read-ahead after it started.
    fn read_ahead(s: &mut Sharing<At, B, &'static str>, now: Instant) -> u64 {
        let Asked::Read(id, _) = s.ask(At(5), "t1", now) else {
            panic!("reads")
        };
        assert_eq!(s.done(id, Some(B(5, 9)), now), vec![("t1", Some(B(5, 9)))]);
        let Some((ahead, At(9))) = s.ahead(&At(5), &B(5, 9), now) else {
            panic!("reads ahead from the batch's snapshot")
        };
        // At most one in flight, and none twice for one start.
        assert!(s.ahead(&At(5), &B(5, 9), now).is_none());
        assert!(s.ahead(&At(9), &B(9, 14), now).is_none());
        ahead
    }

    #[test]
    fn a_read_ahead_is_kept_beyond_the_tick_and_answered() {
        let mut s: Sharing<At, B, &str> = Sharing::default();
        let now = Instant::now();
        let id = read_ahead(&mut s, now);
        // Nobody asked yet: no waiter, and no read-ahead of a read-ahead.
        assert_eq!(s.done(id, Some(B(9, 12)), now), vec![]);
        // Within the tick, B(5, 9) serves At(9) too but brings nothing: the read-ahead wins.
        assert!(matches!(
            s.ask(At(9), "t1", now),
            Asked::Ready(B(9, 12), "t1")
        ));
        let later = now + TICK * 10;
        assert!(matches!(
            s.ask(At(9), "t2", later),
            Asked::Ready(B(9, 12), "t2")
        ));
        // Handed to a target: the chain goes on from its snapshot.
        assert!(matches!(
            s.ahead(&At(9), &B(9, 12), later),
            Some((_, At(12)))
        ));
    }

    #[test]
    fn a_read_ahead_expires_after_its_bound() {
        let mut s: Sharing<At, B, &str> = Sharing::default();
        let now = Instant::now();
        let id = read_ahead(&mut s, now);
        s.done(id, Some(B(9, 12)), now);
        let late = now + AHEAD_KEEP;
        assert!(matches!(s.ask(At(9), "t1", late), Asked::Read(_, At(9))));
    }

    #[test]
    fn a_read_ahead_that_does_not_serve_a_request_is_not_given() {
        let mut s: Sharing<At, B, &str> = Sharing::default();
        let now = Instant::now();
        let id = read_ahead(&mut s, now);
        s.done(id, Some(B(9, 12)), now);
        let later = now + TICK * 2;
        // A target behind the read-ahead's start (its apply failed), one past its snapshot.
        assert!(matches!(s.ask(At(13), "t3", later), Asked::Read(_, At(13))));
        assert!(matches!(s.ask(At(7), "t2", later), Asked::Read(_, At(7))));
        // One that applied it: served, but with nothing new.
        let mut s: Sharing<At, B, &str> = Sharing::default();
        let id = read_ahead(&mut s, now);
        s.done(id, Some(B(9, 12)), now);
        assert!(matches!(s.ask(At(12), "t1", later), Asked::Read(_, At(12))));
        // One between its start and its snapshot takes it (and rejoins the chain).
        assert!(matches!(
            s.ask(At(10), "t2", later),
            Asked::Ready(B(9, 12), "t2")
        ));
    }

    #[test]
    fn a_request_joins_a_read_ahead_in_flight() {
        let mut s: Sharing<At, B, &str> = Sharing::default();
        let now = Instant::now();
        let id = read_ahead(&mut s, now);
        assert!(matches!(s.ask(At(9), "t1", now), Asked::Joined));
        assert!(matches!(s.ask(At(9), "t2", now + TICK), Asked::Joined));
        assert_eq!(
            s.done(id, Some(B(9, 12)), now + TICK),
            vec![("t1", Some(B(9, 12))), ("t2", Some(B(9, 12)))]
        );
    }

    #[test]
    fn an_empty_batch_ends_the_chain_and_an_empty_read_ahead_answers_nobody() {
        let mut s: Sharing<At, B, &str> = Sharing::default();
        let now = Instant::now();
        let id = read_ahead(&mut s, now);
        assert!(matches!(s.ask(At(9), "t1", now), Asked::Joined));
        // Its joiner takes it; it ends the chain; a later request reads anew.
        assert_eq!(s.done(id, Some(B(9, 9)), now), vec![("t1", Some(B(9, 9)))]);
        assert!(s.ahead(&At(9), &B(9, 9), now).is_none());
        // Within the tick, B(5, 9) handed to another target does not read ahead again; the
        // empty read-ahead answers nobody, nor does B(5, 9) a target at its snapshot.
        let later = now + TICK / 2;
        assert!(s.ahead(&At(5), &B(5, 9), later).is_none());
        assert!(matches!(s.ask(At(9), "t2", later), Asked::Read(_, At(9))));
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
}
