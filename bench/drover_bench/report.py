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
    if "capture" in w:
        parts.append(capture_variants(w["capture"]))
    for key, title in (("catchup_seed", "2a. Catch-up, seed backlog"), ("catchup_big", "2b. Catch-up, big backlog")):
        if key in w:
            parts.append(catchup(w[key], title, peers))
    if "lag" in w:
        parts.append(lag(w["lag"], peers))
    if "initial_copy" in w:
        parts.append(initial_copy(w["initial_copy"]))
    if "catchup_seed" in w or "catchup_big" in w:
        parts.append(cost(w, peers))
    parts.append(targets(w))
    if "multi_master" in w:
        parts.append(multi_master(w["multi_master"], peers))
    from . import report_multitarget

    if "fanout" in w:
        parts.append(report_multitarget.fanout(w["fanout"]))
    if "isolation" in w:
        parts.append(report_multitarget.isolation(w["isolation"]))
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
                     f(median(rs) * 100 if median(rs) else None, 1, " %"), flist([x * 100 if x else None for x in rs], 1),
                     flist(r.get("other_cores", {}).get(label, []), 2)])
    text = f"### 1. Source overhead: {r['pgbench']}, TPS\n" + table(
        ["capture", "TPS per run", "median TPS", "vs no capture (median)", "vs no capture per run (%)",
         "other processes, cores"], rows)
    lines = []
    for state in ("stopped", "running"):
        d, b = tps.get(f"drover triggers, daemon {state}"), tps.get(f"bucardo triggers, daemon {state}")
        if d and b:
            rs = ratios(d, b)
            lines.append(f"- drover/Bucardo TPS, daemons {state}: {flist(rs)} per run, median {f(median(rs))}")
    d, n = tps.get("drover triggers, daemon running"), tps.get("native logical replication running")
    if d and n:
        rs = ratios(d, n)
        lines.append(f"- drover/native TPS, both replicating: {flist(rs)} per run, median {f(median(rs))}")
    return text + ("\n\n" + "\n".join(lines) if lines else "")


def capture_variants(r):
    if error_of(r):
        return f"### 1b. Capture variants\nfailed: {r['error']}"
    tps, base = r["tps"], r["tps"].get("none", [])
    rows = []
    for label, runs in tps.items():
        rs = ratios(runs, base)
        rows.append([label, flist(runs, 0), f(median(runs), 0), f(median(rs) * 100 if median(rs) else None, 1, " %"),
                     flist(r.get("other_cores", {}).get(label, []), 2)])
    return (f"### 1b. Capture variants (no daemon): {r['pgbench']}, TPS\n"
            + table(["drover capture", "TPS per run", "median TPS", "vs none (median of per-run ratios)",
                     "other processes, cores"], rows))


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
            rows.append([p, "-", "failed: " + pr["error"].splitlines()[0][:120], "-", "-", "-", "-"])
            continue
        runs = pr["runs"]
        secs[p] = [x["seconds"] if x["seconds"] is not None else INF for x in runs]
        tx = ", ".join(str(x["transactions"]) for x in runs)
        timeouts = sum(1 for x in runs if x["seconds"] is None)
        shown = flist(secs[p]).replace("never", f"> {r['timeout_s']} (timeout)")
        others = flist([x.get("other_cores") for x in runs])
        rows.append([p, tx, shown, f(median(secs[p])) if not timeouts else f"> {r['timeout_s']}", "", "", others])
        if p == "drover":
            waits = [x.get("wait_seconds") for x in runs]
            rows.append(["drover (`drover wait`)", tx, flist(waits), f(median(waits)), "", "", ""])
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
            + table(["peer", "transactions", "seconds per run", "median s", "drover/peer per run", "median drover/peer",
                     "other processes, cores"], rows))


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
            rows.append([p, "-", "failed: " + pr["error"].splitlines()[0][:120], "-", "-", "-", "-", "-", "-"])
            continue
        for rate, runs in pr.items():
            p99[(p, rate)] = [x["p99_ms"] for x in runs]
            rows.append([p, rate, f(median([x["tps"] for x in runs]), 0), fmt_ms(median([x["p50_ms"] for x in runs])),
                         fmt_ms(median([x["p99_ms"] for x in runs])), ", ".join(fmt_ms(x["p99_ms"]) for x in runs),
                         ", ".join(f"{x['unseen']}/{x['probes']}" for x in runs), "",
                         flist([x.get("other_cores") for x in runs])])
    for row in rows:
        key = (row[0], row[1])
        if row[0] != "drover" and key in p99 and ("drover", row[1]) in p99:
            rs = ratios(p99[("drover", row[1])], p99[key])
            row[7] = flist(rs, 2) if any(x is not None for x in rs) else "< 0.01 (peer never caught up)"
    return ("### 3. Steady lag: pgbench -c 4 -j 2 -R RATE (scale 10) while replicating; probe row every 50 ms\n"
            + table(["peer", "-R", "achieved TPS", "lag p50", "lag p99", "p99 per run", "probes unseen", "drover/peer p99 per run",
                     "other processes, cores"], rows))


def multi_master(r, peers):
    if error_of(r) or "status" in r:
        return f"### 6. Multi-master\n{r.get('error') or r.get('status')}"
    rows, secs = [], {}
    for p in peers:
        pr = r.get(p)
        if pr is None:
            continue
        if error_of(pr):
            rows.append([p, "-", "failed: " + pr["error"].splitlines()[0][:120], "-", ""])
        elif "status" in pr:
            rows.append([p, "-", pr["status"], "-", ""])
        else:
            secs[p] = [x["seconds"] if x["seconds"] is not None else INF for x in pr["runs"]]
            rows.append([p, ", ".join(str(x["transactions"]) for x in pr["runs"]), flist(secs[p]),
                         f(median(secs[p])), ""])
    for row in rows:
        if row[0] != "drover" and row[0] in secs and "drover" in secs:
            row[4] = flist(ratios(secs["drover"], secs[row[0]]), 3)
    return (f"### 6. Multi-master: {r['pgbench']} (s)\n"
            + table(["peer", "transactions (both masters)", "seconds per run", "median s", "drover/peer per run"], rows)
            + "\n\n" + money_table(r, peers))


def money_table(r, peers):
    """Per peer, after its last run: the rows whose balance is not the sum of their deltas."""
    rows = []
    for p in peers:
        runs = (r.get(p) or {}).get("runs") or []
        m = next((x["money"] for x in reversed(runs) if "money" in x), None)
        if m is None:
            continue
        for name, d in sorted(m["masters"].items()):
            cells = [f"{d[c]['rows']} of {d[c]['touched']} (off by {d[c]['abs_error']})"
                     for c in ("abalance", "tbalance", "bbalance")]
            sums = "/".join(str(d[f"sum_{c}"]) for c in ("abalance", "bbalance", "tbalance"))
            rows.append([p, name, *cells, f"{sums} vs {m['sum_delta']}", "yes" if m["ok"] else "NO"])
    if not rows:
        return "Money check: no run converged."
    return ("Money check (after the last run): rows whose balance differs from the sum of its deltas\n"
            + table(["peer", "master", "accounts", "tellers", "branches", "sums a/b/t vs sum(delta)", "all equal"],
                     rows))


def initial_copy(r):
    rows = []
    for scale, sr in r.items():
        if not scale.isdigit():
            continue
        if error_of(sr):
            rows.append([scale, "-", "failed: " + sr["error"].splitlines()[0][:120], "-", "-"])
            continue
        if "drover copy" not in sr:
            rows.append([scale, "drover", r["drover"], "-", "-"])
        d = sr.get("drover copy")
        for method, secs in sr.items():
            rs = flist(ratios(d, secs), 2) if d and method != "drover copy" else ""
            rows.append([scale, method, flist(secs, 1), f(median(secs), 1), rs])
    note = f"drover copy = {r['drover']}, timed together" if "n/a" not in r["drover"] else ""
    return ("### 4. Initial copy to an empty target (s)\n" + (note + "\n" if note else "")
            + table(["scale", "method", "seconds per run", "median s", "drover/method per run"], rows))


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
            "process of the clusters involved (source, target, and Bucardo's control cluster), up to the "
            "marker's arrival (before the equality check; runs before 2026-12-07's second run included "
            "the equality polls).\n"
            + table(["peer", "backlog", "transactions", "daemon CPU s / 1k tx", "server CPU s / 1k tx",
                     "daemon peak RSS MB", "drover/Bucardo daemon CPU"], rows))


def _runs(w, key, peer):
    r = w.get(key)
    if not r or error_of(r) or not r.get(peer) or error_of(r[peer]):
        return None
    return r[peer]["runs"] if "runs" in r[peer] else r[peer]


def _secs(runs):
    return [x["seconds"] if x["seconds"] is not None else INF for x in runs]


def targets(w):
    """Issue 6's targets next to what this run measured."""
    rows = []

    def add(target, measured, ok):
        rows.append([target, measured, "-" if ok is None else ("yes" if ok else "**no**")])

    o = w.get("overhead")
    if o and not error_of(o):
        base = o["tps"].get("none", [])
        for state in ("stopped", "running"):
            d = o["tps"].get(f"drover triggers, daemon {state}")
            if d:
                m = median(ratios(d, base))
                add(f"source TPS with drover's capture (daemon {state}) >= 85% of no capture",
                    f"{f(m * 100 if m else None, 1)} %", m is not None and m >= 0.85)
    d = _runs(w, "catchup_seed", "drover")
    for peer, factor in (("native", 4), ("bucardo", 10)):
        p = _runs(w, "catchup_seed", peer)
        if d and p:
            m = median(ratios(_secs(d), _secs(p)))
            add(f"seed catch-up >= {factor}x faster than {peer} (drover/{peer} <= {1 / factor:.2f})",
                f"drover/{peer} {f(m, 3)} ({f(1 / m if m else None, 1)}x faster)", m is not None and m <= 1 / factor)
    d = _runs(w, "catchup_big", "drover")
    if d:
        ok = all(x["seconds"] is not None for x in d)
        per = median([x["seconds"] / x["transactions"] * 10000 for x in d if x["seconds"] is not None])
        seed = _runs(w, "catchup_seed", "drover")
        seed_per = median([x["seconds"] / x["transactions"] * 10000 for x in seed if x["seconds"] is not None]) if seed else None
        add("no cliff on a big backlog (s per 10k transactions: big vs seed)", f"{f(per)} vs {f(seed_per)}", ok)
    lag = w.get("lag")
    if lag and not error_of(lag) and isinstance(lag.get("drover"), dict) and "500" in lag["drover"]:
        dr = lag["drover"]["500"]
        nat = lag.get("native", {}).get("500") if isinstance(lag.get("native"), dict) else None
        if nat:
            m = median(ratios([x["p99_ms"] for x in dr], [x["p99_ms"] for x in nat]))
            add("lag p99 at -R 500 <= 2x native's", f"drover/native {f(m)} ({fmt_ms(median([x['p99_ms'] for x in dr]))} "
                f"vs {fmt_ms(median([x['p99_ms'] for x in nat]))})", m is not None and m <= 2)
        t = median([x["tps"] for x in dr])
        add("the source reaches 500 TPS in that run", f"{f(t, 0)} TPS", t is not None and t >= 490)
    c = w.get("initial_copy")
    if c and not error_of(c):
        scales = sorted((int(k) for k, v in c.items() if k.isdigit() and not error_of(v)), reverse=True)
        target = "initial copy of scale 50 faster than pg_dump | pg_restore, within 1.1x of the COPY pipe"
        sr = c[str(scales[0])] if scales else {}
        if "drover copy" in sr:
            dm, pm, cm = (median(sr[k]) for k in ("drover copy", "pg_dump -Fc | pg_restore", "COPY pipe"))
            add(target + (f" (measured at scale {scales[0]})" if scales[0] != 50 else ""),
                f"drover {f(dm, 1)} s, pg_dump/pg_restore {f(pm, 1)} s, COPY pipe {f(cm, 1)} s "
                f"(drover/COPY pipe {f(dm / cm if cm else None)})",
                dm is not None and pm is not None and cm is not None and dm < pm and dm <= 1.1 * cm)
        else:
            add(target, c.get("drover"), None)
    if d:
        rss = max(x["peak_rss_kb"] for x in d) / 1024
        add("daemon peak RSS <= 40 MB during the big catch-up", f"{f(rss, 1)} MB", rss <= 40)
        b = _runs(w, "catchup_big", "bucardo")
        if b:
            dc = median([x["daemon_cpu_s"] / x["transactions"] for x in d])
            bc = median([x["daemon_cpu_s"] / x["transactions"] for x in b])
            m = dc / bc if bc else None
            add("daemon CPU per replicated transaction <= half of Bucardo's", f"drover/Bucardo {f(m, 3)}", m is not None and m <= 0.5)
    from . import report_multitarget

    for row in report_multitarget.target_rows(w):
        add(*row)
    mm = w.get("multi_master")
    runs = ((mm or {}).get("drover") or {}).get("runs") or []
    money = next((x["money"] for x in reversed(runs) if "money" in x), None)
    if money:
        bad = sum(d[c]["rows"] for d in money["masters"].values() for c in ("abalance", "bbalance", "tbalance"))
        add("multi-master money check: every balance is the sum of its deltas on both masters (issue 13)",
            f"{bad} rows off", money["ok"])
    if not rows:
        return "### Targets (issues 6, 12 and 13)\nnothing measured"
    return "### Targets (issues 6, 12 and 13), as measured in this run\n" + table(["target", "measured", "met"], rows)
