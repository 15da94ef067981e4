"""benchmarks/warmup.py end to end on a tiny model: the table and its JSON come from one run."""

import json
import sys

import warmup


def test_warmup_benchmark_writes_its_table(tmp_path, model_dir, monkeypatch):
    argv = ["warmup.py", "--model", model_dir, "--output_dir", str(tmp_path), "--threads", "1", "--steps", "1"]
    argv += ["--eval_samples", "3", "--group_size", "2", "--formats", "gta", "--variants", "none", "random"]
    monkeypatch.setattr(sys, "argv", argv)
    warmup.main()
    results = json.loads((tmp_path / "warmup.json").read_text())
    assert [(row["format"], row["warmup"]) for row in results["rows"]] == [("gta", "none"), ("gta", "random")]
    for row in results["rows"]:
        assert row["group_size"] == 2 and 0 <= row["groups_with_signal"] <= 1 and 0 <= row["labels_per_group"] <= 2
        assert sum(row["sampled_answers"].values()) == round(row["sampled_in_label_set"] * 3 * 2)
    table = (tmp_path / "warmup.md").read_text()
    assert table.count("| gta |") == 2 and "3 hwu64-scenario test texts (18 labels)" in table
    (tmp_path / "warmup.md").unlink()
    monkeypatch.setattr(sys, "argv", ["warmup.py", "--table_only", "--output_dir", str(tmp_path)])
    warmup.main()  # the table again, from the JSON alone
    assert (tmp_path / "warmup.md").read_text() == table
