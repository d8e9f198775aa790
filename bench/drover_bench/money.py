"""The money check of the multi-master workload (issue 13).

pgbench's transaction adds one random delta to an account, its teller and its
branch, and writes the delta to pgbench_history. With both masters running
pgbench at once, every balance must end as the sum of the deltas written for
it, on both masters. A peer that replicates a changed row by overwriting it
with the winner's copy loses the other master's increment of that row: the
balance is then off by that increment. The check counts the rows whose
balance differs from the sum of their deltas and the total of those errors.

`history_replicated`: whether the peer copies pgbench_history between the
masters (then each master holds every delta; otherwise each holds its own, and
the expected balances add both masters' history).
"""

from collections import Counter

from .peers import DB

BALANCES = (("pgbench_accounts", "aid", "abalance"), ("pgbench_branches", "bid", "bbalance"),
            ("pgbench_tellers", "tid", "tbalance"))


def check(masters, history_replicated):
    """`masters`: name -> cluster. Returns the figures for the report."""
    conns = {name: c.conn(DB, app="drover-bench-money") for name, c in masters.items()}
    try:
        expected = _expected(conns, history_replicated)
        out = {"sum_delta": sum(expected["aid"].values())}
        wrong = {}
        for name, conn in conns.items():
            per_db = {}
            for table, key, col in BALANCES:
                rows = conn.query(f"SELECT {key}, {col} FROM public.{table} WHERE {col} <> 0")
                have = {int(k): int(v) for k, v in rows}
                per_db[col] = _errors(have, expected[key])
                per_db[f"sum_{col}"] = sum(have.values())
            per_db["history_rows"] = int(conn.value("SELECT count(*) FROM public.pgbench_history"))
            wrong[name] = per_db
        out["masters"] = wrong
        out["ok"] = all(
            d[col]["rows"] == 0 and d[f"sum_{col}"] == out["sum_delta"]
            for d in wrong.values() for _, _, col in BALANCES
        )
        return out
    finally:
        for conn in conns.values():
            conn.close()


def _expected(conns, history_replicated):
    """Sum of the deltas per account, teller and branch."""
    sources = list(conns.values())[:1] if history_replicated else list(conns.values())
    expected = {"aid": Counter(), "bid": Counter(), "tid": Counter()}
    for conn in sources:
        for key, per in expected.items():
            for k, v in conn.query(f"SELECT {key}, sum(delta) FROM public.pgbench_history GROUP BY {key}"):
                per[int(k)] += int(v)
    return expected


def _errors(have, expected):
    """Rows whose balance is not the sum of their deltas, and the total error."""
    keys = set(have) | {k for k, v in expected.items() if v != 0}
    diffs = [abs(have.get(k, 0) - expected.get(k, 0)) for k in keys]
    bad = [d for d in diffs if d]
    return {"rows": len(bad), "touched": len(keys), "abs_error": sum(bad)}
