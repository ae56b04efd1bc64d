"""The measured apps: each group starts its servers in one mode, runs its cells, stops them.

A cell is one client run against the servers (redis-benchmark, wrk, pno-loadgen, iperf3), inside the
peer namespace on the client CPU; around it the app's process tree, the engine and the machine are
sampled (procstat.CpuProbe). Every cell checks the payload size it measures (STRLEN after a SET, one
curl per HTTP file, iperf3's byte count) so a broken setup gives an error, not a number.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pno_apps import docroot, haproxy_cfg, lighttpd_conf, parse_wrk, redis_conf
from pno_testbed import PROFILE, AppRun
from pnotest import Proc, last_json_line

from .procstat import CpuProbe

APP_CPU = "0"
CLIENT_CPU = "1"
ENGINE_LCORE = "1"

KIB = 1024


def size_label(n: int) -> str:
    return f"{n // KIB}K" if n >= KIB and n % KIB == 0 else f"{n}B"


@dataclass
class Plan:
    """What one run measures; --quick shrinks it."""
    sizes: list[int]
    secs: float                  # wrk and redis-benchmark target duration per cell
    pipelines: list[int]
    conns: int = 50
    close_sizes: list[int] = field(default_factory=lambda: [KIB])
    pingpong_count: int = 20000
    pingpong_warmup: int = 1000
    stream_bytes: int = 256 << 20
    iperf_secs: float = 5
    apps: list[str] = field(default_factory=lambda: ["redis", "lighttpd", "haproxy", "echo", "iperf"])

    @staticmethod
    def full() -> "Plan":
        return Plan(sizes=[64, 256, KIB, 2 * KIB, 4 * KIB, 16 * KIB], secs=5, pipelines=[1, 16])

    @staticmethod
    def quick() -> "Plan":
        return Plan(sizes=[64, KIB, 16 * KIB], secs=2, pipelines=[1, 16], pingpong_count=5000,
                    pingpong_warmup=500, stream_bytes=32 << 20, iperf_secs=2)


class CellError(Exception):
    pass


class Group:
    """One app in one mode for one repetition: servers, cells, samples."""

    def __init__(self, ctx, app: str, mode: str, rep: int):
        self.ctx = ctx
        self.app = app
        self.mode = mode
        self.rep = rep
        name = f"{app}.{mode}.r{rep}"
        # One testbed for the whole bench, not one per group.
        self.run = AppRun(name, ctx.apps_opts, "kernel" if mode == "kernel" else "pno", PROFILE["clean"], ctx.names,
                          bed=ctx.bed.testbed)
        self.ip = self.run.ip
        self.work = self.run.work
        self.art = self.run.art
        self.servers: list = []
        self.samples: list[dict] = []
        self.failed_in_a_row = 0

    # --- servers: the whole session pinned to the app CPU; in pno mode under `pno run` ---
    def spawn(self, name: str, cmd: list[str], cwd: Path | None = None):
        full = ["taskset", "-c", APP_CPU]
        if self.mode != "kernel":
            full += [str(self.ctx.pno), "run", "--engine-socket", str(self.ctx.bed.testbed.host_socket), "--"]
        p = self.run.add_proc(Proc(name, full + cmd, self.art / f"{name}.out", cwd=cwd))
        self.servers.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.servers):
            if p.stopped:
                continue
            try:
                p.stop(signal.SIGTERM, grace=10, expect_rc=None)
            except Exception as e:  # a server that will not stop is killed by the cleanup
                self.ctx.log(f"stopping {p.name}: {e}")

    def client(self, cmd: list[str], timeout: float, check: bool = True):
        return self.run.peer(["taskset", "-c", CLIENT_CPU] + cmd, timeout=timeout, check=check)

    # --- one measured client run ---
    def measure(self, cell: str, params: dict, fn: Callable[[], dict]) -> dict | None:
        """fn runs the client and returns rate, units, latencies; CPU is sampled around it."""
        self.run.check_alive()
        engine_pid = self.ctx.bed.engine_pid()
        probe = CpuProbe([p.pid for p in self.servers], engine_pid)
        a = probe.snap()
        try:
            res = fn()
        except Exception as e:
            self.ctx.error(self.app, cell, self.mode, self.rep, e)
            self.failed_in_a_row += 1
            if self.failed_in_a_row >= 3:
                # A mode that cannot serve would otherwise spend a client timeout on every cell.
                raise CellError(f"{self.failed_in_a_row} cells in a row failed: the rest of {self.app} "
                                f"[{self.mode}] repetition {self.rep} is skipped") from None
            return None
        self.failed_in_a_row = 0
        b = probe.snap()
        cpu = CpuProbe.delta(a, b)
        s = {"app": self.app, "cell": cell, "mode": self.mode, "rep": self.rep, "params": params,
             "time": time.strftime("%H:%M:%S")}
        s.update(res)
        s.update(cpu)
        if engine_pid is None:
            s["engine_cpu_s"] = None  # no engine ran (kernel-only run), not an idle one
        units = res["units"]
        for k in ("app", "engine", "machine", "cpu0", "cpu1"):
            v = s.get(f"{k}_cpu_s")
            if v is not None and units > 0:
                s[f"{k}_cpu_us_per_unit"] = v * 1e6 / units
        if units > 0:
            # Kernel rows: the engine (if one runs) only idles beside them, so it is not part of their cost.
            engine_s = (s["engine_cpu_s"] or 0) if self.mode != "kernel" else 0
            s["host_engine_cpu_us_per_unit"] = (cpu["app_cpu_s"] + engine_s) * 1e6 / units
        try:
            s["loadavg1"] = float(Path("/proc/loadavg").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
        self.samples.append(s)
        self.ctx.sample(s)
        return s


# ------------------------------------------------------------------------------------------------
# Redis
# ------------------------------------------------------------------------------------------------

def redis_guess(pipeline: int, size: int) -> float:
    """First guess of a cell's rate (req/s), so a cell lasts about plan.secs; later reps use the
    rate measured before."""
    base = 15000.0 if pipeline == 1 else 120000.0
    return min(base, 400e6 / max(size, 64))


def parse_redis_csv(text: str) -> dict[str, dict[str, float]]:
    rows = {}
    for row in csv.reader(io.StringIO(text)):
        if len(row) >= 7 and row[0] in ("SET", "GET"):
            try:
                rows[row[0]] = {"rps": float(row[1]), "avg_ms": float(row[2]), "p50_ms": float(row[4]),
                                "p99_ms": float(row[6])}
            except ValueError:
                pass
    return rows


def group_redis(g: Group) -> None:
    plan: Plan = g.ctx.plan
    port = 6379
    conf = redis_conf(g.work / "redis.conf", g.ip, port, g.work, g.art)
    srv = g.spawn("redis-server", ["redis-server", str(conf)])
    g.run.wait_port(srv, port)
    for pipeline in plan.pipelines:
        for size in plan.sizes:
            for op in ("SET", "GET"):
                cell = f"{op} {size_label(size)} P{pipeline}"
                rate = g.ctx.rate_hint("redis", cell, g.mode) or redis_guess(pipeline, size)
                n = int(min(5_000_000, max(2000, rate * plan.secs)))
                n -= n % max(pipeline, 1)

                def run_one(op=op, size=size, pipeline=pipeline, n=n, cell=cell) -> dict:
                    p = g.client(["redis-benchmark", "-h", g.ip, "-p", str(port), "-t", op.lower(), "-d", str(size),
                                  "-n", str(n), "-c", str(plan.conns), "-P", str(pipeline), "--csv"],
                                 timeout=plan.secs * 6 + 60)
                    out = p.stdout.decode(errors="replace")
                    (g.art / f"redis-{op}-{size}-P{pipeline}.csv").write_text(out + p.stderr)
                    rows = parse_redis_csv(out)
                    if op not in rows or rows[op]["rps"] <= 0:
                        raise CellError(f"redis-benchmark printed no {op} rate:\n{out[-1500:]}\n{p.stderr[-1500:]}")
                    if re.search(r"\berror\b|\bERR\b", out + p.stderr, re.I):
                        raise CellError(f"redis-benchmark reported errors:\n{out[-1500:]}\n{p.stderr[-1500:]}")
                    r = rows[op]
                    return {"rate": r["rps"], "rate_unit": "req/s", "units": n, "unit": "request",
                            "p50": r["p50_ms"], "p99": r["p99_ms"], "lat_unit": "ms", "n": n}

                s = g.measure(cell, {"op": op, "size": size, "pipeline": pipeline}, run_one)
                if s and op == "SET":
                    # Without -r every SET wrote the one key key:__rand_int__: its length is the size.
                    p = g.client(["redis-cli", "-h", g.ip, "-p", str(port), "STRLEN", "key:__rand_int__"], timeout=20)
                    got = p.stdout.decode().strip()
                    if got != str(size):
                        g.ctx.error("redis", cell, g.mode, g.rep, CellError(f"STRLEN after SET: {got}, want {size}"))
                        g.samples.remove(s)
                        g.ctx.unsample(s)
    g.stop_all()


# ------------------------------------------------------------------------------------------------
# HTTP: lighttpd alone and haproxy in front of two lighttpd
# ------------------------------------------------------------------------------------------------

def www(g: Group, sizes: list[int]) -> Path:
    """A document root with one random file SIZE.bin of each size."""
    root = g.work / "www"
    docroot(root, {f"{size}.bin": size for size in sizes})
    return root


def bench_lighttpd_conf(g: Group, name: str, root: Path, port: int) -> Path:
    # No access log: the benchmark measures the network path, not log writes.
    return lighttpd_conf(g.work / f"{name}.conf", name, g.ip, port, root, g.art, access_log=False,
                         keepalive_requests=1000000, keepalive_idle=60)


def http_cells(g: Group, port: int, sizes: list[int], close_sizes: list[int]) -> None:
    plan: Plan = g.ctx.plan
    cells = [(s, False) for s in sizes] + [(s, True) for s in close_sizes]
    for size, close in cells:
        url = f"http://{g.ip}:{port}/{size}.bin"
        p = g.client(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url], timeout=20,
                     check=False)
        cell = f"{size_label(size)}" + (" close" if close else "")
        if p.stdout.decode().strip() != f"200 {size}":
            g.ctx.error(g.app, cell, g.mode, g.rep,
                        CellError(f"curl {url}: {p.stdout.decode().strip()!r} {p.stderr.strip()}, want '200 {size}'"))
            continue

        def run_one(size=size, close=close, url=url) -> dict:
            cmd = ["wrk", "-t", "1", "-c", str(plan.conns), "-d", f"{max(1, round(plan.secs))}s", "--timeout", "5s", "--latency"]
            if close:
                cmd += ["-H", "Connection: close"]
            p = g.client(cmd + [url], timeout=plan.secs + 60)
            out = p.stdout.decode(errors="replace")
            (g.art / f"wrk-{size}{'-close' if close else ''}.txt").write_text(out + p.stderr)
            w = parse_wrk(out)
            if w is None:
                raise CellError(f"no summary from wrk:\n{out[-1500:]}")
            if w["requests"] <= 0:
                raise CellError(f"wrk completed no request:\n{out}")
            if any(w["socket_errors"]) or w["non2xx"]:
                raise CellError(f"wrk: socket errors {w['socket_errors']}, non-2xx {w['non2xx']}:\n{out}")
            return {"rate": w["rps"], "rate_unit": "req/s", "units": w["requests"], "unit": "request",
                    "p50": w["p50_ms"], "p99": w["p99_ms"], "lat_unit": "ms"}

        g.measure(cell, {"size": size, "close": close}, run_one)


def group_lighttpd(g: Group) -> None:
    plan: Plan = g.ctx.plan
    port = 8080
    root = www(g, sorted(set(plan.sizes + plan.close_sizes)))
    srv = g.spawn("lighttpd", ["lighttpd", "-D", "-f", str(bench_lighttpd_conf(g, "lighttpd", root, port))])
    g.run.wait_port(srv, port)
    http_cells(g, port, plan.sizes, plan.close_sizes)
    g.stop_all()


def group_haproxy(g: Group) -> None:
    plan: Plan = g.ctx.plan
    port, backends = 8000, {"a": 8081, "b": 8082}
    root = www(g, plan.sizes)
    for name, bport in backends.items():
        p = g.spawn(f"lighttpd-{name}", ["lighttpd", "-D", "-f", str(bench_lighttpd_conf(g, f"lighttpd-{name}", root, bport))])
        g.run.wait_port(p, bport)
    cfg = haproxy_cfg(g.work / "haproxy.cfg", g.ip, port, backends, 5, ["maxconn 4000", "nbthread 1"],
                      ["option http-keep-alive", "http-reuse always"])
    hap = g.spawn("haproxy", ["haproxy", "-db", "-f", str(cfg)])
    g.run.wait_port(hap, port)
    http_cells(g, port, plan.sizes, [])
    g.stop_all()


# ------------------------------------------------------------------------------------------------
# Echo (pno-bench-echo) and bulk streams (iperf3)
# ------------------------------------------------------------------------------------------------

def loadgen_json(g: Group, args: list[str], timeout: float, label: str) -> dict:
    p = g.client([str(g.ctx.loadgen)] + args, timeout=timeout, check=False)
    out = p.stdout.decode(errors="replace")
    (g.art / f"{label}.out").write_text(out + p.stderr)
    res = last_json_line(out)
    if p.returncode != 0 or res is None or res.get("ok") is not True:
        raise CellError(f"pno-loadgen {shlex.join(args)} failed ({p.returncode}): {out[-1500:]} {p.stderr[-1500:]}")
    return res


def group_echo(g: Group) -> None:
    """pno-bench-echo (bench/echo_server.cc): one thread, epoll, TCP_NODELAY."""
    plan: Plan = g.ctx.plan
    port = 7007
    srv = g.spawn("echo", [str(g.ctx.echo_server), g.ip, str(port)])
    g.run.wait_port(srv, port)

    def pingpong() -> dict:
        r = loadgen_json(g, ["pingpong", "--connect", f"{g.ip}:{port}", "--size", "64", "--count",
                             str(plan.pingpong_count), "--warmup", str(plan.pingpong_warmup)], 120, "pingpong")
        return {"rate": 1e6 / r["rtt_mean_us"], "rate_unit": "round trips/s",
                "units": plan.pingpong_count + plan.pingpong_warmup, "unit": "round trip",
                "p50": r["rtt_p50_us"], "p99": r["rtt_p99_us"], "lat_unit": "us"}

    g.measure("ping-pong 64B", {"size": 64}, pingpong)

    def stream() -> dict:
        r = loadgen_json(g, ["stream", "--connect", f"{g.ip}:{port}", "--bytes", str(plan.stream_bytes), "--timeout",
                             "120"], 180, "stream")
        if r.get("bytes_recv") != plan.stream_bytes or r.get("sha256_recv") != r.get("sha256_sent"):
            raise CellError(f"echo stream: {r}")
        return {"rate": r["mbytes_per_s"], "rate_unit": "MB/s", "units": plan.stream_bytes / 1e6, "unit": "MB",
                "p50": None, "p99": None, "lat_unit": None}

    g.measure("stream", {"bytes": plan.stream_bytes}, stream)
    g.stop_all()


def group_iperf(g: Group) -> None:
    plan: Plan = g.ctx.plan
    port = 5201
    srv = g.spawn("iperf3", ["iperf3", "-s", "-B", g.ip, "-p", str(port)])
    g.run.wait_port(srv, port)
    time.sleep(0.2)  # iperf3 -s is busy with the probe's connection for a moment
    for reverse in (False, True):
        cell = "host->peer" if reverse else "peer->host"

        def run_one(reverse=reverse) -> dict:
            cmd = ["iperf3", "-c", g.ip, "-p", str(port), "-t", str(max(1, round(plan.iperf_secs))), "-J"]
            if reverse:
                cmd.append("-R")
            p = g.client(cmd, timeout=plan.iperf_secs + 60, check=False)
            out = p.stdout.decode(errors="replace")
            (g.art / f"iperf3-{'R' if reverse else 'F'}.json").write_text(out)
            try:
                j = json.loads(out)
            except ValueError:
                raise CellError(f"iperf3 printed no JSON ({p.returncode}): {out[-1500:]} {p.stderr[-1500:]}") from None
            if "error" in j or p.returncode != 0:
                raise CellError(f"iperf3: {j.get('error')} ({p.returncode})")
            recv = j["end"]["sum_received"]
            if recv["bytes"] <= 0:
                raise CellError("iperf3 moved no bytes")
            return {"rate": recv["bits_per_second"] / 8e6, "rate_unit": "MB/s", "units": recv["bytes"] / 1e6,
                    "unit": "MB", "p50": None, "p99": None, "lat_unit": None,
                    "retransmits": j["end"].get("sum_sent", {}).get("retransmits")}

        g.measure(cell, {"reverse": reverse}, run_one)
        time.sleep(0.3)
    g.stop_all()


GROUPS: dict[str, Callable[[Group], None]] = {
    "redis": group_redis,
    "lighttpd": group_lighttpd,
    "haproxy": group_haproxy,
    "echo": group_echo,
    "iperf": group_iperf,
}

APP_TITLES = {
    "redis": "Redis (redis-benchmark, 50 connections, single-threaded redis-server, no persistence)",
    "lighttpd": "Lighttpd (wrk, 50 connections, static files)",
    "haproxy": "HAProxy -> 2x Lighttpd (wrk, 50 connections, round robin)",
    "echo": "Echo (pno-bench-echo, epoll; pno-loadgen ping-pong 64 B and one echoed stream)",
    "iperf": "Bulk single stream (iperf3 -s on the host, iperf3 -c in the peer namespace)",
}
