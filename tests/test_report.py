import csv
import math
import os
import statistics

import pytest
import report
import scipy.stats


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
                            train_size=20,
                            tfidf_accuracy=0.4 + 0.1 * seed if step else "",
                        )
                    )
    rows = report.read_rows(str(path))
    markdown = report.table(rows, n_test=200)
    assert "| TF-IDF+LR, same texts |" in markdown
    assert "| d | gta | 2 | 20 | 0.500 [0.451, 0.549] | 0.500 / 0.500 | 0.450 | 0.500 |" in markdown
    assert "| d | sft | 2 | 20 | 0.300 [0.257, 0.347] | 0.300 / 0.300 | 0.450 | 0.300 |" in markdown
    png = report.plot(rows, "d", str(tmp_path), stem="convergence_x")
    assert png.endswith("convergence_x_d.png") and os.path.getsize(png) > 1000
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
    assert first.endswith("met; GTA's mean curve reached it after 20 examples (per GTA seed: 20)")
    assert "+0.010" in versus_sft and "not met; the interval contains +0.02" in versus_sft
    half = 1.96 * ((0.5 * 0.5 + 0.3 * 0.7) / 200) ** 0.5
    assert f"+0.200 (95% CI {0.2 - half:+.3f} to {0.2 + half:+.3f}, seeds 1 vs 1), met; the interval" in versus_grpo
    assert "settles it (one seed: the interval leaves out the spread between seeds)" in versus_grpo
    assert versus_rl.startswith("GTA - GTA(RL) > 0: +0.300") and "met; the interval settles it" in versus_rl
    late = run_rows("grpo", 0, {0: 0.0, 80: 0.30}) + run_rows("gta", 0, {0: 0.0, 40: 0.3, 80: 0.4})
    assert "not met; GTA's mean curve reached it after 40 examples" in report.hypotheses(late, "d", 200)[0]
    assert report.hypotheses(run_rows("gta", 0, {0: 0.1, 80: 0.3}), "d", 200) == []


def test_hypotheses_intervals_include_the_spread_between_seeds():
    """Three seeds per method: the seeds' variance joins the test sample's at Student's t (Welch's degrees of freedom),
    so a mean gain that one seed out of three contradicts is not settled; GTA is held against SFT at its plateau."""
    finals = {"gta": (0.50, 0.10, 0.60), "grpo": (0.20, 0.22, 0.24), "sft": (0.1, 0.1, 0.1), "sft_plateau": (0.3,) * 3}
    rows = [
        row
        for method, accuracies in finals.items()
        for seed, accuracy in enumerate(accuracies)
        for row in run_rows(method, seed, {0: 0.0, 40: accuracy - 0.05 * (seed == 1), 160: accuracy})
    ]
    first, versus_sft, versus_grpo = report.hypotheses(rows, "d", n_test=200)
    assert first.endswith("reached it after 40 examples (per GTA seed: 40 / never / 40)")
    assert versus_sft.startswith("GTA - SFT at its plateau > +0.02: +0.100")
    gta, grpo = finals["gta"], finals["grpo"]
    seed_parts = [statistics.variance(values) / 3 for values in (gta, grpo)]
    test_part = (0.4 * 0.6 + 0.22 * 0.78) / 200
    degrees = sum(seed_parts) ** 2 / sum(part**2 / 2 for part in seed_parts)
    half = scipy.stats.t.ppf(0.975, degrees) * (test_part + sum(seed_parts)) ** 0.5
    assert half > 0.5 and 2 < degrees < 2.1  # GTA's seeds dominate: close to a 2-degree t
    difference, width, with_seeds = report.difference_ci(list(gta), list(grpo), 200)
    assert (difference, width, with_seeds) == (pytest.approx(0.18), pytest.approx(half), True)
    assert "seeds 3 vs 3), met; the interval contains +0.02, so these runs cannot settle it" in versus_grpo
    steady = report.difference_ci([0.5] * 3, [0.3] * 3, 200)  # no spread between seeds: the test sample's error
    assert steady[1] == pytest.approx(1.96 * ((0.25 + 0.21) / 200) ** 0.5) and steady[2]


def test_unfinished_runs_are_left_out():
    rows = run_rows("gta", 0, {0: 0.0, 80: 0.5}) + run_rows("gta", 1, {0: 0.0, 40: 0.2})
    complete, short = report.split_incomplete(rows)
    assert {row["seed"] for row in complete} == {0} and short == ["d/gta/seed 1"]


def test_legacy_rows_without_baseline_show_a_dash(tmp_path):
    path = tmp_path / "legacy.csv"
    columns = [name for name in report.FIELDS if name not in ("train_size", "tfidf_accuracy")]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for row in run_rows("gta", 0, {0: 0.0, 80: 0.5}):
            writer.writerow({**row, "mean_generated_tokens": 5})
    rows = report.read_rows(str(path))
    assert rows[0]["train_size"] is None and math.isnan(rows[0]["tfidf_accuracy"])
    assert "| d | gta | 1 | 80 | 0.500 [0.431, 0.569] | 0.500 | - |" in report.table(rows, 200)
    assert os.path.getsize(report.plot(rows, "d", str(tmp_path))) > 1000


def test_sft_to_its_ceiling_does_not_shorten_the_others():
    """A run counts as complete once it went through its own training sample; sft_plateau's extra epochs do not
    raise the budget the other runs are held to."""
    rows = (
        run_rows("gta", 0, {0: 0.0, 160: 0.5})
        + run_rows("sft_plateau", 0, {0: 0.0, 160: 0.4, 320: 0.5, 480: 0.45, 640: 0.5})
        + run_rows("gta", 1, {0: 0.0, 80: 0.3})
    )
    for row in rows:
        row["train_size"] = 160
    complete, short = report.split_incomplete(rows)
    assert short == ["d/gta/seed 1"] and {r["method"] for r in complete} == {"gta", "sft_plateau"}
    assert report.final_accuracies(complete, "d", "sft_plateau") == [0.5]  # its best evaluation, not its last..
    assert [row["examples"] for row in report.final_rows(complete)[("d", "sft_plateau")]] == [320]  # ..the earliest


def test_main_names_outputs_after_the_csv_and_copies_plots_for_the_docs(tmp_path, monkeypatch):
    path = tmp_path / "convergence_cpu.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, report.FIELDS)
        writer.writeheader()
        for row in run_rows("gta", 0, {0: 0.0, 80: 0.5}) + run_rows("sft", 0, {0: 0.0, 80: 0.4}):
            writer.writerow({**row, "train_size": 80, "tfidf_accuracy": 0.45 if row["examples"] else ""})
    out, docs = tmp_path / "out", tmp_path / "docs" / "img"
    out.mkdir()
    argv = ["report.py", "--csv", str(path), "--out", str(out), "--docs_img", str(docs)]
    monkeypatch.setattr("sys.argv", argv)
    report.main()
    assert (out / "convergence_cpu.md").read_text().count("| d |") == 2
    assert (out / "convergence_cpu_d.png").read_bytes() == (docs / "convergence_cpu_d.png").read_bytes()
    monkeypatch.setattr("sys.argv", argv[:-1] + [str(out)])  # the docs' copies may go to the output folder itself
    report.main()
    assert sorted(p.name for p in out.iterdir()) == ["convergence_cpu.md", "convergence_cpu_d.png"]
