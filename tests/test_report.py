import csv
import importlib.util
import os

import pytest

spec = importlib.util.spec_from_file_location(
    "report", os.path.join(os.path.dirname(__file__), "..", "benchmarks", "report.py")
)
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def test_report_tables_and_plots_come_from_the_csv(tmp_path):
    path = tmp_path / "convergence.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, report.FIELDS)
        writer.writeheader()
        for method, final in (("gta", 0.5), ("sft", 0.3)):
            for seed in (0, 1):
                for step in (0, 10):
                    accuracy = final if step else 0.1
                    writer.writerow(
                        dict(
                            dataset="d",
                            method=method,
                            seed=seed,
                            step=step,
                            examples=step * 2,
                            train_seconds=step * 6.0,
                            accuracy=accuracy,
                            weighted_f1=accuracy,
                            format_rate=1.0,
                            guess_accuracy=accuracy,
                            mean_generated_tokens=5,
                        )
                    )
    rows = report.read_rows(str(path))
    markdown = report.table(rows, n_test=200)
    assert "| d | gta | 2 | 20 | 0.500 [0.451, 0.549] | 0.500 / 0.500 |" in markdown
    assert "| d | sft | 2 | 20 | 0.300 [0.257, 0.347] | 0.300 / 0.300 |" in markdown
    png = report.plot(rows, "d", str(tmp_path))
    assert os.path.getsize(png) > 1000
    mean, low, high = report.mean_ci([0.0], 200)
    assert mean == 0.0 and low == 0.0 and high == pytest.approx(0.0188, abs=1e-4)  # not an empty interval at 0


def run_rows(method, seed, curve, dataset="d"):
    """CSV rows of one run: `curve` maps examples seen to accuracy."""
    return [
        dict(
            dataset=dataset,
            method=method,
            seed=seed,
            step=examples,
            examples=examples,
            train_seconds=examples * 1.0,
            accuracy=accuracy,
            weighted_f1=accuracy,
            format_rate=1.0,
            guess_accuracy=accuracy,
        )
        for examples, accuracy in curve.items()
    ]


def test_hypotheses_verdicts_and_intervals():
    rows = (
        run_rows("grpo", 0, {0: 0.0, 40: 0.1, 80: 0.30})
        + run_rows("gta", 0, {0: 0.0, 20: 0.35, 80: 0.50})
        + run_rows("sft", 0, {0: 0.0, 80: 0.49})
        + run_rows("gta_rl", 0, {0: 0.0, 80: 0.20})
    )
    first, versus_sft, versus_grpo, versus_rl = report.hypotheses(rows, "d", n_test=200)
    assert first.endswith("met; GTA reached it after 20 examples")
    assert "+0.010" in versus_sft and "not met; the interval contains +0.02" in versus_sft
    half = 1.96 * ((0.5 * 0.5 + 0.3 * 0.7) / 200) ** 0.5
    assert f"+0.200 (95% CI {0.2 - half:+.3f} to {0.2 + half:+.3f}), met; the interval settles it" in versus_grpo
    assert versus_rl.startswith("GTA - GTA(RL) > 0: +0.300") and "met; the interval settles it" in versus_rl
    late = run_rows("grpo", 0, {0: 0.0, 80: 0.30}) + run_rows("gta", 0, {0: 0.0, 40: 0.3, 80: 0.4})
    assert "not met; GTA reached it after 40 examples" in report.hypotheses(late, "d", 200)[0]
    assert report.hypotheses(run_rows("gta", 0, {0: 0.1, 80: 0.3}), "d", 200) == []


def test_unfinished_runs_are_left_out():
    rows = run_rows("gta", 0, {0: 0.0, 80: 0.5}) + run_rows("gta", 1, {0: 0.0, 40: 0.2})
    complete, short = report.split_incomplete(rows)
    assert {row["seed"] for row in complete} == {0} and short == ["d/gta/seed 1"]
