"""The replication systems under test, behind one small interface.

A peer replicates TABLES of database DB from a source cluster to a target
cluster that already holds a copy of the data. `install` sets it up with
replication stopped; `start`/`stop` turn replication on and off (drover: the
daemon; Bucardo: `bucardo start`/`stop`; native: ENABLE/DISABLE of the
subscription), and changes made while stopped stay captured.
"""

import os
import subprocess
import threading
import time

from . import procs
from .cluster import CommandError, run

DB = "repdb"
TABLES = ["public.pgbench_accounts", "public.pgbench_branches", "public.pgbench_tellers", "public.bench_probe"]
SYNC = "bench"


class Peer:
    name = "?"
    # Prefix of the capture triggers this peer creates on the source.
    trigger_prefix = None

    def __init__(self, work, source, target):
        self.work = work
        self.source = source
        self.target = target

    def install(self):
        raise NotImplementedError

    def start(self):
        raise NotImplementedError

    def stop(self):
        raise NotImplementedError

    def running(self):
        raise NotImplementedError

    def pids(self):
        """PIDs of the peer's own processes (outside PostgreSQL), [] if none."""
        return []

    def cpu_seconds(self):
        return 0.0

    def hwm_kb(self):
        """Sum of VmHWM (peak RSS) over the peer's live processes."""
        return sum(procs.status_kb(p, "VmHWM") for p in self.pids())

    def clusters(self):
        return [self.source, self.target]

    def empty_capture(self):
        """Forgets captured changes (source overhead runs start from empty)."""

    def set_capture(self, on):
        """Enables or disables this peer's capture triggers on the source."""
        if not self.trigger_prefix:
            return
        rows = self.source.psql(
            DB,
            f"SELECT tgrelid::regclass, tgname FROM pg_trigger WHERE NOT tgisinternal "
            f"AND tgname LIKE '{self.trigger_prefix}%' ORDER BY 1, 2",
        )
        verb = "ENABLE" if on else "DISABLE"
        sql = [f'ALTER TABLE {rel} {verb} TRIGGER "{tg}";' for rel, tg in (l.split("|") for l in rows.splitlines())]
        if sql:
            self.source.psql(DB, "\n".join(sql))

    def teardown(self):
        if self.running():
            self.stop()

    def version(self):
        return ""


class Drover(Peer):
    name = "drover"
    trigger_prefix = "drover_capture"

    def __init__(self, work, source, target, binary, databases=None, sources=("src",), targets=("tgt",),
                 tables=TABLES, extra="", dbnames=None, relgroup_extra=""):
        """`databases` maps config names to clusters (default src/tgt);
        `dbnames` maps some of those names to a database other than DB (several
        targets in one cluster); `extra` is appended to the sync section (e.g.
        a conflict strategy), `relgroup_extra` to the relgroup's (e.g. its
        delta_columns)."""
        super().__init__(work, source, target)
        self.binary = binary
        self.dir = os.path.join(work, "drover")
        os.makedirs(self.dir, exist_ok=True)
        self.config = os.path.join(self.dir, "drover.toml")
        self.log = os.path.join(self.dir, "drover.log")
        self.proc = None
        self._entry = None
        self.databases = databases or {"src": source, "tgt": target}
        listen = procs.free_port()
        text = f'[daemon]\nlisten = "127.0.0.1:{listen}"\n\n'
        for name, c in self.databases.items():
            dbname = (dbnames or {}).get(name, DB)
            text += f'[databases.{name}]\nhost = "127.0.0.1"\nport = {c.port}\ndbname = "{dbname}"\nuser = "postgres"\n\n'
        quoted = lambda xs: ", ".join(f'"{x}"' for x in xs)
        text += f"[relgroups.herd]\ntables = [{quoted(tables)}]\n{relgroup_extra}\n"
        text += f'[syncs.{SYNC}]\nrelgroup = "herd"\nsources = [{quoted(sources)}]\ntargets = [{quoted(targets)}]\n{extra}'
        with open(self.config, "w") as f:
            f.write(text)

    def cli(self, *args, timeout=600, check=True, env=None):
        return run([self.binary, "--config", self.config, *args], timeout=timeout, check=check,
                   env=dict(os.environ, **env) if env else None)

    def install(self):
        self.cli("install")

    def start(self):
        logf = open(self.log, "a")
        self.proc = subprocess.Popen(
            [self.binary, "--config", self.config, "run"], stdout=logf, stderr=subprocess.STDOUT, cwd=self.dir
        )
        logf.close()
        self._entry = procs.register("drover run", self.stop)

    def wait_proc(self, timeout):
        """`drover wait` as a child process (the caller times its exit)."""
        return subprocess.Popen(
            [self.binary, "--config", self.config, "wait", SYNC, "--timeout", str(timeout)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def stop(self):
        if self.proc:
            procs.terminate(self.proc)
            rc = self.proc.returncode
            self.proc = None
            procs.unregister(self._entry)
            if rc not in (0, -15):
                raise CommandError(f"drover run exited {rc}; log {self.log}")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise CommandError(f"drover run exited {self.proc.returncode}: {tail(self.log)}")

    def pids(self):
        return [self.proc.pid] if self.running() else []

    def cpu_seconds(self):
        return procs.cpu_seconds(self.proc.pid) if self.running() else 0.0

    def clusters(self):
        return list(self.databases.values())

    def empty_capture(self):
        names = self.source.psql(DB, "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
                                     "WHERE schemaname = 'drover' AND tablename LIKE 'delta%'")
        if names.strip():
            self.source.psql(DB, f"TRUNCATE {', '.join(names.split())}")

    def version(self):
        return run([self.binary, "--version"]).strip()


class Native(Peer):
    """PostgreSQL 15 logical replication: a publication on the source and a
    subscription on the target (created without initial copy: the target is
    already a copy)."""

    name = "native"

    def install(self):
        tables = ", ".join(TABLES)
        self.source.psql(DB, f"CREATE PUBLICATION bench_pub FOR TABLE {tables}")
        self.target.psql(
            DB,
            f"CREATE SUBSCRIPTION bench_sub CONNECTION '{self.source.conninfo(DB)}' PUBLICATION bench_pub "
            f"WITH (copy_data = false, enabled = false)",
        )
        self._entry = procs.register("native subscription", self.teardown)
        self._on = False

    def skip_backlog(self):
        """Moves the (inactive) slot to the source's current WAL position: changes made
        meanwhile are never sent (the source overhead workload measures only its own run)."""
        self.source.psql(DB, "SELECT pg_replication_slot_advance('bench_sub', pg_current_wal_lsn())")

    def start(self):
        self.target.psql(DB, "ALTER SUBSCRIPTION bench_sub ENABLE")
        self._on = True

    def stop(self):
        self.target.psql(DB, "ALTER SUBSCRIPTION bench_sub DISABLE")
        self._on = False
        # The apply worker exits asynchronously; wait until the slot is free.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.source.psql(DB, "SELECT active FROM pg_replication_slots WHERE slot_name = 'bench_sub'") != "t":
                return
            time.sleep(0.05)
        raise CommandError("native: the replication slot stayed active after DISABLE")

    def running(self):
        return getattr(self, "_on", False)

    def teardown(self):
        if self.running():
            self.stop()
        procs.unregister(getattr(self, "_entry", None))


class Bucardo(Peer):
    """Bucardo 5.6 from the Debian package. Its control database lives in its
    own cluster; PID files, logs and the reason file go to a temp dir, and
    every `bucardo` call names the control cluster on the command line
    (--no-bucardorc), so /etc/bucardorc and /var/log/bucardo are not used."""

    name = "bucardo"
    trigger_prefix = "bucardo_"

    def __init__(self, work, source, target, control, databases=None, roles=None):
        """`databases` maps Bucardo db names to clusters, `roles` them to
        source/target (default: src is the source, tgt the target)."""
        super().__init__(work, source, target)
        self.control = control
        self.databases = databases or {"src": source, "tgt": target}
        self.roles = roles or {"src": "source", "tgt": "target"}
        self.dir = os.path.join(work, "bucardo")
        self.piddir = os.path.join(self.dir, "pid")
        self.logdir = os.path.join(self.dir, "log")
        self.home = os.path.join(self.dir, "home")
        for d in (self.piddir, self.logdir, self.home):
            os.makedirs(d, exist_ok=True)
        self._entry = None

    def bucardo(self, *args, timeout=300, control_db="bucardo", control_user="bucardo"):
        env = dict(os.environ, HOME=self.home)
        return run(
            ["bucardo", "--no-bucardorc", "--dbhost", "127.0.0.1", "--dbport", str(self.control.port),
             "--dbname", control_db, "--dbuser", control_user, "--piddir", self.piddir,
             "--logdest", self.logdir, *args],
            env=env,
            cwd=self.dir,
            timeout=timeout,
        )

    def install(self):
        # Created here so that `bucardo install` does not generate a password
        # and append it to ~/.pgpass.
        self.control.psql("postgres", "CREATE USER bucardo SUPERUSER")
        self.bucardo("install", "--batch", control_db="postgres", control_user="postgres")
        self.bucardo(
            "set",
            f"reason_file={self.logdir}/restart.reason",
            f"log_conflict_file={self.logdir}/conflict.log",
        )
        for name, c in self.databases.items():
            self.bucardo("add", "db", name, f"dbname={DB}", "host=127.0.0.1", f"port={c.port}", "user=postgres")
        first = next(iter(self.databases))
        self.bucardo("add", "table", *TABLES, f"db={first}", "relgroup=herd")
        dbs = ",".join(f"{n}:{r}" for n, r in self.roles.items())
        self.bucardo("add", "sync", SYNC, "relgroup=herd", f"dbs={dbs}")

    def mcp_pid(self):
        try:
            with open(os.path.join(self.piddir, "bucardo.mcp.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start(self):
        self.bucardo("start", "drover-bench")
        self._entry = procs.register("bucardo", self.stop)

    def stop(self):
        pid = self.mcp_pid()
        try:
            self.bucardo("stop", "drover-bench", timeout=60)
        except CommandError:
            pass
        # `bucardo stop` only writes the stop file; the processes exit on
        # their next loop. Wait for every one of them, then kill stragglers.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.pids():
            time.sleep(0.1)
        for p in self.pids() + ([pid] if pid else []):
            procs.kill_pid(p, "Bucardo")
        procs.unregister(self._entry)
        self._entry = None

    def running(self):
        return bool(self.pids())

    def pids(self):
        """The MCP and its live descendants (VAC, CTL, KIDs)."""
        mcp = self.mcp_pid()
        if not mcp or "Bucardo" not in procs.cmdline(mcp):
            return []
        out, todo = [], [mcp]
        while todo:
            p = todo.pop()
            if procs.alive(p):
                out.append(p)
                todo.extend(procs.children_of(p))
        return out

    def cpu_seconds(self):
        # Reaped children count in their parent's cutime/cstime.
        return sum(procs.cpu_seconds(p, children=True) for p in self.pids())

    def clusters(self):
        return list(self.databases.values()) + [self.control]

    def empty_capture(self):
        names = self.source.psql(DB, "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
                                     "WHERE schemaname = 'bucardo' AND (tablename LIKE 'delta\\_%' "
                                     "OR tablename LIKE 'track\\_%' OR tablename LIKE 'stage\\_%')")
        if names.strip():
            self.source.psql(DB, f"TRUNCATE {', '.join(names.split())}")

    def version(self):
        return run(["bucardo", "--version"]).strip()


class ResourceSampler:
    """Samples a peer's processes every `interval` s in a thread: the peak of
    the summed VmHWM (peak RSS) of the processes alive at each sample."""

    def __init__(self, peer, interval=0.1):
        self.peer = peer
        self.interval = interval
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self):
        try:
            self.peak_kb = max(self.peak_kb, self.peer.hwm_kb())
        except Exception:
            pass

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()


def tail(path, n=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""
