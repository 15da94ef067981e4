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
    assert "| d | gta | 2 | 20 | 0.500 ± 0.049 |" in markdown
    assert "| d | sft | 2 | 20 | 0.300 ± 0.045 |" in markdown
    png = report.plot(rows, "d", str(tmp_path))
    assert os.path.getsize(png) > 1000
    assert report.mean_ci([0.5], 200)[1] == pytest.approx(1.96 * (0.25 / 200) ** 0.5)
