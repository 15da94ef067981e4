#!/usr/bin/env python
"""Plots and a markdown table from `benchmarks/results/convergence.csv` (nothing typed by hand).

python benchmarks/report.py [--csv benchmarks/results/convergence.csv] [--out benchmarks/results]
"""

import argparse
import csv
import math
import os
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FIELDS = [
    "dataset",
    "method",
    "seed",
    "step",
    "examples",
    "train_seconds",
    "accuracy",
    "weighted_f1",
    "format_rate",
    "guess_accuracy",
    "mean_generated_tokens",
]


def read_rows(path: str) -> list[dict]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in ("step", "examples", "seed"):
            row[key] = int(row[key])
        for key in ("train_seconds", "accuracy", "weighted_f1", "format_rate", "guess_accuracy"):
            row[key] = float(row[key]) if row.get(key) not in (None, "") else math.nan
    return rows


def mean_ci(values: list[float], n_test: int) -> tuple[float, float]:
    """Mean over seeds and a 95% half-width from the test-set binomial error (seeds averaged)."""
    mean = sum(values) / len(values)
    return mean, 1.96 * math.sqrt(max(mean * (1 - mean), 1e-12) / (n_test * len(values)))


def plot(rows: list[dict], dataset: str, out: str) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    by_method: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_method[row["method"]][row["examples"]].append(row)
    for method, points in sorted(by_method.items()):
        xs = sorted(points)
        acc = [sum(r["accuracy"] for r in points[x]) / len(points[x]) for x in xs]
        secs = [sum(r["train_seconds"] for r in points[x]) / len(points[x]) for x in xs]
        axes[0].plot(xs, acc, marker="o", label=method)
        axes[1].plot([s / 60 for s in secs], acc, marker="o", label=method)
    axes[0].set(xlabel="training examples seen", ylabel="answer accuracy", title=f"{dataset}: accuracy vs examples")
    axes[1].set(xlabel="training wall-clock (min)", ylabel="answer accuracy", title=f"{dataset}: accuracy vs time")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = os.path.join(out, f"convergence_{dataset}.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def cell(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def table(rows: list[dict], n_test: int) -> str:
    final: dict[tuple[str, str], list[dict]] = defaultdict(list)
    last = defaultdict(int)
    for row in rows:
        key = (row["dataset"], row["method"], row["seed"])
        last[key] = max(last[key], row["examples"])
    for row in rows:
        if row["examples"] == last[(row["dataset"], row["method"], row["seed"])]:
            final[(row["dataset"], row["method"])].append(row)
    lines = [
        "| dataset | method | seeds | examples | accuracy (95% CI) | weighted F1 | format rate | guess acc. "
        "| train min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (dataset, method), runs in sorted(final.items()):
        acc, half = mean_ci([r["accuracy"] for r in runs], n_test)
        avg = {
            key: sum(r[key] for r in runs) / len(runs)
            for key in ("weighted_f1", "format_rate", "guess_accuracy", "train_seconds")
        }
        lines.append(
            f"| {dataset} | {method} | {len(runs)} | {runs[0]['examples']} | {acc:.3f} ± {half:.3f} | "
            f"{avg['weighted_f1']:.3f} | {avg['format_rate']:.3f} | {cell(avg['guess_accuracy'])} | "
            f"{avg['train_seconds'] / 60:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--csv", default="benchmarks/results/convergence.csv")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--test_size", type=int, default=200, help="held-out texts per evaluation (for the CI)")
    args = parser.parse_args()
    rows = read_rows(args.csv)
    for dataset in sorted({r["dataset"] for r in rows}):
        print(f"wrote {plot([r for r in rows if r['dataset'] == dataset], dataset, args.out)}")
    markdown = table(rows, args.test_size)
    with open(os.path.join(args.out, "convergence.md"), "w") as f:
        f.write(markdown + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
