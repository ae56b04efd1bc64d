#!/usr/bin/env python3
"""PnO app tests: unmodified Debian servers on the host, real Linux clients in the peer namespace.

Each test starts one application (redis-server, lighttpd, haproxy + 2 lighttpd, nginx master + 2
workers, a socat echo server) in one of two modes and drives it with real clients (redis-cli,
redis-benchmark, curl, wrk, pno-loadgen) running on Linux TCP inside the peer namespace. Responses
and content are checked (sha256, byte-exact bodies, counters inside the app), not only exit codes.

  kernel   the app binds the kernel link's host address (PNO_KHOST_IP): the Linux stack end to end
  pno      the app runs under `pno run --engine-socket SOCK` and binds the engine's address
           (PNO_ENGINE_IP); pno-engine runs with --host-socket SOCK

  apps.py --list                     test names APP.MODE[.loss1], one per line
  apps.py redis.kernel 'nginx.*'     run these tests (globs work)
  apps.py --keep lighttpd.kernel     keep the temporary directory (configs, documents)

The testbed is scripts/testbed, with names and addresses from the same PNO_* variables. The
defaults here differ from the testbed's (netns pno-apps, interface pnoa0, kernel link 198.18.3.1 /
198.18.3.2), so the app suite can run beside the interop tests. Every process is started in its own
session and stopped by its pid; the testbed is torn down and the temporary directory removed even
when a test fails. Needs root. Python 3 standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pylib"))
from pnotest import (TESTBED, Cleanups, Leftovers, Proc, TestFailure, check_root_and_binaries,  # noqa: E402
                     children_of, engine_pid, expect, log, select_tests, suite_arg_parser, summarize_results,
                     tail, unwind_on_sigterm)

HERE = Path(__file__).resolve().parent

NETNS = os.environ.get("PNO_NETNS", "pno-apps")
IFACE = os.environ.get("PNO_IFACE", "pnoa0")
PEER_IFACE = os.environ.get("PNO_PEER_IFACE", IFACE + "p")
ENGINE_IP = os.environ.get("PNO_ENGINE_IP", "198.18.0.1")
PEER_IP = os.environ.get("PNO_PEER_IP", "198.18.0.2")
KHOST_IP = os.environ.get("PNO_KHOST_IP", "198.18.3.1")
KPEER_IP = os.environ.get("PNO_KPEER_IP", "198.18.3.2")
RUN_DIR = os.environ.get("PNO_RUN_DIR", f"/run/pno-testbed/{NETNS}")

APPS = ("redis", "lighttpd", "haproxy", "nginx", "echo")
MODES = ("kernel", "pno")
PROFILES = ("clean", "loss1")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Profile:
    name: str
    loss_pct: int = 0
    scale: float = 1.0   # request counts and transfer sizes (Linux under loss waits for RTOs)
    slack: float = 1.0   # timeouts


PROFILE = {
    "clean": Profile("clean"),
    "loss1": Profile("loss1", loss_pct=1, scale=0.25, slack=3),
}


# ------------------------------------------------------------------------------------------------
# The testbed (scripts/testbed) with the engine's host service or only the kernel link
# ------------------------------------------------------------------------------------------------

class Testbed:
    def __init__(self, opts: argparse.Namespace, mode: str, art: Path):
        self.opts = opts
        self.mode = mode
        self.art = art
        self.script = str(TESTBED)
        self.run_dir = Path(RUN_DIR)
        self.host_socket = self.run_dir / "host.sock"
        self.stats_path = art / "engine-stats.txt"
        self.env = dict(os.environ, PNO_NETNS=NETNS, PNO_IFACE=IFACE, PNO_PEER_IFACE=PEER_IFACE,
                        PNO_ENGINE_IP=ENGINE_IP, PNO_PEER_IP=PEER_IP, PNO_KHOST_IP=KHOST_IP,
                        PNO_KPEER_IP=KPEER_IP, PNO_RUN_DIR=str(self.run_dir), PNO_ENGINE=opts.engine)
        self.is_up = False
        self.stats: dict[str, str] = {}

    def _testbed(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run([self.script, *args], env=self.env, capture_output=True, text=True, timeout=90)
        if check and p.returncode != 0:
            raise TestFailure(f"scripts/testbed {shlex.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
        return p

    def up(self) -> None:
        self.host_socket.unlink(missing_ok=True)
        if self.mode == "kernel":
            self.start_testbed(None)
        else:
            self.start_testbed(["--host-socket", str(self.host_socket), "--stats-file", str(self.stats_path),
                                "--check-leaks", "--stats", "--stats-interval", "0"])

    def start_testbed(self, engine_args: list[str] | None) -> None:
        """`scripts/testbed net` (engine_args None: only the kernel link) or `scripts/testbed up
        ENGINE_ARGS`, which must make the engine's host socket; leftovers of a killed run go first."""
        self._testbed("down", check=False)  # leftovers of a killed run
        self.is_up = True
        if engine_args is None:
            log(f"$ scripts/testbed net   ({NETNS}, kernel link {KHOST_IP} <-> {KPEER_IP})")
            self._testbed("net")
            return
        log(f"$ scripts/testbed up {shlex.join(engine_args)}")
        self._testbed("up", *engine_args)
        deadline = time.monotonic() + 10
        while not self.host_socket.exists():
            expect(time.monotonic() < deadline, f"engine made no host socket at {self.host_socket}")
            time.sleep(0.05)

    def engine_pid(self) -> int | None:
        return engine_pid(self.run_dir)

    def check_engine_alive(self) -> None:
        if self.mode == "pno" and self.engine_pid() is None:
            raise TestFailure("pno-engine is no longer running:\n" + tail(self.run_dir / "engine.log"))

    def down(self) -> None:
        if not self.is_up:
            return
        self.is_up = False
        p = self._testbed("down", check=False)
        if p.returncode != 0:
            log(f"testbed down: {p.stderr.strip()}")
        if self.mode == "pno":
            eng_log = self.run_dir / "engine.log"
            if eng_log.exists():
                shutil.copyfile(eng_log, self.art / "engine.log")
            if self.stats_path.exists():
                for line in self.stats_path.read_text().splitlines():
                    if "=" in line and not line.startswith("#"):
                        k, v = line.split("=", 1)
                        self.stats[k.strip()] = v.strip()

    def check_exit(self) -> None:
        """pno mode: the engine wrote its counters at exit and every mbuf went back to the pool."""
        if self.mode != "pno":
            return
        expect(bool(self.stats), "engine wrote no --stats-file at exit (crashed or killed?)")
        for k in ("mbuf_leaked", "mbuf_engine_in_flight"):
            expect(self.stats.get(k) == "0", f"engine mbuf check failed: {k}={self.stats.get(k)}")


# ------------------------------------------------------------------------------------------------
# Per-test context
# ------------------------------------------------------------------------------------------------

class Run(Cleanups):
    def __init__(self, name: str, opts: argparse.Namespace, app: str, mode: str, profile: Profile):
        super().__init__()
        self.name = name
        self.opts = opts
        self.app = app
        self.mode = mode
        self.profile = profile
        self.art = Path(opts.results) / name
        shutil.rmtree(self.art, ignore_errors=True)
        self.art.mkdir(parents=True)
        self.work = Path(tempfile.mkdtemp(prefix=f"pno-apps-{name}-"))
        os.chmod(self.work, 0o755)
        # The server's address: the kernel link's host end, or the engine.
        self.ip = KHOST_IP if mode == "kernel" else ENGINE_IP
        self.bed = Testbed(opts, mode, self.art)
        self.leftovers = Leftovers(Path(opts.results) / ".servers")
        self.procs: list[Proc] = []
        self.metrics: dict[str, float] = {}
        self.loss_drops: list[int] = []

    # --- scaling under loss ---
    def n(self, count: int, minimum: int = 1) -> int:
        return max(minimum, int(count * self.profile.scale))

    def tmo(self, secs: float) -> float:
        return secs * self.profile.slack

    # --- servers on the host ---
    def offloaded(self, cmd: list[str]) -> list[str]:
        """In pno mode the command under `pno run`, so its sockets go to the engine."""
        if self.mode == "pno":
            return [self.opts.pno, "run", "--require-engine", "--engine-socket", str(self.bed.host_socket),
                    "--"] + cmd
        return cmd

    def spawn(self, name: str, cmd: list[str], cwd: Path | None = None) -> Proc:
        """Starts a server (offloaded in pno mode)."""
        p = Proc(name, self.offloaded(cmd), self.art / f"{name}.out", cwd=cwd, leftovers=self.leftovers)
        self.procs.append(p)
        self.on_cleanup(p.kill)
        return p

    def wait_port(self, proc: Proc, port: int, timeout: float = 15) -> None:
        """Until a TCP connect from the peer namespace to ip:port succeeds (the server listens)."""
        deadline = time.monotonic() + self.tmo(timeout)
        probe = ("import socket,sys\ntry:\n socket.create_connection((sys.argv[1],int(sys.argv[2])),1).close()\n"
                 "except OSError: sys.exit(1)\n")
        while True:
            proc.check_alive()
            self.bed.check_engine_alive()
            p = subprocess.run(self.in_ns(["python3", "-c", probe, self.ip, str(port)]), capture_output=True,
                               timeout=10)
            if p.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise TestFailure(f"{proc.name} does not accept connections on {self.ip}:{port} after "
                                  f"{self.tmo(timeout):.0f}s:\n{tail(proc.logfile)}")
            time.sleep(0.05)

    # --- clients in the peer namespace ---
    @staticmethod
    def in_ns(cmd: list[str]) -> list[str]:
        return ["ip", "netns", "exec", NETNS] + cmd

    def peer(self, cmd: list[str], timeout: float = 30, check: bool = True, stdin: Path | None = None,
             quiet: bool = False) -> subprocess.CompletedProcess:
        """Runs a client inside the peer namespace; stdout as bytes, stderr as text."""
        full = self.in_ns(cmd)
        if not quiet:
            log("$ " + shlex.join(cmd) + (f" < {stdin.name}" if stdin else ""))
        fin = open(stdin, "rb") if stdin else subprocess.DEVNULL
        try:
            p = subprocess.run(full, stdin=fin, capture_output=True, timeout=self.tmo(timeout))
        except subprocess.TimeoutExpired as e:
            raise TestFailure(f"client timed out after {self.tmo(timeout):.0f}s: {shlex.join(cmd)}\n"
                              f"{(e.stderr or b'')[-2000:]!r}") from None
        finally:
            if stdin:
                fin.close()
        p.stderr = p.stderr.decode(errors="replace")
        if check and p.returncode != 0:
            raise TestFailure(f"client failed ({p.returncode}): {shlex.join(cmd)}\n"
                              f"stdout: {p.stdout[-2000:]!r}\nstderr: {p.stderr[-2000:]}")
        return p

    def peer_tcp_mib(self) -> dict[str, int]:
        """The peer namespace's TCP counters (/proc/net/snmp)."""
        p = self.peer(["cat", "/proc/net/snmp"], quiet=True)
        lines = [x.split() for x in p.stdout.decode().splitlines() if x.startswith("Tcp:")]
        return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:])}

    def tcp_active_opens(self) -> int:
        """Connections the peer namespace's Linux has opened so far."""
        return self.peer_tcp_mib()["ActiveOpens"]

    def quiesce(self, port: int, timeout: float = 5) -> None:
        """Waits until the server has closed every connection the clients closed: no socket to
        ip:port is left in the peer namespace but TIME-WAIT ones. A server that never sees a
        client's FIN (or never gets its own FIN out) fails here."""
        deadline = time.monotonic() + self.tmo(timeout)
        while True:
            p = self.peer(["ss", "-Htan", "dst", f"{self.ip}:{port}"], quiet=True)
            left = [x for x in p.stdout.decode().splitlines() if x.strip() and not x.startswith("TIME-WAIT")]
            if not left:
                if self.mode == "kernel":
                    # The server's side, for the record: connections whose client vanished (a lost RST).
                    q = subprocess.run(["ss", "-Htan", "src", f"{self.ip}:{port}"], capture_output=True, text=True)
                    held = [x for x in q.stdout.splitlines()
                            if x.split()[0] not in ("LISTEN", "TIME-WAIT", "SYN-RECV")]
                    if held:
                        log(f"the server still holds {len(held)} connections its clients no longer have: "
                            + "; ".join(" ".join(x.split()[:1] + x.split()[4:5]) for x in held[:5]))
                return
            if time.monotonic() > deadline:
                raise TestFailure(f"{len(left)} connections to {self.ip}:{port} still open {self.tmo(timeout):.0f}s "
                                  f"after the clients finished:\n" + "\n".join(left[:10]))
            time.sleep(0.05)

    def check_alive(self) -> None:
        for p in self.procs:
            if not p.stopped:
                p.check_alive()
        self.bed.check_engine_alive()

    # --- wire faults ---
    def add_loss(self) -> None:
        pct = self.profile.loss_pct
        if not pct:
            return
        rules = f"""
table inet pno_apps_loss {{
  chain in  {{ type filter hook input priority -10; ip saddr {self.ip} numgen random mod 100 < {pct} counter drop; }}
  chain out {{ type filter hook output priority -10; ip daddr {self.ip} numgen random mod 100 < {pct} counter drop; }}
}}
"""
        p = subprocess.run(self.in_ns(["nft", "-f", "-"]), input=rules, text=True, capture_output=True)
        expect(p.returncode == 0, f"nft loss rules failed: {p.stderr}")
        log(f"nftables: {pct}% random loss each way between {NETNS} and {self.ip}")

    def read_loss(self) -> None:
        if not self.profile.loss_pct:
            return
        p = subprocess.run(self.in_ns(["nft", "list", "table", "inet", "pno_apps_loss"]), capture_output=True,
                           text=True)
        self.loss_drops = [int(x) for x in re.findall(r"counter packets (\d+)", p.stdout)]
        log(f"nftables dropped {self.loss_drops} packets (to the peer, from the peer)")

    # --- shared client checks ---
    def curl_files(self, port: int, files: dict[str, Path], label: str = "curl") -> list[dict[str, str]]:
        """Fetches every file over one keep-alive connection; each body must match by sha256.
        Returns the response headers of each fetch."""
        dl = self.work / f"dl-{label}"
        dl.mkdir(exist_ok=True)
        cmd = ["curl", "-sS", "--fail", "--max-time", str(int(self.tmo(20)))]
        for i, name in enumerate(files):
            if i:
                cmd.append("--next")
            cmd += ["-D", str(dl / f"{name}.hdr"), "-o", str(dl / name), "-w",
                    "%{http_code} %{size_download} %{num_connects}\\n", f"http://{self.ip}:{port}/{name}"]
        p = self.peer(cmd, timeout=40)
        lines = p.stdout.decode().split()
        codes, connects = lines[0::3], [int(x) for x in lines[2::3]]
        expect(codes == ["200"] * len(files), f"{label}: status codes {codes}")
        expect(sum(connects) == 1, f"{label}: {sum(connects)} connections for {len(files)} requests "
                                   f"(keep-alive not reused)")
        headers = []
        for name, ref in files.items():
            got, size = sha256_file(dl / name), (dl / name).stat().st_size
            expect(got == sha256_file(ref), f"{label}: /{name} body differs from the file "
                                            f"({size} bytes received, {ref.stat().st_size} served)")
            hdr = {}
            for line in (dl / f"{name}.hdr").read_text(errors="replace").splitlines()[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    hdr[k.strip().lower()] = v.strip()
            headers.append(hdr)
        log(f"{label}: {len(files)} files over 1 connection, sha256 equal ({', '.join(files)})")
        return headers

    def wrk(self, url: str, body: Path, secs: int = 1, conns: int = 20, threads: int = 2, close: bool = False,
            label: str = "wrk") -> dict[str, float]:
        """wrk with every response checked (status 200, body equal to `body`); no socket errors, no
        non-2xx; with close=True every request on a new connection (Connection: close)."""
        cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{secs}s", "--timeout", f"{self.tmo(3):.0f}s",
               "-s", str(HERE / "check.lua")]
        if close:
            cmd += ["-H", "Connection: close"]
        cmd += [url, "--", str(body)]
        opens0 = self.tcp_active_opens()
        p = self.peer(cmd, timeout=secs + 30)
        out = p.stdout.decode(errors="replace")
        (self.art / f"{label}.txt").write_text(out + p.stderr)
        m = re.search(r"(\d+) requests in", out)
        expect(m is not None, f"{label}: no summary from wrk:\n{out}\n{p.stderr}")
        reqs = int(m.group(1))
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        chk = re.search(r"CHECK good=(\d+) bad=(\d+) first_bad=(.*)", out)
        expect(chk is not None, f"{label}: check.lua printed nothing:\n{out}")
        good, bad = int(chk.group(1)), int(chk.group(2))
        sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        opens = self.tcp_active_opens() - opens0
        log(f"{label}: {reqs} requests, {rps:.0f} req/s, {opens} connections, checked good={good} bad={bad}"
            + (f", {sock.group(0)}" if sock else "") + (f", {non2xx.group(0)}" if non2xx else ""))
        expect(reqs > 0, f"{label}: no request completed")
        expect(sock is None, f"{label}: {sock.group(0) if sock else ''}")
        expect(non2xx is None, f"{label}: {non2xx.group(0) if non2xx else ''}")
        expect(bad == 0, f"{label}: {bad} responses differ from the file (first: {chk.group(3)})")
        expect(good == reqs, f"{label}: {good} checked responses but wrk counted {reqs}")
        if close:
            expect(opens >= reqs, f"{label}: {reqs} requests with Connection: close took only {opens} connections")
        else:
            expect(opens <= conns * 4, f"{label}: {opens} connections for {conns} keep-alive clients")
        self.metrics[f"{label}_rps"] = round(rps)
        return {"requests": reqs, "rps": rps, "connections": opens}

    def loadgen(self, args: list[str], timeout: float, label: str) -> dict:
        p = self.peer([self.opts.loadgen] + args, timeout=timeout, check=False)
        out = p.stdout.decode(errors="replace")
        (self.art / f"{label}.out").write_text(out + p.stderr)
        lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        expect(bool(lines), f"{label}: no result from pno-loadgen (exit {p.returncode}): {p.stderr[-2000:]}")
        res = lines[-1]
        expect(p.returncode == 0 and res.get("ok") is True, f"{label} failed: {json.dumps(res)}")
        return res


# ------------------------------------------------------------------------------------------------
# Applications
# ------------------------------------------------------------------------------------------------

def random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


STATIC_SIZES = {"64.bin": 64, "1k.bin": 1024, "16k.bin": 16 << 10, "1m.bin": 1 << 20}


def docroot(run: Run, name: str) -> tuple[Path, dict[str, Path]]:
    root = run.work / name
    root.mkdir()
    files = {f: random_file(root / f, size) for f, size in STATIC_SIZES.items()}
    return root, files


def lighttpd_conf(run: Run, name: str, root: Path, port: int) -> Path:
    conf = run.work / f"{name}.conf"
    conf.write_text(f"""\
server.document-root = "{root}"
server.bind = "{run.ip}"
server.port = {port}
server.errorlog = "{run.art}/{name}-error.log"
server.modules = ("mod_accesslog")
accesslog.filename = "{run.art}/{name}-access.log"
server.max-keep-alive-requests = 10000
server.max-connections = 1024
mimetype.assign = (".bin" => "application/octet-stream", ".txt" => "text/plain")
""")
    return conf


class RedisCli:
    def __init__(self, run: Run, port: int):
        self.run = run
        self.base = ["redis-cli", "-h", run.ip, "-p", str(port), "-e"]

    def __call__(self, *args: str, stdin: Path | None = None, raw: bool = False) -> bytes:
        p = self.run.peer(self.base + (["--raw"] if raw else []) + list(args), stdin=stdin,
                          quiet=not self.run.opts.verbose)
        return p.stdout

    def text(self, *args: str, stdin: Path | None = None) -> str:
        return self(*args, stdin=stdin).decode().strip()

    def expect(self, want: str, *args: str, stdin: Path | None = None) -> None:
        got = self.text(*args, stdin=stdin)
        expect(got == want, f"redis-cli {' '.join(args)}: got {got!r}, want {want!r}")

    def info(self, section: str) -> dict[str, str]:
        out = self.text("INFO", section)
        return dict(x.split(":", 1) for x in out.splitlines() if ":" in x and not x.startswith("#"))

    def calls(self) -> dict[str, int]:
        return {k.removeprefix("cmdstat_"): int(re.search(r"calls=(\d+)", v).group(1))
                for k, v in self.info("commandstats").items()}


def app_redis(run: Run) -> None:
    """redis-server: values round trip, a 1 MiB value byte-exact, redis-benchmark, BGSAVE (fork)."""
    port = 6379
    conf = run.work / "redis.conf"
    conf.write_text(f"""\
bind {run.ip}
port {port}
protected-mode no
daemonize no
supervised no
save ""
appendonly no
io-threads 1
dir {run.work}
dbfilename dump.rdb
logfile {run.art}/redis.log
""")
    srv = run.spawn("redis-server", ["redis-server", str(conf)])
    run.wait_port(srv, port)
    cli = RedisCli(run, port)
    cli.expect("PONG", "PING")
    cli.expect("OK", "SET", "greeting", "hello from the peer")
    cli.expect("hello from the peer", "GET", "greeting")
    for i in range(1, 4):
        cli.expect(str(i), "INCR", "counter")
    cli.expect("5", "RPUSH", "list", "alpha", "beta", "gamma", "delta", "epsilon")
    cli.expect("beta\ngamma\ndelta", "LRANGE", "list", "1", "3")
    cli.expect("1", "DEL", "greeting")
    cli.expect("0", "EXISTS", "greeting")
    log("redis-cli: SET/GET/INCR/RPUSH/LRANGE/DEL answers checked")

    big = random_file(run.work / "big.bin", 1 << 20)
    cli.expect("OK", "-x", "SET", "big", stdin=big)
    cli.expect(str(1 << 20), "STRLEN", "big")
    got = cli("GET", "big", raw=True)
    expect(got[-1:] == b"\n" and sha256(got[:-1]) == sha256_file(big),
           f"GET big: {len(got) - 1} bytes back, not the 1 MiB value sent")
    log("redis-cli: 1 MiB random value round trip byte-exact")

    n = run.n(20000, 2000)
    for pipeline in (1, 16):
        before = cli.calls()
        label = f"redis-benchmark-P{pipeline}"
        t0 = time.monotonic()
        p = run.peer(["redis-benchmark", "-h", run.ip, "-p", str(port), "-t", "set,get", "-n", str(n), "-c", "50",
                      "-P", str(pipeline), "--csv"], timeout=60)
        out = p.stdout.decode(errors="replace")
        (run.art / f"{label}.csv").write_text(out + p.stderr)
        rps = {m.group(1): float(m.group(2)) for m in re.finditer(r'^"(SET|GET)","([\d.]+)"', out, re.M)}
        log(f"{label}: n={n} c=50 SET {rps.get('SET', 0):.0f} req/s, GET {rps.get('GET', 0):.0f} req/s "
            f"[{time.monotonic() - t0:.1f}s]")
        expect(set(rps) == {"SET", "GET"} and min(rps.values()) > 0, f"{label}: no rates in its output:\n{out}")
        expect(not re.search(r"error|ERR", out + p.stderr, re.I), f"{label} reported errors:\n{out}\n{p.stderr}")
        after = cli.calls()
        for cmd in ("set", "get"):
            done = after.get(cmd, 0) - before.get(cmd, 0)
            expect(done >= n, f"{label}: the server counted {done} {cmd.upper()} calls, expected {n}")
        run.metrics[f"redis_set_P{pipeline}_rps"] = round(rps["SET"])
        run.metrics[f"redis_get_P{pipeline}_rps"] = round(rps["GET"])
    # Without -r, redis-benchmark's SETs all write one 3-byte value (-d 3) to key:__rand_int__.
    cli.expect("3", "STRLEN", "key:__rand_int__")

    # BGSAVE forks a child that writes the snapshot while the parent goes on serving.
    # The child sleeps per key (a redis test knob), so the parent is seen serving while it saves.
    keys = int(cli.text("DBSIZE"))
    cli.expect("OK", "CONFIG", "SET", "rdb-key-save-delay", str(int(run.tmo(1.0) * 1e6 / keys)))
    last = int(cli.text("LASTSAVE"))
    cli.expect("Background saving started", "BGSAVE")
    served = during = 0
    deadline = time.monotonic() + run.tmo(20)
    while True:
        cli.expect(str(1 << 20), "STRLEN", "big")
        cli.expect(str(4 + served), "INCR", "counter")
        served += 1
        info = cli.info("persistence")
        during += info.get("rdb_bgsave_in_progress") == "1"
        if info.get("rdb_bgsave_in_progress") == "0" and int(info.get("rdb_last_save_time", 0)) >= last and \
                (run.work / "dump.rdb").exists():
            break
        expect(time.monotonic() < deadline, "BGSAVE did not finish")
        time.sleep(0.05)
    expect(info.get("rdb_last_bgsave_status") == "ok", f"BGSAVE status {info.get('rdb_last_bgsave_status')}")
    expect(during > 0, "BGSAVE ended before the server was seen serving during the save")
    dump = run.work / "dump.rdb"
    expect(dump.stat().st_size > (1 << 20), f"dump.rdb has {dump.stat().st_size} bytes, less than the 1 MiB value")
    expect(dump.read_bytes()[:5] == b"REDIS", "dump.rdb is not an RDB file")
    rlog = (run.art / "redis.log").read_text(errors="replace")
    expect("Background saving terminated with success" in rlog, "redis.log: no 'Background saving terminated'")
    cli.expect("PONG", "PING")
    cli.expect("OK", "SET", "after-bgsave", "still serving")
    cli.expect("still serving", "GET", "after-bgsave")
    log(f"BGSAVE: child saved {dump.stat().st_size} bytes of {keys} keys; the server answered {during} rounds "
        f"during the save")
    run.quiesce(port)
    srv.stop(signal.SIGTERM)


def app_lighttpd(run: Run) -> None:
    """lighttpd: 64 B..1 MiB static files by sha256, wrk keep-alive and Connection: close, 404."""
    port = 8080
    root, files = docroot(run, "www")
    srv = run.spawn("lighttpd", ["lighttpd", "-D", "-f", str(lighttpd_conf(run, "lighttpd", root, port))])
    run.wait_port(srv, port)
    run.curl_files(port, files)
    p = run.peer(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"http://{run.ip}:{port}/missing.bin"])
    expect(p.stdout == b"404", f"missing file: status {p.stdout!r}, want 404")
    url = f"http://{run.ip}:{port}"
    run.wrk(f"{url}/16k.bin", files["16k.bin"], label="wrk-16k")
    run.wrk(f"{url}/1m.bin", files["1m.bin"], conns=4, threads=1, label="wrk-1m")
    run.wrk(f"{url}/1k.bin", files["1k.bin"], close=True, label="wrk-1k-close")
    run.check_alive()
    run.quiesce(port)
    # lighttpd exits 1 when stopped with connections open. Under loss a client's RST (wrk closing
    # with a response in flight) can be lost, and a lost RST is never sent again: the server then
    # keeps a connection the client no longer has.
    srv.stop(signal.SIGTERM, expect_rc=(0, 1) if run.profile.loss_pct else 0)


def app_haproxy(run: Run) -> None:
    """haproxy round-robin over two lighttpd backends (all offloaded in pno mode)."""
    port, backends = 8000, {"a": 8081, "b": 8082}
    shared = os.urandom(16 << 10)
    big = os.urandom(1 << 20)
    procs = []
    for name, bport in backends.items():
        root = run.work / f"backend-{name}"
        root.mkdir()
        (root / "who.txt").write_text(f"backend-{name}\n")
        (root / "16k.bin").write_bytes(shared)
        (root / "1m.bin").write_bytes(big)
        procs.append((run.spawn(f"lighttpd-{name}", ["lighttpd", "-D", "-f",
                                                    str(lighttpd_conf(run, f"lighttpd-{name}", root, bport))]),
                      bport))
    for proc, bport in procs:
        run.wait_port(proc, bport)
    cfg = run.work / "haproxy.cfg"
    cfg.write_text(f"""\
global
  maxconn 2000
  log stdout format raw local0 notice
defaults
  mode http
  log global
  option httplog
  retries 3
  timeout connect {int(run.tmo(5))}s
  timeout client 30s
  timeout server 30s
frontend fe
  bind {run.ip}:{port}
  default_backend be
backend be
  balance roundrobin
  server a {run.ip}:{backends['a']}
  server b {run.ip}:{backends['b']}
""")
    check = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
    expect(check.returncode == 0, f"haproxy -c: {check.stdout}{check.stderr}")
    hap = run.spawn("haproxy", ["haproxy", "-db", "-f", str(cfg)])
    run.wait_port(hap, port)
    # The probe's connection took no request; from here the round-robin alternates a, b, a, b.
    seen = []
    for _ in range(8):
        p = run.peer(["curl", "-sS", "--fail", f"http://{run.ip}:{port}/who.txt"], quiet=True)
        seen.append(p.stdout.decode().strip())
    log(f"haproxy: /who.txt answered by {seen}")
    expect(set(seen) <= {"backend-a", "backend-b"}, f"unexpected bodies {seen}")
    expect(seen.count("backend-a") == 4 and seen.count("backend-b") == 4, f"not round-robin: {seen}")
    ref = run.work / "1m.bin"
    ref.write_bytes(big)
    run.curl_files(port, {"1m.bin": ref}, label="curl-1m")
    ref16 = run.work / "16k.bin"
    ref16.write_bytes(shared)
    run.wrk(f"http://{run.ip}:{port}/16k.bin", ref16, label="wrk-16k")
    for name in backends:
        n = len((run.art / f"lighttpd-{name}-access.log").read_text().splitlines())
        expect(n > 10, f"backend {name} served only {n} requests")
    run.check_alive()
    run.quiesce(port)
    hap.stop(signal.SIGUSR1)  # soft stop: exits 0 once its connections are done
    for proc, _ in procs:
        proc.stop(signal.SIGTERM)


def app_nginx(run: Run) -> None:
    """nginx master + 2 workers: content by sha256, wrk, both workers serve requests, reload."""
    port = 8090
    root, files = docroot(run, "www")
    prefix = run.work / "nginx"
    (prefix / "tmp").mkdir(parents=True)
    conf = prefix / "nginx.conf"
    conf.write_text(f"""\
daemon off;
master_process on;
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {run.art}/nginx-error.log notice;
events {{ worker_connections 512; }}
http {{
  client_body_temp_path {prefix}/tmp/body;
  proxy_temp_path {prefix}/tmp/proxy;
  fastcgi_temp_path {prefix}/tmp/fastcgi;
  uwsgi_temp_path {prefix}/tmp/uwsgi;
  scgi_temp_path {prefix}/tmp/scgi;
  types {{ application/octet-stream bin; }}
  log_format pid '$pid $status $body_bytes_sent $request_uri';
  keepalive_requests 100000;
  server {{
    listen {run.ip}:{port};
    root {root};
    access_log {run.art}/nginx-access.log pid;
    add_header X-Worker-Pid $pid always;
  }}
}}
""")
    nginx = ["nginx", "-p", str(prefix), "-c", str(conf), "-e", str(run.art / "nginx-error.log")]
    # -t binds the listening address too, so it runs where the server will.
    t = subprocess.run(run.offloaded(nginx + ["-t"]), capture_output=True, text=True, timeout=30)
    expect(t.returncode == 0, f"nginx -t: {t.stderr}")
    master = run.spawn("nginx", nginx)
    run.wait_port(master, port)
    # The master (or, in pno mode, the process `pno run` started) forks the two workers.
    deadline = time.monotonic() + 10
    while True:
        mpid = int((prefix / "nginx.pid").read_text().strip()) if (prefix / "nginx.pid").exists() else 0
        workers = children_of(mpid) if mpid else []
        if len(workers) == 2:
            break
        expect(time.monotonic() < deadline, f"nginx master {mpid}: workers {workers}, want 2")
        time.sleep(0.05)
    log(f"nginx: master {mpid}, workers {workers}")
    headers = run.curl_files(port, files)
    for h in headers:
        expect(int(h.get("x-worker-pid", 0)) in workers, f"X-Worker-Pid {h.get('x-worker-pid')} is not a worker")
    url = f"http://{run.ip}:{port}"
    run.wrk(f"{url}/16k.bin", files["16k.bin"], label="wrk-16k")
    run.wrk(f"{url}/1k.bin", files["1k.bin"], close=True, label="wrk-1k-close")
    served: dict[int, int] = {}
    for line in (run.art / "nginx-access.log").read_text().splitlines():
        pid = int(line.split()[0])
        served[pid] = served.get(pid, 0) + 1
    log(f"nginx: requests per worker pid {served}")
    expect(set(served) == set(workers), f"access log pids {sorted(served)} are not the workers {workers}")
    expect(min(served.values()) > 0, f"a worker served nothing: {served}")
    # Reload (SIGHUP): the master re-reads its config and forks two new workers that serve on the
    # listening socket it holds; the old workers finish and exit.
    run.quiesce(port)
    os.kill(mpid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while True:
        new = children_of(mpid)
        if len(new) == 2 and not set(new) & set(workers):
            break
        expect(time.monotonic() < deadline, f"nginx reload: master {mpid} has workers {new}, old ones {workers}")
        time.sleep(0.05)
    headers = run.curl_files(port, files, label="curl-after-reload")
    pids = {int(h.get("x-worker-pid", 0)) for h in headers}
    expect(pids <= set(new), f"after reload, X-Worker-Pid {sorted(pids)} is not one of the new workers {new}")
    log(f"nginx reload: new workers {new} serve")
    run.check_alive()
    run.quiesce(port)
    master.stop(signal.SIGQUIT, grace=15)  # graceful shutdown: the master waits for its workers


def app_echo(run: Run) -> None:
    """socat TCP echo (fork per connection, EXEC:cat): pno-loadgen checks every byte by sha256."""
    port = 7007
    srv = run.spawn("socat", ["socat", f"TCP-LISTEN:{port},bind={run.ip},reuseaddr,fork,backlog=256", "EXEC:cat"])
    run.wait_port(srv, port)
    size = run.n(16 << 20, 1 << 20)
    res = run.loadgen(["stream", "--connect", f"{run.ip}:{port}", "--bytes", str(size), "--timeout",
                       str(int(run.tmo(30)))], timeout=60, label="stream")
    expect(res["bytes_recv"] == size and res["sha256_recv"] == res["sha256_sent"] and res["eof"],
           f"stream: {res}")
    log(f"stream: {size} bytes echoed, sha256 equal, {res['mbytes_per_s']:.0f} MB/s")
    run.metrics["echo_stream_mbytes_per_s"] = round(res["mbytes_per_s"], 1)
    n, each = 50, 64 << 10
    res = run.loadgen(["conns", "--connect", f"{run.ip}:{port}", "--n", str(n), "--bytes", str(each), "--timeout",
                       str(int(run.tmo(30)))], timeout=60, label="conns")
    expect(res["verified"] == n and res["failed"] == 0, f"conns: {res}")
    log(f"conns: {n} concurrent connections x {each} bytes verified (connect p99 {res['connect_p99_ms']:.1f} ms)")
    # Each connection's socat child exits at EOF; wait until they are gone, then stop the listener.
    run.quiesce(port)
    deadline = time.monotonic() + run.tmo(10)
    while children_of(srv.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    run.check_alive()
    srv.stop(signal.SIGTERM, expect_rc=143)  # socat exits with 128+SIGTERM


APP_FN: dict[str, Callable[[Run], None]] = {
    "redis": app_redis, "lighttpd": app_lighttpd, "haproxy": app_haproxy, "nginx": app_nginx, "echo": app_echo,
}


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------

def all_tests() -> list[str]:
    return [f"{a}.{m}" + ("" if p == "clean" else f".{p}") for a in APPS for m in MODES for p in PROFILES]


def parse_name(name: str) -> tuple[str, str, Profile]:
    parts = name.split(".")
    return parts[0], parts[1], PROFILE[parts[2] if len(parts) > 2 else "clean"]


def run_test(name: str, opts: argparse.Namespace) -> tuple[bool, float, dict]:
    app, mode, profile = parse_name(name)
    run = Run(name, opts, app, mode, profile)
    t0 = time.monotonic()
    ok = False
    try:
        log(f"=== {name}: {APP_FN[app].__doc__}")
        run.leftovers.reap()
        run.leftovers.add_dir(run.work)
        run.on_cleanup(lambda: run.leftovers.path.unlink(missing_ok=True))
        run.on_cleanup(run.bed.down)
        run.bed.up()
        run.add_loss()
        APP_FN[app](run)
        run.read_loss()
        if profile.loss_pct:
            expect(sum(run.loss_drops) > 0, "the loss rules dropped nothing")
        mib = run.peer_tcp_mib()
        run.bed.down()
        run.bed.check_exit()
        if mode == "pno":
            # Every connection the peer's clients established ended on the engine, not on the kernel.
            # Linux counts a connection established at the SYN-ACK; one whose ACK was lost and which
            # the client then reset never reached ESTABLISHED on the engine: EstabResets covers those.
            # Under loss, each connection the engine never saw established also lost at least one
            # packet from the peer to the engine (its handshake ACK), so the drops bound the gap.
            peer_conns = mib["ActiveOpens"] - mib["AttemptFails"] - mib["EstabResets"]
            engine_conns = int(run.bed.stats.get("tcp_conn_passive_opens", -1))
            slack = run.loss_drops[1] if len(run.loss_drops) > 1 else 0
            log(f"engine accepted {engine_conns} connections; the peer established {peer_conns} (without resets)")
            expect(engine_conns >= peer_conns - slack, f"the engine accepted {engine_conns} connections, fewer "
                                                       f"than the {peer_conns} the peer established")
        ok = True
    except TestFailure as e:
        log(f"FAIL {name}: {e}")
    except Exception as e:  # a harness bug fails the test with its traceback
        import traceback
        traceback.print_exc()
        log(f"FAIL {name}: {e!r}")
    finally:
        if not ok:
            try:
                ss = subprocess.run(run.in_ns(["ss", "-tnoa", "exclude", "time-wait"]), capture_output=True, text=True,
                                    timeout=10)
                print(f"--- Linux side (ss -tnoa in {NETNS} without TIME-WAIT, first 30 lines):\n" +
                      "\n".join(ss.stdout.splitlines()[:30]))
            except Exception:
                pass
        run.cleanup()
        if not ok:
            for p in run.procs:
                print(f"--- {p.name} ({p.logfile}):\n{tail(p.logfile, 15)}")
            if (run.art / "engine.log").exists():
                print(f"--- engine log:\n{tail(run.art / 'engine.log', 30)}")
            print(f"--- artifacts in {run.art}")
        # Keep the small text files (configs) with the artifacts; the documents go with the work dir.
        for f in run.work.rglob("*"):
            if f.is_file() and f.suffix in (".conf", ".cfg") and f.stat().st_size < 65536:
                shutil.copyfile(f, run.art / f.name)
        if opts.keep:
            log(f"kept {run.work}")
        else:
            shutil.rmtree(run.work, ignore_errors=True)
    dt = time.monotonic() - t0
    log(f"{'PASS' if ok else 'FAIL'} {name} in {dt:.1f}s {json.dumps(run.metrics) if run.metrics else ''}")
    return ok, dt, run.metrics


def main() -> int:
    ap = suite_arg_parser(__doc__, "APP.MODE[.loss1] names or globs (default: every kernel test)")
    ap.add_argument("--engine", help="pno-engine (default BUILD/bin/pno-engine)")
    ap.add_argument("--pno", help="the pno command (default BUILD/bin/pno)")
    ap.add_argument("--loadgen", help="pno-loadgen (default BUILD/bin/pno-loadgen)")
    ap.add_argument("--results", help="artifacts directory (default BUILD/apps-results)")
    ap.add_argument("--keep", action="store_true", help="keep each test's temporary directory")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every redis-cli command")
    opts = ap.parse_args()
    unwind_on_sigterm()
    if opts.list:
        print("\n".join(all_tests()))
        return 0
    build = Path(opts.build_dir)
    opts.engine = os.path.abspath(opts.engine or build / "bin" / "pno-engine")
    opts.pno = os.path.abspath(opts.pno or build / "bin" / "pno")
    opts.loadgen = os.path.abspath(opts.loadgen or build / "bin" / "pno-loadgen")
    opts.results = os.path.abspath(opts.results or build / "apps-results")
    names = select_tests("apps", all_tests(), opts.tests or ["*.kernel", "*.kernel.*"])
    if names is None:
        return 2
    need = {opts.loadgen}
    if any(parse_name(n)[1] == "pno" for n in names):
        need |= {opts.engine, opts.pno}
    if not check_root_and_binaries("apps", sorted(need)):
        return 2
    tools = ["redis-server", "redis-cli", "redis-benchmark", "lighttpd", "haproxy", "nginx", "socat", "wrk", "curl",
             "nft"]
    missing = [t for t in tools if shutil.which(t) is None and not Path("/usr/sbin", t).exists()]
    if missing:
        print(f"apps: missing programs {missing} (run scripts/bootstrap)", file=sys.stderr)
        return 2
    results = [(n,) + run_test(n, opts) for n in names]
    return summarize_results(results, 24)


if __name__ == "__main__":
    sys.exit(main())
