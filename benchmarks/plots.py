"""PNG report: latency CDF per scenario and throughput vs concurrency (floor ceiling alongside)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_report_png(results: dict, path: Path, peers: dict | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if peers else 2
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5))
    cdf, throughput = axes[0], axes[1]
    for name, result in results["scenarios"].items():
        samples = np.sort(result["http"].get("samples_ms", []))
        if samples.size:
            cdf.plot(samples, np.arange(1, samples.size + 1) / samples.size, label=name)
    cdf.set(xscale="log", xlabel="/rerank latency (ms, log)", ylabel="share of requests", title="Latency CDF per scenario")
    cdf.axhline(0.99, color="grey", linewidth=0.6, linestyle=":")
    cdf.legend(fontsize=7)

    series: dict[str, list[tuple[int, float, float]]] = {}
    for result in results["scenarios"].values():
        s = result["scenario"]
        key = f"{s['backend']} {s['model']} {s['candidates']} cand."
        series.setdefault(key, []).append((s["concurrency"], result["http"]["requests_per_s"],
                                           result["floor"]["ceiling_requests_per_s"]))
    for key, points in series.items():
        points.sort()
        line, = throughput.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=key)
        throughput.plot([p[0] for p in points], [p[2] for p in points], linestyle="--", color=line.get_color(), linewidth=0.8)
    throughput.set(xscale="log", yscale="log", xlabel="concurrency", ylabel="requests / s (log)",
                   title="Throughput vs concurrency (dashed: floor ceiling)")
    throughput.legend(fontsize=7)

    if peers:
        axis = axes[2]
        for name, result in peers.items():
            points = sorted((int(c), r["p99_ms"]) for c, r in result.get("concurrency", {}).items())
            if points:
                axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        axis.set(yscale="log", xlabel="concurrency", ylabel="p99 ms (log)", title="Peers: p99 on the same payloads")
        axis.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
