import csv
import math
import os

import pytest
import report


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
        + run_rows("sft_plateau", 0, {0: 0.0, 160: 0.4, 320: 0.5, 480: 0.5})
        + run_rows("gta", 1, {0: 0.0, 80: 0.3})
    )
    for row in rows:
        row["train_size"] = 160
    complete, short = report.split_incomplete(rows)
    assert short == ["d/gta/seed 1"] and {r["method"] for r in complete} == {"gta", "sft_plateau"}
    assert report.final_accuracy(complete, "d", "sft_plateau") == (0.5, 1)


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
