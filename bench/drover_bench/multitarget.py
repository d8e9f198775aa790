"""The workloads of issue 12 with more than one target, drover only.

fanout: one source to 4 targets vs the same to 1 target, in the same run. A
backlog of pgbench transactions is captured while the daemon is stopped, then
the daemon is started and timed until every target equals the source; the
source server's CPU over that time, per replicated transaction, is the cost of
reading for the targets (taken when the marker arrived, before the equality check).

isolation: one source to 2 targets under steady load; the lag of the healthy
target is probed while the other is healthy, stopped (pg_ctl stop, restarted
after the run) or locked (LOCK TABLE ... IN ACCESS EXCLUSIVE MODE held in an
open transaction, released after the run). The troubled target is listed
first in the sync, so a sequential fan-out meets it before the healthy one.
"""

import time

from . import procs
from .cluster import CommandError, Cluster
from .data import CHEAP, MD5, LagProbe, copy_schema_and_data, make_pair, place_marker, wait_marker
from .peers import DB, Drover
from .workloads import MAIN_SCALE, destroy, fmt_ms, guarded, percentile

FANOUT_TARGETS = (1, 4)
ISOLATION_MODES = ("healthy", "stopped", "locked")


def _drover_only(ctx):
    if "drover" not in ctx.peers:
        return {"status": "n/a (drover not among --peers)"}
    return None


def _fingerprint(cluster, db):
    with cluster.conn(db, app="drover-bench-poll") as c:
        c.query("SET max_parallel_workers_per_gather = 0")
        return c.value(CHEAP), c.value(MD5)


def _wait_equal(want, targets, t0, timeout, check, marker=None, on_marker=None):
    """Seconds from t0 until every (cluster, db) in targets shows `want` (the
    source's fingerprint), or None on timeout. With a marker (data.place_marker,
    placed before `want` was taken), the time is when the last target showed
    the marker, if every target is then equal; polling the marker costs an
    index lookup where the fingerprint costs a scan of every table.
    `on_marker` is called once every target has the marker, before the
    fingerprints are taken."""
    if marker is not None:
        seen = _wait_markers(marker, targets, t0, timeout, check)
        if seen is None:
            return None
        if on_marker:
            on_marker()
        if all(_fingerprint(cluster, db) == want for cluster, db in targets):
            return seen
    conns = {}
    left = list(targets)
    try:
        while left:
            sent = time.monotonic()
            for cluster, db in list(left):
                key = (cluster.port, db)
                try:
                    if key not in conns:
                        conns[key] = cluster.conn(db, app="drover-bench-poll")
                        conns[key].query("SET max_parallel_workers_per_gather = 0")
                    c = conns[key]
                    if c.value(CHEAP) == want[0] and c.value(MD5) == want[1]:
                        left.remove((cluster, db))
                except OSError:
                    conns.pop(key, None)
            if not left:
                return sent - t0
            check()
            if time.monotonic() - t0 > timeout:
                return None
            time.sleep(max(0.02, time.monotonic() - sent))
        return 0.0
    finally:
        for c in conns.values():
            c.close()


def _wait_markers(marker, targets, t0, timeout, check):
    """Seconds from t0 until the last target shows the marker row, or None."""
    latest = 0.0
    for cluster, db in targets:
        # Polled one after another: a target that had the marker before the
        # one polled ahead of it counts from its first poll, a poll later.
        seen = wait_marker(cluster, marker, t0, timeout, on_poll=check, db=db)
        if seen is None:
            return None
        latest = max(latest, seen)
    return latest


# -- fan-out ------------------------------------------------------------------


def fan_out(ctx):
    skip = _drover_only(ctx)
    if skip:
        return skip
    out = {"pgbench": f"pgbench -t {ctx.p.fanout_transactions} (scale {ctx.p.fanout_scale}) while the daemon is "
                      "stopped, then the time until every target equals the source"}
    for n in FANOUT_TARGETS:
        ctx.log(f"  {n} target(s)")
        out[str(n)] = guarded(ctx, f"fan-out to {n}", lambda: _fan_out_case(ctx, n))
    return out


def _fan_out_case(ctx, n):
    work = ctx.subdir(f"fanout-{n}")
    src, tgt = make_pair(work, f"fo{n}", ctx.p.fanout_scale)
    peer = None
    try:
        # Targets 2..n are databases of the same target cluster, copies of the first.
        dbs = {"t1": DB}
        for k in range(2, n + 1):
            tgt.psql("postgres", f"CREATE DATABASE {DB}_{k} TEMPLATE {DB}")
            dbs[f"t{k}"] = f"{DB}_{k}"
        databases = {"src": src, **{name: tgt for name in dbs}}
        peer = Drover(work, src, tgt, ctx.drover_bin, databases=databases, targets=tuple(dbs), dbnames=dbs)
        peer.install()
        runs = []
        for run_no in range(ctx.p.runs):
            _, bench = src.pgbench(DB, ["-n", "-t", str(ctx.p.fanout_transactions)])
            marker = place_marker(src)
            want = _fingerprint(src, DB)
            src0, tgt0, t0 = src.cpu_seconds(), tgt.cpu_seconds(), time.monotonic()
            peer.start()
            cpu = {}

            def at_marker():
                # Before the fingerprints: they scan every target table.
                cpu.update(src=src.cpu_seconds() - src0, tgt=tgt.cpu_seconds() - tgt0)

            with procs.OtherLoad([src, tgt], peer) as load:
                secs = _wait_equal(want, [(tgt, db) for db in dbs.values()], t0, ctx.p.fanout_timeout, peer.check_alive,
                                   marker, at_marker)
                daemon_cpu = peer.cpu_seconds()
            src_cpu = cpu.get("src", src.cpu_seconds() - src0)
            tgt_cpu = cpu.get("tgt")
            peer.stop()
            r = {"seconds": secs, "transactions": bench["transactions"], "source_cpu_s": src_cpu,
                 "target_cpu_s": tgt_cpu, "daemon_cpu_s": daemon_cpu, "other_cores": round(load.cores, 2)}
            runs.append(r)
            ctx.log(f"    run {run_no + 1}: {r['transactions']} tx to {n} target(s) in "
                    f"{'timeout' if secs is None else f'{secs:.2f} s'}, source cpu {src_cpu:.2f} s, target cpu {_f(tgt_cpu)} s, "
                    f"daemon cpu {daemon_cpu:.2f} s, other processes {r['other_cores']:.2f} cores")
            if secs is None:
                break
        return {"runs": runs}
    finally:
        destroy(peer, [src, tgt], ctx.keep)


def _f(x):
    return "-" if x is None else f"{x:.2f}"


# -- isolation ----------------------------------------------------------------


def isolation(ctx):
    skip = _drover_only(ctx)
    if skip:
        return skip
    out = {"pgbench": f"pgbench -c 4 -j 2 -R {ctx.p.isolation_rate} -T {ctx.p.isolation_seconds} (scale {MAIN_SCALE}); "
                      "probe row every 50 ms, polled on the healthy target"}
    work = ctx.subdir("isolation")
    src, healthy = make_pair(work, "iso", MAIN_SCALE)
    trouble = Cluster(work, "iso-tgt2").start()
    peer = None
    try:
        trouble.psql("postgres", f"CREATE DATABASE {DB}")
        copy_schema_and_data(src, trouble)
        trouble.psql(DB, "VACUUM ANALYZE")
        peer = Drover(work, src, healthy, ctx.drover_bin, databases={"src": src, "bad": trouble, "good": healthy},
                      targets=("bad", "good"))
        peer.install()
        peer.start()
        res = {m: [] for m in ISOLATION_MODES}
        id_base = 0
        for run_no in range(ctx.p.runs):
            for mode in ISOLATION_MODES:
                _settle(ctx, peer, src, [healthy, trouble])
                id_base += 1_000_000
                r = _isolation_run(ctx, peer, src, healthy, trouble, mode, id_base)
                res[mode].append(r)
                ctx.log(f"    run {run_no + 1}, other target {mode}: {r['tps']:.0f} tps, healthy target's lag "
                        f"p50 {fmt_ms(r['p50_ms'])}, p99 {fmt_ms(r['p99_ms'])}, {r['unseen']}/{r['probes']} "
                        f"probes unseen, other processes {r['other_cores']:.2f} cores")
        out.update(res)
        return out
    finally:
        destroy(peer, [src, healthy, trouble], ctx.keep)


def _settle(ctx, peer, src, targets):
    want = _fingerprint(src, DB)
    secs = _wait_equal(want, [(c, DB) for c in targets], time.monotonic(), ctx.p.isolation_settle_timeout,
                       peer.check_alive)
    if secs is None:
        raise CommandError(f"the targets did not catch up within {ctx.p.isolation_settle_timeout} s")


def _isolation_run(ctx, peer, src, healthy, trouble, mode, id_base):
    lock = None
    if mode == "stopped":
        trouble.stop()
    elif mode == "locked":
        lock = trouble.conn(DB, app="drover-bench-lock")
        lock.query("BEGIN")
        lock.query("LOCK TABLE pgbench_accounts IN ACCESS EXCLUSIVE MODE")
    probe = LagProbe(src, healthy, id_base)
    probe.start()
    try:
        with procs.OtherLoad([src, healthy], peer) as load:
            _, bench = src.pgbench(DB, ["-n", "-c", "4", "-j", "2", "-R", str(ctx.p.isolation_rate),
                                        "-T", str(ctx.p.isolation_seconds)])
    finally:
        probe.stop_writing()
        probe.wait_seen(ctx.p.lag_grace)
        if lock is not None:
            lock.query("COMMIT")
            lock.close()
        if mode == "stopped":
            trouble.restart()
    peer.check_alive()
    if probe.errors:
        raise CommandError("; ".join(probe.errors))
    lags = probe.lags()
    return {"tps": bench["tps"], "probes": len(lags), "unseen": sum(1 for x in lags if x == float("inf")),
            "p50_ms": _ms(percentile(lags, 50)), "p99_ms": _ms(percentile(lags, 99)),
            "other_cores": round(load.cores, 2)}


def _ms(secs):
    return None if secs is None else secs * 1000

