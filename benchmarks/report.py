#!/usr/bin/env python
"""Plots and a markdown table from a `convergence.py` CSV (nothing typed by hand).

python benchmarks/report.py [--csv benchmarks/results/convergence.csv] [--out benchmarks/results] [--docs_img docs/img]

Files are named after the CSV: `convergence_cpu.csv` gives `convergence_cpu.md` and `convergence_cpu_<dataset>.png`.
The plots are copied to `--docs_img` too, where the documentation site (docs_dir `docs/`) can show them.
"""

import argparse
import csv
import math
import os
import shutil
import statistics
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from scipy.stats import t as t_distribution  # noqa: E402

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
    "train_size",  # distinct texts of the run's training sample
    "tfidf_accuracy",  # TF-IDF+LR trained on the texts the run had seen by then (see convergence.py)
]
TFIDF = "TF-IDF+LR"


def read_rows(path: str) -> list[dict]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in ("step", "examples", "seed"):
            row[key] = int(row[key])
        for key in ("train_seconds", "accuracy", "weighted_f1", "format_rate", "guess_accuracy", "tfidf_accuracy"):
            row[key] = float(row[key]) if row.get(key) not in (None, "") else math.nan
        row["train_size"] = int(row["train_size"]) if row.get("train_size") else None
    return rows


def mean_ci(values: list[float], n_test: int) -> tuple[float, float, float]:
    """Mean over seeds and its 95% Wilson interval from the test-set binomial error (seeds averaged); unlike the
    normal approximation, the interval of an accuracy of 0 or 1 is not empty."""
    mean, n, z = sum(values) / len(values), n_test * len(values), 1.96
    centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return mean, max(centre - half, 0.0), min(centre + half, 1.0)


def mean_by(rows: list[dict], x: str, y: str) -> dict[float, float]:
    """Mean of `y` over the rows at each value of `x`, NaN values left out."""
    points: dict[float, list[float]] = defaultdict(list)
    for row in rows:
        if not math.isnan(row[y]):
            points[row[x]].append(row[y])
    return {key: sum(values) / len(values) for key, values in sorted(points.items())}


def plot(rows: list[dict], dataset: str, out: str, stem: str = "convergence") -> str:
    """Accuracy against training examples seen and against training wall-clock, one curve per method (means over
    seeds), with TF-IDF+LR trained on the same examples: a dashed curve against examples, and against wall-clock a
    dotted line at its accuracy on the whole training sample (it trains in well under a second)."""
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
    baseline = mean_by(rows, "examples", "tfidf_accuracy")
    if baseline:
        label = f"{TFIDF} (same examples)"
        axes[0].plot(list(baseline), list(baseline.values()), linestyle="--", color="gray", label=label)
        # every complete run's last evaluation had seen its whole sample
        whole = [r["tfidf_accuracy"] for runs in final_rows(rows).values() for r in runs]
        whole = [value for value in whole if not math.isnan(value)]
        if whole:
            axes[1].axhline(sum(whole) / len(whole), linestyle=":", color="gray", label=f"{TFIDF} (whole sample)")
    axes[0].set(xlabel="training examples seen", ylabel="answer accuracy", title=f"{dataset}: accuracy vs examples")
    axes[1].set(xlabel="training wall-clock (min)", ylabel="answer accuracy", title=f"{dataset}: accuracy vs time")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    path = os.path.join(out, f"{stem}_{dataset}.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def cell(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def _final_order(row: dict) -> tuple:
    """Which evaluation of a run is its final one: the last, or for `sft_plateau` the best (the earliest of ties)."""
    return (row["accuracy"], -row["examples"]) if row["method"] == "sft_plateau" else (row["examples"],)


def final_rows(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Per (dataset, method), each seed's final evaluation: the last one; for `sft_plateau` the best one (SFT at its
    ceiling: the run stops only after epochs that did not beat it, so its last evaluation may be below it)."""
    last: dict[tuple[str, str, int], dict] = {}
    for row in rows:
        key = (row["dataset"], row["method"], row["seed"])
        if key not in last or _final_order(row) > _final_order(last[key]):
            last[key] = row
    final: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for (dataset, method, _), row in sorted(last.items()):
        final[(dataset, method)].append(row)
    return final


def table(rows: list[dict], n_test: int) -> str:
    final = final_rows(rows)
    lines = [
        f"| dataset | method | seeds | examples | accuracy [95% CI] | per seed | {TFIDF}, same texts | weighted F1 "
        "| format rate | guess acc. | train min |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (dataset, method), runs in sorted(final.items()):
        acc, low, high = mean_ci([r["accuracy"] for r in runs], n_test)
        per_seed = " / ".join(f"{r['accuracy']:.3f}" for r in runs)
        avg = {
            key: sum(r[key] for r in runs) / len(runs)
            for key in ("weighted_f1", "format_rate", "guess_accuracy", "train_seconds", "tfidf_accuracy")
        }
        lines.append(
            f"| {dataset} | {method} | {len(runs)} | {runs[0]['examples']} | {acc:.3f} [{low:.3f}, {high:.3f}] | "
            f"{per_seed} | {cell(avg['tfidf_accuracy'])} | "
            f"{avg['weighted_f1']:.3f} | {avg['format_rate']:.3f} | {cell(avg['guess_accuracy'])} | "
            f"{avg['train_seconds'] / 60:.1f} |"
        )
    return "\n".join(lines)


def split_incomplete(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """Rows of the runs that went through their training sample (`train_size` texts) at least once, and the names of
    those still short of it. Rows without `train_size` count the longest run of their dataset as the budget."""
    budget: dict[str, int] = defaultdict(int)
    reached: dict[tuple[str, str, int], int] = defaultdict(int)
    size: dict[tuple[str, str, int], int] = {}
    for row in rows:
        budget[row["dataset"]] = max(budget[row["dataset"]], row["examples"])
        key = (row["dataset"], row["method"], row["seed"])
        reached[key] = max(reached[key], row["examples"])
        if row.get("train_size"):
            size[key] = row["train_size"]
    short = {key for key, examples in reached.items() if examples < size.get(key, budget[key[0]])}
    complete = [row for row in rows if (row["dataset"], row["method"], row["seed"]) not in short]
    return complete, [f"{dataset}/{method}/seed {seed}" for dataset, method, seed in sorted(short)]


def seed_curves(rows: list[dict], dataset: str, method: str) -> dict[int, dict[int, float]]:
    """Each seed's accuracy at each evaluated budget (training examples seen)."""
    curves: dict[int, dict[int, float]] = defaultdict(dict)
    for row in rows:
        if row["dataset"] == dataset and row["method"] == method:
            curves[row["seed"]][row["examples"]] = row["accuracy"]
    return {seed: dict(sorted(curve.items())) for seed, curve in sorted(curves.items())}


def mean_curve(rows: list[dict], dataset: str, method: str) -> dict[int, float]:
    """Accuracy at each evaluated budget (training examples seen), averaged over the seeds evaluated there."""
    points: dict[int, list[float]] = defaultdict(list)
    for curve in seed_curves(rows, dataset, method).values():
        for examples, accuracy in curve.items():
            points[examples].append(accuracy)
    return {examples: sum(values) / len(values) for examples, values in sorted(points.items())}


def final_accuracies(rows: list[dict], dataset: str, method: str) -> list[float]:
    """Each seed's final accuracy (empty when the method was not run)."""
    return [r["accuracy"] for r in final_rows(rows).get((dataset, method), [])]


def difference_ci(a: list[float], b: list[float], n_test: int) -> tuple[float, float, bool]:
    """Difference of two methods' mean final accuracies (per-seed lists), a 95% half-width, and whether the half-width
    includes the spread between seeds.

    Two errors add up. The test sample: each mean accuracy p carries p(1-p)/n_test, and every seed is scored on the
    same test texts, so more seeds do not shrink it. The seeds: a k-seed mean carries s^2/k, s^2 the seeds' sample
    variance. With at least 2 seeds per method the half-width takes Student's t at the Welch-Satterthwaite degrees of
    freedom of the seed part (wide at 3 seeds, which is what 3 seeds can tell); with one seed the spread between
    seeds is unknown, and the interval covers the test sample only.
    """
    means = [sum(values) / len(values) for values in (a, b)]
    variance = sum(max(p * (1 - p), 1e-12) / n_test for p in means)
    if min(len(a), len(b)) < 2:
        return means[0] - means[1], 1.96 * math.sqrt(variance), False
    seed_parts = [statistics.variance(values) / len(values) for values in (a, b)]
    denominator = sum(part**2 / (len(values) - 1) for part, values in zip(seed_parts, (a, b), strict=True))
    critical = t_distribution.ppf(0.975, sum(seed_parts) ** 2 / denominator) if denominator > 0 else 1.96
    return means[0] - means[1], critical * math.sqrt(variance + sum(seed_parts)), True


def margin_verdict(name: str, a: list[float], b: list[float], margin: float, n_test: int) -> str:
    """`name` is "a - b > margin": the point estimate decides met / not met, the interval whether the data can."""
    difference, half, with_seeds = difference_ci(a, b, n_test)
    met = "met" if difference > margin else "not met"
    if difference - half > margin or difference + half <= margin:
        settled = "the interval settles it"
    else:
        settled = f"the interval contains {margin:+.2f}, so these runs cannot settle it"
    if not with_seeds:
        settled += " (one seed: the interval leaves out the spread between seeds)"
    seeds = f"seeds {len(a)} vs {len(b)}"
    return (
        f"{name}: {difference:+.3f} (95% CI {difference - half:+.3f} to {difference + half:+.3f}, {seeds}), {met}; "
        f"{settled}"
    )


def first_reach(curve: dict[int, float], target: float) -> int | None:
    """The first budget at which `curve` reaches `target` (None: never)."""
    return next((examples for examples, accuracy in curve.items() if accuracy >= target), None)


def examples_to_reach(rows: list[dict], dataset: str) -> str:
    """Hypothesis 1: GTA reaches GRPO's final accuracy with <= 1/4 of GRPO's examples (on GTA's mean curve over seeds,
    and per GTA seed, so that the spread between seeds shows)."""
    grpo_finals = final_accuracies(rows, dataset, "grpo")
    budget, target = max(mean_curve(rows, dataset, "grpo")), sum(grpo_finals) / len(grpo_finals)
    claim = f"GTA reaches GRPO's final accuracy ({target:.3f}) with <= 1/4 of GRPO's {budget} examples"
    per_seed = [first_reach(curve, target) for curve in seed_curves(rows, dataset, "gta").values()]
    seeds = " / ".join("never" if reached is None else str(reached) for reached in per_seed)
    reached = first_reach(mean_curve(rows, dataset, "gta"), target)
    if reached is None:
        return f"{claim}: not met; GTA's mean curve never reached it (per GTA seed: {seeds})"
    met = "met" if reached <= budget / 4 else "not met"
    trivial = " (before any RL step: trivially)" if reached == 0 else ""
    return f"{claim}: {met}; GTA's mean curve reached it after {reached} examples{trivial} (per GTA seed: {seeds})"


def hypotheses(rows: list[dict], dataset: str, n_test: int) -> list[str]:
    """The benchmarks issue's three hypotheses, with figures and verdicts (skipped when an arm is missing). GTA is
    held against SFT at its plateau (`sft_plateau`) where that was run, else against SFT on the same budget."""
    final = {m: final_accuracies(rows, dataset, m) for m in ("sft", "sft_plateau", "grpo", "gta", "gta_rl")}
    lines = [examples_to_reach(rows, dataset)] if final["gta"] and final["grpo"] else []
    sft = ("sft_plateau", "GTA - SFT at its plateau > +0.02") if final["sft_plateau"] else ("sft", "GTA - SFT > +0.02")
    for other, name in (sft, ("grpo", "GTA - GRPO > +0.02"), ("gta_rl", "GTA - GTA(RL) > 0")):
        if final["gta"] and final[other]:
            margin = 0.0 if other == "gta_rl" else 0.02
            lines.append(margin_verdict(name, final["gta"], final[other], margin, n_test))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--csv", default="benchmarks/results/convergence.csv")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--docs_img", default="docs/img", help="where the documentation site's copies of the plots go")
    parser.add_argument("--test_size", type=int, default=200, help="held-out texts per evaluation (for the CI)")
    args = parser.parse_args()
    stem = os.path.splitext(os.path.basename(args.csv))[0]
    rows, incomplete = split_incomplete(read_rows(args.csv))
    os.makedirs(args.docs_img, exist_ok=True)
    for dataset in sorted({r["dataset"] for r in rows}):
        path = plot([r for r in rows if r["dataset"] == dataset], dataset, args.out, stem)
        if not os.path.samefile(args.out, args.docs_img):
            shutil.copyfile(path, os.path.join(args.docs_img, os.path.basename(path)))
        print(f"wrote {path} and its copy in {args.docs_img}")
    markdown = table(rows, args.test_size)
    for dataset in sorted({r["dataset"] for r in rows}):
        verdicts = hypotheses(rows, dataset, args.test_size)
        if verdicts:
            markdown += (
                f"\n\nHypotheses on {dataset} (final accuracies averaged over seeds; the 95% intervals add the "
                "test sample's error and, with two seeds or more per method, the spread between seeds, at Student's "
                "t):\n\n"
            )
            markdown += "\n".join(f"- {line}" for line in verdicts)
    if incomplete:
        markdown += "\n\nLeft out, not finished yet: " + ", ".join(incomplete) + "."
    with open(os.path.join(args.out, f"{stem}.md"), "w") as f:
        f.write(markdown + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
