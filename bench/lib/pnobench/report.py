"""Medians over repetitions, PnO/kernel ratios, targets, and report.md."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable

from .workloads import APP_CPU, APP_TITLES, CLIENT_CPU, ENGINE_LCORE, KIB

METRICS = ("rate", "p50", "p99", "app_cpu_us_per_unit", "engine_cpu_us_per_unit", "host_engine_cpu_us_per_unit",
           "machine_cpu_us_per_unit", "cpu0_cpu_us_per_unit")
PNO_MODES = ("pno", "pno-pcie")


def aggregate(samples: list[dict]) -> dict:
    """{(app, cell): {"params":..., "unit":..., mode: {metric: median, "n": reps, "rates": [...]}}}"""
    out: dict = {}
    for s in samples:
        key = (s["app"], s["cell"])
        e = out.setdefault(key, {"params": s["params"], "unit": s["unit"], "rate_unit": s["rate_unit"],
                                 "lat_unit": s.get("lat_unit"), "modes": {}})
        e["modes"].setdefault(s["mode"], []).append(s)
    for e in out.values():
        for mode, ss in list(e["modes"].items()):
            m = {"n": len(ss), "rates": [x["rate"] for x in ss]}
            for k in METRICS:
                vals = [x[k] for x in ss if x.get(k) is not None]
                m[k] = statistics.median(vals) if vals else None
            e["modes"][mode] = m
    return out


def ratio(agg_e: dict, mode: str, metric: str) -> float | None:
    k = agg_e["modes"].get("kernel", {}).get(metric)
    p = agg_e["modes"].get(mode, {}).get(metric)
    if k is None or p is None or k == 0:
        return None
    return p / k


@dataclass
class Target:
    name: str
    metric: str
    op: str          # "<=" or ">="
    bound: float
    select: Callable[[str, dict], bool]  # (app, params) -> cell counted
    what: str


def _small(p: dict, hi: int = 2 * KIB) -> bool:
    return 64 <= p.get("size", 0) <= hi


TARGETS = [
    Target("Redis host CPU/request, P=1, 64 B-1 KiB", "app_cpu_us_per_unit", "<=", 0.30,
           lambda a, p: a == "redis" and p["pipeline"] == 1 and _small(p, KIB), "GET and SET"),
    Target("Redis host CPU/request, P=16, 64 B-1 KiB", "app_cpu_us_per_unit", "<=", 0.60,
           lambda a, p: a == "redis" and p["pipeline"] == 16 and _small(p, KIB), "GET and SET"),
    Target("Lighttpd host CPU/request, 64 B-2 KiB", "app_cpu_us_per_unit", "<=", 0.40,
           lambda a, p: a == "lighttpd" and not p.get("close") and _small(p), "keep-alive"),
    Target("HAProxy->Lighttpd host CPU/request, 64 B-2 KiB", "app_cpu_us_per_unit", "<=", 0.40,
           lambda a, p: a == "haproxy" and _small(p), "haproxy + both lighttpd"),
    Target("Requests/s at every size and app", "rate", ">=", 1.0,
           lambda a, p: a in ("redis", "lighttpd", "haproxy"), "every Redis, Lighttpd, HAProxy cell"),
    Target("Echo p50 latency", "p50", "<=", 0.70, lambda a, p: a == "echo" and "bytes" not in p, "64 B ping-pong"),
    Target("Bulk single stream throughput", "rate", ">=", 0.80, lambda a, p: a == "iperf", "iperf3, both directions"),
]


def evaluate_targets(agg: dict, mode: str, mode_ran: bool = False) -> list[dict]:
    res = []
    for t in TARGETS:
        cells = [(key, e) for key, e in agg.items() if t.select(key[0], e["params"])]
        detail = []
        status = "not run"
        if cells:
            ratios = [(f"{key[0]} {key[1]}", ratio(e, mode, t.metric)) for key, e in cells]
            have = [(c, r) for c, r in ratios if r is not None]
            if have:
                ok = [(r <= t.bound) if t.op == "<=" else (r >= t.bound) for _, r in have]
                status = "met" if all(ok) and len(have) == len(ratios) else "missed" if not all(ok) else "partial"
                detail = [{"cell": c, "ratio": r, "ok": o} for (c, r), o in zip(have, ok)]
            worst = (max if t.op == "<=" else min)([r for _, r in have]) if have else None
            if not have:
                if any(mode in e["modes"] for _, e in cells) and not any("kernel" in e["modes"] for _, e in cells):
                    status = "no kernel rows to compare"
                elif mode_ran:
                    status = "no PnO number (errors)"
        else:
            worst = None
        res.append({"target": t.name, "metric": t.metric, "op": t.op, "bound": t.bound, "what": t.what,
                    "status": status, "worst": worst, "cells": detail, "n_cells": len(cells)})
    return res


# ------------------------------------------------------------------------------------------------
# Markdown
# ------------------------------------------------------------------------------------------------

def fnum(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.{digits}f}"


def fratio(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}×"


def spread(m: dict) -> str:
    r = m.get("rates") or []
    if len(r) < 2 or not m.get("rate"):
        return ""
    return f" ±{(max(r) - min(r)) / 2 / m['rate'] * 100:.0f}%"


def app_table(app: str, agg: dict, modes: list[str], mode_status: dict | None = None) -> list[str]:
    keys = [k for k in agg if k[0] == app]
    if not keys:
        return []
    e0 = agg[keys[0]]
    rate_unit = e0["rate_unit"]
    lat = e0["lat_unit"]
    unit = e0["unit"]
    lines = [f"### {APP_TITLES.get(app, app)}", ""]
    head = ["cell", "mode", f"{rate_unit}"]
    if lat:
        head += [f"p50 {lat}", f"p99 {lat}"]
    head += [f"host CPU µs/{unit}", f"CPU {APP_CPU} busy µs/{unit}", f"engine CPU µs/{unit}", f"host+engine µs/{unit}",
             f"machine CPU µs/{unit}"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in keys:
        e = agg[key]
        for mode in modes:
            m = e["modes"].get(mode)
            if m is None:
                ran = (mode_status or {}).get(mode, {}).get("status") == "run"
                row = [key[1], mode] + ["error (see Errors)" if ran else "not run"] + [""] * (len(head) - 3)
            else:
                row = [key[1], mode, fnum(m["rate"]) + spread(m) + (f" (n={m['n']})" if m["n"] > 1 else "")]
                if lat:
                    row += [fnum(m["p50"]), fnum(m["p99"])]
                row += [fnum(m["app_cpu_us_per_unit"]), fnum(m["cpu0_cpu_us_per_unit"]), fnum(m["engine_cpu_us_per_unit"]),
                        fnum(m["host_engine_cpu_us_per_unit"]), fnum(m["machine_cpu_us_per_unit"])]
            lines.append("| " + " | ".join(row) + " |")
        for mode in modes:
            if mode == "kernel" or mode not in e["modes"] or "kernel" not in e["modes"]:
                continue
            row = [key[1], f"*{mode}/kernel*", fratio(ratio(e, mode, "rate"))]
            if lat:
                row += [fratio(ratio(e, mode, "p50")), fratio(ratio(e, mode, "p99"))]
            row += [fratio(ratio(e, mode, "app_cpu_us_per_unit")), fratio(ratio(e, mode, "cpu0_cpu_us_per_unit")), "",
                    fratio((e["modes"][mode]["host_engine_cpu_us_per_unit"] or 0) /
                           e["modes"]["kernel"]["app_cpu_us_per_unit"]
                           if e["modes"]["kernel"].get("app_cpu_us_per_unit") else None),
                    fratio(ratio(e, mode, "machine_cpu_us_per_unit"))]
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return lines


def render(data: dict) -> str:
    meta = data["meta"]
    samples = data["samples"]
    agg = aggregate(samples)
    modes_run = [m for m in ("kernel", "pno", "pno-pcie") if any(s["mode"] == m for s in samples)]
    modes_shown = [m for m in ("kernel", "pno", "pno-pcie") if m in modes_run or
                   data["modes"].get(m, {}).get("requested")]
    L = [f"# PnO vs Linux kernel TCP: app benchmark", ""]
    L += [f"- run: {meta['started']} – {meta.get('finished', '?')} UTC"
          + (" (**interrupted**)" if meta.get("interrupted") else "") + f", `{meta['argv']}`"
          + (" (**quick**: fewer cells, short, 1 rep)" if meta["quick"] else ""),
          f"- commit: `{meta['git']['commit'][:12]}`{' (+ uncommitted changes)' if meta['git']['dirty'] else ''} "
          f"{meta['git']['subject']}",
          f"- machine: {meta['machine']['cpu_model']}, {meta['machine']['cpus']} CPUs, {meta['machine']['memory']}, "
          f"Linux {meta['machine']['kernel']}; load average at start {' '.join(meta['machine']['loadavg'])}",
          f"- repetitions per cell and mode: {meta['reps']}; "
          "tables give medians" + (" and ± half the min–max spread of the rate" if meta["reps"] > 1 else ""),
          f"- modes run: {', '.join(m for m in ('kernel', 'pno', 'pno-pcie') if any(s['mode'] == m for s in samples)) or 'none'}"
          + (" (alternating per app: kernel, PnO, kernel, PnO, ...)" if len(modes_run) > 1 else ""),
          ""]
    L += ["## CPU layout", "",
          f"- app (every process and thread of its session, e.g. haproxy + both lighttpd): `taskset -c {APP_CPU}`",
          f"- pno-engine: `--lcore {ENGINE_LCORE}` (EAL -l {ENGINE_LCORE})",
          f"- clients (redis-benchmark, wrk, pno-loadgen, iperf3) in netns `{meta['netns']}`: `taskset -c {CLIENT_CPU}`",
          f"- caveat: the client shares CPU {CLIENT_CPU} with the engine, so in PnO rows a busy client slows the engine "
          "and vice versa; in kernel rows the peer's softirq work runs there too (RPS on the peer's veth end).",
          "- host CPU = run time of the app's threads (schedstat) + reaped children; engine CPU = pno-engine's "
          "threads; machine CPU = /proc/stat busy time of all CPUs, which includes the client and anything else "
          "running on the machine. Kernel-stack work done in softirq context on another CPU is not in host CPU; "
          "softirq work that interrupts the app's threads is charged to them " +
          {True: "only without IRQ time accounting (this kernel has it, so it is not).",
           False: "(this kernel has no IRQ time accounting).",
           None: "unless the kernel has IRQ time accounting (unknown here)."}[meta["machine"].get("irq_time_accounting")],
          f"- CPU {APP_CPU} busy = /proc/stat busy time of the app's core (app + the host kernel's network work there "
          "+ anything else scheduled on it): the host-core cost on a quiet machine.",
          "- kernel link: RPS on its host end " + (f"steers receive processing to CPU {APP_CPU} (the host core), as a "
          "NIC interrupt on the host would" if meta.get("host_rps", {}).get("rps_cpus") not in (None, "off (--no-host-rps)")
          else "off: the host's receive processing runs on the client's CPU where the veth hands frames over") + ".",
          ""]
    L += ["## Modes", ""]
    for m in ("kernel", "pno", "pno-pcie"):
        st = data["modes"].get(m)
        if st is None:
            continue
        L.append(f"- **{m}**: {st['status']}" + (f" — engine flags `{' '.join(st['engine_args'])}`"
                                                   if st.get("engine_args") else ""))
    for idle in data.get("engine_idle", []):
        L.append(f"- engine idle CPU ({idle['label']}): **{idle['engine_cpu_pct']:.1f}%** of a core over "
                 f"{idle['secs']} s" + (" — it backs off when idle" if idle["engine_cpu_pct"] < 10 else
                                        " — it does NOT back off when idle"))
    if not data.get("engine_idle"):
        L.append("- engine idle CPU: not measured (no engine ran)")
    st = data.get("engine_stats_at_exit") or {}
    keys = ("tcp_conn_passive_opens", "tcp_retransmits", "tcp_rto_expired", "tcp_loss_probes", "tcp_ooo_segments",
            "tcp_rst_tx", "tcp_rst_rx", "tcp_drop_bad_syn_cookie", "mbuf_engine_in_flight", "mbuf_leaked")
    shown = [f"{k}={st[k]}" for k in keys if k in st]
    if shown:
        L.append("- engine counters at exit (last engine of the run; all in artifacts/testbed/engine-stats.txt): "
                 + ", ".join(shown))
    L.append("")
    if meta.get("note"):
        L += [f"> {meta['note']}", ""]

    L += ["## Targets (ratios PnO / kernel of the medians)", ""]
    pno_modes = [m for m in PNO_MODES if m in modes_run]
    if not pno_modes and data["modes"].get("pno", {}).get("status") == "run":
        L += ["The PnO mode ran but produced no number (see Errors).", ""]
    elif not pno_modes:
        L += ["No PnO rows ran, so every target is **not run** (pno: " +
              (data["modes"].get("pno", {}).get("status") or "") + ").", ""]
    L += ["| target | cells | bound | " + " | ".join(f"{m}: worst ratio | {m}: status" for m in (pno_modes or ["pno"]))
          + " |", "|---|---|---|" + "---|---|" * max(1, len(pno_modes))]
    evals = {m: evaluate_targets(agg, m, data["modes"].get(m, {}).get("status") == "run") for m in (pno_modes or ["pno"])}
    for i, t in enumerate(TARGETS):
        row = [t.name, t.what, f"{t.op} {t.bound:g}"]
        for m in evals:
            ev = evals[m][i]
            row += [fratio(ev["worst"]), f"**{ev['status']}**"]
        L.append("| " + " | ".join(row) + " |")
    L.append("")
    for m, evs in evals.items():
        for ev in evs:
            bad = [c for c in ev["cells"] if not c["ok"]]
            if bad:
                L.append(f"- {m}, {ev['target']}: missed at " +
                         ", ".join(f"{c['cell']} ({c['ratio']:.2f}×)" for c in bad))
    L.append("")

    L += ["## Results", "",
          "Medians per cell; rates in the unit of the column, CPU in µs per request (per MB for streams). "
          "*Ratio rows*: each column is PnO / kernel of the medians; the host+engine column is PnO's host + "
          "engine CPU over the kernel's host CPU. In kernel rows the engine column is the idle engine running "
          "beside them (not counted in their host+engine); `–` there means no engine ran.", ""]
    for app in ("redis", "lighttpd", "haproxy", "echo", "iperf"):
        L += app_table(app, agg, modes_shown, data.get("modes"))
    if data.get("errors"):
        L += ["## Errors (cells without a number)", ""]
        for e in data["errors"]:
            text = " ⏎ ".join(x.strip() for x in e["error"].splitlines() if x.strip())
            if len(text) > 600:
                text = text[:300] + " … " + text[-300:]
            L.append(f"- {e['app']} {e['cell']} {e['mode']} rep {e['rep']}: `{text.replace('`', chr(39))}`")
        L.append("")
    plots = data.get("plots") or []
    if plots:
        L += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(L)


def summary_table(data: dict) -> str:
    """A compact table (rate, latency, host CPU per unit and ratios per cell) for bench/README.md."""
    agg = aggregate(data["samples"])
    modes = [m for m in ("kernel", "pno") if any(s["mode"] == m for s in data["samples"])]
    head = ["app", "cell"]
    for m in modes:
        head += [f"{m} rate", f"{m} p50 / p99", f"{m} host CPU µs/unit"]
    if "pno" in modes:
        head += ["rate ratio", "p50 ratio", "host CPU ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (app, cell), e in agg.items():
        row = [app, cell]
        for m in modes:
            mm = e["modes"].get(m, {})
            lat = f"{fnum(mm.get('p50'))} / {fnum(mm.get('p99'))} {e['lat_unit']}" if e["lat_unit"] else "–"
            row += [f"{fnum(mm.get('rate'))} {e['rate_unit']}", lat, fnum(mm.get("app_cpu_us_per_unit"))]
        if "pno" in modes:
            row += [fratio(ratio(e, "pno", "rate")), fratio(ratio(e, "pno", "p50")),
                    fratio(ratio(e, "pno", "app_cpu_us_per_unit"))]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
