"""Tables of the fan-out and isolation workloads (issue 12), and their rows in
the targets table. Imported by report.render (lazily: this module uses
report's helpers)."""

from . import report as r
from .workloads import fmt_ms

FANOUT_CPU_TARGET = 1.2
FANOUT_TIME_TARGET = 1.5
ISOLATION_TARGET = 1.5


def _skipped(x):
    return r.error_of(x) or "status" in x


def fanout(w):
    if _skipped(w):
        return f"### 7. Fan-out\n{w.get('error') or w.get('status')}"
    rows = []
    for n, case in w.items():
        if not n.isdigit():
            continue
        if r.error_of(case):
            rows.append([n, "-", "failed: " + case["error"].splitlines()[0][:120], "-", "-", "-", "-"])
            continue
        runs = case["runs"]
        rows.append([n, ", ".join(str(x["transactions"]) for x in runs), r.flist(r._secs(runs)),
                     r.f(r.median(r._secs(runs))), r.f(r.median([_cpu_per_k(x) for x in runs]), 3),
                     r.f(r.median([_cpu_per_k(x, "target_cpu_s") for x in runs]), 3),
                     r.flist([x.get("other_cores") for x in runs])])
    return (f"### 7. Fan-out (drover): {w['pgbench']} (s); source and target server CPU s per 1,000 replicated "
            "transactions, until the last target had the marker\n"
            + r.table(["targets", "transactions", "seconds per run", "median s", "source CPU s / 1k tx",
                       "target CPU s / 1k tx", "other processes, cores"], rows))


def isolation(w):
    if _skipped(w):
        return f"### 8. Target isolation\n{w.get('error') or w.get('status')}"
    rows = []
    healthy = [x["p99_ms"] for x in w.get("healthy", [])]
    for mode in ("healthy", "stopped", "locked"):
        runs = w.get(mode, [])
        if not runs:
            continue
        p99 = [x["p99_ms"] for x in runs]
        rows.append([mode, r.f(r.median([x["tps"] for x in runs]), 0), fmt_ms(r.median([x["p50_ms"] for x in runs])),
                     fmt_ms(r.median(p99)), ", ".join(fmt_ms(x) for x in p99),
                     r.flist(r.ratios(p99, healthy)) if mode != "healthy" else "",
                     ", ".join(f"{x['unseen']}/{x['probes']}" for x in runs),
                     r.flist([x.get("other_cores") for x in runs])])
    return (f"### 8. Target isolation (drover): {w['pgbench']}; the other target healthy, stopped or locked\n"
            + r.table(["other target", "achieved TPS", "lag p50", "lag p99", "p99 per run", "p99 vs healthy per run",
                       "probes unseen", "other processes, cores"], rows))


def _cpu_per_k(x, key="source_cpu_s"):
    # Runs recorded before target CPU was measured have no such key.
    if x.get(key) is None or not x["transactions"]:
        return None
    return x[key] / x["transactions"] * 1000


def _case(w, n):
    case = w.get(str(n)) if w and not _skipped(w) else None
    return case["runs"] if case and not r.error_of(case) else None


def target_rows(w):
    """(target, measured, met) rows for the targets table."""
    rows = []
    fo = w.get("fanout")
    one, four = _case(fo, 1), _case(fo, 4)
    if one and four:
        m = r.median(r.ratios([_cpu_per_k(x) for x in four], [_cpu_per_k(x) for x in one]))
        rows.append((f"fan-out: source CPU per replicated transaction, 4 targets vs 1 <= {FANOUT_CPU_TARGET}x",
                     f"4/1 {r.f(m)}", m is not None and m <= FANOUT_CPU_TARGET))
        m = r.median(r.ratios(r._secs(four), r._secs(one)))
        timed_out = any(x["seconds"] is None for x in four + one)
        rows.append((f"fan-out: catch-up time, 4 targets vs 1 <= {FANOUT_TIME_TARGET}x",
                     "timeout" if timed_out else f"4/1 {r.f(m)} ({r.f(r.median(r._secs(four)))} s vs "
                     f"{r.f(r.median(r._secs(one)))} s)", not timed_out and m is not None and m <= FANOUT_TIME_TARGET))
    iso = w.get("isolation")
    if iso and not _skipped(iso) and iso.get("healthy"):
        healthy = [x["p99_ms"] for x in iso["healthy"]]
        for mode in ("stopped", "locked"):
            if not iso.get(mode):
                continue
            p99 = [x["p99_ms"] for x in iso[mode]]
            rs = r.ratios(p99, healthy)
            m = r.median(rs)
            never = any(x == r.INF for x in p99)
            shown = "never caught up" if never else f"{r.f(m)}x ({fmt_ms(r.median(p99))} vs {fmt_ms(r.median(healthy))})"
            rows.append((f"isolation: the other target's lag p99 with one of 2 targets {mode} <= {ISOLATION_TARGET}x "
                         "the healthy run's", shown, not never and m is not None and m <= ISOLATION_TARGET))
    return rows
