"""The bench's environment: testbed names, what is built, machine facts."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

from pno_testbed import TestbedNames, testbed_names

REPO = Path(__file__).resolve().parents[3]

# The bench's own testbed, so it can run beside the interop, semantics and app suites. Every name can
# be overridden with the same PNO_* variables scripts/testbed reads.
DEFAULTS = {
    "PNO_NETNS": "pno-bench",
    "PNO_IFACE": "pnob0",
    "PNO_KHOST_IP": "198.18.5.1",
    "PNO_KPEER_IP": "198.18.5.2",
}


def setup_env() -> None:
    for k, v in DEFAULTS.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("PNO_RUN_DIR", f"/run/pno-testbed/{os.environ['PNO_NETNS']}")


def names() -> TestbedNames:
    """The bench's testbed names; setup_env() first, so the programs it starts see the same ones."""
    setup_env()
    return testbed_names(DEFAULTS)


def sh(cmd: list[str], timeout: float = 20) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"({e})"


def engine_help(engine: Path) -> str:
    if not os.access(engine, os.X_OK):
        return ""
    return sh([str(engine), "--help"])


def find_libpno(build: Path) -> Path | None:
    for cand in (build / "lib" / "libpno.so", build / "bin" / "libpno.so", build / "src" / "shim" / "libpno.so"):
        if cand.exists():
            return cand
    hits = sorted(build.rglob("libpno.so")) if build.exists() else []
    return hits[0] if hits else None


def pno_status(build: Path, engine: Path, pno: Path) -> tuple[bool, str]:
    """Whether the PnO rows can run, and if not, why (written into the report)."""
    missing = []
    if not os.access(pno, os.X_OK):
        missing.append(f"{pno.relative_to(REPO) if pno.is_relative_to(REPO) else pno} is not built")
    if find_libpno(build) is None:
        missing.append(f"no libpno.so under {build}")
    h = engine_help(engine)
    if not h:
        missing.append(f"no engine at {engine}")
    elif "--host-socket" not in h:
        missing.append("pno-engine has no --host-socket (no host service)")
    if missing:
        return False, "; ".join(missing)
    return True, "available"


PCIE_FLAGS = ("--dma-latency-ns", "--dma-gbps")


def pcie_status(engine: Path) -> tuple[bool, str]:
    h = engine_help(engine)
    absent = [f for f in PCIE_FLAGS if f not in h]
    if absent:
        return False, (f"{engine} has no PCIe cost model on its DmaChannel ({', '.join(absent)} missing from "
                       f"--help); build an engine with the model to use --pcie-model")
    return True, "available"


def git_commit() -> dict:
    head = sh(["git", "-C", str(REPO), "rev-parse", "HEAD"])
    dirty = sh(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    return {"commit": head, "dirty": bool(dirty), "subject": sh(["git", "-C", str(REPO), "log", "-1", "--format=%s"])}


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def tool_versions() -> dict:
    def which(name: str) -> str | None:
        return shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)

    out = {}
    for name, args in (("redis-server", ["--version"]), ("redis-benchmark", ["--version"]), ("lighttpd", ["-v"]),
                       ("haproxy", ["-v"]), ("wrk", ["-v"]), ("socat", ["-V"]), ("iperf3", ["--version"])):
        path = which(name)
        if path is None:
            out[name] = None
            continue
        text = sh([path] + args)
        if name == "socat":
            m = re.search(r"socat version [^\n]*", text)
            text = m.group(0) if m else text
        out[name] = _first_line(text)
    return out


def machine_info() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    except (OSError, IndexError):
        pass
    irq_acct = None
    try:
        import gzip
        cfg = gzip.open("/proc/config.gz", "rt").read()
        irq_acct = "CONFIG_IRQ_TIME_ACCOUNTING=y" in cfg
    except OSError:
        pass
    return {
        "irq_time_accounting": irq_acct,
        "hostname": platform.node(),
        "kernel": platform.release(),
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "memory": mem,
        "python": platform.python_version(),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "tools": tool_versions(),
    }


def missing_tools() -> list[str]:
    need = ["redis-server", "redis-cli", "redis-benchmark", "lighttpd", "haproxy", "wrk", "iperf3", "curl",
            "taskset"]
    return [t for t in need if shutil.which(t) is None and not Path("/usr/sbin", t).exists()]


def echo_server(build: Path) -> Path:
    """The echo server app (bench/echo_server.cc), built with the project as BUILD/bin/pno-bench-echo."""
    out = build / "bin" / "pno-bench-echo"
    if not out.exists():
        raise SystemExit(f"bench/run: {out} is missing: build the project (scripts/bootstrap or ninja -C {build})")
    return out
