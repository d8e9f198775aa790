"""Turns the raw results into Markdown tables (printed, and pasted into
docs/performance.md). Medians are over runs; a ratio "drover/peer" is taken
per run (run i of drover against run i of the peer), then its median shown.
"""

import statistics

from .workloads import OVERHEAD_CONFIGS, fmt_ms

INF = float("inf")


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratios(a, b):
    return [x / y if (x is not None and y not in (None, 0) and x != INF and y != INF) else None for x, y in zip(a, b)]


def f(x, digits=2, unit=""):
    if x is None:
        return "-"
    if x == INF:
        return "never"
    return f"{x:.{digits}f}{unit}"


def flist(xs, digits=2):
    return ", ".join(f(x, digits) for x in xs) if xs else "-"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


def error_of(x):
    return isinstance(x, dict) and "error" in x


def render(results, peers):
    w = results.get("workloads", {})
    parts = []
    if "overhead" in w:
        parts.append(overhead(w["overhead"]))
    for key, title in (("catchup_seed", "2a. Catch-up, seed backlog"), ("catchup_big", "2b. Catch-up, big backlog")):
        if key in w:
            parts.append(catchup(w[key], title, peers))
    if "lag" in w:
        parts.append(lag(w["lag"], peers))
    if "initial_copy" in w:
        parts.append(initial_copy(w["initial_copy"]))
    if "catchup_seed" in w or "catchup_big" in w:
        parts.append(cost(w, peers))
    if "multi_master" in w:
        parts.append(f"### 6. Multi-master\n{w['multi_master'].get('status', w['multi_master'])}")
    return "\n\n".join(parts)


def overhead(r):
    if error_of(r):
        return f"### 1. Source overhead\nfailed: {r['error']}"
    tps = r["tps"]
    base = tps.get("none", [])
    rows = []
    for label, _, _ in OVERHEAD_CONFIGS:
        if label not in tps:
            continue
        rs = ratios(tps[label], base)
        rows.append([label, flist(tps[label], 0), f(median(tps[label]), 0),
                     f(median(rs) * 100 if median(rs) else None, 1, " %"), flist([x * 100 if x else None for x in rs], 1)])
    text = f"### 1. Source overhead: {r['pgbench']}, TPS\n" + table(
        ["capture", "TPS per run", "median TPS", "vs no capture (median)", "vs no capture per run (%)"], rows)
    lines = []
    for state in ("stopped", "running"):
        d, b = tps.get(f"drover triggers, daemon {state}"), tps.get(f"bucardo triggers, daemon {state}")
        if d and b:
            rs = ratios(d, b)
            lines.append(f"- drover/Bucardo TPS, daemons {state}: {flist(rs)} per run, median {f(median(rs))}")
    return text + ("\n\n" + "\n".join(lines) if lines else "")


def catchup(r, title, peers):
    if error_of(r):
        return f"### {title}\nfailed: {r['error']}"
    secs = {}
    rows = []
    for p in peers:
        pr = r.get(p)
        if pr is None:
            continue
        if error_of(pr):
            rows.append([p, "-", "failed: " + pr["error"].splitlines()[0][:120], "-", "-", "-"])
            continue
        runs = pr["runs"]
        secs[p] = [x["seconds"] if x["seconds"] is not None else INF for x in runs]
        tx = ", ".join(str(x["transactions"]) for x in runs)
        timeouts = sum(1 for x in runs if x["seconds"] is None)
        shown = flist(secs[p]).replace("never", f"> {r['timeout_s']} (timeout)")
        rows.append([p, tx, shown, f(median(secs[p])) if not timeouts else f"> {r['timeout_s']}", "", ""])
        if p == "drover":
            waits = [x.get("wait_seconds") for x in runs]
            rows.append(["drover (`drover wait`)", tx, flist(waits), f(median(waits)), "", ""])
    d = secs.get("drover")
    for row in rows:
        if d and row[0] in secs and row[0] != "drover":
            rs = ratios(d, secs[row[0]])
            row[4] = flist(rs, 3)
            row[5] = f(median(rs), 3)
            if any(x == INF for x in secs[row[0]]):
                row[5] = f"< {f(max(x for x in d if x != INF) / r['timeout_s'], 3)}" if d else "-"
    return (f"### {title}: {r['pgbench']} while replication is stopped, then time from start until the "
            f"target equals the source (s)\n"
            + table(["peer", "transactions", "seconds per run", "median s", "drover/peer per run", "median drover/peer"], rows))


def lag(r, peers):
    if error_of(r):
        return f"### 3. Steady lag\nfailed: {r['error']}"
    rows = []
    p99 = {}
    for p in peers:
        pr = r.get(p)
        if pr is None:
            continue
        if error_of(pr):
            rows.append([p, "-", "failed: " + pr["error"].splitlines()[0][:120], "-", "-", "-", "-", "-"])
            continue
        for rate, runs in pr.items():
            p99[(p, rate)] = [x["p99_ms"] for x in runs]
            rows.append([p, rate, f(median([x["tps"] for x in runs]), 0), fmt_ms(median([x["p50_ms"] for x in runs])),
                         fmt_ms(median([x["p99_ms"] for x in runs])), ", ".join(fmt_ms(x["p99_ms"]) for x in runs),
                         ", ".join(f"{x['unseen']}/{x['probes']}" for x in runs), ""])
    for row in rows:
        key = (row[0], row[1])
        if row[0] != "drover" and key in p99 and ("drover", row[1]) in p99:
            rs = ratios(p99[("drover", row[1])], p99[key])
            row[7] = flist(rs, 2) if any(x is not None for x in rs) else "< 0.01 (peer never caught up)"
    return ("### 3. Steady lag: pgbench -c 4 -j 2 -R RATE (scale 10) while replicating; probe row every 50 ms\n"
            + table(["peer", "-R", "achieved TPS", "lag p50", "lag p99", "p99 per run", "probes unseen", "drover/peer p99 per run"], rows))


def initial_copy(r):
    rows = []
    for scale, sr in r.items():
        if scale == "drover":
            continue
        if error_of(sr):
            rows.append([scale, "-", "failed: " + sr["error"].splitlines()[0][:120], "-"])
            continue
        rows.append([scale, "drover", r["drover"], "-"])
        for method, secs in sr.items():
            rows.append([scale, method, flist(secs, 1), f(median(secs), 1)])
    return ("### 4. Initial copy to an empty target (s)\n"
            + table(["scale", "method", "seconds per run", "median s"], rows))


def cost(w, peers):
    rows = []
    daemon = {}
    for key, label in (("catchup_seed", "seed"), ("catchup_big", "big")):
        r = w.get(key)
        if not r or error_of(r):
            continue
        for p in peers:
            pr = r.get(p)
            if not pr or error_of(pr):
                continue
            runs = [x for x in pr["runs"] if x["seconds"] is not None] or pr["runs"]
            per_k = lambda field: median([x[field] / x["transactions"] * 1000 for x in runs])
            daemon[(p, label)] = per_k("daemon_cpu_s")
            rows.append([p, label, f(median([x["transactions"] for x in runs]), 0),
                         "n/a (inside PostgreSQL)" if p == "native" else f(daemon[(p, label)], 3),
                         f(per_k("server_cpu_s"), 3),
                         "n/a" if p == "native" else f(max(x["peak_rss_kb"] for x in runs) / 1024, 1),
                         ""])
    for row in rows:
        d = daemon.get(("drover", row[1]))
        pd = daemon.get((row[0], row[1]))
        if row[0] == "bucardo" and d is not None and pd:
            row[6] = f(d / pd, 3)
    return ("### 5. Cost during catch-up: CPU seconds per 1,000 replicated transactions, peak RSS\n"
            "Daemon CPU is the peer's own processes (Bucardo: all of them); server CPU is every PostgreSQL "
            "process of the clusters involved (source, target, and Bucardo's control cluster), including the "
            "benchmark's equality polls.\n"
            + table(["peer", "backlog", "transactions", "daemon CPU s / 1k tx", "server CPU s / 1k tx",
                     "daemon peak RSS MB", "drover/Bucardo daemon CPU"], rows))
