"""Test data and the two measuring instruments: table equality and probe lag.

Equality is "md5 of the ordered tables": for each replicated table,
md5(string_agg(md5(row::text), '' ORDER BY key)), on both sides. Hashing 1M
rows takes about a second, so a catch-up is timed by a marker instead: a row
committed into bench_probe on the quiescent source after the backlog, polled by
key on the target every few milliseconds. Every peer applies commits in order
(drover and Bucardo in snapshot-consistent rounds, native in commit order), so
the marker arriving means the backlog did; equality is then checked in full,
and a target that is not equal yet is polled further with the fingerprint (a
cheap one first: sums of the balances and counts, hashed only when that
matches), whose time then counts. Polling the fingerprint alone took a
seq scan of 1M rows per poll beside the apply, and its time had the
granularity of a whole poll (seconds with 4 targets on one cluster).
"""

import subprocess
import threading
import time

from .cluster import PG_BIN, Cluster, CommandError
from .peers import DB

KEYS = {"pgbench_accounts": "aid", "pgbench_branches": "bid", "pgbench_tellers": "tid", "bench_probe": "id"}

CHEAP = (
    "SELECT (SELECT coalesce(sum(abalance), 0) || '/' || count(*) FROM pgbench_accounts) || ' ' || "
    "(SELECT coalesce(sum(bbalance), 0) || '/' || count(*) FROM pgbench_branches) || ' ' || "
    "(SELECT coalesce(sum(tbalance), 0) || '/' || count(*) FROM pgbench_tellers) || ' ' || "
    "(SELECT count(*) || '/' || coalesce(max(id), 0) FROM bench_probe)"
)
MD5 = " || ' ' || ".join(
    f"(SELECT coalesce(md5(string_agg(md5(t::text), '' ORDER BY {key})), '-') FROM public.{table} t)"
    for table, key in KEYS.items()
)
MD5 = "SELECT " + MD5


def make_pair(work, tag, scale):
    """A source with pgbench data at `scale` plus the probe table, and a target
    holding a copy (pg_dump of public before any peer is installed)."""
    src = Cluster(work, f"{tag}-src").start()
    tgt = Cluster(work, f"{tag}-tgt").start()
    for c in (src, tgt):
        c.psql("postgres", f"CREATE DATABASE {DB}")
    src.pgbench(DB, ["-i", "-q", "-s", str(scale)])
    src.psql(DB, "CREATE TABLE bench_probe (id bigint PRIMARY KEY, sent_at timestamptz NOT NULL DEFAULT clock_timestamp())")
    copy_schema_and_data(src, tgt)
    for c in (src, tgt):
        c.psql(DB, "VACUUM ANALYZE")
    return src, tgt


def pipe(producer, consumer, timeout=3600):
    """producer | consumer, both argv lists; raises with stderr on failure."""
    p1 = subprocess.Popen(producer, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p2 = subprocess.Popen(consumer, stdin=p1.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    p1.stdout.close()
    try:
        err2 = p2.communicate(timeout=timeout)[1]
        err1 = p1.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        p1.kill()
        p2.kill()
        p1.wait()
        p2.wait()
        raise CommandError(f"{producer[0]} | {consumer[0]}: timed out")
    if p1.returncode != 0 or p2.returncode != 0:
        raise CommandError(
            f"{' '.join(producer)} | {' '.join(consumer)} failed ({p1.returncode}/{p2.returncode}): "
            f"{err1.decode(errors='replace')[-1500:]} {err2.decode(errors='replace')[-1500:]}"
        )


def conn_args(c, db=DB):
    return ["-h", "127.0.0.1", "-p", str(c.port), "-U", "postgres", "-d", db]


def psql_cmd(c, *extra, db=DB):
    return [f"{PG_BIN}/psql", "-XqAt", "-v", "ON_ERROR_STOP=1", *conn_args(c, db), *extra]


def copy_schema_and_data(src, tgt):
    pipe([f"{PG_BIN}/pg_dump", "-t", "public.pgbench_*", "-t", "public.bench_probe", *conn_args(src)], psql_cmd(tgt))


def fingerprint(cluster):
    with cluster.conn(DB) as c:
        c.query("SET max_parallel_workers_per_gather = 0")
        return c.value(CHEAP), c.value(MD5)


def place_marker(source):
    """Commits a marker row into bench_probe on the source and returns its id.
    Negative ids stay clear of the lag probes' ids."""
    with source.conn(DB, app="drover-bench-marker") as c:
        return int(c.value("INSERT INTO bench_probe (id) SELECT least(coalesce(min(id), 0), 0) - 1 "
                           "FROM bench_probe RETURNING id"))


class EqualityPoll:
    """Polls the target until it equals the (quiescent) source."""

    def __init__(self, source, target, marker=False):
        self.marker = place_marker(source) if marker else None
        self.source_cheap, self.source_md5 = fingerprint(source)
        self.target = target

    def wait(self, t0, timeout, min_interval=0.02, on_poll=None, on_marker=None):
        """Returns seconds from `t0` (time.monotonic()) until equal, or None
        on timeout. `on_poll` is called after every poll (it may raise);
        `on_marker` once the marker arrived, before the fingerprints."""
        if self.marker is not None:
            seen = wait_marker(self.target, self.marker, t0, timeout, on_poll)
            if seen is None:
                return None
            if on_marker:
                on_marker()
            if fingerprint(self.target) == (self.source_cheap, self.source_md5):
                return seen
        return self._wait_fingerprint(t0, timeout, min_interval, on_poll)

    def _wait_fingerprint(self, t0, timeout, min_interval, on_poll):
        deadline = t0 + timeout
        conn = None
        try:
            while True:
                if conn is None:
                    try:
                        conn = self.target.conn(DB, app="drover-bench-poll")
                        conn.query("SET max_parallel_workers_per_gather = 0")
                    except OSError:
                        conn = None
                sent = time.monotonic()
                if conn is not None:
                    if conn.value(CHEAP) == self.source_cheap and conn.value(MD5) == self.source_md5:
                        return sent - t0
                took = time.monotonic() - sent
                if on_poll:
                    on_poll()
                if time.monotonic() > deadline:
                    return None
                time.sleep(max(min_interval, took))
        finally:
            if conn is not None:
                conn.close()


def wait_marker(target, marker, t0, timeout, on_poll=None, db=DB, poll=0.005):
    """Seconds from `t0` until the target has the marker row (the time the
    seeing query was sent), or None on timeout."""
    conn = None
    try:
        while True:
            sent = time.monotonic()
            try:
                if conn is None:
                    conn = target.conn(db, app="drover-bench-marker-poll")
                if conn.query(f"SELECT 1 FROM bench_probe WHERE id = {marker}"):
                    return sent - t0
            except OSError:
                conn = None
            if on_poll:
                on_poll()
            if time.monotonic() - t0 > timeout:
                return None
            time.sleep(poll)
    finally:
        if conn is not None:
            conn.close()


def differing_tables(source, target):
    """Names of the replicated tables whose md5 differs (for failure reports)."""
    out = []
    for table, key in KEYS.items():
        q = f"SELECT count(*) || ' ' || coalesce(md5(string_agg(md5(t::text), '' ORDER BY {key})), '-') FROM public.{table} t"
        a, b = source.psql(DB, q), target.psql(DB, q)
        if a != b:
            out.append(f"{table} (source {a.split()[0]} rows, target {b.split()[0]} rows)")
    return out


class LagProbe:
    """Commits a row into bench_probe on the source every `interval` s and
    polls the target every `poll` s; a probe's lag is the time from its
    commit returning to the first poll that sees it."""

    def __init__(self, source, target, id_base, interval=0.05, poll=0.005):
        self.source, self.target = source, target
        self.id_base = id_base
        self.interval, self.poll = interval, poll
        self.sent = {}  # id -> monotonic time the commit returned
        self.seen = {}  # id -> monotonic time first seen on the target
        self.errors = []
        self._writing = threading.Event()
        self._reading = threading.Event()
        self._lock = threading.Lock()

    def _writer(self):
        try:
            with self.source.conn(DB, app="drover-bench-probe") as c:
                start = time.monotonic()
                k = 0
                while self._writing.is_set():
                    k += 1
                    pid = self.id_base + k
                    c.query(f"INSERT INTO bench_probe (id) VALUES ({pid})")
                    with self._lock:
                        self.sent[pid] = time.monotonic()
                    pause = start + k * self.interval - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
        except Exception as e:
            self.errors.append(f"probe writer: {e}")

    def _reader(self):
        try:
            with self.target.conn(DB, app="drover-bench-probe-poll") as c:
                # Every id <= low has been seen; ids are read one by one, so a
                # probe a peer skipped is not counted as arrived.
                low = self.id_base
                while self._reading.is_set():
                    rows = c.query(f"SELECT id FROM bench_probe WHERE id > {low}")
                    now = time.monotonic()
                    for (pid,) in rows:
                        self.seen.setdefault(int(pid), now)
                    while low + 1 in self.seen:
                        low += 1
                    time.sleep(self.poll)
        except Exception as e:
            self.errors.append(f"probe reader: {e}")

    def start(self):
        self._writing.set()
        self._reading.set()
        self._threads = [threading.Thread(target=self._writer, daemon=True),
                         threading.Thread(target=self._reader, daemon=True)]
        for t in self._threads:
            t.start()

    def stop_writing(self):
        self._writing.clear()
        self._threads[0].join()

    def wait_seen(self, grace):
        """Waits up to `grace` s for every probe to arrive, then stops."""
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and not self.errors:
            with self._lock:
                if all(p in self.seen for p in self.sent):
                    break
            time.sleep(0.05)
        self._reading.clear()
        self._threads[1].join()

    def lags(self):
        """Lag in seconds per probe; inf for probes never seen."""
        with self._lock:
            return [max(0.0, self.seen[p] - t) if p in self.seen else float("inf") for p, t in sorted(self.sent.items())]
