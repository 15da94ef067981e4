"""The dataset registry: built-in data, local folders, Hub entries (faked: tests never touch the network), errors."""

import json
from importlib.resources import files

import datasets
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
    with pytest.raises(ValueError, match=r"test\.jsonl.*row 1: label 'surprise' is not in labels\.txt"):
        load_classification_dataset(str(folder), "test")


def test_empty_and_missing_fields_are_reported_not_dropped(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "ok", "label": "a"}, {"text": "  ", "label": "a"}, {"label": "a"}])
    with pytest.raises(ValueError, match=r"train\.jsonl: 2 bad row\(s\): row 1: empty text; row 2: missing text"):
        load_classification_dataset(str(tmp_path), "train")
    write_jsonl(tmp_path / "train.jsonl", [{"text": "no label"}])
    with pytest.raises(ValueError, match="row 0: missing label"):
        load_classification_dataset(str(tmp_path), "train")


def test_many_bad_rows_show_the_first_five_and_the_count(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "", "label": "a"}] * 7)
    with pytest.raises(ValueError, match=r"7 bad row\(s\): row 0: .*row 4: empty text; \.\.\. and 2 more") as info:
        load_classification_dataset(str(tmp_path), "train")
    assert "row 5" not in str(info.value)


def test_malformed_json_names_the_line(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "ok", "label": "a"}\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"row 1: malformed JSON on line 2"):
        load_classification_dataset(str(tmp_path), "train")


def test_missing_split_file_names_folder_and_files(folder):
    expected = r"no validation split file.*files present: test\.jsonl, train\.jsonl"
    with pytest.raises(ValueError, match=expected) as info:
        load_classification_dataset(str(folder), "validation")
    assert str(folder) in str(info.value)


def test_two_files_for_one_split_are_refused(folder):
    write_jsonl(folder / "dev.jsonl", [{"text": "a", "label": "pos"}])
    write_jsonl(folder / "validation.jsonl", [{"text": "b", "label": "pos"}])
    with pytest.raises(ValueError, match="hold the validation split"):
        load_classification_dataset(str(folder), "dev")


def test_unknown_name_lists_available_datasets(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown dataset 'nope'.*hwu64-scenario.*sst5"):
        load_classification_dataset("nope")
    with pytest.raises(ValueError, match="Unknown split"):
        load_classification_dataset("hwu64-scenario", "eval")


# Hub entries, with datasets.load_dataset faked


def test_hub_integer_labels_are_mapped_to_names(monkeypatch):
    calls = []

    def fake_load_dataset(hub_id, config, split):
        calls.append((hub_id, config, split))
        return datasets.Dataset.from_dict({"text": ["so sad", "yay", "grr"], "label": [0, 1, 3]})

    monkeypatch.setattr(registry.datasets, "load_dataset", fake_load_dataset)
    dataset = load_classification_dataset("emotion", "dev")
    assert calls == [("dair-ai/emotion", "split", "validation")]
    names = dataset.features["label"].names
    assert names == ["sadness", "joy", "love", "anger", "fear", "surprise"]
    assert [names[i] for i in dataset["label"]] == ["sadness", "joy", "anger"]


def test_hub_string_labels_are_checked(monkeypatch):
    rows = {"text": ["awful", "fine"], "label": [0, 2], "label_text": ["very negative", "neutral"]}
    monkeypatch.setattr(registry.datasets, "load_dataset", lambda *args, **kwargs: datasets.Dataset.from_dict(rows))
    assert load_classification_dataset("sst5", "test")["label"] == [0, 2]
    rows["label_text"][1] = "meh"
    with pytest.raises(ValueError, match=r"SetFit/sst5 \(test split\): 1 bad row\(s\): row 1: label 'meh' is not in"):
        load_classification_dataset("sst5", "test")


def test_hub_classlabel_disagreeing_with_registry_is_refused(monkeypatch):
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["a", "b"])})
    fake = datasets.Dataset.from_dict({"text": ["x"], "label": [0]}, features=features)
    monkeypatch.setattr(registry.datasets, "load_dataset", lambda *args, **kwargs: fake)
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
    for part in ("'sst5'", "could not be reached", "hwu64-scenario", "train.jsonl", "labels.txt"):
        assert part in message


def test_hub_split_the_dataset_lacks():
    with pytest.raises(ValueError, match="'bbc-news' has no validation split"):
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
