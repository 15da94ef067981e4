"""Dataset names: built-in data, local folders and files, a Hub repository on disk, Hub entries (faked: tests never
touch the network), errors."""

import json
from importlib.resources import files

import datasets
import pandas as pd
import pytest

from trl_gta import registry
from trl_gta.registry import (
    DatasetUnavailableError,
    available_datasets,
    dataset_labels,
    load_classification_dataset,
)

HWU64_SCENARIOS = [
    "alarm", "audio", "calendar", "cooking", "datetime", "email", "general", "iot", "lists",
    "music", "news", "play", "qa", "recommendation", "social", "takeaway", "transport", "weather",
]  # fmt: skip


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


@pytest.fixture
def folder(tmp_path):
    """A small local dataset; `surprise` occurs only in test, `labels.txt` is absent."""
    write_jsonl(tmp_path / "train.jsonl", [{"text": "great film", "label": "pos"}, {"text": "dull", "label": "neg"}])
    write_jsonl(tmp_path / "test.jsonl", [{"text": "fine", "label": "pos"}, {"text": "what?", "label": "surprise"}])
    return tmp_path


# Built-in hwu64-scenario


@pytest.mark.parametrize(("split", "size"), [("train", 7712), ("dev", 933), ("validation", 933), ("test", 1032)])
def test_builtin_hwu64_scenario_splits(split, size):
    dataset = load_classification_dataset("hwu64-scenario", split)
    assert len(dataset) == size
    assert dataset.column_names == ["text", "label"]
    assert isinstance(dataset.features["label"], datasets.ClassLabel)
    assert dataset.features["label"].names == HWU64_SCENARIOS
    assert set(dataset["label"]) == set(range(18))


def test_builtin_labels_and_validation_alias():
    assert dataset_labels("hwu64-scenario") == HWU64_SCENARIOS
    dev = load_classification_dataset("hwu64-scenario", "dev")
    assert dev["text"] == load_classification_dataset("hwu64-scenario", "validation")["text"]
    first = load_classification_dataset("hwu64-scenario", "train")[0]
    assert first["text"] == "am i on vacation this week"
    assert HWU64_SCENARIOS[first["label"]] == "calendar"


def test_max_samples_is_deterministic_and_seeded():
    sample = load_classification_dataset("hwu64-scenario", "train", max_samples=50, seed=1)
    again = load_classification_dataset("hwu64-scenario", "train", max_samples=50, seed=1)
    other = load_classification_dataset("hwu64-scenario", "train", max_samples=50, seed=2)
    assert len(sample) == 50
    assert sample["text"] == again["text"]
    assert sample["text"] != other["text"]
    assert sample.features["label"].names == HWU64_SCENARIOS  # the label set does not shrink with the sample
    assert len(load_classification_dataset("hwu64-scenario", "dev", max_samples=10_000)) == 933
    with pytest.raises(ValueError, match="max_samples"):
        load_classification_dataset("hwu64-scenario", max_samples=-1)


# Local folders


def test_local_jsonl_without_labels_txt_takes_labels_from_all_splits(folder):
    train = load_classification_dataset(str(folder), "train")
    assert train.features["label"].names == ["neg", "pos", "surprise"]
    assert train["text"] == ["great film", "dull"]
    assert [train.features["label"].int2str(i) for i in train["label"]] == ["pos", "neg"]
    assert load_classification_dataset(str(folder), "test").features["label"].names == ["neg", "pos", "surprise"]
    assert dataset_labels(str(folder)) == ["neg", "pos", "surprise"]


def test_local_jsonl_with_labels_txt_keeps_its_order(folder):
    (folder / "labels.txt").write_text("surprise\npos\nneg\n", encoding="utf-8")
    train = load_classification_dataset(str(folder), "train")
    assert train.features["label"].names == ["surprise", "pos", "neg"]
    assert train["label"] == [1, 2]
    assert dataset_labels(str(folder)) == ["surprise", "pos", "neg"]


def test_local_dev_file_is_the_validation_split(folder):
    write_jsonl(folder / "dev.jsonl", [{"text": "ok", "label": "pos"}])
    assert load_classification_dataset(str(folder), "validation")["text"] == ["ok"]
    assert load_classification_dataset(str(folder), "dev")["text"] == ["ok"]


def test_local_csv(tmp_path):
    (tmp_path / "train.csv").write_text('text,label\n"loved it, really",pos\nmeh,neg\n', encoding="utf-8")
    (tmp_path / "test.csv").write_text("text,label\nbad,neg\n", encoding="utf-8")
    train = load_classification_dataset(str(tmp_path), "train")
    assert train["text"] == ["loved it, really", "meh"]
    assert train.features["label"].names == ["neg", "pos"]
    assert train["label"] == [1, 0]


# Errors


def test_unknown_label_names_file_and_row(folder):
    (folder / "labels.txt").write_text("pos\nneg\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"\(test split\): 1 bad row.*row 1: label 'surprise' is not in labels\.txt"):
        load_classification_dataset(str(folder), "test")


def test_empty_and_missing_fields_are_reported_not_dropped(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "ok", "label": "a"}, {"text": "  ", "label": "a"}, {"label": "a"}])
    with pytest.raises(ValueError, match=r"\(train split\): 2 bad row\(s\): row 1: empty text; row 2: missing text"):
        load_classification_dataset(str(tmp_path), "train")
    write_jsonl(tmp_path / "train.jsonl", [{"text": "no label", "label": None}, {"text": "ok", "label": "a"}])
    with pytest.raises(ValueError, match="row 0: missing label"):
        load_classification_dataset(str(tmp_path), "train")


def test_many_bad_rows_show_the_first_five_and_the_count(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "", "label": "a"}] * 7)
    with pytest.raises(ValueError, match=r"7 bad row\(s\): row 0: .*row 4: empty text; \.\.\. and 2 more") as info:
        load_classification_dataset(str(tmp_path), "train")
    assert "row 5" not in str(info.value)


def test_malformed_json_names_the_line(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "ok", "label": "a"}\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"could not read it \(ArrowInvalid: JSON parse error.*row 1"):
        load_classification_dataset(str(tmp_path), "train")


def test_missing_split_names_the_splits_there(folder):
    with pytest.raises(ValueError, match=r"has no validation split \(it has: train, test\)") as info:
        load_classification_dataset(str(folder), "validation")
    assert str(folder) in str(info.value)


def test_unknown_name_is_tried_on_the_hub_and_lists_available_datasets(tmp_path, monkeypatch):
    import huggingface_hub

    for module in (datasets.config, huggingface_hub.constants):  # offline mode, read when they were imported
        monkeypatch.setattr(module, "HF_HUB_OFFLINE", True)
    expected = r"'nope' \(not a registered name: .*hwu64-scenario.*sst5.*Hub could not be reached.*Offline"
    with pytest.raises(DatasetUnavailableError, match=expected):
        load_classification_dataset("nope")
    with pytest.raises(ValueError, match="no such local file or folder"):
        load_classification_dataset(str(tmp_path / "missing.csv"))
    with pytest.raises(ValueError, match="has no eval split"):
        load_classification_dataset("hwu64-scenario", "eval")


# Hub entries, with datasets.load_dataset faked


def test_hub_integer_labels_are_mapped_to_names(monkeypatch):
    calls = []

    def fake_load_dataset(hub_id, config):
        calls.append((hub_id, config))
        rows = datasets.Dataset.from_dict({"text": ["so sad", "yay", "grr"], "label": [0, 1, 3]})
        return datasets.DatasetDict({"train": rows, "validation": rows})

    monkeypatch.setattr(registry.datasets, "load_dataset", fake_load_dataset)
    dataset = load_classification_dataset("emotion", "dev")
    assert calls == [("dair-ai/emotion", "split")]
    names = dataset.features["label"].names
    assert names == ["sadness", "joy", "love", "anger", "fear", "surprise"]
    assert [names[i] for i in dataset["label"]] == ["sadness", "joy", "anger"]


def test_hub_string_labels_are_checked(monkeypatch):
    rows = {"text": ["awful", "fine"], "label": [0, 2], "label_text": ["very negative", "neutral"]}

    def fake(*args, **kwargs):
        return datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows)})

    monkeypatch.setattr(registry.datasets, "load_dataset", fake)
    assert load_classification_dataset("sst5", "test")["label"] == [0, 2]
    rows["label_text"][1] = "meh"
    with pytest.raises(ValueError, match=r"sst5 \(test split\): 1 bad row\(s\): row 1: label 'meh' is not in"):
        load_classification_dataset("sst5", "test")


def test_hub_classlabel_disagreeing_with_registry_is_refused(monkeypatch):
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["a", "b"])})
    fake = datasets.Dataset.from_dict({"text": ["x"], "label": [0]}, features=features)
    monkeypatch.setattr(registry.datasets, "load_dataset", lambda *args, **kwargs: datasets.DatasetDict(train=fake))
    with pytest.raises(ValueError, match="ClassLabel"):
        load_classification_dataset("emotion")


def test_hub_unreachable_raises_dataset_unavailable(monkeypatch):
    def no_network(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'SetFit/sst5' on the Hub\n(offline)")

    monkeypatch.setattr(registry.datasets, "load_dataset", no_network)
    with pytest.raises(DatasetUnavailableError) as info:
        load_classification_dataset("sst5")
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert "\n" not in message
    for part in ("'sst5'", "could not be reached", "hwu64-scenario", ".jsonl", ".parquet"):
        assert part in message


def test_hub_split_the_dataset_lacks(monkeypatch):
    rows = datasets.Dataset.from_dict({"text": ["a"], "label_text": ["tech"]})
    fake = datasets.DatasetDict(train=rows, test=rows)
    monkeypatch.setattr(registry.datasets, "load_dataset", lambda *args, **kwargs: fake)
    with pytest.raises(ValueError, match=r"'bbc-news' has no dev split \(it has: train, test\)"):
        load_classification_dataset("bbc-news", "dev")


# The registry file itself


def test_registry_entries_have_the_required_fields():
    entries = json.loads((files("trl_gta") / "data" / "registry.json").read_text(encoding="utf-8"))
    assert available_datasets() == sorted(entries)
    assert {"sst5", "massive-scenario", "emotion", "bbc-news", "hwu64-scenario"} <= set(entries)
    for name, entry in entries.items():
        for field in ("description", "license", "citation", "url"):
            assert isinstance(entry.get(field), str) and entry[field], (name, field)
        if entry.get("builtin"):
            assert (files("trl_gta") / "data" / entry["path"] / "train.jsonl").is_file(), name
            continue
        for field in ("hub_id", "text_column", "label_column"):
            assert isinstance(entry.get(field), str) and entry[field], (name, field)
        assert "config" in entry, name
        labels = entry["labels"]
        assert labels and len(set(labels)) == len(labels) and all(isinstance(label, str) for label in labels), name
        assert "train" in entry["splits"] and "test" in entry["splits"], name
        assert set(entry["splits"]) <= {"train", "validation", "test"}, name
    assert len(entries["massive-scenario"]["labels"]) == 18
    assert "AmazonScience/massive" in entries["massive-scenario"]["note"]


# Any dataset by TRL's names: a Hub repository on disk, local files with other columns and integer labels


HUB_README = """---
configs:
- config_name: coarse
  data_files:
  - split: train
    path: coarse/train-*.parquet
  - split: test
    path: coarse/test-*.parquet
- config_name: fine
  data_files:
  - split: train
    path: fine/train.parquet
  - split: validation
    path: fine/dev.parquet
---
# A dataset laid out as a Hub repository
"""


@pytest.fixture
def hub_repo(tmp_path):
    """Parquet files and a README.md naming two configs, read by `datasets.load_dataset(path, name=...)` as the Hub
    would serve them: `coarse` has ClassLabel ids, `fine` string labels in other columns."""
    coarse = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    (tmp_path / "coarse").mkdir()
    (tmp_path / "fine").mkdir()
    datasets.Dataset.from_dict({"text": ["good", "bad", "great"], "label": [1, 0, 1]}, features=coarse).to_parquet(
        tmp_path / "coarse" / "train-00000-of-00001.parquet"
    )
    datasets.Dataset.from_dict({"text": ["awful"], "label": [0]}, features=coarse).to_parquet(
        tmp_path / "coarse" / "test-00000-of-00001.parquet"
    )
    pd.DataFrame({"sentence": ["good", "meh"], "label_text": ["positive", "neutral"]}).to_parquet(
        tmp_path / "fine" / "train.parquet"
    )
    pd.DataFrame({"sentence": ["bad"], "label_text": ["negative"]}).to_parquet(tmp_path / "fine" / "dev.parquet")
    (tmp_path / "README.md").write_text(HUB_README, encoding="utf-8")
    return tmp_path


def test_a_hub_repository_on_disk_with_configs(hub_repo):
    train = load_classification_dataset(str(hub_repo), config="coarse")
    assert train["text"] == ["good", "bad", "great"] and train["label"] == [1, 0, 1]
    assert train.features["label"].names == ["neg", "pos"]  # the ClassLabel's names and order
    assert load_classification_dataset(str(hub_repo), "test", config="coarse")["text"] == ["awful"]
    options = dict(config="fine", text_column="sentence", label_column="label_text")
    dev = load_classification_dataset(str(hub_repo), "dev", **options)  # the validation split
    assert dev["text"] == ["bad"]
    assert dev.features["label"].names == ["negative", "neutral", "positive"]  # all splits' labels, sorted
    assert dataset_labels(str(hub_repo), **options) == dev.features["label"].names
    with pytest.raises(ValueError, match=r"could not read it .*'nope' not found.*coarse.*fine"):
        load_classification_dataset(str(hub_repo), config="nope")
    with pytest.raises(ValueError, match=r"has no text column 'text' \(its columns: sentence, label_text\); name it"):
        load_classification_dataset(str(hub_repo), config="fine", label_column="label_text")


def test_csv_and_parquet_files_with_other_columns_and_integer_labels(tmp_path):
    csv = tmp_path / "reviews.csv"
    csv.write_text('review,rating\n"loved it, really",2\nmeh,1\nawful,0\n', encoding="utf-8")
    names = ["bad", "ok", "good"]
    dataset = load_classification_dataset(str(csv), text_column="review", label_column="rating", label_names=names)
    assert dataset["text"] == ["loved it, really", "meh", "awful"]
    assert dataset.features["label"].names == names and dataset["label"] == [2, 1, 0]
    with pytest.raises(ValueError, match=r"'rating' holds integers; name them in id order with label_names"):
        load_classification_dataset(str(csv), text_column="review", label_column="rating")
    with pytest.raises(ValueError, match=r"row 0: label '<id 2>' is not in label_names"):
        load_classification_dataset(str(csv), text_column="review", label_column="rating", label_names=["x", "y"])
    with pytest.raises(ValueError, match=r"no test split \(it has: train\)"):
        load_classification_dataset(str(csv), "test", text_column="review", label_column="rating", label_names=names)

    parquet = tmp_path / "data" / "train.parquet"
    parquet.parent.mkdir()
    pd.DataFrame({"body": ["one", "two"], "label": [1, 0]}).to_parquet(parquet)
    (parquet.parent / "labels.txt").write_text("spam\nham\n", encoding="utf-8")  # names the ids of the folder
    folder = load_classification_dataset(str(parquet.parent), text_column="body")
    assert folder.features["label"].names == ["spam", "ham"] and folder["label"] == [1, 0]
    file = load_classification_dataset(str(parquet), text_column="body", label_names=["spam", "ham"])
    assert file["text"] == folder["text"] and file["label"] == folder["label"]
    with pytest.raises(ValueError, match="cannot tell the format"):
        load_classification_dataset(str(parquet.parent / "labels.txt"))
