#!/usr/bin/env python3
"""Plots `waybill bench` results files (the summaries BENCHMARKS.md quotes).

    scripts/plot-bench.py --scale-out s1-r1.json s1-r2.json s1-r4.json \
        [--scale-out-before old-r1.json ...] --latency lat.json --out docs/bench

writes <out>-scale-out.png (S1 deliveries/s by delivery processes, with
min–max bars and the line of perfect scaling from one process) and
<out>-latency.png (POST→arrival p50 / p99 / p99.9 per workload, log scale).
Matplotlib is installed on first use into ~/.cache/waybill/plot-venv.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys

VENV = pathlib.Path(os.environ.get("WAYBILL_CACHE", pathlib.Path.home() / ".cache/waybill")) / "plot-venv"


def ensure_matplotlib():
    try:
        import matplotlib  # noqa: F401
        return
    except ImportError:
        pass
    python = VENV / "bin/python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "matplotlib==3.10.7"], check=True)
    os.execv(str(python), [str(python), *sys.argv])


def summaries(paths):
    out = []
    for path in paths:
        out.extend(json.loads(pathlib.Path(path).read_text())["summary"])
    return out


def s1(paths):
    return sorted((s for s in summaries(paths) if s["workload"] == "S1"),
                  key=lambda s: s["delivery_replicas"])


def scale_out(paths, before, out):
    import matplotlib.pyplot as plt
    rows = s1(paths)
    if not rows:
        return
    n = [s["delivery_replicas"] for s in rows]
    median = [s["delivered_per_s"]["median"] for s in rows]
    low = [m - s["delivered_per_s"]["min"] for m, s in zip(median, rows)]
    high = [s["delivered_per_s"]["max"] - m for m, s in zip(median, rows)]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(n, median, yerr=[low, high], marker="o", capsize=4, label="measured (median, min–max)")
    one = median[n.index(1)] if 1 in n else median[0] / n[0]
    ax.plot(n, [one * k for k in n], linestyle="--", color="grey", label="one process × N")
    if before:
        old = s1(before)
        ax.plot([s["delivery_replicas"] for s in old], [s["delivered_per_s"]["median"] for s in old],
                marker="x", color="tab:red", linestyle=":",
                label="before: retry tiers in the deliveries group")
    for x, y in zip(n, median):
        ax.annotate(f"{y:,.0f}/s", (x, y), textcoords="offset points", xytext=(6, -12))
    ax.set_xlabel("waybill delivery processes")
    ax.set_ylabel("deliveries/s")
    ax.set_xticks(n)
    ax.set_title("S1: 200 subscriptions, receivers answer after 50 ms,\n"
                 "max_in_flight_total 64, 12 partitions, Apache Kafka, 2 cores")
    ax.legend()
    fig.tight_layout()
    fig.savefig(f"{out}-scale-out.png", dpi=110)


def latency(paths, out):
    """One group of bars per workload and results file (e.g. before and
    after a change), with the targets as lines."""
    import matplotlib.pyplot as plt
    groups = []
    for path in paths:
        label = pathlib.Path(path).stem
        for s in summaries([path]):
            if s["workload"] in ("W3", "L1", "L2"):
                groups.append((f"{s['workload']}\n{label}", s))
    if not groups:
        return
    fig, ax = plt.subplots(figsize=(1.6 * len(groups) + 2.5, 4.2))
    width = 0.27
    for i, (key, label) in enumerate([("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")]):
        xs = [k + (i - 1) * width for k in range(len(groups))]
        values = [s[key]["median"] for _, s in groups]
        bars = ax.bar(xs, values, width, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.axhline(2.5, color="tab:blue", linestyle="--", linewidth=1, label="target p50 2.5 ms")
    ax.axhline(10, color="tab:orange", linestyle="--", linewidth=1, label="target p99 10 ms")
    ax.set_xticks(range(len(groups)), [g for g, _ in groups])
    ax.set_ylabel("POST → arrival, ms (median of runs)")
    ax.set_title("Open-loop latency, three processes on Apache Kafka, 2 cores\n"
                 "L1: 400 events/s; L2: 150 events/s, 10 subscriptions")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{out}-latency.png", dpi=110)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale-out", nargs="*", default=[])
    parser.add_argument("--scale-out-before", nargs="*", default=[])
    parser.add_argument("--latency", nargs="*", default=[])
    parser.add_argument("--out", default="docs/bench")
    args = parser.parse_args()
    ensure_matplotlib()
    import matplotlib
    matplotlib.use("Agg")
    scale_out(args.scale_out, args.scale_out_before, args.out)
    latency(args.latency, args.out)


if __name__ == "__main__":
    main()
