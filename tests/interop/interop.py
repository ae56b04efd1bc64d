#!/usr/bin/env python3
"""PnO interop tests: pno-engine against the Linux kernel's TCP in network namespace pno-peer.

Each test brings up its own testbed (scripts/testbed up), runs Linux-side programs (pno-loadgen,
ping) inside the peer namespace, brings the testbed down, and then checks the engine's exit counters
(--stats-file), including the mbuf leak check. On failure it prints the engine log tail, the
counters, the Linux side's socket view and a tshark summary of the wire capture.

  interop.py --list                      test names (one per line)
  interop.py echo.clean conns.loss1      run these tests (names are SCENARIO.PROFILE; globs work)
  interop.py --target linux echo.clean   the same tests against a Linux stand-in for the engine
                                         (netns pno-eng with pno-loadgen servers): checks the harness
                                         itself and gives a baseline

Needs root (namespaces, nftables). Python 3 standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pylib"))
from pnotest import (TESTBED, Cleanups, TestFailure, build_paths, check_root_and_binaries, engine_pid,  # noqa: E402
                     expect, last_json_line, log, select_tests, stop_group, suite_arg_parser, summarize_results,
                     unwind_on_sigterm, wait_until)

# The same environment variables as scripts/testbed, so a second testbed can run beside the default one.
PEER_NS = os.environ.get("PNO_NETNS", "pno-peer")
ENGINE_IF = os.environ.get("PNO_IFACE", "pno0")
PEER_IF = os.environ.get("PNO_PEER_IFACE", ENGINE_IF + "p")
PEER_IP = "198.18.0.2"
ENGINE_IP = "198.18.0.1"
ENGINE_NS = PEER_NS + "-eng"  # only for --target linux: the Linux stand-in for the engine
ECHO_PORT = 7
DISCARD_PORT = 9
CLIENT_TEST_PORT = 5001  # Linux servers that the engine's client connects to


# ------------------------------------------------------------------------------------------------
# Profiles: the conditions on the wire. Every scenario runs under each profile that applies to it.
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Profile:
    name: str
    loss_pct: int = 0              # nftables random drop in the peer namespace, both directions
    impair: tuple[str, ...] = ()   # engine impairment options
    scale: float = 1.0             # transfer sizes are multiplied by this (loss makes Linux slow)
    slack: float = 1.0             # timeouts are multiplied by this


PROFILES = {
    "clean": Profile("clean"),
    "loss1": Profile("loss1", loss_pct=1, scale=1 / 16, slack=2),
    "loss5": Profile("loss5", loss_pct=5, scale=1 / 256, slack=3),
    "reorder": Profile("reorder", impair=("--impair-reorder", "5", "--impair-reorder-gap", "3"), scale=1 / 16,
                       slack=2),
    "dup": Profile("dup", impair=("--impair-dup", "5"), scale=1 / 16, slack=2),
    "delay": Profile("delay", impair=("--impair-delay", "2000", "--impair-jitter", "500"),
                     scale=1 / 16, slack=2),
}


# ------------------------------------------------------------------------------------------------
# Per-test context: processes, cleanup, results directory
# ------------------------------------------------------------------------------------------------

class Ctx(Cleanups):
    def __init__(self, name: str, opts: argparse.Namespace, profile: Profile):
        super().__init__()
        self.name = name
        self.opts = opts
        self.profile = profile
        self.dir = Path(opts.results) / name
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen] = []
        self.notes: list[str] = []
        self.loadgen_bin = opts.loadgen

    # --- commands ---
    def run(self, cmd: list[str], timeout: float = 60, check: bool = True,
            quiet: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
        if not quiet:
            log("$ " + shlex.join(cmd))
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired as e:
            raise TestFailure(f"command timed out after {timeout:.0f}s: {shlex.join(cmd)}\n"
                              f"{(e.stdout or b'')[-2000:]!r}") from None
        if check and p.returncode != 0:
            raise TestFailure(f"command failed ({p.returncode}): {shlex.join(cmd)}\n"
                              f"stdout: {p.stdout[-3000:]}\nstderr: {p.stderr[-3000:]}")
        return p

    def spawn(self, cmd: list[str], logname: str) -> subprocess.Popen:
        log("& " + shlex.join(cmd))
        out = open(self.dir / logname, "w")
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
        out.close()
        self.procs.append(p)
        self.on_cleanup(lambda: stop_group(p, signal.SIGTERM, 5))
        return p

    def in_ns(self, ns: str, cmd: list[str]) -> list[str]:
        return ["ip", "netns", "exec", ns] + cmd

    def loadgen(self, ns: str, args: list[str], timeout: float, label: str,
                expect_ok: bool = True) -> dict:
        """Runs pno-loadgen in a namespace; returns its last JSON line."""
        cmd = self.in_ns(ns, [self.loadgen_bin] + args)
        t0 = time.monotonic()
        p = self.run(cmd, timeout=timeout + 30, check=False)
        (self.dir / f"{label}.out").write_text(p.stdout + p.stderr)
        res = last_json_line(p.stdout)
        if res is None:
            raise TestFailure(f"{label}: no result from pno-loadgen (exit {p.returncode})\n{p.stderr[-2000:]}")
        log(f"{label}: {summarize(res)} [{time.monotonic() - t0:.1f}s]")
        if expect_ok and (p.returncode != 0 or not res.get("ok")):
            raise TestFailure(f"{label} failed: {json.dumps(res)}")
        return res

    def sleep_until(self, pred: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
        wait_until(pred, timeout, what, step)

    def scaled(self, nbytes: int, minimum: int = 1 << 20) -> int:
        return max(minimum, int(nbytes * self.profile.scale))

    def tmo(self, secs: float) -> float:
        return secs * self.profile.slack


def summarize(res: dict) -> str:
    keys = ["ok", "bytes_sent", "bytes_recv", "mbytes_per_s", "verified", "failed", "established",
            "rtt_p50_us", "rtt_p99_us", "connect_p99_ms", "secs", "error", "reset", "eof"]
    return " ".join(f"{k}={res[k]}" for k in keys if k in res)


# ------------------------------------------------------------------------------------------------
# Wire faults in the peer namespace (nftables) and the wire capture
# ------------------------------------------------------------------------------------------------

def nft_loss(ctx: Ctx, pct: int) -> None:
    """Random loss of pct % of IPv4 packets between the peer and the engine, both directions."""
    rules = f"""
table inet pno_loss {{
  chain in  {{ type filter hook input priority -10; ip saddr {ENGINE_IP} numgen random mod 100 < {pct} counter drop; }}
  chain out {{ type filter hook output priority -10; ip daddr {ENGINE_IP} numgen random mod 100 < {pct} counter drop; }}
}}
"""
    p = subprocess.run(ctx.in_ns(PEER_NS, ["nft", "-f", "-"]), input=rules, text=True, capture_output=True)
    if p.returncode != 0:
        raise TestFailure(f"nft loss rules failed: {p.stderr}")
    log(f"nftables: {pct}% random loss each way in {PEER_NS}")
    ctx.on_cleanup(lambda: subprocess.run(ctx.in_ns(PEER_NS, ["nft", "delete", "table", "inet", "pno_loss"]),
                                          capture_output=True))


def nft_blackhole(ctx: Ctx) -> None:
    """The peer vanishes: every packet to or from the engine is dropped from now on."""
    rules = f"""
table inet pno_gone {{
  chain in  {{ type filter hook input priority -20; ip saddr {ENGINE_IP} drop; }}
  chain out {{ type filter hook output priority -20; ip daddr {ENGINE_IP} drop; }}
}}
"""
    p = subprocess.run(ctx.in_ns(PEER_NS, ["nft", "-f", "-"]), input=rules, text=True, capture_output=True)
    if p.returncode != 0:
        raise TestFailure(f"nft blackhole rules failed: {p.stderr}")
    log(f"nftables: {PEER_NS} now drops everything to/from {ENGINE_IP}")
    ctx.on_cleanup(lambda: subprocess.run(ctx.in_ns(PEER_NS, ["nft", "delete", "table", "inet", "pno_gone"]),
                                          capture_output=True))


def nft_counters(ctx: Ctx) -> str:
    p = subprocess.run(ctx.in_ns(PEER_NS, ["nft", "list", "ruleset"]), capture_output=True, text=True)
    return p.stdout


class Capture:
    """tcpdump in the peer namespace (headers only), kept when the test fails."""

    def __init__(self, ctx: Ctx, snaplen: int = 128):
        self.ctx = ctx
        self.path = ctx.dir / "wire.pcap"
        self.proc = ctx.spawn(ctx.in_ns(PEER_NS, ["tcpdump", "-i", PEER_IF, "-s", str(snaplen), "-U", "-n",
                                                  "-w", str(self.path)]), "tcpdump.log")
        # tcpdump says "listening on" once the socket is open.
        try:
            ctx.sleep_until(lambda: "listening on" in (ctx.dir / "tcpdump.log").read_text(), 5, "tcpdump")
        except TestFailure:
            log("tcpdump did not start; continuing without a capture")

    def stop(self) -> None:
        stop_group(self.proc, signal.SIGINT, 5)

    def summary(self, lines: int = 40) -> str:
        self.stop()
        if not self.path.exists() or shutil.which("tshark") is None:
            return "(no capture)"
        out = []
        p = subprocess.run(["tshark", "-r", str(self.path), "-q", "-z", "expert,note"], capture_output=True,
                           text=True, timeout=60)
        out.append(p.stdout[-3000:])
        p = subprocess.run(["tshark", "-r", str(self.path), "-n"], capture_output=True, text=True, timeout=60)
        tail = p.stdout.splitlines()[-lines:]
        out.append(f"last {len(tail)} frames:\n" + "\n".join(tail))
        return "\n".join(out)


# ------------------------------------------------------------------------------------------------
# Targets: the real engine, or a Linux stand-in (for checking the harness and for baselines)
# ------------------------------------------------------------------------------------------------

def parse_kv(text: str) -> dict[str, int | str]:
    out: dict[str, int | str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, v = line.split("=", 1)
        k, v = k.strip(), v.strip()
        try:
            out[k] = int(v)
        except ValueError:
            out[k] = v
    return out


class EngineTarget:
    """pno-engine behind scripts/testbed (engine on pno0 in the root namespace, Linux in pno-peer)."""
    kind = "engine"

    def __init__(self, opts: argparse.Namespace):
        self.opts = opts
        self.testbed = str(TESTBED)
        self.stats: dict[str, int | str] = {}
        self.stats_path: Path | None = None
        self.log_path: Path | None = None
        self.running = False
        self.env: dict[str, str] = {}
        self._help: str | None = None

    def supports(self, option: str) -> bool:
        if self._help is None:
            p = subprocess.run([self.opts.engine, "--help"], capture_output=True, text=True)
            self._help = p.stdout
        return re.search(re.escape(option) + r"\b", self._help) is not None

    def _prepare(self, ctx: Ctx) -> list[str]:
        # One run directory for the whole suite: a testbed left behind by a killed test is found
        # (and taken down) by the next one.
        run_dir = Path(self.opts.results) / ".testbed"
        self.stats_path = ctx.dir / "engine-stats.txt"
        self.log_path = run_dir / "engine.log"
        self.saved_log = ctx.dir / "engine.log"
        self.stats = {}
        self.env = dict(os.environ, PNO_RUN_DIR=str(run_dir), PNO_ENGINE=self.opts.engine)
        subprocess.run([self.testbed, "down"], env=self.env, capture_output=True, timeout=60)
        self.running = True
        ctx.on_cleanup(lambda: self.down(ctx))
        # --stats with interval 0: counters at exit in the log, and on SIGUSR1 (live_counters()).
        return ["--stats-file", str(self.stats_path), "--check-leaks", "--stats", "--stats-interval", "0"] + \
            list(ctx.profile.impair) + ctx.engine_extra

    def live_counters(self) -> dict[str, int]:
        """The running engine's counters now (SIGUSR1 makes it print a pno-stats line)."""
        pid = self.engine_pid()
        if pid is None or self.log_path is None:
            return {}
        before = self.log_path.read_text(errors="replace").count("pno-stats:")
        os.kill(pid, signal.SIGUSR1)
        for _ in range(40):
            text = self.log_path.read_text(errors="replace")
            if text.count("pno-stats:") > before:
                line = [x for x in text.splitlines() if x.startswith("pno-stats:")][-1]
                return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
            time.sleep(0.05)
        return {}

    def up(self, ctx: Ctx, extra: list[str]) -> None:
        args = self._prepare(ctx) + ["--echo", "--discard"]
        log("$ scripts/testbed up " + shlex.join(args))
        p = subprocess.run([self.testbed, "up"] + args, env=self.env, capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise TestFailure(f"testbed up failed ({p.returncode}):\n{p.stderr[-3000:]}")

    def engine_pid(self) -> int | None:
        return engine_pid(Path(self.env.get("PNO_RUN_DIR", "/nonexistent")))

    def down(self, ctx: Ctx) -> None:
        if not self.running:
            return
        self.running = False
        p = subprocess.run([self.testbed, "down"], env=self.env, capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            log(f"testbed down: {p.stderr.strip()}")
        if self.log_path and self.log_path.exists() and self.log_path != self.saved_log:
            shutil.copyfile(self.log_path, self.saved_log)
            self.log_path = self.saved_log
        if self.stats_path and self.stats_path.exists():
            self.stats = parse_kv(self.stats_path.read_text())

    def client(self, ctx: Ctx, before_start: Callable[[], None], send: int = 0, recv: int | None = None,
               timeout: float = 60, label: str = "client", expect_ok: bool = True) -> dict:
        """Runs the engine as a client of a Linux server (`testbed net`, engine in the foreground) and
        returns its normalized result."""
        args = self._prepare(ctx) + ["--connect", f"{PEER_IP}:{CLIENT_TEST_PORT}", "--send-bytes", str(send),
                                     "--client-timeout", str(timeout)]
        if recv is not None:
            args += ["--recv-bytes", str(recv)]
        ctx.run([self.testbed, "net"], timeout=60, env=self.env)
        ctx.wire_ready()
        before_start()
        self.log_path = ctx.dir / "engine.log"
        cmd = [self.opts.engine, "--iface", ENGINE_IF, "--ip", f"{ENGINE_IP}/24"] + args
        log("$ " + shlex.join(cmd))
        t0 = time.monotonic()
        with open(self.log_path, "w") as out:
            p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = p.wait(timeout + 30)
            except BaseException:
                stop_group(p, signal.SIGTERM, 10)
                raise
        ctx.save_nft()
        self.down(ctx)
        text = self.log_path.read_text(errors="replace")
        m = re.search(r"^pno-client: (.*)$", text, re.M)
        if rc == 3:
            raise TestFailure("engine exited with 3 (mbuf leak); client: " + (m.group(0) if m else "no result line"))
        if not m:
            raise TestFailure(f"engine (exit {rc}) printed no pno-client result line")
        kv = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', m.group(1)))
        conn = re.search(r'^pno-client-conn: .* status=(\S+) error=(.*?) why="([^"]*)"', text, re.M)
        ckv = {"error": conn.group(2), "why": conn.group(3)} if conn else {}
        secs = float(kv.get("seconds", "0"))
        res = {
            "ok": kv.get("result") == "ok" and rc == 0,
            "bytes_sent": int(kv.get("sent_bytes", 0)), "bytes_recv": int(kv.get("recv_bytes", 0)),
            "sha256_sent": kv.get("sent_sha256", ""), "sha256_recv": kv.get("recv_sha256", ""),
            "secs": secs, "error": (ckv.get("error", "") + " " + ckv.get("why", "").strip('"')).strip(),
            "mbytes_per_s": max(int(kv.get("sent_bytes", 0)), int(kv.get("recv_bytes", 0))) / secs / 1e6 if secs else 0,
        }
        res["reset"] = "reset" in res["error"].lower()
        log(f"{label}: exit {rc} {summarize(res)} [{time.monotonic() - t0:.1f}s]")
        if expect_ok and not res["ok"]:
            raise TestFailure(f"{label} failed (exit {rc}): {m.group(0)}")
        return res

    def check_exit(self, ctx: Ctx) -> None:
        """The engine wrote its counters at exit and every mbuf went back to the pool."""
        if not self.stats:
            raise TestFailure("engine wrote no --stats-file at exit (crashed or killed?)")
        for k in ("mbuf_leaked", "mbuf_engine_in_flight"):
            if k not in self.stats:
                raise TestFailure(f"engine stats lack {k}")
            if self.stats[k] != 0:
                raise TestFailure(f"mbuf leak check failed: {k}={self.stats[k]}")
        log(f"engine exit: mbuf_leaked=0 mbuf_engine_in_flight=0 tcp_sockets={self.stats.get('tcp_sockets')}")

    def counter(self, name: str) -> int:
        v = self.stats.get(name, 0)
        return v if isinstance(v, int) else 0

    def diagnostics(self) -> str:
        out = []
        path = self.log_path
        if path and path.exists():
            lines = path.read_text(errors="replace").splitlines()
            out.append(f"engine log tail ({path}):\n" + "\n".join(lines[-40:]))
        if self.stats:
            nz = {k: v for k, v in self.stats.items() if v not in (0, "0")}
            out.append("engine stats (non-zero): " + " ".join(f"{k}={v}" for k, v in nz.items()))
        return "\n".join(out)


class LinuxTarget:
    """A Linux stand-in for the engine: netns pno-eng with pno-loadgen echo (7) and discard (9)."""
    kind = "linux"

    def __init__(self, opts: argparse.Namespace):
        self.opts = opts
        self.stats: dict[str, int | str] = {}
        self.servers: list[subprocess.Popen] = []

    def up(self, ctx: Ctx, extra: list[str]) -> None:
        if ctx.profile.impair:
            raise TestFailure("impairment profiles need the engine")
        for ns in (PEER_NS, ENGINE_NS):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        ctx.on_cleanup(self.down)
        ctx.run(["ip", "netns", "add", PEER_NS])
        ctx.run(["ip", "netns", "add", ENGINE_NS])
        ctx.run(["ip", "link", "add", ENGINE_IF, "netns", ENGINE_NS, "type", "veth", "peer", "name", PEER_IF,
                 "netns", PEER_NS])
        for ns, ifn, ip in ((ENGINE_NS, ENGINE_IF, ENGINE_IP), (PEER_NS, PEER_IF, PEER_IP)):
            ctx.run(ctx.in_ns(ns, ["ip", "addr", "add", f"{ip}/24", "dev", ifn]))
            ctx.run(ctx.in_ns(ns, ["ip", "link", "set", ifn, "up"]))
            ctx.run(ctx.in_ns(ns, ["ip", "link", "set", "lo", "up"]))
        ka = []
        if "--tcp-keepalive-idle-s" in extra:
            v = lambda o: extra[extra.index(o) + 1]  # noqa: E731
            ka = ["--keepalive", f"{v('--tcp-keepalive-idle-s')}:{v('--tcp-keepalive-intvl-s')}:"
                                 f"{v('--tcp-keepalive-probes')}"]
        for port, mode in ((ECHO_PORT, "echo"), (DISCARD_PORT, "sink")):
            ready = ctx.dir / f"ready-{port}"
            ctx.spawn(ctx.in_ns(ENGINE_NS, [ctx.loadgen_bin, "serve", "--port", str(port), "--mode", mode,
                                            "--ready-file", str(ready), "--quiet"] + ka), f"linux-{mode}.log")
            ctx.sleep_until(ready.exists, 5, f"linux {mode} server")

    def down(self) -> None:
        for ns in (PEER_NS, ENGINE_NS):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def client(self, ctx: Ctx, before_start: Callable[[], None], send: int = 0, recv: int | None = None,
               timeout: float = 60, label: str = "client", expect_ok: bool = True) -> dict:
        before_start()
        ep = f"{PEER_IP}:{CLIENT_TEST_PORT}"
        if send:
            args = ["stream", "--mode", "send", "--connect", ep, "--bytes", str(send)]
        else:
            args = ["stream", "--mode", "recv", "--connect", ep, "--bytes", str(recv or 0)]
        r = ctx.loadgen(ENGINE_NS, args + ["--timeout", str(timeout)], timeout, label, expect_ok)
        r["error"] = r.get("error", "")
        return r

    def check_exit(self, ctx: Ctx) -> None:
        pass

    def counter(self, name: str) -> int:
        return 0

    def diagnostics(self) -> str:
        return ""


# ------------------------------------------------------------------------------------------------
# Scenarios
# ------------------------------------------------------------------------------------------------

@dataclass
class Scenario:
    name: str
    fn: Callable[[Ctx, object], None]
    profiles: tuple[str, ...]
    engine_args: tuple[str, ...] = ()
    pcap: bool = True       # capture headers (off for bulk transfers: the capture would cost CPU)
    timeout: float = 120    # for the whole test at scale 1, multiplied by the profile's slack
    needs_client: bool = False
    optional_flags: tuple[str, ...] = ()  # engine flags passed when the engine's --help lists them


SCENARIOS: dict[str, Scenario] = {}
ALL = tuple(PROFILES)


def scenario(name: str, profiles: tuple[str, ...] = ALL, **kw):
    def deco(fn):
        SCENARIOS[name] = Scenario(name, fn, profiles, **kw)
        return fn
    return deco


def engine_ep(port: int) -> str:
    return f"{ENGINE_IP}:{port}"


@scenario("ping", profiles=("clean", "delay", "dup"))
def t_ping(ctx: Ctx, tgt) -> None:
    """ICMP echo: every request answered (RFC 792), the engine counts them."""
    n = 20
    p = ctx.run(ctx.in_ns(PEER_NS, ["ping", "-n", "-c", str(n), "-i", "0.05", "-W", "2", ENGINE_IP]),
                timeout=30, check=False)
    (ctx.dir / "ping.out").write_text(p.stdout + p.stderr)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", p.stdout)
    expect(m is not None, f"ping printed no summary:\n{p.stdout}{p.stderr}")
    sent, got = int(m.group(1)), int(m.group(2))
    log(f"ping: {got}/{sent} replies; {p.stdout.strip().splitlines()[-1]}")
    expect(got == sent, f"ping: {got} of {sent} replies")
    ctx.post_checks.append(lambda: expect(tgt.kind != "engine" or tgt.counter("icmp_rx_echo") >= n,
                                          f"icmp_rx_echo={tgt.counter('icmp_rx_echo')} < {n}"))


@scenario("echo", pcap=False, timeout=180)
def t_echo(ctx: Ctx, tgt) -> None:
    """Linux client => engine echo: 1 GiB (less under faults) each way, equal sha256."""
    n = ctx.scaled(1 << 30)
    r = ctx.loadgen(PEER_NS, ["stream", "--connect", engine_ep(ECHO_PORT), "--bytes", str(n), "--seed", "11",
                              "--timeout", str(ctx.tmo(60))], ctx.tmo(60), "echo")
    expect(r["sha256_sent"] == r["sha256_recv"] and r["bytes_recv"] == n, "echo: data differs")
    ctx.metrics["echo_mbytes_per_s"] = r["mbytes_per_s"]
    ctx.post_checks.append(lambda: expect(tgt.kind != "engine" or tgt.counter("tcp_rx_bytes") >= n,
                                          f"tcp_rx_bytes={tgt.counter('tcp_rx_bytes')} < {n}"))


@scenario("discard", profiles=("clean", "loss5"), pcap=False)
def t_discard(ctx: Ctx, tgt) -> None:
    """Linux client => engine discard: all bytes accepted, FIN answered with FIN."""
    n = ctx.scaled(256 << 20)
    ctx.loadgen(PEER_NS, ["stream", "--mode", "send", "--connect", engine_ep(DISCARD_PORT), "--bytes", str(n),
                          "--timeout", str(ctx.tmo(60))], ctx.tmo(60), "discard")


@scenario("halfclose")
def t_halfclose(ctx: Ctx, tgt) -> None:
    """RFC 9293 §3.6: after our FIN the engine still delivers everything it has, then its FIN."""
    # The client reads nothing until it has sent everything, so every byte must fit in the buffers
    # along the way (client send, engine receive and send, client receive) or both sides block, as
    # with any echo server. Their initial sizes hold about 256 KiB; under faults the send buffers
    # stay small (they grow with cwnd, as Linux's do), so the test stays below that.
    n = 192 * 1024
    for i in range(3):
        ctx.loadgen(PEER_NS, ["halfclose", "--connect", engine_ep(ECHO_PORT), "--bytes", str(n), "--seed",
                              str(30 + i), "--read-delay-ms", "300", "--timeout", str(ctx.tmo(30))],
                    ctx.tmo(30), f"halfclose{i}")


@scenario("conns", timeout=180)
def t_conns(ctx: Ctx, tgt) -> None:
    """1,000 concurrent connections to the echo, each verified, all open at once."""
    n = 1000
    r = ctx.loadgen(PEER_NS, ["conns", "--connect", engine_ep(ECHO_PORT), "--n", str(n), "--bytes", "8192",
                              "--timeout", str(ctx.tmo(60))], ctx.tmo(60), "conns")
    expect(r["verified"] == n and r["peak_open"] == n, f"conns: {r['verified']} verified, peak {r['peak_open']}")
    ctx.metrics["conns_secs"] = r["secs"]
    if tgt.kind == "engine":
        ctx.post_checks.append(lambda: expect(tgt.counter("tcp_conn_passive_opens") >= n,
                                              f"tcp_conn_passive_opens={tgt.counter('tcp_conn_passive_opens')}"))


@scenario("peer_rst")
def t_peer_rst(ctx: Ctx, tgt) -> None:
    """The Linux side aborts (SO_LINGER 0 => RST, RFC 9293 §3.10.7.4): the engine drops the connection,
    counts the RST, and keeps serving."""
    rounds = 5
    for i in range(rounds):
        ctx.loadgen(PEER_NS, ["stream", "--connect", engine_ep(ECHO_PORT), "--bytes", "4M", "--rst-after",
                              str(1 << 20), "--timeout", str(ctx.tmo(30))], ctx.tmo(30), f"abort{i}")
    # The engine still works after the resets.
    ctx.loadgen(PEER_NS, ["stream", "--connect", engine_ep(ECHO_PORT), "--bytes", "1M", "--timeout",
                          str(ctx.tmo(30))], ctx.tmo(30), "after")
    if tgt.kind == "engine":
        # A RST is never retransmitted: under random loss one can vanish, and the engine then learns of
        # the abort only if it sends on that connection again. Without loss every one must count.
        need = rounds if not ctx.profile.loss_pct else 1
        ctx.post_checks.append(lambda: expect(tgt.counter("tcp_rst_rx") >= need,
                                              f"tcp_rst_rx={tgt.counter('tcp_rst_rx')} < {need}"))


KEEPALIVE = {"idle": 2, "intvl": 1, "cnt": 3}


@scenario("vanish", engine_args=("--tcp-keepalive-idle-s", str(KEEPALIVE["idle"]), "--tcp-keepalive-intvl-s",
                                 str(KEEPALIVE["intvl"]), "--tcp-keepalive-probes", str(KEEPALIVE["cnt"])),
          optional_flags=("--keepalive",))
def t_vanish(ctx: Ctx, tgt) -> None:
    """The peer vanishes after the connection is up (every packet dropped): the engine's keepalive
    (RFC 9293 §3.8.4, RFC 1122 §4.2.3.6) probes, gives up and drops the connection."""
    hold = KEEPALIVE["idle"] + KEEPALIVE["intvl"] * (KEEPALIVE["cnt"] + 1) + 6
    cmd = ctx.in_ns(PEER_NS, [ctx.loadgen_bin, "stream", "--connect", engine_ep(ECHO_PORT), "--bytes", "64K",
                              "--no-shutdown", "--hold", str(hold * ctx.profile.slack), "--timeout",
                              str(ctx.tmo(30) + hold * ctx.profile.slack)])
    p = ctx.spawn(cmd, "vanish-client.out")
    ctx.sleep_until(lambda: '"holding"' in (ctx.dir / "vanish-client.out").read_text() or p.poll() is not None,
                    ctx.tmo(30), "the connection to be up")
    expect(p.poll() is None, "client ended early: " + (ctx.dir / "vanish-client.out").read_text())
    # The client has every echoed byte, but its ACK of the last ones may still be delayed (Linux's
    # delayed ACK, 40 ms, plus the profile's impairment delay). Vanishing before that ACK arrives
    # leaves the engine with unacknowledged data: then retransmission limits, not keepalive, end the
    # connection (RFC 1122 §4.2.3.6 probes only an idle connection), which is not this test.
    time.sleep(0.5)
    nft_blackhole(ctx)
    t0 = time.monotonic()
    if tgt.kind == "engine":
        # Ask the running engine for its counters until the connection has timed out.
        ctx.sleep_until(lambda: tgt.live_counters().get("tcp_conn_timeouts", 0) >= 1, hold, "the engine's keepalive "
                        "to time the connection out (tcp_conn_timeouts)", step=0.5)
        ctx.post_checks.append(lambda: expect(tgt.counter("tcp_keepalive_probes") >= KEEPALIVE["cnt"],
                                              f"tcp_keepalive_probes={tgt.counter('tcp_keepalive_probes')}"))
        ctx.post_checks.append(lambda: expect(tgt.counter("tcp_conn_timeouts") >= 1,
                                              f"tcp_conn_timeouts={tgt.counter('tcp_conn_timeouts')}"))
    else:
        logf = ctx.dir / "linux-echo.log"
        ctx.sleep_until(lambda: "timed out" in logf.read_text(), hold + 10, "the Linux server's keepalive timeout")
    log(f"vanish: keepalive gave up after {time.monotonic() - t0:.1f}s (bound {hold}s)")


# Engine client => Linux server. The engine's client mode is driven through tgt.client(); the Linux
# server starts in before_start (the namespace exists by then, the engine has not started yet).

@scenario("client_send", pcap=False, timeout=180, needs_client=True)
def t_client_send(ctx: Ctx, tgt) -> None:
    """Engine client => Linux sink: 1 GiB (less under faults), sha256 equal on both ends."""
    n = ctx.scaled(1 << 30)
    srv = []
    r = tgt.client(ctx, lambda: srv.append(start_peer_server(ctx, "sink", count=1)), send=n,
                   timeout=ctx.tmo(60), label="client_send")
    s = finish_peer_server(ctx, srv[0])
    expect(s["bytes_recv"] == n and s["sha256_recv"] == r["sha256_sent"] and r["bytes_sent"] == n,
           f"sink got {s['bytes_recv']} bytes sha {s['sha256_recv']}, engine sent {r['bytes_sent']} "
           f"sha {r['sha256_sent']}")
    ctx.metrics["client_send_mbytes_per_s"] = round(r.get("mbytes_per_s", 0), 1)


@scenario("client_recv", pcap=False, timeout=180, needs_client=True)
def t_client_recv(ctx: Ctx, tgt) -> None:
    """Linux source => engine client: 1 GiB (less under faults), sha256 equal on both ends."""
    n = ctx.scaled(1 << 30)
    srv = []
    r = tgt.client(ctx, lambda: srv.append(start_peer_server(ctx, "source", count=1, extra=["--bytes", str(n)])),
                   recv=n, timeout=ctx.tmo(60), label="client_recv")
    s = finish_peer_server(ctx, srv[0])
    expect(s["bytes_sent"] == n and s["sha256_sent"] == r["sha256_recv"] and r["bytes_recv"] == n,
           f"source sent {s['bytes_sent']} sha {s['sha256_sent']}, engine got {r['bytes_recv']} "
           f"sha {r['sha256_recv']}")
    ctx.metrics["client_recv_mbytes_per_s"] = round(r.get("mbytes_per_s", 0), 1)


@scenario("client_peer_rst", needs_client=True)
def t_client_peer_rst(ctx: Ctx, tgt) -> None:
    """The Linux server aborts mid-transfer (SO_LINGER 0): the engine client sees ECONNRESET."""
    srv = []
    r = tgt.client(ctx, lambda: srv.append(start_peer_server(ctx, "sink", count=1,
                                                             extra=["--rst-after", str(1 << 20)])),
                   send=64 << 20, timeout=ctx.tmo(30), label="client_peer_rst", expect_ok=False)
    finish_peer_server(ctx, srv[0])
    expect(not r["ok"] and r.get("reset") is True, f"engine client did not report a reset: {r}")
    if tgt.kind == "engine":
        ctx.post_checks.append(lambda: expect(tgt.counter("tcp_rst_rx") >= 1,
                                              f"tcp_rst_rx={tgt.counter('tcp_rst_rx')}"))


def start_peer_server(ctx: Ctx, mode: str, count: int, extra: list[str] | None = None) -> subprocess.Popen:
    ready = ctx.dir / f"ready-peer-{mode}"
    cmd = ctx.in_ns(PEER_NS, [ctx.loadgen_bin, "serve", "--listen", f"{PEER_IP}:{CLIENT_TEST_PORT}", "--mode", mode,
                              "--count", str(count), "--ready-file", str(ready), "--timeout", "600"] + (extra or []))
    p = ctx.spawn(cmd, f"peer-{mode}.out")
    p.logfile = ctx.dir / f"peer-{mode}.out"
    ctx.sleep_until(ready.exists, 5, f"peer {mode} server")
    return p


def finish_peer_server(ctx: Ctx, p: subprocess.Popen) -> dict:
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        raise TestFailure("peer server did not finish") from None
    conns = []
    for line in p.logfile.read_text().splitlines():
        if line.startswith("{"):
            j = json.loads(line)
            if j.get("event") == "conn":
                conns.append(j)
    expect(bool(conns), "peer server reported no connection")
    log(f"peer server: {summarize(conns[-1])}")
    return conns[-1]


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------

def all_tests() -> list[str]:
    return [f"{s.name}.{p}" for s in SCENARIOS.values() for p in s.profiles]


def run_test(full: str, opts: argparse.Namespace) -> tuple[bool, float, dict]:
    sname, pname = full.split(".", 1)
    sc, prof = SCENARIOS[sname], PROFILES[pname]
    ctx = Ctx(full, opts, prof)
    ctx.post_checks = []
    ctx.metrics = {}
    tgt = EngineTarget(opts) if opts.target == "engine" else LinuxTarget(opts)
    t0 = time.monotonic()
    cap = None
    ok = False
    state = {"wire": False}

    def wire_ready() -> None:
        nonlocal cap
        if state["wire"]:
            return
        state["wire"] = True
        if sc.pcap or opts.pcap:
            cap = Capture(ctx)
        if prof.loss_pct:
            nft_loss(ctx, prof.loss_pct)
    def save_nft() -> None:
        if not prof.loss_pct or state.get("nft"):
            return
        state["nft"] = True
        rules = nft_counters(ctx)
        (ctx.dir / "nft.txt").write_text(rules)
        drops = [int(x) for x in re.findall(r"counter packets (\d+)", rules)]
        log(f"nftables dropped {drops} packets (peer input, output)")
    ctx.wire_ready = wire_ready
    ctx.save_nft = save_nft
    ctx.engine_extra = list(sc.engine_args)
    for flag in sc.optional_flags:
        if tgt.kind == "engine" and tgt.supports(flag):
            ctx.engine_extra.append(flag)
    try:
        log(f"=== {full}: {sc.fn.__doc__.strip().splitlines()[0] if sc.fn.__doc__ else ''}")
        if opts.target == "linux" and prof.impair:
            log(f"{full}: impairment profiles exist only for the engine")
            return True, 0.0, {}
        if not (sc.needs_client and tgt.kind == "engine"):
            tgt.up(ctx, list(sc.engine_args))
            wire_ready()
        sc.fn(ctx, tgt)
        ctx.save_nft()
        if cap:
            cap.stop()
        if opts.target == "engine":
            tgt.down(ctx)
            tgt.check_exit(ctx)
        for chk in ctx.post_checks:
            chk()
        ok = True
    except TestFailure as e:
        log(f"FAIL {full}: {e}")
    except Exception as e:  # a harness bug still fails the test with its traceback
        import traceback
        traceback.print_exc()
        log(f"FAIL {full}: {e!r}")
    finally:
        if not ok:
            try:
                ss = subprocess.run(ctx.in_ns(PEER_NS, ["ss", "-tinoa"]), capture_output=True, text=True, timeout=10)
                print("--- Linux side (ss -tinoa in pno-peer, first 40 lines):\n" +
                      "\n".join(ss.stdout.splitlines()[:40]))
            except Exception:
                pass
        if opts.target == "engine":
            tgt.down(ctx)
        ctx.cleanup()
        if not ok:
            diag = tgt.diagnostics()
            if diag:
                print("--- engine:\n" + diag)
            if cap:
                print("--- wire (tshark):\n" + cap.summary())
            print(f"--- artifacts in {ctx.dir}")
        elif cap and not opts.keep_pcap:
            cap.path.unlink(missing_ok=True)
    dt = time.monotonic() - t0
    log(f"{'PASS' if ok else 'FAIL'} {full} in {dt:.1f}s {json.dumps(ctx.metrics) if ctx.metrics else ''}")
    return ok, dt, ctx.metrics


def main() -> int:
    ap = suite_arg_parser(__doc__, "SCENARIO.PROFILE names or globs (default: all)")
    ap.add_argument("--engine", help="pno-engine binary (default BUILD/bin/pno-engine)")
    ap.add_argument("--loadgen", help="pno-loadgen binary (default BUILD/bin/pno-loadgen)")
    ap.add_argument("--target", choices=("engine", "linux"), default="engine")
    ap.add_argument("--results", help="artifacts directory (default BUILD/interop-results)")
    ap.add_argument("--pcap", action="store_true", help="capture every test, also bulk transfers")
    ap.add_argument("--keep-pcap", action="store_true", help="keep captures of passing tests")
    opts = ap.parse_args()
    unwind_on_sigterm()
    if opts.list:
        print("\n".join(all_tests()))
        return 0
    build_paths(opts, engine="bin/pno-engine", loadgen="bin/pno-loadgen", results="interop-results")
    names = select_tests("interop", all_tests(), opts.tests or ["*"])
    if names is None:
        return 2
    if not check_root_and_binaries("interop", [opts.loadgen] + ([opts.engine] if opts.target == "engine" else [])):
        return 2
    results = []
    for n in names:
        results.append((n,) + run_test(n, opts))
    return summarize_results(results, 28)


if __name__ == "__main__":
    sys.exit(main())
