"""The workloads of issue 6. Each takes a Context and returns a JSON-able dict.

Peers run back to back, each on its own freshly built pair of clusters
(except source overhead, where all capture variants share one source so that
their runs can be interleaved). A failure of one peer is recorded in the
result and the benchmark goes on with the next.
"""

import os
import shutil
import threading
import time
import traceback

from . import money, procs
from .cluster import PG_BIN, Cluster, CommandError
from .data import EqualityPoll, differing_tables, LagProbe, conn_args, copy_schema_and_data, make_pair, pipe, psql_cmd
from .peers import DB, SYNC, TABLES, Bucardo, Drover, Native, ResourceSampler

MAIN_SCALE = 10


class Context:
    def __init__(self, work, params, drover_bin, peers, log, keep=False):
        self.work = work
        self.keep = keep
        self.p = params
        self.drover_bin = drover_bin
        self.peers = peers  # names, in run order
        self.log = log
        self._n = 0

    def subdir(self, tag):
        self._n += 1
        path = os.path.join(self.work, f"{self._n:02d}-{tag}")
        os.makedirs(path)
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")
        return path

    def make_peer(self, name, work, src, tgt):
        if name == "drover":
            return Drover(work, src, tgt, self.drover_bin)
        if name == "native":
            return Native(work, src, tgt)
        if name == "bucardo":
            return Bucardo(work, src, tgt, Cluster(work, "bucardo-ctl").start())
        raise ValueError(name)


def destroy(peer, clusters, keep=False):
    try:
        if peer is not None:
            peer.teardown()
    finally:
        for c in clusters:
            c.stop() if keep else c.destroy()


def guarded(ctx, label, fn):
    """Runs fn(); on failure logs it and returns {"error": ...}."""
    try:
        return fn()
    except Exception as e:
        ctx.log(f"  !! {label} failed: {e}")
        return {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-3000:]}


# -- 1. source overhead -------------------------------------------------------

OVERHEAD_CONFIGS = [
    ("none", None, False),
    ("drover triggers, daemon stopped", "drover", False),
    ("drover triggers, daemon running", "drover", True),
    ("bucardo triggers, daemon stopped", "bucardo", False),
    ("bucardo triggers, daemon running", "bucardo", True),
    # Context for "daemon running": what PostgreSQL's own replication costs the same source
    # on the same 2 cores (walsender decoding, the apply worker writing the target).
    ("native logical replication running", "native", True),
]


def source_overhead(ctx):
    work = ctx.subdir("overhead")
    src, tgt = make_pair(work, "ovh", MAIN_SCALE)
    peers = {}
    clusters = [src, tgt]
    try:
        for name in ("drover", "bucardo", "native"):
            if name in ctx.peers:
                peers[name] = ctx.make_peer(name, work, src, tgt)
                peers[name].install()
                peers[name].set_capture(False)
                if name == "bucardo":
                    clusters.append(peers[name].control)
        configs = [c for c in OVERHEAD_CONFIGS if c[1] is None or c[1] in peers]
        tps = {c[0]: [] for c in configs}
        other = {c[0]: [] for c in configs}
        args = ["-c", "4", "-j", "2", "-T", str(ctx.p.overhead_seconds)]
        # Warm-up, not counted: caches, hint bits and autovacuum after the load.
        src.pgbench(DB, ["-c", "4", "-j", "2", "-T", str(max(5, ctx.p.overhead_seconds // 3))])
        for run in range(ctx.p.runs):
            for label, peer_name, daemon in configs:
                peer = peers.get(peer_name)
                for p in peers.values():
                    p.empty_capture()
                if peer:
                    peer.set_capture(True)
                    if daemon:
                        if isinstance(peer, Native):
                            # Not the WAL of the runs before this one: only this run's.
                            peer.skip_backlog()
                        peer.start()
                        time.sleep(3)  # measure steady state, not the daemon's start
                try:
                    src.checkpoint(DB)
                    with procs.OtherLoad(clusters, peer if daemon else None) as load:
                        _, res = src.pgbench(DB, args)
                finally:
                    if peer:
                        if daemon:
                            peer.stop()
                        peer.set_capture(False)
                tps[label].append(res["tps"])
                other[label].append(round(load.cores, 2))
                ctx.log(f"  run {run + 1}: {label}: {res['tps']:.0f} tps (other processes: {load.cores:.2f} cores)")
        return {"pgbench": "pgbench " + " ".join(args) + f" (scale {MAIN_SCALE})", "tps": tps, "other_cores": other}
    finally:
        destroy(None, clusters, ctx.keep)


# -- 1b. capture variants (not in the default set: a tuning aid) -------------

CAPTURE_VARIANTS = ["none", "statement", "statement, no NOTIFY", "row"]


def capture_variants(ctx):
    """Source TPS under drover's capture variants, interleaved run by run, to
    show what each part of the capture costs: statement-level triggers with
    transition tables (the default), the same without the NOTIFY the trigger
    sends, and row-level triggers (DROVER_CAPTURE_MODE=row). No daemon runs."""
    work = ctx.subdir("capture")
    src, tgt = make_pair(work, "cap", MAIN_SCALE)
    try:
        drover = Drover(work, src, tgt, ctx.drover_bin)
        args = ["-c", "4", "-j", "2", "-T", str(ctx.p.overhead_seconds)]
        src.pgbench(DB, ["-c", "4", "-j", "2", "-T", str(max(5, ctx.p.overhead_seconds // 3))])
        tps = {v: [] for v in CAPTURE_VARIANTS}
        other = {v: [] for v in CAPTURE_VARIANTS}
        for run in range(ctx.p.runs):
            for variant in CAPTURE_VARIANTS:
                drover.cli("uninstall")
                if variant != "none":
                    mode = "row" if variant == "row" else "statement"
                    drover.cli("install", env={"DROVER_CAPTURE_MODE": mode})
                if variant == "statement, no NOTIFY":
                    _drop_notify(src)
                src.checkpoint(DB)
                with procs.OtherLoad([src, tgt]) as load:
                    _, res = src.pgbench(DB, args)
                tps[variant].append(res["tps"])
                other[variant].append(round(load.cores, 2))
                ctx.log(f"  run {run + 1}: {variant}: {res['tps']:.0f} tps (other processes: {load.cores:.2f} cores)")
        drover.cli("uninstall")
        return {"pgbench": "pgbench " + " ".join(args) + f" (scale {MAIN_SCALE})", "tps": tps, "other_cores": other}
    finally:
        destroy(None, [src, tgt], ctx.keep)


def _drop_notify(src):
    """Rewrites drover's capture functions without their pg_notify call."""
    import re

    defs = src.psql(DB, "SELECT string_agg(pg_get_functiondef(p.oid), E';\\n') || ';' FROM pg_proc p "
                        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'drover' "
                        "AND p.prosrc LIKE '%pg_notify%'")
    if defs.strip(";").strip():
        src.psql(DB, re.sub(r"PERFORM pg_notify\([^;]*\);", "NULL;", defs))
    left = src.psql(DB, "SELECT count(*) FROM pg_proc WHERE prosrc LIKE '%pg_notify%' "
                        "AND pronamespace = 'drover'::regnamespace")
    if left != "0":
        raise CommandError(f"{left} capture functions still call pg_notify")


# -- 2 and 5. catch-up, with its cost ----------------------------------------


def catch_up(ctx, scenario):
    """scenario: "seed" (scale 1, pgbench -t 10000) or "big" (scale 10,
    pgbench -c 4 -T 60). Returns {peer: {"runs": [...]}}."""
    if scenario == "seed":
        scale, args, timeout = 1, ["-t", str(ctx.p.seed_transactions)], ctx.p.seed_timeout
    else:
        scale, args, timeout = MAIN_SCALE, ["-c", "4", "-T", str(ctx.p.big_seconds)], ctx.p.big_timeout
    out = {"pgbench": "pgbench " + " ".join(args) + f" (scale {scale})", "timeout_s": timeout}
    for name in ctx.peers:
        ctx.log(f"  {name}")
        out[name] = guarded(ctx, f"catch-up {scenario} {name}", lambda: _catch_up_peer(ctx, name, scale, args, timeout))
    return out


def _catch_up_peer(ctx, name, scale, args, timeout):
    work = ctx.subdir(f"catchup-{name}")
    src, tgt = make_pair(work, "cu", scale)
    peer = None
    try:
        peer = ctx.make_peer(name, work, src, tgt)
        peer.install()
        runs = []
        for run in range(ctx.p.runs):
            _, bench = src.pgbench(DB, args)
            r = _measure_catch_up(ctx, peer, timeout)
            r["transactions"] = bench["transactions"]
            runs.append(r)
            secs = "timeout" if r["seconds"] is None else f"{r['seconds']:.2f} s"
            extra = f", drover wait {r['wait_seconds']:.2f} s" if r.get("wait_seconds") is not None else ""
            ctx.log(f"    run {run + 1}: {bench['transactions']} tx caught up in {secs}{extra}, "
                    f"daemon cpu {r['daemon_cpu_s']:.2f} s, peak rss {r['peak_rss_kb'] / 1024:.1f} MB, "
                    f"other processes {r['other_cores']:.2f} cores")
            if r["seconds"] is None:
                ctx.log("    timed out: further runs skipped (the target is behind)")
                break
        return {"runs": runs}
    finally:
        destroy(peer, peer.clusters() if peer else [src, tgt], ctx.keep)


def _measure_catch_up(ctx, peer, timeout):
    poll = EqualityPoll(peer.source, peer.target, marker=True)
    clusters = peer.clusters()
    server0 = sum(c.cpu_seconds() for c in clusters)
    waiter, wait_seconds = None, [None]
    t0 = time.monotonic()
    peer.start()
    if isinstance(peer, Drover):
        waiter = peer.wait_proc(timeout)

        def watch():
            if waiter.wait() == 0:
                wait_seconds[0] = time.monotonic() - t0

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
    check = peer.check_alive if isinstance(peer, Drover) else None
    cpu = {}

    def at_marker():
        # Before the fingerprints, which scan every table of the target.
        cpu.update(daemon=peer.cpu_seconds(), server=sum(c.cpu_seconds() for c in clusters) - server0)

    try:
        with procs.OtherLoad(clusters, peer) as load, ResourceSampler(peer) as sampler:
            seconds = poll.wait(t0, timeout, on_poll=check, on_marker=at_marker)
            daemon_cpu = cpu.get("daemon", peer.cpu_seconds())
        server_cpu = cpu.get("server", sum(c.cpu_seconds() for c in clusters) - server0)
    finally:
        if waiter is not None:
            if waiter.poll() is None:
                waiter.wait(30) if seconds is not None else waiter.kill()
            watcher.join(5)
        peer.stop()
    r = {"seconds": seconds, "daemon_cpu_s": daemon_cpu, "server_cpu_s": server_cpu,
         "peak_rss_kb": sampler.peak_kb, "other_cores": round(load.cores, 2)}
    if seconds is None:
        r["differing_tables"] = differing_tables(peer.source, peer.target)
        ctx.log(f"    timed out; tables that differ: {', '.join(r['differing_tables']) or 'none (equal just after the deadline)'}")
    if isinstance(peer, Drover):
        r["wait_seconds"] = wait_seconds[0]
    return r


# -- 3. steady lag ------------------------------------------------------------


def steady_lag(ctx):
    out = {"probe": "one row committed every 50 ms, target polled every 5 ms"}
    for name in ctx.peers:
        ctx.log(f"  {name}")
        out[name] = guarded(ctx, f"lag {name}", lambda: _lag_peer(ctx, name))
    return out


def _lag_peer(ctx, name):
    work = ctx.subdir(f"lag-{name}")
    src, tgt = make_pair(work, "lag", MAIN_SCALE)
    peer = None
    try:
        peer = ctx.make_peer(name, work, src, tgt)
        peer.install()
        peer.start()
        res = {}
        id_base = 0
        for rate, runs in ctx.p.lag_rates:
            res[str(rate)] = []
            for run in range(runs):
                settle = EqualityPoll(src, tgt).wait(time.monotonic(), ctx.p.settle_timeout)
                id_base += 1_000_000
                probe = LagProbe(src, tgt, id_base)
                probe.start()
                try:
                    with procs.OtherLoad(peer.clusters(), peer) as load:
                        _, bench = src.pgbench(DB, ["-c", "4", "-j", "2", "-R", str(rate), "-T", str(ctx.p.lag_seconds)])
                finally:
                    probe.stop_writing()
                    probe.wait_seen(ctx.p.lag_grace)
                if probe.errors:
                    raise CommandError("; ".join(probe.errors))
                lags = probe.lags()
                r = {"rate": rate, "tps": bench["tps"], "probes": len(lags),
                     "unseen": sum(1 for x in lags if x == float("inf")),
                     "p50_ms": percentile(lags, 50) * 1000, "p99_ms": percentile(lags, 99) * 1000,
                     "max_ms": max(lags) * 1000 if lags else None,
                     "settled_before_s": settle, "other_cores": round(load.cores, 2)}
                res[str(rate)].append(r)
                ctx.log(f"    -R {rate} run {run + 1}: {bench['tps']:.0f} tps, lag p50 {fmt_ms(r['p50_ms'])}, "
                        f"p99 {fmt_ms(r['p99_ms'])}, {r['unseen']}/{r['probes']} probes unseen, "
                        f"other processes {r['other_cores']:.2f} cores")
        return res
    finally:
        destroy(peer, peer.clusters() if peer else [src, tgt], ctx.keep)


def percentile(values, pct):
    """Nearest-rank percentile; inf (a probe never seen) sorts last."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-pct * len(s) // 100)) - 1))
    return s[k]


def fmt_ms(ms):
    if ms is None:
        return "-"
    if ms == float("inf"):
        return "never"
    return f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


# -- 4. initial copy ----------------------------------------------------------

PGBENCH_TABLES = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]


def initial_copy(ctx):
    drover_copy = "copy" in _drover_help(ctx)
    out = {"drover": "schema (pg_dump --schema-only | psql), drover install, drover copy" if drover_copy
           else "n/a (not built)"}
    for scale in ctx.p.copy_scales:
        ctx.log(f"  scale {scale}")
        out[str(scale)] = guarded(ctx, f"initial copy scale {scale}", lambda: _copy_scale(ctx, scale, drover_copy))
    return out


def _drover_help(ctx):
    from .cluster import run

    text = run([ctx.drover_bin, "--help"])
    return {line.split()[0] for line in text.splitlines() if line.startswith("  ") and line.split()}


def _copy_scale(ctx, scale, drover_copy):
    work = ctx.subdir(f"copy-{scale}")
    src = Cluster(work, "copy-src").start()
    tgt = Cluster(work, "copy-tgt").start()
    try:
        src.psql("postgres", f"CREATE DATABASE {DB}")
        src.pgbench(DB, ["-i", "-q", "-s", str(scale)])
        src.psql(DB, "VACUUM ANALYZE")
        expect = _copy_fingerprint(src)
        methods = {"pg_dump -Fc | pg_restore": _dump_restore, "COPY pipe": _copy_pipe}
        if drover_copy:
            tables = [f"public.{t}" for t in PGBENCH_TABLES if t != "pgbench_history"]
            drover = Drover(work, src, tgt, ctx.drover_bin, tables=tables)

            def drover_copy_fn(src, tgt):
                pipe([f"{PG_BIN}/pg_dump", "--schema-only", "-t", "public.pgbench_*", *conn_args(src)], psql_cmd(tgt))
                drover.cli("install")
                drover.cli("copy", SYNC)

            methods = {"drover copy": drover_copy_fn, **methods}
        res = {m: [] for m in methods}
        order = list(methods)
        for run in range(ctx.p.runs):
            # Each run starts with another method: the first copy after the load
            # otherwise pays for the source's own checkpoint of it.
            for method in order[run % len(order):] + order[:run % len(order)]:
                fn = methods[method]
                tgt.psql("postgres", f"DROP DATABASE IF EXISTS {DB}")
                tgt.psql("postgres", f"CREATE DATABASE {DB}")
                tgt.checkpoint("postgres")
                src.checkpoint(DB)
                t0 = time.monotonic()
                try:
                    fn(src, tgt)
                    secs = time.monotonic() - t0
                finally:
                    if method == "drover copy":
                        # Untimed: pg_dump would carry drover's triggers to the next method's target.
                        drover.cli("uninstall")
                if _copy_fingerprint(tgt) != expect:
                    raise CommandError(f"{method}: the target differs from the source after the copy")
                res[method].append(secs)
                ctx.log(f"    run {run + 1}: {method}: {secs:.1f} s")
        return res
    finally:
        src.destroy()
        tgt.destroy()


def _copy_fingerprint(c):
    return c.psql(DB, "SELECT (SELECT sum(abalance) || '/' || count(*) FROM pgbench_accounts) || ' ' || "
                      "(SELECT count(*) FROM pgbench_branches) || ' ' || (SELECT count(*) FROM pgbench_tellers) || ' ' || "
                      "(SELECT count(*) FROM pg_indexes WHERE tablename LIKE 'pgbench%')")


def _dump_restore(src, tgt):
    pipe([f"{PG_BIN}/pg_dump", "-Fc", "-t", "public.pgbench_*", *conn_args(src)],
         [f"{PG_BIN}/pg_restore", "--no-owner", *conn_args(tgt)])


def _copy_pipe(src, tgt):
    """Schema without indexes, one COPY per table, then the indexes and
    constraints: what a careful person does by hand."""
    pipe([f"{PG_BIN}/pg_dump", "-t", "public.pgbench_*", "--section=pre-data", *conn_args(src)], psql_cmd(tgt))
    for t in PGBENCH_TABLES:
        pipe(psql_cmd(src, "-c", f"COPY public.{t} TO STDOUT"), psql_cmd(tgt, "-c", f"COPY public.{t} FROM STDIN"))
    pipe([f"{PG_BIN}/pg_dump", "-t", "public.pgbench_*", "--section=post-data", *conn_args(src)], psql_cmd(tgt))


# -- 6. multi-master ----------------------------------------------------------


# drover replicates the balances as increments (issue 13) and, across masters, the key-less
# pgbench_history; Bucardo needs a key for a multi-source sync.
MM_DELTA_COLUMNS = (
    "[relgroups.herd.delta_columns]\n"
    '"public.pgbench_accounts" = ["abalance"]\n'
    '"public.pgbench_branches" = ["bbalance"]\n'
    '"public.pgbench_tellers" = ["tbalance"]\n'
)
MM_HISTORY = ["public.pgbench_history"]


def multi_master(ctx):
    out = {"pgbench": f"pgbench -n -c 2 -T {ctx.p.mm_seconds} (scale {MAIN_SCALE}) on both masters at once, "
                      "then the time until both hold the same rows, and the money check: every balance "
                      "must equal the sum of its deltas in pgbench_history"}
    for name in ctx.peers:
        if name == "native":
            out[name] = {"status": "n/a (PostgreSQL 15 cannot filter changes by origin; two-way needs 16's origin = none)"}
        elif name == "drover" and not _drover_multi_master(ctx):
            out[name] = {"status": "n/a (multi-master not built)"}
        else:
            ctx.log(f"  {name}")
            out[name] = guarded(ctx, f"multi-master {name}", lambda: _mm_peer(ctx, name))
    return out


def _mm_peer(ctx, name):
    work = ctx.subdir(f"mm-{name}")
    a, b = make_pair(work, "mm", MAIN_SCALE)
    peer = None
    try:
        dbs = {"a": a, "b": b}
        if name == "drover":
            peer = Drover(work, a, b, ctx.drover_bin, databases=dbs, sources=("a", "b"), targets=(),
                          tables=TABLES + MM_HISTORY, relgroup_extra=MM_DELTA_COLUMNS)
        else:
            peer = Bucardo(work, a, b, Cluster(work, "bucardo-ctl").start(), databases=dbs,
                           roles={"a": "source", "b": "source"})
        peer.install()
        peer.start()
        runs = []
        for run in range(ctx.p.runs):
            results, errors = {}, []

            # -n: pgbench would otherwise truncate pgbench_history before each run, while the
            # balances keep every run's deltas (the money check adds up all runs).
            def bench(c, key):
                try:
                    results[key] = c.pgbench(DB, ["-n", "-c", "2", "-T", str(ctx.p.mm_seconds)])[1]
                except Exception as e:
                    errors.append(str(e))

            threads = [threading.Thread(target=bench, args=(c, k)) for k, c in dbs.items()]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise CommandError("; ".join(errors))
            t0 = time.monotonic()
            # A peer that replicates pgbench_history has converged once the history has too.
            also = [HISTORY] if name == "drover" and MM_HISTORY else []
            secs = converge(a, b, t0, ctx.p.mm_timeout, check=getattr(peer, "check_alive", None), also=also)
            r = {"seconds": secs, "tps_a": results["a"]["tps"], "tps_b": results["b"]["tps"],
                 "transactions": results["a"]["transactions"] + results["b"]["transactions"]}
            if secs is not None:
                r["money"] = money.check(dbs, history_replicated=name == "drover" and bool(MM_HISTORY))
            runs.append(r)
            ctx.log(f"    run {run + 1}: {r['transactions']} tx ({r['tps_a']:.0f} + {r['tps_b']:.0f} tps), "
                    f"converged {'never (timeout)' if secs is None else f'after {secs:.2f} s'}")
            if secs is None:
                break
        return {"runs": runs}
    finally:
        destroy(peer, peer.clusters() if peer else [a, b], ctx.keep)


HISTORY = "SELECT count(*) || '/' || coalesce(sum(delta), 0) FROM pgbench_history"


def converge(a, b, t0, timeout, check=None, also=()):
    """Seconds from t0 until a and b hold the same rows (both may still move); `also`:
    more queries whose answers must match."""
    from .data import CHEAP, MD5

    ca, cb = a.conn(DB, app="drover-bench-poll"), b.conn(DB, app="drover-bench-poll")
    try:
        for c in (ca, cb):
            c.query("SET max_parallel_workers_per_gather = 0")
        while True:
            sent = time.monotonic()
            if (ca.value(CHEAP) == cb.value(CHEAP) and all(ca.value(q) == cb.value(q) for q in also)
                    and ca.value(MD5) == cb.value(MD5)):
                return sent - t0
            if check:
                check()
            if time.monotonic() - t0 > timeout:
                return None
            time.sleep(max(0.02, time.monotonic() - sent))
    finally:
        ca.close()
        cb.close()


def _drover_multi_master(ctx):
    import subprocess

    path = os.path.join(ctx.work, "mm-check.toml")
    with open(path, "w") as f:
        f.write(
            '[databases.a]\nhost = "127.0.0.1"\nport = 1\ndbname = "x"\nuser = "postgres"\n'
            '[databases.b]\nhost = "127.0.0.1"\nport = 1\ndbname = "x"\nuser = "postgres"\n'
            '[relgroups.g]\ntables = ["t"]\n[syncs.mm]\nrelgroup = "g"\nsources = ["a", "b"]\n'
        )
    p = subprocess.run([ctx.drover_bin, "--config", path, "check"], capture_output=True, text=True, timeout=60)
    return not (p.returncode == 2 and "not supported" in p.stderr)
