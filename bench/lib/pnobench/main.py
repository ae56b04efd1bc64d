"""bench/run: real apps on PnO and on the Linux kernel stack, alternating, in one run.

  bench/run                      full matrix, kernel and PnO (PnO rows when pno, libpno.so and an engine
                                 with a host service are built), 3 repetitions each
  bench/run --quick              a few-minute smoke run: fewer cells, 1 repetition, short cells
  bench/run --only kernel        the Linux baseline only (works before the shim exists)
  bench/run --apps redis,echo    a subset of redis, lighttpd, haproxy, echo, iperf
  bench/run --pcie-model         also PnO rows with the engine's modelled PCIe cost on its DmaChannel
  bench/run --report DIR         re-render report.md and the plots from DIR/results.json
  bench/run --summary DIR        print the compact table kept in bench/README.md
  bench/run engine-echo [...]    pno-engine's --echo vs Linux echo over a veth (engine-echo --help)

Output: bench/results/<UTC timestamp>/ (results.json with every repetition, report.md, *.png).
The bench has its own testbed (netns pno-bench, interfaces pnob0*, kernel link 198.18.5.1 <->
198.18.5.2; PNO_* variables override), torn down at the end, on errors and on Ctrl-C.
Needs root and a Release build (scripts/bootstrap).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

from pnotest import TestFailure

from . import env
from .workloads import APP_CPU, CLIENT_CPU, ENGINE_LCORE, GROUPS, Group, Plan

DEFAULT_PCIE = "--dma-latency-ns 1000 --dma-gbps 12"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Bench:
    def __init__(self, opts, plan: Plan, out: Path):
        self.opts = opts
        self.plan = plan
        self.out = out
        self.names = env.names()
        build = Path(opts.build_dir)
        self.engine = Path(opts.engine or build / "bin" / "pno-engine").resolve()
        self.pno = Path(opts.pno or build / "bin" / "pno").resolve()
        self.loadgen = Path(opts.loadgen or build / "bin" / "pno-loadgen").resolve()
        self.echo_server = env.echo_server(build) if "echo" in plan.apps else None
        self.apps_opts = argparse.Namespace(engine=str(self.engine), pno=str(self.pno), loadgen=str(self.loadgen),
                                            results=str(out / "artifacts"), keep=opts.keep, verbose=False)
        self.bed = None
        self.hints: dict[tuple[str, str], float] = {}
        self.data = {
            "meta": {
                "started": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                "argv": shlex.join(["bench/run"] + sys.argv[1:]),
                "quick": opts.quick,
                "reps": plan_reps(opts),
                "plan": plan.__dict__,
                "git": env.git_commit(),
                "machine": env.machine_info(),
                "netns": self.names.netns,
                "addresses": {"kernel": self.names.khost_ip, "pno": self.names.engine_ip,
                              "peer_kernel": self.names.kpeer_ip, "peer_pno": self.names.peer_ip},
                "cpu_layout": {"app": APP_CPU, "engine_lcore": ENGINE_LCORE, "client": CLIENT_CPU},
                "binaries": {"engine": str(self.engine), "pno": str(self.pno), "loadgen": str(self.loadgen)},
                "note": opts.note,
            },
            "modes": {},
            "samples": [],
            "errors": [],
            "engine_idle": [],
        }

    # --- callbacks from the groups ---
    def log(self, msg: str) -> None:
        log(msg)

    def sample(self, s: dict) -> None:
        self.data["samples"].append(s)
        self.hints[(s["app"], s["cell"], s["mode"])] = s["rate"]
        lat = f" p50 {s['p50']:.3g} p99 {s['p99']:.3g} {s['lat_unit']}" if s.get("p50") is not None else ""
        log(f"  {s['app']} {s['cell']} [{s['mode']} r{s['rep']}]: {s['rate']:,.1f} {s['rate_unit']}{lat}, "
            f"host {s.get('app_cpu_us_per_unit', 0):.2f} µs/{s['unit']}, engine "
            f"{s.get('engine_cpu_us_per_unit') or 0:.2f}, machine {s.get('machine_cpu_us_per_unit', 0):.2f}")

    def unsample(self, s: dict) -> None:
        if s in self.data["samples"]:
            self.data["samples"].remove(s)

    def error(self, app: str, cell: str, mode: str, rep: int, e: BaseException) -> None:
        text = str(e) or repr(e)
        self.data["errors"].append({"app": app, "cell": cell, "mode": mode, "rep": rep, "error": text})
        log(f"  ERROR {app} {cell} [{mode} r{rep}]: {text.splitlines()[0] if text else ''}")

    def rate_hint(self, app: str, cell: str, mode: str) -> float | None:
        """The rate this cell had in this mode before, so the next run lasts about --secs."""
        return self.hints.get((app, cell, mode))

    # --- the run ---
    def engine_args(self, mode: str) -> list[str] | None:
        if mode == "kernel":
            return None
        extra = shlex.split(self.opts.engine_args or "")
        if mode == "pno-pcie":
            extra += shlex.split(self.opts.pcie_args)
        return extra

    def save(self) -> None:
        tmp = self.out / "results.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.out / "results.json")

    def run(self, modes: list[str]) -> None:
        from .bed import BedManager
        self.bed = BedManager(self.names, self.apps_opts, self.out / "artifacts" / "testbed", log)
        self.bed.want_host_rps = not self.opts.no_host_rps
        try:
            first_engine = next((m for m in modes if m != "kernel"), None)
            try:
                self.bed.ensure(self.engine_args(first_engine) if first_engine else None)
                if first_engine:
                    self.bed.measure_idle("after start, before any load", 3 if not self.opts.quick else 2)
            except Exception as e:
                self.error("-", "(testbed)", first_engine or "kernel", 0, e)
            for app in self.plan.apps:
                for rep in range(1, plan_reps(self.opts) + 1):
                    for mode in modes:
                        try:
                            self.bed.ensure(self.engine_args(mode))
                        except Exception as e:
                            self.error(app, "(testbed)", mode, rep, e)
                            continue
                        self.group(app, mode, rep)
                        self.save()
            if first_engine and self.bed.engine_pid():
                self.bed.measure_idle("after the last group", 3 if not self.opts.quick else 2)
        finally:
            self.data["engine_idle"] = self.bed.idle
            self.data["engine_restarts_after_death"] = self.bed.engine_deaths
            self.data["meta"]["host_rps"] = self.bed.rps
            try:
                self.bed.down()
            except Exception as e:
                log(f"testbed down: {e!r}")
            self.data["engine_stats_at_exit"] = dict(self.bed.testbed.stats)  # read by down()
            self.data["meta"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
            self.save()

    def group(self, app: str, mode: str, rep: int) -> None:
        log(f"=== {app} [{mode}] repetition {rep}")
        g = None
        try:
            g = Group(self, app, mode, rep)
            GROUPS[app](g)
        except Exception as e:
            if not isinstance(e, TestFailure):
                traceback.print_exc()
            self.error(app, "(group)", mode, rep, e)
        finally:
            if g is not None:
                g.run.cleanup()
                if not self.opts.keep:
                    shutil.rmtree(g.work, ignore_errors=True)


def plan_reps(opts) -> int:
    return opts.reps if opts.reps else (1 if opts.quick else 3)


def finish(data: dict, out: Path) -> None:
    from .plots import make_plots
    from .report import render
    try:
        data["plots"] = make_plots(data, out)
    except Exception as e:  # a plot problem must not lose the report
        traceback.print_exc()
        data["plots"] = []
        data.setdefault("errors", []).append({"app": "-", "cell": "plots", "mode": "-", "rep": 0, "error": repr(e)})
    (out / "report.md").write_text(render(data))
    (out / "results.json").write_text(json.dumps(data, indent=1, default=str))
    log(f"report: {out / 'report.md'}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["engine-echo"]:
        from .engine_echo import main as engine_echo
        return engine_echo(argv[1:])
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer cells, 1 rep, short durations")
    ap.add_argument("--reps", type=int, help="repetitions per cell and mode (default 3; --quick: 1)")
    ap.add_argument("--only", choices=("kernel", "pno"), help="run only this mode")
    ap.add_argument("--apps", help="comma-separated subset of " + ",".join(GROUPS))
    ap.add_argument("--secs", type=float, help="seconds per wrk / redis-benchmark cell")
    ap.add_argument("--sizes", help="comma-separated sizes in bytes (default 64,256,1024,2048,4096,16384)")
    ap.add_argument("--pcie-model", action="store_true", help="add PnO rows with a modelled PCIe cost on the DmaChannel")
    ap.add_argument("--pcie-args", default=DEFAULT_PCIE, help=f"engine flags of the model (default {DEFAULT_PCIE!r})")
    ap.add_argument("--engine-args", default="", help="extra pno-engine flags for the PnO rows")
    ap.add_argument("--no-host-rps", action="store_true",
                    help="leave RPS off on the kernel link's host end (default: steered to the app's CPU 0)")
    ap.add_argument("--build-dir", default=os.environ.get("PNO_BUILD_DIR", str(env.REPO / "build")))
    ap.add_argument("--engine", help="pno-engine (default BUILD/bin/pno-engine)")
    ap.add_argument("--pno", help="the pno command (default BUILD/bin/pno)")
    ap.add_argument("--loadgen", help="pno-loadgen (default BUILD/bin/pno-loadgen)")
    ap.add_argument("--out", help="results folder (default bench/results/<UTC timestamp>)")
    ap.add_argument("--note", help="a line written at the top of the report (e.g. about machine load)")
    ap.add_argument("--keep", action="store_true", help="keep each group's temporary directory")
    ap.add_argument("--report", metavar="DIR", help="only re-render DIR/report.md and plots from DIR/results.json")
    ap.add_argument("--summary", metavar="DIR", help="print the compact table of DIR/results.json (for bench/README.md)")
    opts = ap.parse_args(argv)

    if opts.summary:
        from .report import summary_table
        print(summary_table(json.loads((Path(opts.summary) / "results.json").read_text())))
        return 0
    if opts.report:
        out = Path(opts.report)
        finish(json.loads((out / "results.json").read_text()), out)
        return 0

    plan = Plan.quick() if opts.quick else Plan.full()
    if opts.apps:
        plan.apps = [a.strip() for a in opts.apps.split(",") if a.strip()]
        bad = [a for a in plan.apps if a not in GROUPS]
        if bad:
            ap.error(f"unknown apps {bad}; choose from {list(GROUPS)}")
    if opts.secs:
        plan.secs = opts.secs
        plan.iperf_secs = max(1.0, opts.secs)
    if opts.sizes:
        plan.sizes = [int(x) for x in opts.sizes.split(",")]
        plan.close_sizes = [s for s in plan.close_sizes if s in plan.sizes] or plan.sizes[:1]

    if os.geteuid() != 0:
        print("bench/run: needs root (network namespaces, taskset of servers)", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        print("bench/run: needs at least 2 CPUs (app on CPU 0, engine and client on CPU 1)", file=sys.stderr)
        return 2
    missing = env.missing_tools()
    if missing:
        print(f"bench/run: missing programs {missing}", file=sys.stderr)
        return 2
    env.setup_env()
    build = Path(opts.build_dir)
    engine = Path(opts.engine or build / "bin" / "pno-engine")
    loadgen = Path(opts.loadgen or build / "bin" / "pno-loadgen")
    if "echo" in plan.apps and not os.access(loadgen, os.X_OK):
        print(f"bench/run: {loadgen} not built (scripts/bootstrap)", file=sys.stderr)
        return 2

    modes_state: dict[str, dict] = {"kernel": {"status": "run", "requested": True}}
    modes = ["kernel"] if opts.only != "pno" else []
    pno_ok, why = env.pno_status(build, engine, Path(opts.pno or build / "bin" / "pno"))
    want_pno = opts.only != "kernel"
    if opts.only == "pno":
        modes_state["kernel"] = {"status": "not run (--only pno): no ratios", "requested": False}
    if want_pno:
        if pno_ok:
            modes.append("pno")
            modes_state["pno"] = {"status": "run", "requested": True, "engine_args": shlex.split(opts.engine_args)}
        elif opts.only == "pno":
            print(f"bench/run: --only pno, but PnO cannot run: {why}", file=sys.stderr)
            return 2
        else:
            modes_state["pno"] = {"status": f"not run: {why}", "requested": True}
            log(f"PnO rows not run: {why}")
    else:
        modes_state["pno"] = {"status": "not run (--only kernel)", "requested": False}
    if opts.pcie_model:
        ok, why_pcie = env.pcie_status(engine)
        if not ok:
            print(f"bench/run: --pcie-model: {why_pcie}", file=sys.stderr)
            return 2
        if not pno_ok or opts.only == "kernel":
            print(f"bench/run: --pcie-model needs the PnO rows, which cannot run: {why if not pno_ok else '--only kernel'}",
                  file=sys.stderr)
            return 2
        modes.append("pno-pcie")
        modes_state["pno-pcie"] = {"status": "run", "requested": True,
                                   "engine_args": shlex.split(opts.engine_args) + shlex.split(opts.pcie_args)}
    if not modes:
        print("bench/run: nothing to run", file=sys.stderr)
        return 2

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    results_root = env.REPO / "bench" / "results"
    out = Path(opts.out) if opts.out else results_root / stamp
    out.mkdir(parents=True, exist_ok=True)
    if not opts.out:
        # Results are never committed: the folder ignores itself.
        gi = results_root / ".gitignore"
        if not gi.exists():
            gi.write_text("*\n")
    log(f"bench: modes {modes}, apps {plan.apps}, sizes {plan.sizes}, {plan_reps(opts)} rep(s), results in {out}")

    bench = Bench(opts, plan, out)
    bench.data["modes"] = modes_state
    # A terminal's Ctrl-C raises KeyboardInterrupt; SIGTERM unwinds the same way, so servers stop
    # and the testbed goes down.
    got: list[int] = []

    def on_term(signum, _frame):
        got.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    interrupted = False
    try:
        bench.run(modes)
    except KeyboardInterrupt:
        interrupted = True
        bench.data["meta"]["interrupted"] = True
        log("interrupted: servers stopped, testbed down; writing what was measured")
    finally:
        finish(bench.data, out)
    n_err = len(bench.data["errors"])
    log(f"{len(bench.data['samples'])} samples, {n_err} errors")
    if interrupted:
        return 143 if got else 130
    return 1 if n_err else 0
