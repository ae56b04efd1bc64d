"""Helpers the Python test harnesses share: tests/apps/apps.py, tests/interop/interop.py, and bench/run
(through pno_testbed.py).

Failures and logging, servers started in their own session and stopped by pid (Proc, Leftovers),
process groups stopped by signal, waiting for a condition, the engine's pid file under a testbed run
directory, a JSON result line of a client, the cleanup stack of a test, and the command-line plumbing
of a suite (test names by glob, binaries under the build directory, the closing summary). Python 3
standard library only.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
TESTBED = REPO / "scripts" / "testbed"


class TestFailure(Exception):
    pass


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise TestFailure(what)


def wait_until(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    """Polls `pred` every `step` seconds; TestFailure naming `what` after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(step)
    raise TestFailure(f"timed out after {timeout:.0f}s waiting for {what}")


# ------------------------------------------------------------------------------------------------
# Processes started by a test: own session, stopped by pid, leftovers of the group killed
# ------------------------------------------------------------------------------------------------

def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def children_of(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
            out += [int(x) for x in text.split()]
    except OSError:
        pass
    return sorted(set(out))


def start_time(pid: int) -> str | None:
    """The process's start time (/proc/PID/stat field 22): with the pid, it names one process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class Leftovers:
    """The servers a test started and its temporary directory, in a file, so that the next test
    cleans up after a test killed without its cleanup (SIGKILL). Lines: "PID START_TIME" of a
    session leader, or "dir PATH"."""

    def __init__(self, path: Path):
        self.path = path

    def add(self, pid: int) -> None:
        with open(self.path, "a") as f:
            f.write(f"{pid} {start_time(pid)}\n")

    def add_dir(self, path: Path) -> None:
        with open(self.path, "a") as f:
            f.write(f"dir {path}\n")

    def reap(self) -> None:
        if not self.path.exists():
            return
        for line in self.path.read_text().splitlines():
            pid_s, start = line.split(" ", 1)
            if pid_s == "dir":
                shutil.rmtree(start, ignore_errors=True)
                continue
            pid = int(pid_s)
            if start_time(pid) == start and group_alive(pid):
                log(f"killing process group {pid} left running by an earlier test")
                os.killpg(pid, signal.SIGKILL)
        self.path.unlink()


class Proc:
    """One server process (with whatever it forks): its own session, so the group is exactly what
    it started. Stopped with a signal to its pid; what is left of the group afterwards is killed."""

    def __init__(self, name: str, cmd: list[str], logfile: Path, cwd: Path | None = None,
                 leftovers: Leftovers | None = None):
        self.name = name
        self.cmd = cmd
        self.logfile = logfile
        log(f"& {shlex.join(cmd)}")
        with open(logfile, "wb") as out:
            self.p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True, cwd=cwd)
        self.pid = self.p.pid
        if leftovers:
            leftovers.add(self.pid)
        self.stopped = False
        self.returncode: int | None = None

    def alive(self) -> bool:
        return self.p.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise TestFailure(f"{self.name} (pid {self.pid}) exited with {self.p.returncode}; "
                              f"log {self.logfile}:\n{tail(self.logfile)}")

    def stop(self, sig: int = signal.SIGTERM, grace: float = 10, expect_rc: int | tuple[int, ...] | None = 0) -> None:
        """Graceful stop: `sig` to the pid, wait, then the exit status must be expect_rc (one of them,
        if a tuple; None: any status but a crash) and no process of the group may be left."""
        if self.stopped:
            return
        self.stopped = True
        if self.alive():
            os.kill(self.pid, sig)
        try:
            self.returncode = self.p.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TestFailure(f"{self.name} (pid {self.pid}) did not exit within {grace:.0f}s of "
                              f"{signal.Signals(sig).name}") from None
        deadline = time.monotonic() + 3
        while group_alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = group_alive(self.pid)
        if left:
            self.kill()
        rc = self.returncode
        log(f"{self.name} (pid {self.pid}) stopped with {signal.Signals(sig).name}: exit {rc}")
        if rc < 0 and -rc != sig:
            raise TestFailure(f"{self.name} died of {signal.Signals(-rc).name} after {signal.Signals(sig).name}:\n"
                              f"{tail(self.logfile)}")
        if expect_rc is not None and rc not in (expect_rc if isinstance(expect_rc, tuple) else (expect_rc,)):
            raise TestFailure(f"{self.name} exited with {rc} after {signal.Signals(sig).name} (expected "
                              f"{expect_rc}):\n{tail(self.logfile)}")
        expect(not left, f"{self.name}: processes of its group were still running after it exited")

    def kill(self) -> None:
        """Last resort (cleanup): SIGKILL to the whole group this process started."""
        self.stopped = True
        if group_alive(self.pid):
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            pass


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def stop_group(p: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 5) -> None:
    """Stops a process started with start_new_session=True (so its pid is its group's id): `sig` to
    the group, and SIGKILL to the group if it has not exited within `grace` seconds."""
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, sig)
        p.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(5)
    except ProcessLookupError:
        pass


# ------------------------------------------------------------------------------------------------
# The testbed (scripts/testbed): its engine's pid file
# ------------------------------------------------------------------------------------------------

def engine_pid(run_dir: Path) -> int | None:
    """The pid of the engine that scripts/testbed started with this PNO_RUN_DIR, if it still runs."""
    try:
        pid = int((run_dir / "engine.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def last_json_line(out: str) -> dict | None:
    """The last line of `out` that is a JSON object (pno-loadgen's result), or None."""
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    return lines[-1] if lines else None


# ------------------------------------------------------------------------------------------------
# Per-test cleanup stack
# ------------------------------------------------------------------------------------------------

class Cleanups:
    """Cleanup steps of one test, run in reverse order; every step runs even if one fails."""

    def __init__(self) -> None:
        self._cleanups: list[Callable[[], None]] = []

    def on_cleanup(self, fn: Callable[[], None]) -> None:
        self._cleanups.append(fn)

    def cleanup(self) -> None:
        while self._cleanups:
            fn = self._cleanups.pop()
            try:
                fn()
            except Exception as e:  # every step runs
                log(f"cleanup step failed: {e!r}")


# ------------------------------------------------------------------------------------------------
# A suite's command line: test names by glob, root and binaries checked, the closing summary
# ------------------------------------------------------------------------------------------------

def suite_arg_parser(doc: str, tests_help: str) -> argparse.ArgumentParser:
    """The options every suite has: test names or globs, --list, --build-dir."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tests", nargs="*", help=tests_help)
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--build-dir", default=os.environ.get("PNO_BUILD_DIR", str(REPO / "build")))
    return ap


def build_paths(opts: argparse.Namespace, **defaults: str) -> None:
    """Each option named in `defaults` as an absolute path: its value, or the default under --build-dir
    (e.g. engine="bin/pno-engine")."""
    build = Path(opts.build_dir)
    for name, rel in defaults.items():
        setattr(opts, name, os.path.abspath(getattr(opts, name) or build / rel))


def unwind_on_sigterm() -> None:
    """ctest's timeout sends SIGTERM: unwind so every test's cleanup (testbed down) still runs."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def select_tests(prog: str, all_tests: list[str], patterns: list[str]) -> list[str] | None:
    """The tests matching `patterns` (globs), in order, each once; None (after saying so on stderr)
    when a pattern matches nothing."""
    names: list[str] = []
    for pat in patterns:
        hits = [t for t in all_tests if fnmatch.fnmatchcase(t, pat)]
        if not hits:
            print(f"{prog}: no test matches {pat!r}", file=sys.stderr)
            return None
        names += [h for h in hits if h not in names]
    return names


def check_root_and_binaries(prog: str, binaries: list[str]) -> bool:
    """False (after saying why on stderr) unless running as root and every binary is executable."""
    if os.geteuid() != 0:
        print(f"{prog}: needs root (network namespaces, nftables)", file=sys.stderr)
        return False
    for b in binaries:
        if not os.access(b, os.X_OK):
            print(f"{prog}: {b} not built", file=sys.stderr)
            return False
    return True


def summarize_results(results: list[tuple[str, bool, float, dict]], name_width: int) -> int:
    """Prints the summary of a run of more than one test; the suite's exit status."""
    failed = [r for r in results if not r[1]]
    if len(results) > 1:
        print("\nsummary:")
        for n, ok, dt, m in results:
            print(f"  {'PASS' if ok else 'FAIL'} {n:{name_width}s} {dt:6.1f}s {json.dumps(m) if m else ''}")
        print(f"{len(results) - len(failed)}/{len(results)} passed, {sum(r[2] for r in results):.0f}s")
    return 1 if failed else 0
