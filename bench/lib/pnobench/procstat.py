"""CPU accounting from /proc: a process tree's run time, the engine's, and the whole machine's.

The app's CPU is the run time of every thread of every process in its session (each server is
started in its own session, so the session holds exactly the server and what it forked): the first
field of /proc/PID/task/TID/schedstat, in ns, which the scheduler keeps exactly (utime/stime are
sampled at the tick). Processes that exited and were reaped during the window (per-connection
children of forking servers) are counted through their parent's cutime+cstime (clock ticks). The machine's CPU comes
from /proc/stat, busy = user+nice+system+irq+softirq+steal, per CPU and in total.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK")
NS_PER_TICK = 1_000_000_000 // CLK_TCK


def _stat_fields(pid: int | str) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (index 0 is the state)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()


def session_pids(sessions: set[int]) -> list[int]:
    """Every live process whose session id is one of `sessions`."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        f = _stat_fields(name)
        if f is not None and len(f) > 3 and int(f[3]) in sessions:
            out.append(int(name))
    return out


def tree_cpu_ns(pids: list[int]) -> int:
    """Run time of the live threads of `pids` plus their reaped children's CPU time."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
        f = _stat_fields(pid)
        if f is not None and len(f) > 14:
            total += (int(f[13]) + int(f[14])) * NS_PER_TICK  # cutime + cstime: reaped children
    return total


def proc_cpu_ns(pid: int | None) -> int:
    return tree_cpu_ns([pid]) if pid else 0


def cpu_times() -> dict[str, tuple[int, int]]:
    """/proc/stat: {'cpu': (busy_ns, total_ns), 'cpu0': ..., ...}."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            parts = line.split()
            v = [int(x) for x in parts[1:]]
            v += [0] * (8 - len(v))
            user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
            busy = user + nice + system + irq + softirq + steal
            out[parts[0]] = (busy * NS_PER_TICK, (busy + idle + iowait) * NS_PER_TICK)
    return out


@dataclass
class Snapshot:
    t: float
    app_ns: int
    engine_ns: int
    cpus: dict[str, tuple[int, int]]
    app_pids: list[int] = field(default_factory=list)


class CpuProbe:
    """Snapshots before and after a measurement; `delta` gives seconds of CPU in the window."""

    def __init__(self, sessions: list[int], engine_pid: int | None):
        self.sessions = set(sessions)
        self.engine_pid = engine_pid

    def snap(self) -> Snapshot:
        pids = session_pids(self.sessions) if self.sessions else []
        return Snapshot(time.monotonic(), tree_cpu_ns(pids), proc_cpu_ns(self.engine_pid), cpu_times(), pids)

    @staticmethod
    def delta(a: Snapshot, b: Snapshot) -> dict[str, float]:
        d = {
            "wall_s": b.t - a.t,
            "app_cpu_s": (b.app_ns - a.app_ns) / 1e9,
            "engine_cpu_s": (b.engine_ns - a.engine_ns) / 1e9,
            "app_procs": len(b.app_pids),
        }
        for name in b.cpus:
            if name in a.cpus:
                busy = (b.cpus[name][0] - a.cpus[name][0]) / 1e9
                key = "machine" if name == "cpu" else name
                d[f"{key}_cpu_s"] = busy
        return d
