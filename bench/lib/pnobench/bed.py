"""One testbed for the whole bench: the kernel link always, the engine when PnO rows run.

The engine is started once and kept running through the kernel groups too (its idle CPU is
measured and reported), and restarted only when the next group needs other engine flags (the
PCIe-model rows). It runs on lcore ENGINE_LCORE with its host service on a Unix socket.
"""

from __future__ import annotations

import time
from pathlib import Path

from pno_testbed import Testbed, TestbedNames
from pnotest import tail

from .procstat import proc_cpu_ns
from .workloads import APP_CPU, ENGINE_LCORE


class BedManager:
    def __init__(self, names: TestbedNames, apps_opts, art: Path, log):
        self.names = names
        self.log = log
        art.mkdir(parents=True, exist_ok=True)
        self.testbed = Testbed(apps_opts, "kernel", art, names)
        self.idle: list[dict] = []
        self.engine_deaths = 0
        self.rps: dict = {}
        self.want_host_rps = True

    def engine_pid(self) -> int | None:
        return self.testbed.engine_pid() if self.testbed.engine_args is not None else None

    def ensure(self, engine_args: list[str] | None, keep_engine: bool = True) -> None:
        """engine_args None means the group needs no engine: a running one is kept (keep_engine)."""
        tb = self.testbed
        if tb.is_up:
            if engine_args is None and (keep_engine or tb.engine_args is None):
                return
            if engine_args is not None and tb.engine_args == engine_args:
                if self.engine_pid() is not None:
                    return
                self.log("pno-engine is no longer running; restarting the testbed. Last lines of its log:\n" +
                         tail(tb.run_dir / "engine.log"))
                self.engine_deaths += 1
        # The bench's engine flags (lcore, counters at exit) before the mode's (PCIe model).
        tb.start(engine_args, ["--lcore", ENGINE_LCORE, "--stats", "--stats-interval", "0",
                               "--stats-file", str(tb.stats_path)])
        if self.want_host_rps:
            self.host_rps()
        else:
            self.rps = {"rps_cpus": "off (--no-host-rps)"}

    def host_rps(self) -> None:
        """RPS on the kernel link's host end to the app's CPU: the host's Linux receive processing runs
        on the host core, as it would on a NIC's interrupt there, not on the client's core where the
        veth hands the frame over (the peer end already steers the peer's work to the client CPU)."""
        import os
        iface = os.environ.get("PNO_KHOST_IFACE", self.names.iface + "k")
        path = Path(f"/sys/class/net/{iface}/queues/rx-0/rps_cpus")
        mask = format(1 << int(APP_CPU), "x")
        try:
            path.write_text(mask + "\n")
            self.rps = {"iface": iface, "rps_cpus": mask}
        except OSError as e:
            self.rps = {"iface": iface, "error": str(e)}
            self.log(f"warning: could not set RPS on {iface}: {e}")

    def measure_idle(self, label: str, secs: float) -> dict | None:
        """The engine's CPU while nothing talks to it: it should back off, not spin."""
        pid = self.engine_pid()
        if pid is None:
            return None
        a, t0 = proc_cpu_ns(pid), time.monotonic()
        time.sleep(secs)
        b, t1 = proc_cpu_ns(pid), time.monotonic()
        res = {"label": label, "secs": round(t1 - t0, 2), "engine_cpu_pct": round((b - a) / 1e9 / (t1 - t0) * 100, 2),
               "engine_args": list(self.testbed.engine_args or [])}
        self.idle.append(res)
        self.log(f"engine idle ({label}): {res['engine_cpu_pct']:.1f}% of a core over {res['secs']}s")
        return res

    def down(self) -> None:
        self.testbed.down()
