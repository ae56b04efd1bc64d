"""The testbed of the app suites (tests/apps/apps.py, bench/run) and one run of servers on it.

TestbedNames: the namespace, interfaces, addresses and run directory, from the PNO_* variables of
scripts/testbed with each suite's defaults. Testbed: scripts/testbed with the engine's host service
(`up`) or only the kernel link (`net`), and the engine's counters at exit. AppRun: one run of servers
on the host (under `pno run` in pno mode) and clients in the peer namespace, with the checks the
clients make (bodies by sha256, wrk's counts, pno-loadgen's verdict) and the wire faults of a
Profile. Python 3 standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pno_apps import WRK_CHECK, parse_wrk, sha256_file
from pnotest import TESTBED, Cleanups, Leftovers, Proc, TestFailure, engine_pid, expect, last_json_line, log, tail


@dataclass(frozen=True)
class TestbedNames:
    netns: str
    iface: str
    peer_iface: str
    engine_ip: str
    peer_ip: str
    khost_ip: str
    kpeer_ip: str
    run_dir: str

    def env(self) -> dict[str, str]:
        """The PNO_* variables that make scripts/testbed use these names."""
        return {"PNO_NETNS": self.netns, "PNO_IFACE": self.iface, "PNO_PEER_IFACE": self.peer_iface,
                "PNO_ENGINE_IP": self.engine_ip, "PNO_PEER_IP": self.peer_ip, "PNO_KHOST_IP": self.khost_ip,
                "PNO_KPEER_IP": self.kpeer_ip, "PNO_RUN_DIR": self.run_dir}


def testbed_names(defaults: dict[str, str]) -> TestbedNames:
    """The names from the PNO_* environment; `defaults` (PNO_NETNS, PNO_IFACE, PNO_KHOST_IP,
    PNO_KPEER_IP) where a variable is unset, and scripts/testbed's rules for the rest."""
    def get(key: str, default: str) -> str:
        return os.environ.get(key, defaults.get(key, default))

    netns = get("PNO_NETNS", "pno-peer")
    iface = get("PNO_IFACE", "pno0")
    return TestbedNames(netns=netns, iface=iface, peer_iface=get("PNO_PEER_IFACE", iface + "p"),
                        engine_ip=get("PNO_ENGINE_IP", "198.18.0.1"), peer_ip=get("PNO_PEER_IP", "198.18.0.2"),
                        khost_ip=get("PNO_KHOST_IP", "198.18.1.1"), kpeer_ip=get("PNO_KPEER_IP", "198.18.1.2"),
                        run_dir=get("PNO_RUN_DIR", f"/run/pno-testbed/{netns}"))


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
    def __init__(self, opts: argparse.Namespace, mode: str, art: Path, names: TestbedNames):
        self.opts = opts
        self.mode = mode
        self.art = art
        self.names = names
        self.script = str(TESTBED)
        self.run_dir = Path(names.run_dir)
        self.host_socket = self.run_dir / "host.sock"
        self.stats_path = art / "engine-stats.txt"
        self.env = dict(os.environ, **names.env(), PNO_ENGINE=opts.engine)
        self.is_up = False
        self.stats: dict[str, str] = {}
        self.engine_args: list[str] | None = None  # what start() last ran the engine with; None: no engine

    def _testbed(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run([self.script, *args], env=self.env, capture_output=True, text=True, timeout=90)
        if check and p.returncode != 0:
            raise TestFailure(f"scripts/testbed {shlex.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
        return p

    def up(self) -> None:
        """The app tests' testbed: in pno mode the engine with its host service and its exit checks."""
        self.host_socket.unlink(missing_ok=True)
        if self.mode == "kernel":
            self.start_testbed(None)
        else:
            self.start_testbed(["--host-socket", str(self.host_socket), "--stats-file", str(self.stats_path),
                                "--check-leaks", "--stats", "--stats-interval", "0"])

    def start_testbed(self, engine_args: list[str] | None) -> None:
        """`scripts/testbed net` (engine_args None: only the kernel link) or `scripts/testbed up
        ENGINE_ARGS`, which must make the engine's host socket; leftovers of a killed run go first."""
        n = self.names
        self._testbed("down", check=False)  # leftovers of a killed run
        self.is_up = True
        if engine_args is None:
            log(f"$ scripts/testbed net   ({n.netns}, kernel link {n.khost_ip} <-> {n.kpeer_ip})")
            self._testbed("net")
            return
        log(f"$ scripts/testbed up {shlex.join(engine_args)}")
        self._testbed("up", *engine_args)
        deadline = time.monotonic() + 10
        while not self.host_socket.exists():
            expect(time.monotonic() < deadline, f"engine made no host socket at {self.host_socket}")
            time.sleep(0.05)

    def start(self, engine_args: list[str] | None, base_args: list[str]) -> None:
        """(Re)starts the testbed: only the kernel link (engine_args None), or the engine with its host
        socket, `base_args` and then `engine_args`. On a failure whatever is left goes down, so the
        next start begins from scratch."""
        if self.is_up:
            self.down()
        self.engine_args = engine_args
        if engine_args is None:
            self.mode = "kernel"
            self.start_testbed(None)
            return
        self.mode = "pno"
        try:
            self.start_testbed(["--host-socket", str(self.host_socket)] + base_args + engine_args)
        except BaseException:
            self._testbed("down", check=False)
            self.is_up = False
            self.engine_args = None
            self.mode = "kernel"
            raise

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
# One run: servers on the host, clients in the peer namespace
# ------------------------------------------------------------------------------------------------

class AppRun(Cleanups):
    """Artifacts in OPTS.results/NAME, a temporary work directory, the servers started and their
    leftovers file. `bed`: a testbed shared by many runs (default: one of this run's own)."""

    def __init__(self, name: str, opts: argparse.Namespace, mode: str, profile: Profile, names: TestbedNames,
                 bed: Testbed | None = None):
        super().__init__()
        self.name = name
        self.opts = opts
        self.mode = mode
        self.profile = profile
        self.names = names
        self.art = Path(opts.results) / name
        shutil.rmtree(self.art, ignore_errors=True)
        self.art.mkdir(parents=True)
        self.work = Path(tempfile.mkdtemp(prefix=f"pno-apps-{name}-"))
        os.chmod(self.work, 0o755)
        # The server's address: the kernel link's host end, or the engine.
        self.ip = names.khost_ip if mode == "kernel" else names.engine_ip
        self.bed = bed or Testbed(opts, mode, self.art, names)
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
        return self.add_proc(Proc(name, self.offloaded(cmd), self.art / f"{name}.out", cwd=cwd,
                                  leftovers=self.leftovers))

    def add_proc(self, p: Proc) -> Proc:
        """A server of this run: checked by check_alive(), killed by the cleanup."""
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
    def in_ns(self, cmd: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.names.netns] + cmd

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
        log(f"nftables: {pct}% random loss each way between {self.names.netns} and {self.ip}")

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
               "-s", str(WRK_CHECK)]
        if close:
            cmd += ["-H", "Connection: close"]
        cmd += [url, "--", str(body)]
        opens0 = self.tcp_active_opens()
        p = self.peer(cmd, timeout=secs + 30)
        out = p.stdout.decode(errors="replace")
        (self.art / f"{label}.txt").write_text(out + p.stderr)
        w = parse_wrk(out)
        expect(w is not None, f"{label}: no summary from wrk:\n{out}\n{p.stderr}")
        reqs, rps = w["requests"], w["rps"]
        chk = re.search(r"CHECK good=(\d+) bad=(\d+) first_bad=(.*)", out)
        expect(chk is not None, f"{label}: wrk_check.lua printed nothing:\n{out}")
        good, bad = int(chk.group(1)), int(chk.group(2))
        sock, non2xx = w["socket_errors_line"], w["non2xx_line"]
        opens = self.tcp_active_opens() - opens0
        log(f"{label}: {reqs} requests, {rps:.0f} req/s, {opens} connections, checked good={good} bad={bad}"
            + (f", {sock}" if sock else "") + (f", {non2xx}" if non2xx else ""))
        expect(reqs > 0, f"{label}: no request completed")
        expect(sock is None, f"{label}: {sock or ''}")
        expect(non2xx is None, f"{label}: {non2xx or ''}")
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
        res = last_json_line(out)
        expect(res is not None, f"{label}: no result from pno-loadgen (exit {p.returncode}): {p.stderr[-2000:]}")
        expect(p.returncode == 0 and res.get("ok") is True, f"{label} failed: {json.dumps(res)}")
        return res
