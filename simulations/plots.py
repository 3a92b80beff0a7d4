"""PNG plots of a sweep: one per (sweep, metric), the metric against the sweep's x parameter.

Other grid keys give one line each; with several seeds a point is the mean and the bar spans
the lowest and highest run.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_sweeps", "LABELS"]

#: Axis labels for parameters and metrics.
LABELS = {
    "delay_mean": "mean delay per mix hop (s)",
    "clients": "number of clients",
    "compromised": "fraction of mixes compromised",
    "lambda_drop": "drop cover rate per client (1/s)",
    "lambda_loop": "loop cover rate per client (1/s)",
    "lambda_payload": "payload rate per client (1/s)",
    "lambda_mix": "mix loop rate (1/s)",
    "real_rate": "real messages per client (1/s)",
    "mixes_per_layer": "mixes per layer",
    "link_latency": "link latency (s)",
    "entropy_bits_mean": "entropy, mean (bits)",
    "entropy_bits_p5": "entropy, 5th percentile (bits)",
    "entropy_bits_p50": "entropy, median (bits)",
    "entropy_bits_p95": "entropy, 95th percentile (bits)",
    "recipient_entropy_bits_mean": "entropy over recipients (bits)",
    "latency_mean_s": "latency, mean (s)",
    "latency_p50_s": "latency, median (s)",
    "latency_p95_s": "latency, p95 (s)",
    "latency_p99_s": "latency, p99 (s)",
    "linking_success_rate": "linking success rate",
    "cover_ratio": "cover packets per real packet",
    "wall_s": "wall time (s)",
    "sim_events": "events simulated",
    "events_per_s": "events per second",
}


def plot_sweeps(spec, rows: list[dict], outdir: Path) -> list[Path]:
    """Draw every plot the sweep file asks for; return the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for sweep in spec.sweeps:
        others = [k for k, _ in sweep.grid if k != sweep.x]
        mine = [r for r in rows if r["sweep"] == sweep.name]
        for metric in sweep.plots:
            fig, ax = plt.subplots(figsize=(5.0, 3.4), dpi=90)
            series: dict[tuple, dict[float, list[float]]] = {}
            for row in mine:
                if row[metric] is None:
                    continue
                key = tuple(row[f"param_{k}"] for k in others)
                series.setdefault(key, {}).setdefault(row[f"param_{sweep.x}"], []).append(row[metric])
            for key, points in series.items():
                xs = sorted(points)
                ys = [sum(points[x]) / len(points[x]) for x in xs]
                lo = [y - min(points[x]) for x, y in zip(xs, ys)]
                hi = [max(points[x]) - y for x, y in zip(xs, ys)]
                label = ", ".join(f"{k}={v}" for k, v in zip(others, key)) or None
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", markersize=4, capsize=2, label=label)
            if sweep.logx:
                ax.set_xscale("log")
            ax.set_xlabel(LABELS.get(sweep.x, sweep.x))
            ax.set_ylabel(LABELS.get(metric, metric))
            ax.grid(True, alpha=0.3)
            if others:
                ax.legend(fontsize=7)
            fig.tight_layout()
            path = outdir / f"{sweep.name}_{metric}.png"
            fig.savefig(path)
            plt.close(fig)
            written.append(path)
    return written
