#!/usr/bin/env python3
"""Runs the socket-semantics suite against a Linux peer in a private testbed.

  run.py --mode kernel [--build DIR] [GTEST ARGS...]   the suite on the kernel stack, over the
                                                       testbed's kernel link
  run.py --mode shim   [--build DIR] [GTEST ARGS...]   the suite under `pno run`, its TCP on pno-engine

Both modes run the same binary with the same assertions; only the addresses differ. The runner
brings up its own testbed (scripts/testbed) under private names, starts pno-semantics-peer in the
peer namespace (driven over a Unix-domain control socket), runs pno-semantics, and tears it all down,
also on failure or when killed. Environment (defaults): PNO_NETNS=pnosem-peer PNO_IFACE=pnosem0
PNO_KHOST_IP=198.18.65.1 PNO_KPEER_IP=198.18.65.2 PNO_RUN_DIR=/run/pno-testbed/$PNO_NETNS
PNO_SEM_TIMEOUT=900 (seconds for the suite). Needs root. Python 3 standard library only.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTBED = REPO / "scripts" / "testbed"

# glibc's fortified entry points the suite must import, so the shim's __*_chk wrappers are exercised.
FORTIFIED = ["__read_chk", "__recv_chk", "__recvfrom_chk", "__poll_chk", "__ppoll_chk", "__fdelt_chk"]


class Interrupted(Exception):
    pass


def log(msg: str) -> None:
    print(f"[run.py {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def on_signal(signum, _frame):
    raise Interrupted(f"signal {signum}")


HANG = re.compile(r"^pno-semantics: (\S+) did not finish within")
RESULT = re.compile(r"^\[ +(OK|FAILED) +\] (\S+) \(")
START = re.compile(r"^\[ RUN +\] (\S+)")


def run_suite(cmd: list[str], gtest_args: list[str], timeout: float, mode: str) -> int:
    """Runs the suite; when a test hangs (the suite's watchdog ends the process) or crashes it, runs
    the tests not yet run again without that one, so one hang or crash does not hide the results of
    everything after it. Returns 0 only when every selected test ran and passed."""
    user_filter = "*"
    rest = []
    for a in gtest_args:
        if a.startswith("--gtest_filter="):
            user_filter = a.split("=", 1)[1]
        else:
            rest.append(a)
    finished: list[str] = []
    failed: list[str] = []
    hung: list[str] = []
    crashed: list[str] = []
    deadline = time.monotonic() + timeout
    rc = 1
    while True:
        skip = finished + hung + crashed
        flt = user_filter
        if skip:
            flt += (":" if "-" in user_filter else "-") + ":".join(skip)
        full = cmd + [f"--gtest_filter={flt}"] + rest
        log(f"{mode}: $ {shlex.join(full) if len(skip) < 5 else shlex.join(cmd) + f' (without {len(skip)} tests already run)'}")
        proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        hang = None
        current = None
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                if m := START.match(line):
                    current = m.group(1)
                elif m := RESULT.match(line):
                    current = None
                    finished.append(m.group(2))
                    if m.group(1) == "FAILED":
                        failed.append(m.group(2))
                elif m := HANG.match(line):
                    hang = m.group(1)
                if time.monotonic() > deadline:
                    break
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"the suite did not finish within {timeout:.0f}s")
            rc = 1
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if rc < 0:
            log(f"the suite died of signal {-rc}" + (f" in {current}" if current else ""))
        if time.monotonic() > deadline:
            break
        if hang is not None:
            hung.append(hang)
        elif rc != 0 and current is not None:
            crashed.append(current)
        else:
            break
    if hung or failed or crashed:
        log(f"{mode}: {len(failed)} failed, {len(hung)} hung, {len(crashed)} crashed "
            f"(of {len(finished) + len(hung) + len(crashed)} run)")
        for t in failed:
            print(f"  FAILED  {t}")
        for t in hung:
            print(f"  HUNG    {t}")
        for t in crashed:
            print(f"  CRASHED {t}")
        return 1
    return 0 if rc == 0 else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["kernel", "shim"], required=True)
    ap.add_argument("--build", default=str(REPO / "build"), help="build directory (default: build/)")
    opts, gtest_args = ap.parse_known_args()

    if os.geteuid() != 0:
        log("needs root (network namespaces)")
        return 1
    build = Path(opts.build).resolve()
    suite = build / "bin" / "pno-semantics"
    peer = build / "bin" / "pno-semantics-peer"
    engine = build / "bin" / "pno-engine"
    pno = build / "bin" / "pno"
    needed = [suite, peer] + ([engine, pno] if opts.mode == "shim" else [])
    for f in needed:
        if not os.access(f, os.X_OK):
            log(f"missing {f}: build it first")
            return 1

    imports = subprocess.run(["nm", "-D", "--undefined-only", str(suite)], capture_output=True, text=True).stdout
    missing = [s for s in FORTIFIED if s not in imports]
    if missing:
        log(f"{suite} does not import {', '.join(missing)}: it must be built with -D_FORTIFY_SOURCE=2 -O2")
        return 1

    env = dict(os.environ)
    env.setdefault("PNO_NETNS", "pnosem-peer")
    env.setdefault("PNO_IFACE", "pnosem0")
    # Not the default kernel-link subnet, so this testbed can run beside a default one.
    env.setdefault("PNO_KHOST_IP", "198.18.65.1")
    env.setdefault("PNO_KPEER_IP", "198.18.65.2")
    env.setdefault("PNO_RUN_DIR", f"/run/pno-testbed/{env['PNO_NETNS']}")
    env["PNO_ENGINE"] = str(engine)
    netns = env["PNO_NETNS"]
    run_dir = Path(env["PNO_RUN_DIR"])
    control = run_dir / "semantics-peer.sock"
    host_socket = run_dir / "engine-host.sock"
    timeout = float(env.get("PNO_SEM_TIMEOUT", "900"))

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    peer_proc: subprocess.Popen | None = None
    rc = 1
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if opts.mode == "kernel":
            subprocess.run([str(TESTBED), "net"], env=env, check=True)
            local_ip, peer_ip = env["PNO_KHOST_IP"], env["PNO_KPEER_IP"]
        else:
            if host_socket.exists():
                host_socket.unlink()
            subprocess.run([str(TESTBED), "up", "--host-socket", str(host_socket)], env=env, check=True)
            local_ip = env.get("PNO_ENGINE_IP", "198.18.0.1")
            peer_ip = env.get("PNO_PEER_IP", "198.18.0.2")
        run_dir.mkdir(parents=True, exist_ok=True)

        if control.exists():
            control.unlink()
        peer_log = open(run_dir / "semantics-peer.log", "w")
        peer_proc = subprocess.Popen(["ip", "netns", "exec", netns, str(peer), "--control", str(control)],
                                     stdout=peer_log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 10
        while not control.exists():
            if peer_proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pno-semantics-peer did not start (see {run_dir}/semantics-peer.log)")
            time.sleep(0.05)

        base = [str(suite), "--local-ip", local_ip, "--peer-ip", peer_ip, "--control", str(control)]
        prefix = [str(pno), "run", "--require-engine", "--engine-socket", str(host_socket), "--"] \
            if opts.mode == "shim" else []
        rc = run_suite(prefix + base, gtest_args, timeout, opts.mode)
        if opts.mode == "shim":
            alive = subprocess.run([str(TESTBED), "status"], env=env, capture_output=True, text=True).stdout
            if "engine: running" not in alive:
                log("the engine is no longer running:")
                rc = 1
                log_path = run_dir / "engine.log"
                if log_path.exists():
                    print("\n".join(log_path.read_text(errors="replace").splitlines()[-30:]))
    except (Interrupted, RuntimeError, subprocess.CalledProcessError) as e:
        log(f"aborted: {e}")
        rc = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if peer_proc is not None and peer_proc.poll() is None:
            try:
                os.killpg(peer_proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            peer_proc.wait()
        subprocess.run([str(TESTBED), "down"], env=env, stdout=subprocess.DEVNULL)
    log(f"{opts.mode}: {'PASS' if rc == 0 else 'FAIL'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
