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
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pylib"))
from pno_apps import (docroot, haproxy_cfg, lighttpd_conf, nginx_conf, random_file, redis_conf, sha256,  # noqa: E402
                      sha256_file)
from pno_testbed import PROFILE, AppRun, Profile, testbed_names  # noqa: E402
from pnotest import (TestFailure, build_paths, check_root_and_binaries, children_of, expect, log,  # noqa: E402
                     select_tests, suite_arg_parser, summarize_results, tail, unwind_on_sigterm)

# The app suite's own testbed names, so it can run beside the interop tests.
NAMES = testbed_names({"PNO_NETNS": "pno-apps", "PNO_IFACE": "pnoa0", "PNO_KHOST_IP": "198.18.3.1",
                       "PNO_KPEER_IP": "198.18.3.2"})

APPS = ("redis", "lighttpd", "haproxy", "nginx", "echo")
MODES = ("kernel", "pno")
PROFILES = ("clean", "loss1")


# ------------------------------------------------------------------------------------------------
# Applications
# ------------------------------------------------------------------------------------------------

STATIC_SIZES = {"64.bin": 64, "1k.bin": 1024, "16k.bin": 16 << 10, "1m.bin": 1 << 20}


class Run(AppRun):
    """One app test: its own testbed (up in run_test), servers on the host, clients in the peer namespace."""

    def __init__(self, name: str, opts: argparse.Namespace, mode: str, profile: Profile):
        super().__init__(name, opts, mode, profile, NAMES)

    def docroot(self, name: str) -> tuple[Path, dict[str, Path]]:
        root = self.work / name
        return root, docroot(root, STATIC_SIZES)

    def lighttpd_conf(self, name: str, root: Path, port: int) -> Path:
        return lighttpd_conf(self.work / f"{name}.conf", name, self.ip, port, root, self.art, access_log=True,
                             keepalive_requests=10000)


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
    conf = redis_conf(run.work / "redis.conf", run.ip, port, run.work, run.art)
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
    root, files = run.docroot("www")
    srv = run.spawn("lighttpd", ["lighttpd", "-D", "-f", str(run.lighttpd_conf("lighttpd", root, port))])
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
                                                    str(run.lighttpd_conf(f"lighttpd-{name}", root, bport))]),
                      bport))
    for proc, bport in procs:
        run.wait_port(proc, bport)
    cfg = haproxy_cfg(run.work / "haproxy.cfg", run.ip, port, backends, int(run.tmo(5)),
                      ["maxconn 2000", "log stdout format raw local0 notice"],
                      ["log global", "option httplog", "retries 3"])
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
    root, files = run.docroot("www")
    prefix = run.work / "nginx"
    (prefix / "tmp").mkdir(parents=True)
    conf = nginx_conf(prefix / "nginx.conf", prefix, run.ip, port, root, run.art, workers=2)
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
    run = Run(name, opts, mode, profile)
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
                print(f"--- Linux side (ss -tnoa in {NAMES.netns} without TIME-WAIT, first 30 lines):\n" +
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
    build_paths(opts, engine="bin/pno-engine", pno="bin/pno", loadgen="bin/pno-loadgen", results="apps-results")
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
