"""Throwaway PostgreSQL 15 clusters on free loopback ports.

initdb runs as the `postgres` OS user (it refuses root) in a temp dir. Apart
from SETTINGS below (printed in the report header) every server setting is
PostgreSQL's default: fsync, synchronous_commit and full_page_writes stay on,
so the numbers are what a real server would see.
"""

import os
import re
import shutil
import subprocess
import time

from . import procs
from .pgwire import PgConn

PG_BIN = "/usr/lib/postgresql/15/bin"

# Non-default settings of every cluster. wal_level=logical is on for every
# cluster, not only for the native peer's publisher, so that every peer
# replicates from an identically configured source.
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "wal_level": "logical",
}
# Extra settings for profiling runs only, e.g.
# DROVER_BENCH_SETTINGS="log_min_duration_statement=0;log_line_prefix='%m %a '"
# (printed in the header like the others; never set in reported runs).
for _item in filter(None, os.environ.get("DROVER_BENCH_SETTINGS", "").split(";")):
    _k, _, _v = _item.partition("=")
    SETTINGS[_k.strip()] = _v.strip()
# initdb options (not server settings): trust for 127.0.0.1 and the socket.
INITDB_ARGS = ["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"]


class CommandError(Exception):
    pass


def run(cmd, input=None, timeout=3600, env=None, cwd=None, check=True):
    """Runs a command, returns stdout; raises CommandError with stderr."""
    try:
        p = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
        )
    except subprocess.TimeoutExpired as e:
        raise CommandError(f"{' '.join(map(str, cmd))}: timed out after {timeout} s") from e
    if check and p.returncode != 0:
        raise CommandError(
            f"{' '.join(map(str, cmd))} exited {p.returncode}:\n{(p.stderr or '').strip()[-3000:]}\n{(p.stdout or '').strip()[-2000:]}"
        )
    return p.stdout


def as_postgres(cmd, work):
    """Server programs run as postgres when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + cmd
    return cmd


class Cluster:
    def __init__(self, work, name):
        self.work = work
        self.name = name
        self.dir = os.path.join(work, name)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgres.log")
        self.port = None
        self._entry = None

    def start(self):
        os.makedirs(self.dir)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        run(as_postgres([f"{PG_BIN}/initdb", *INITDB_ARGS, "-D", self.data], self.work), cwd=self.work)
        for attempt in range(8):
            self.port = procs.free_port()
            with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
                f.write("\n# drover-bench\n")
                for k, v in SETTINGS.items():
                    f.write(f"{k} = {v}\n")
                f.write(f"port = {self.port}\n")
                f.write(f"unix_socket_directories = '{self.dir}'\n")
            try:
                run(
                    as_postgres(
                        [f"{PG_BIN}/pg_ctl", "start", "-w", "-t", "60", "-D", self.data, "-l", self.log],
                        self.work,
                    ),
                    cwd=self.work,
                    timeout=90,
                )
                self._entry = procs.register(f"cluster {self.name}", self.stop)
                return self
            except CommandError:
                text = open(self.log).read() if os.path.exists(self.log) else ""
                if "could not bind" not in text and "already in use" not in text:
                    raise CommandError(f"cluster {self.name} did not start:\n{text[-2000:]}")
        raise CommandError(f"cluster {self.name}: no free port after 8 attempts")

    def stop(self):
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            run(
                as_postgres([f"{PG_BIN}/pg_ctl", "stop", "-m", "fast", "-w", "-t", "60", "-D", self.data], self.work),
                cwd=self.work,
                check=False,
                timeout=90,
            )
        procs.unregister(self._entry)

    def restart(self):
        """Starts a cluster stopped with `stop` again, on the same port and data."""
        run(
            as_postgres([f"{PG_BIN}/pg_ctl", "start", "-w", "-t", "60", "-D", self.data, "-l", self.log], self.work),
            cwd=self.work,
            timeout=90,
        )
        self._entry = procs.register(f"cluster {self.name}", self.stop)

    def destroy(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- clients -------------------------------------------------------------

    def conn(self, db, app="drover-bench"):
        return PgConn(self.port, db, app=app)

    def psql(self, db, sql, timeout=3600):
        return run(
            [f"{PG_BIN}/psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", "postgres", "-d", db, "-f", "-"],
            input=sql,
            timeout=timeout,
        ).strip()

    def conninfo(self, db):
        return f"host=127.0.0.1 port={self.port} dbname={db} user=postgres"

    def pgbench(self, db, args, timeout=3600):
        """Runs pgbench; returns (stdout+stderr, parsed numbers)."""
        out = run(
            [f"{PG_BIN}/pgbench", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", *args, db],
            timeout=timeout,
        )
        return out, parse_pgbench(out)

    def postmaster_pid(self):
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            return int(f.readline())

    def cpu_seconds(self):
        """CPU of the whole server: postmaster with its reaped backends, plus the
        live ones."""
        pm = self.postmaster_pid()
        return procs.cpu_seconds(pm, children=True) + sum(procs.cpu_seconds(c) for c in procs.children_of(pm))

    def checkpoint(self, db):
        self.psql(db, "CHECKPOINT")


def parse_pgbench(out):
    res = {}
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    if m:
        res["transactions"] = int(m.group(1))
    m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    if m:
        res["tps"] = float(m.group(1))
    m = re.search(r"latency average = ([\d.]+) ms", out)
    if m:
        res["latency_ms"] = float(m.group(1))
    return res


def server_version():
    return run([f"{PG_BIN}/postgres", "--version"]).strip()


def wait_until(pred, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()
