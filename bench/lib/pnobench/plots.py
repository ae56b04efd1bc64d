"""PNG plots of the medians (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

from .report import aggregate

STYLE = {"kernel": dict(color="tab:blue", marker="o"), "pno": dict(color="tab:red", marker="s"),
         "pno-pcie": dict(color="tab:purple", marker="^")}
SIZE_APPS = ("redis", "lighttpd", "haproxy")


def _series(agg: dict, app: str, metric: str) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """{(series label, mode): [(size, value)]} for the size-swept cells of one app."""
    out: dict = {}
    for (a, cell), e in agg.items():
        p = e["params"]
        if a != app or "size" not in p:
            continue
        if app == "redis":
            label = f"{p['op']} P={p['pipeline']}"
        else:
            label = "close" if p.get("close") else "keep-alive"
        if label == "close":
            continue  # one size only: in the tables, not worth a line
        for mode, m in e["modes"].items():
            v = m.get(metric)
            if v is not None:
                out.setdefault((label, mode), []).append((p["size"], v))
    for v in out.values():
        v.sort()
    return out


def _size_axes(ax, title: str, ylabel: str, sizes: list[int] | None = None, logy: bool = False) -> None:
    ax.set_xscale("log", base=2)
    if sizes:
        ax.set_xticks(sizes)
        ax.set_xticklabels([f"{x // 1024}K" if x >= 1024 else str(x) for x in sizes], fontsize=8)
        ax.minorticks_off()
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("size (bytes)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _sizes(series: dict) -> list[int]:
    return sorted({x for pts in series.values() for x, _ in pts})


def _per_app(agg: dict, metric: str, ylabel: str, path: Path, title: str, extra_metric: str | None = None) -> bool:
    import matplotlib.pyplot as plt

    apps = [a for a in SIZE_APPS if any(k[0] == a for k in agg)]
    if not apps:
        return False
    fig, axes = plt.subplots(1, len(apps), figsize=(5.2 * len(apps), 4.2), squeeze=False)
    dashes = ["-", "--", "-.", (0, (6, 2, 1, 2, 1, 2))]
    for ax, app in zip(axes[0], apps):
        series = _series(agg, app, metric)
        labels = sorted({lbl for lbl, _ in series})
        for (lbl, mode), pts in sorted(series.items()):
            ls = dashes[labels.index(lbl) % len(dashes)]
            ax.plot([x for x, _ in pts], [y for _, y in pts], linestyle=ls, label=f"{mode} {lbl}", **STYLE.get(mode, {}))
        if extra_metric:
            for (lbl, mode), pts in sorted(_series(agg, app, extra_metric).items()):
                if mode == "kernel":
                    continue
                ax.plot([x for x, _ in pts], [y for _, y in pts], linestyle=":", marker="x", alpha=0.7,
                        color=STYLE.get(mode, {}).get("color"), label=f"{mode} {lbl} host+engine")
        if app == "redis":  # P=1 and P=16 differ ten-fold
            _size_axes(ax, f"{app} (log scale)", ylabel, _sizes(series), logy=True)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6, ncol=2)
        else:
            _size_axes(ax, app, ylabel, _sizes(series))
            ax.set_ylim(bottom=0)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _latency(agg: dict, path: Path) -> bool:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    axes = axes.flatten()
    any_data = False
    panels = [("redis", "P=1"), ("redis", "P=16"), ("lighttpd", None), ("haproxy", None)]
    for ax, (app, pfilter) in zip(axes[:4], panels):
        sizes: set[int] = set()
        for q, ls in (("p50", "-"), ("p99", "--")):
            for (lbl, mode), pts in sorted(_series(agg, app, q).items()):
                if pfilter and not lbl.endswith(pfilter):
                    continue
                any_data = True
                sizes |= {x for x, _ in pts}
                marker = "v" if lbl.startswith("SET") else STYLE.get(mode, {}).get("marker", "o")
                ax.plot([x for x, _ in pts], [y for _, y in pts], linestyle=ls, marker=marker,
                        color=STYLE.get(mode, {}).get("color"), label=f"{mode} {lbl} {q}")
        _size_axes(ax, f"{app} latency" + (f" ({pfilter})" if pfilter else ""), "ms (log)", sorted(sizes), logy=True)
    # Echo ping-pong p50/p99 and iperf3 throughput as bars, kernel vs PnO.
    for ax, app, metrics, ylabel, title in ((axes[4], "echo", ("p50", "p99"), "µs", "echo 64 B ping-pong RTT"),
                                            (axes[5], "iperf", ("rate",), "MB/s", "bulk single stream (iperf3)")):
        cells = [(k, e) for k, e in agg.items() if k[0] == app and (app != "echo" or "bytes" not in e["params"])]
        labels, groups = [], {}
        for (a, cell), e in cells:
            for met in metrics:
                labels.append(f"{cell} {met}" if len(metrics) > 1 else cell)
                for mode in ("kernel", "pno", "pno-pcie"):
                    if any(mode in e2["modes"] for _, e2 in cells):
                        groups.setdefault(mode, []).append((e["modes"].get(mode) or {}).get(met) or 0)
        if not labels:
            ax.set_visible(False)
            continue
        any_data = True
        width = 0.8 / max(1, len(groups))
        for i, (mode, vals) in enumerate(groups.items()):
            ax.bar([j + i * width for j in range(len(vals))], vals, width, label=mode,
                   color=STYLE.get(mode, {}).get("color"))
        ax.set_xticks([j + width * (len(groups) - 1) / 2 for j in range(len(labels))])
        ax.set_xticklabels(labels, fontsize=8)
        if app == "echo":
            ax.set_yscale("log")
            ylabel += " (log)"
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.suptitle("Latency (medians of p50 solid / p99 dashed) and bulk throughput", fontsize=11)
    fig.tight_layout()
    if any_data:
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return any_data


def make_plots(data: dict, out: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    agg = aggregate(data["samples"])
    made = []
    if _per_app(agg, "rate", "requests/s", out / "rps_vs_size.png", "Throughput vs size (medians)"):
        made.append("rps_vs_size.png")
    if _per_app(agg, "app_cpu_us_per_unit", "host CPU µs per request", out / "host_cpu_per_request.png",
                "Host CPU per request vs size (app process tree; dotted with x: PnO host + engine)",
                extra_metric="host_engine_cpu_us_per_unit"):
        made.append("host_cpu_per_request.png")
    if _latency(agg, out / "latency.png"):
        made.append("latency.png")
    return made
