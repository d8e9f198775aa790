"""Processes the benchmark starts, and what /proc says about them.

Every long-running child is registered here so that `stop_all` (run from a
`finally` and from the SIGINT/SIGTERM handlers) can stop each one by PID.
Nothing is ever stopped by name.
"""

import os
import signal
import socket
import subprocess
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
_started = []  # (description, stop callable), stopped last-in first-out
_ports = set()


def register(description, stop):
    """Remembers how to stop something; returns a handle for `unregister`."""
    entry = (description, stop)
    _started.append(entry)
    return entry


def unregister(entry):
    if entry in _started:
        _started.remove(entry)


def stop_all(log=print):
    while _started:
        description, stop = _started.pop()
        try:
            stop()
        except Exception as e:  # keep stopping the rest
            log(f"cleanup: stopping {description} failed: {e}")


def terminate(proc, grace=40.0):
    """SIGTERM a Popen, SIGKILL it after `grace` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def kill_pid(pid, expect_in_cmdline, grace=10.0):
    """Stops a process we did not fork ourselves (a daemonized Bucardo), after
    checking from its command line that the PID still names it."""
    if expect_in_cmdline not in cmdline(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.1)
    if alive(pid) and expect_in_cmdline in cmdline(pid):
        os.kill(pid, signal.SIGKILL)


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def cpu_seconds(pid, children=False):
    """utime+stime of a process (plus its reaped children's with `children`)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # fields[0] is field 3 (state): utime/stime/cutime/cstime are fields 14-17.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def children_of(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def status_kb(pid, key):
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM), 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _port_in_use(port):
    hexport = f"{port:04X}"
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    if line.split()[1].rsplit(":", 1)[1] == hexport:
                        return True
        except OSError:
            pass
    return False


def free_port():
    """A loopback port nobody listens on, below the ephemeral range (32768+)
    so that outgoing connections cannot take it before our server binds it."""
    import random

    while True:
        port = random.randint(20000, 32000)
        if port in _ports or _port_in_use(port):
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _ports.add(port)
        return port


def system_busy_seconds():
    """CPU seconds all processes on the machine have used since boot."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    # user nice system idle iowait irq softirq steal
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class OtherLoad:
    """Measures how much CPU processes that are not ours used during a block:
    the machine's busy time minus our clusters, our peer's daemons, our
    children (pgbench, psql) and ourselves. The benchmark shares a 2-core
    machine; this number says how much a run was disturbed."""

    def __init__(self, clusters, peer=None):
        self.clusters, self.peer = clusters, peer

    def _ours(self):
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        own += sum(c.cpu_seconds() for c in self.clusters)
        if self.peer is not None:
            own += self.peer.cpu_seconds()
        return own

    def __enter__(self):
        self.t0, self.busy0, self.ours0 = time.monotonic(), system_busy_seconds(), self._ours()
        return self

    def __exit__(self, *exc):
        wall = time.monotonic() - self.t0
        other = (system_busy_seconds() - self.busy0) - (self._ours() - self.ours0)
        # Average number of cores used by others (>= 0; rounding can dip below).
        self.cores = max(0.0, other / wall) if wall > 0 else 0.0
