#!/usr/bin/env python3
"""drover benchmark: drover vs Bucardo 5.6 vs PostgreSQL 15 logical replication.

Run it through scripts/bench, which installs packages, builds drover in
release mode and holds the lock. See docs/performance.md.
"""

import argparse
import datetime
import fcntl
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from drover_bench import multitarget, procs, report, workloads  # noqa: E402
from drover_bench.cluster import INITDB_ARGS, SETTINGS, run, server_version  # noqa: E402
from drover_bench.workloads import MAIN_SCALE  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCK = os.path.join(tempfile.gettempdir(), "drover-bench.lock")
WORKLOADS = ["overhead", "catchup", "lag", "copy", "cost", "multimaster", "fanout", "isolation"]
EXTRA_WORKLOADS = ["capture"]  # run only when named in --only
PEERS = ["drover", "native", "bucardo"]


class Params:
    """Durations and repetitions; --quick shortens everything."""

    def __init__(self, quick, runs):
        self.quick = quick
        self.runs = runs or (1 if quick else 3)
        self.overhead_seconds = 10 if quick else 30
        self.seed_transactions = 10000
        self.seed_timeout = 90 if quick else 180
        self.big_seconds = 15 if quick else 60
        self.big_timeout = 90 if quick else 240
        self.lag_seconds = 15 if quick else 60
        # (rate, runs): the -R 500 target gets the full repetitions; -R 100
        # is one run in the full set to stay under 45 minutes.
        self.lag_rates = [(100, 1), (500, self.runs)]
        self.lag_grace = 15 if quick else 30
        self.settle_timeout = 60 if quick else 120
        self.copy_scales = [10] if quick else [10, 50]
        self.mm_seconds = 10 if quick else 20
        self.mm_timeout = 60 if quick else 120
        # Issue 12: fan-out (1 vs 4 targets) and isolation (2 targets, one troubled).
        self.fanout_scale = 1 if quick else MAIN_SCALE
        self.fanout_transactions = 2000 if quick else 10000
        self.fanout_timeout = 120 if quick else 300
        self.isolation_seconds = 15 if quick else 60
        self.isolation_rate = 500
        self.isolation_settle_timeout = 120 if quick else 300

    def as_dict(self):
        return dict(self.__dict__)


def machine():
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "memory_mb": mem, "cpu": cpu, "kernel": platform.release(),
            "loadavg_at_start": open("/proc/loadavg").read().split()[:3]}


def versions(drover_bin, peers):
    v = {"postgresql": server_version(), "pgbench": run(["/usr/lib/postgresql/15/bin/pgbench", "--version"]).strip(),
         "drover": run([drover_bin, "--version"]).strip()}
    try:
        v["drover_commit"] = run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]).strip()
        if run(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"]).strip():
            v["drover_commit"] += " (with uncommitted changes)"
    except Exception:
        pass
    if "bucardo" in peers:
        v["bucardo"] = run(["bucardo", "--version"]).strip()
    return v


def header(meta):
    m, v, p = meta["machine"], meta["versions"], meta["params"]
    lines = [
        f"drover benchmark, {meta['started']}, {'quick' if p['quick'] else 'full'} mode, {p['runs']} run(s) per measurement",
        f"machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_mb']} MB RAM, Linux {m['kernel']}, load average at start {' '.join(m['loadavg_at_start'])}",
        "versions: " + "; ".join(f"{k} {val}" for k, val in v.items()),
        "clusters: initdb " + " ".join(INITDB_ARGS) + "; non-default settings: "
        + ", ".join(f"{k} = {val}" for k, val in SETTINGS.items())
        + ", port = <free port>, unix_socket_directories = <temp dir>; everything else default (fsync, synchronous_commit, full_page_writes on)",
        f"peers: {', '.join(meta['peers'])}",
    ]
    return "\n".join(lines)


def take_lock():
    if os.environ.get("DROVER_BENCH_LOCKED") == "1":
        return None
    fd = open(LOCK, "w")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(f"another benchmark holds {LOCK}; refusing to run a second copy")
    return fd


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one run, short durations (under 10 minutes)")
    ap.add_argument("--only", default="", help=f"comma-separated workloads: {','.join(WORKLOADS)}; also "
                    "capture (drover's capture variants, a tuning aid not in the default set)")
    ap.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated peers: {','.join(PEERS)}")
    ap.add_argument("--runs", type=int, default=0, help="runs per measurement (default 3, quick 1)")
    ap.add_argument("--drover", default=None, help="drover binary (default: target/release/drover)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (server and daemon logs)")
    ap.add_argument("--results", default=os.path.join(ROOT, "bench", "results"), help="directory for the JSON")
    args = ap.parse_args()

    only = [w for w in args.only.split(",") if w] or WORKLOADS
    peers = [p for p in args.peers.split(",") if p]
    for w in only:
        if w not in WORKLOADS + EXTRA_WORKLOADS:
            ap.error(f"unknown workload {w!r} (choose from {', '.join(WORKLOADS + EXTRA_WORKLOADS)})")
    for p in peers:
        if p not in PEERS:
            ap.error(f"unknown peer {p!r} (choose from {', '.join(PEERS)})")
    drover_bin = args.drover or os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "drover")
    if not os.access(drover_bin, os.X_OK):
        ap.error(f"no drover binary at {drover_bin}: run scripts/bench, which builds it")

    lock = take_lock()
    params = Params(args.quick, args.runs)
    started = datetime.datetime.now().astimezone()
    meta = {"started": started.isoformat(timespec="seconds"), "params": params.as_dict(), "peers": peers,
            "workloads": only, "machine": machine(), "versions": versions(drover_bin, peers),
            "settings": dict(SETTINGS), "initdb": INITDB_ARGS}
    results = {"meta": meta, "workloads": {}, "elapsed_s": {}}
    os.makedirs(args.results, exist_ok=True)
    out_path = os.path.join(args.results, started.strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else "") + ".json")

    def save():
        with open(out_path + ".tmp", "w") as f:
            json.dump(results, f, indent=1, default=str)
        os.replace(out_path + ".tmp", out_path)

    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    print(header(meta), flush=True)
    work = tempfile.mkdtemp(prefix="drover-bench.")
    if os.geteuid() == 0:
        shutil.chown(work, "postgres", "postgres")

    def log(msg):
        print(f"[{time.monotonic() - t_start:7.1f}s] {msg}", flush=True)

    t_start = time.monotonic()
    ctx = workloads.Context(work, params, drover_bin, peers, log, args.keep)
    plan = []
    if "overhead" in only:
        plan.append(("overhead", "1. source overhead", lambda: workloads.source_overhead(ctx)))
    if "capture" in only:
        plan.append(("capture", "1b. capture variants", lambda: workloads.capture_variants(ctx)))
    if "catchup" in only or "cost" in only:
        plan.append(("catchup_seed", "2a. catch-up, seed backlog", lambda: workloads.catch_up(ctx, "seed")))
        plan.append(("catchup_big", "2b. catch-up, big backlog", lambda: workloads.catch_up(ctx, "big")))
    if "lag" in only:
        plan.append(("lag", "3. steady lag", lambda: workloads.steady_lag(ctx)))
    if "copy" in only:
        plan.append(("initial_copy", "4. initial copy", lambda: workloads.initial_copy(ctx)))
    if "multimaster" in only:
        plan.append(("multi_master", "6. multi-master", lambda: workloads.multi_master(ctx)))
    if "fanout" in only:
        plan.append(("fanout", "7. fan-out, 1 vs 4 targets", lambda: multitarget.fan_out(ctx)))
    if "isolation" in only:
        plan.append(("isolation", "8. target isolation", lambda: multitarget.isolation(ctx)))
    rc = 0
    try:
        for key, title, fn in plan:
            log(f"== {title}")
            t0 = time.monotonic()
            results["workloads"][key] = workloads.guarded(ctx, title, fn)
            results["elapsed_s"][key] = round(time.monotonic() - t0, 1)
            save()
    except BaseException as e:
        rc = 130 if isinstance(e, KeyboardInterrupt) else getattr(e, "code", 1) or 1
        print(f"interrupted: {e!r}", file=sys.stderr)
    finally:
        procs.stop_all(log)
        if args.keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["elapsed_s"]["total"] = round(time.monotonic() - t_start, 1)
    meta["machine"]["loadavg_at_end"] = open("/proc/loadavg").read().split()[:3]
    results["tables"] = report.render(results, peers)
    save()
    print()
    print(header(meta))
    print()
    print(results["tables"])
    print(f"\ntotal {results['elapsed_s']['total'] / 60:.1f} min; JSON: {os.path.relpath(out_path, ROOT)}")
    failed = [k for k, v in results["workloads"].items() if report.error_of(v)]
    if lock:
        lock.close()
    return rc or (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
