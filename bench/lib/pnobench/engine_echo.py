"""bench/run engine-echo: pno-engine's TCP echo over a veth vs Linux-to-Linux TCP over the same kind of veth.

Measures, in one run and with the same client program (pno-loadgen, in a network namespace, on its
own core):
  throughput  one stream through the echo: the client sends N bytes and reads them back (MB/s of
              payload each way; sha256 checked)
  latency     64-byte request/response on one connection (TCP_NODELAY): RTT p50 / p99 in us

  A) engine: scripts/testbed up --echo (pno-engine on pno0, client in netns pno-peer)
  B) Linux:  netns pno-bench-srv (pno-loadgen serve --mode echo) <-veth-> netns pno-bench-cli

and prints both with ratios (engine / Linux). Needs root and a Release build (scripts/bootstrap).

  bench/run engine-echo [--bytes 1G] [--count 20000] [--runs 3] [--json FILE] [--engine-args "..."]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pnotest import last_json_line

from .env import REPO

PROG = "bench/run engine-echo"
SRV_NS, CLI_NS = "pno-bench-srv", "pno-bench-cli"
SRV_IF, CLI_IF = "pnob0", "pnob0c"
SRV_IP, CLI_IP = "198.19.0.1", "198.19.0.2"
ENGINE_IP = "198.18.0.1"
PEER_NS = os.environ.get("PNO_NETNS", "pno-peer")


def sh(cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise SystemExit(f"{PROG}: failed: {shlex.join(cmd)}\n{p.stdout}{p.stderr}")
    return p


def loadgen(ns: str, lg: str, cpu: str, args: list[str], timeout: float = 600) -> dict:
    cmd = ["ip", "netns", "exec", ns, "taskset", "-c", cpu, lg] + args
    p = sh(cmd, check=False, timeout=timeout)
    res = last_json_line(p.stdout)
    if p.returncode != 0 or res is None or not res.get("ok"):
        raise SystemExit(f"{PROG}: {shlex.join(cmd)} failed:\n{p.stdout}{p.stderr}")
    return res


def measure(ns: str, target: str, lg: str, opts) -> dict:
    tput, p50, p99 = [], [], []
    for i in range(opts.runs):
        r = loadgen(ns, lg, "1", ["stream", "--connect", f"{target}:7", "--bytes", opts.bytes, "--seed", str(i + 1)])
        tput.append(r["mbytes_per_s"])
        r = loadgen(ns, lg, "1", ["pingpong", "--connect", f"{target}:7", "--size", "64", "--count",
                                  str(opts.count), "--warmup", "1000"])
        p50.append(r["rtt_p50_us"])
        p99.append(r["rtt_p99_us"])
        print(f"    run {i + 1}: {tput[-1]:8.1f} MB/s   rtt p50 {p50[-1]:7.1f} us   p99 {p99[-1]:7.1f} us", flush=True)
    return {"mbytes_per_s": statistics.median(tput), "rtt_p50_us": statistics.median(p50),
            "rtt_p99_us": statistics.median(p99), "runs": opts.runs}


def linux_setup() -> None:
    linux_teardown()
    sh(["ip", "netns", "add", SRV_NS])
    sh(["ip", "netns", "add", CLI_NS])
    sh(["ip", "link", "add", SRV_IF, "netns", SRV_NS, "type", "veth", "peer", "name", CLI_IF, "netns", CLI_NS])
    for ns, ifn, ip in ((SRV_NS, SRV_IF, SRV_IP), (CLI_NS, CLI_IF, CLI_IP)):
        sh(["ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/24", "dev", ifn])
        sh(["ip", "netns", "exec", ns, "ip", "link", "set", ifn, "up"])
        sh(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])


def linux_teardown() -> None:
    for ns in (SRV_NS, CLI_NS):
        sh(["ip", "netns", "del", ns], check=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bytes", default="1G", help="bytes per throughput run (K/M/G)")
    ap.add_argument("--count", type=int, default=20000, help="ping-pongs per latency run")
    ap.add_argument("--runs", type=int, default=3, help="runs per side; medians are reported")
    ap.add_argument("--build-dir", default=os.environ.get("PNO_BUILD_DIR", str(REPO / "build")))
    ap.add_argument("--engine-args", default="", help="extra pno-engine arguments")
    ap.add_argument("--json", help="also write the results as JSON here")
    ap.add_argument("--skip-engine", action="store_true", help="Linux baseline only")
    opts = ap.parse_args(argv)
    if os.geteuid() != 0:
        print(f"{PROG}: needs root", file=sys.stderr)
        return 2
    lg = str(Path(opts.build_dir) / "bin" / "pno-loadgen")
    engine = str(Path(opts.build_dir) / "bin" / "pno-engine")
    for b in (lg,) + (() if opts.skip_engine else (engine,)):
        if not os.access(b, os.X_OK):
            print(f"{PROG}: {b} missing (run scripts/bootstrap)", file=sys.stderr)
            return 2
    print(f"{PROG}: {opts.runs} runs x (1 stream of {opts.bytes} echoed, {opts.count} x 64 B ping-pong); "
          f"client on CPU 1, server on CPU 0", flush=True)

    results: dict[str, dict] = {}
    # B) Linux to Linux first: it needs no engine, and a failing engine then still leaves a baseline.
    print("  Linux echo (pno-loadgen serve) over veth:", flush=True)
    srv = None
    try:
        linux_setup()
        ready = Path(f"/tmp/pno-bench-ready-{os.getpid()}")
        ready.unlink(missing_ok=True)
        srv = subprocess.Popen(["ip", "netns", "exec", SRV_NS, "taskset", "-c", "0", lg, "serve", "--port", "7",
                                "--mode", "echo", "--buf", "262144", "--quiet", "--ready-file", str(ready)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        for _ in range(100):
            if ready.exists():
                break
            time.sleep(0.05)
        ready.unlink(missing_ok=True)
        results["linux"] = measure(CLI_NS, SRV_IP, lg, opts)
    finally:
        if srv and srv.poll() is None:
            os.killpg(srv.pid, 15)
            srv.wait(5)
        linux_teardown()

    if not opts.skip_engine:
        print("  pno-engine echo over veth:", flush=True)
        testbed = str(REPO / "scripts" / "testbed")
        env = dict(os.environ, PNO_ENGINE=engine)
        args = ["--echo", "--lcore", "0"] + shlex.split(opts.engine_args)
        try:
            sh([testbed, "up"] + args, env=env, timeout=60)
            results["engine"] = measure(PEER_NS, ENGINE_IP, lg, opts)
        finally:
            sh([testbed, "down"], check=False, env=env, timeout=60)

    print()
    print(f"{'':24s}{'throughput MB/s':>18s}{'RTT p50 us':>14s}{'RTT p99 us':>14s}")
    for k, label in (("engine", "pno-engine echo"), ("linux", "Linux echo")):
        if k in results:
            r = results[k]
            print(f"{label:24s}{r['mbytes_per_s']:18.1f}{r['rtt_p50_us']:14.1f}{r['rtt_p99_us']:14.1f}")
    if "engine" in results:
        e, lx = results["engine"], results["linux"]
        ratios = {"throughput": e["mbytes_per_s"] / lx["mbytes_per_s"], "rtt_p50": e["rtt_p50_us"] / lx["rtt_p50_us"],
                  "rtt_p99": e["rtt_p99_us"] / lx["rtt_p99_us"]}
        results["ratio_engine_over_linux"] = ratios
        print(f"{'ratio engine/Linux':24s}{ratios['throughput']:17.2f}x{ratios['rtt_p50']:13.2f}x"
              f"{ratios['rtt_p99']:13.2f}x")
        print("(throughput: higher is better; RTT: lower is better)")
    results["params"] = {"bytes": opts.bytes, "count": opts.count, "runs": opts.runs}
    print(json.dumps(results))
    if opts.json:
        Path(opts.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0

