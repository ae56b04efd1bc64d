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


def _size_axes(ax, title: str, ylabel: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xlabel("size (bytes)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _per_app(agg: dict, metric: str, ylabel: str, path: Path, title: str, extra_metric: str | None = None) -> bool:
    import matplotlib.pyplot as plt

    apps = [a for a in SIZE_APPS if any(k[0] == a for k in agg)]
    if not apps:
        return False
    fig, axes = plt.subplots(1, len(apps), figsize=(5.2 * len(apps), 4.2), squeeze=False)
    dashes = ["-", "--", ":", "-."]
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
                ax.plot([x for x, _ in pts], [y for _, y in pts], linestyle=":", alpha=0.6,
                        label=f"{mode} {lbl} host+engine", **STYLE.get(mode, {}))
        _size_axes(ax, app, ylabel)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _latency(agg: dict, path: Path) -> bool:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    any_data = False
    for ax, app in zip(axes[:2], ("redis", "lighttpd")):
        for q, ls in (("p50", "-"), ("p99", "--")):
            for (lbl, mode), pts in sorted(_series(agg, app, q).items()):
                if app == "redis" and not lbl.startswith("GET"):
                    continue
                any_data = True
                ax.plot([x for x, _ in pts], [y for _, y in pts], linestyle=ls, label=f"{mode} {lbl} {q}",
                        **STYLE.get(mode, {}))
        _size_axes(ax, f"{app} latency" + (" (GET)" if app == "redis" else ""), "ms")
    # Echo ping-pong p50/p99 and iperf3 throughput as bars, kernel vs PnO.
    for ax, app, metrics, ylabel, title in ((axes[2], "echo", ("p50", "p99"), "µs", "echo 64 B ping-pong RTT"),
                                            (axes[3], "iperf", ("rate",), "MB/s", "bulk single stream")):
        cells = [(k, e) for k, e in agg.items() if k[0] == app and (app != "echo" or "bytes" not in e["params"])]
        labels, groups = [], {}
        for (a, cell), e in cells:
            for met in metrics:
                labels.append(f"{cell} {met}" if len(metrics) > 1 else cell)
                for mode, m in e["modes"].items():
                    groups.setdefault(mode, []).append(m.get(met) or 0)
        if not labels:
            ax.set_visible(False)
            continue
        any_data = True
        width = 0.8 / max(1, len(groups))
        for i, (mode, vals) in enumerate(sorted(groups.items())):
            ax.bar([j + i * width for j in range(len(vals))], vals, width, label=mode,
                   color=STYLE.get(mode, {}).get("color"))
        ax.set_xticks([j + width * (len(groups) - 1) / 2 for j in range(len(labels))])
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    if any_data:
        fig.savefig(path, dpi=110)
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
                "Host CPU per request vs size (app process tree; dotted: PnO host + engine)",
                extra_metric="host_engine_cpu_us_per_unit"):
        made.append("host_cpu_per_request.png")
    if _latency(agg, out / "latency.png"):
        made.append("latency.png")
    return made
