"""Named text-classification datasets, loaded as a `text` column and a `label` `ClassLabel` column.

`data/registry.json` is the single list of named datasets: adding a dataset means adding an entry there. An entry is
either a Hub dataset (loaded with `datasets.load_dataset`) or `"builtin": true`, a folder shipped inside the package
(`hwu64-scenario`), which works offline. Instead of a name, a local folder can be given: `train.jsonl`/`test.jsonl`
(optional `dev.jsonl` or `validation.jsonl`; or the same as `.csv`) of `{"text", "label"}` rows, and an optional
`labels.txt`. Bad rows are reported, never dropped or relabelled, so a slip in the data cannot silently change results.
"""

import csv
import io
import json
from collections.abc import Collection, Iterable
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import datasets

SPLIT_FILE_STEMS = {"train": ("train",), "validation": ("validation", "dev"), "test": ("test",)}
SPLIT_ALIASES = {"dev": "validation"}
MAX_REPORTED_ROWS = 5
OFFLINE_ALTERNATIVES = (
    "Offline alternatives: the built-in 'hwu64-scenario', or a local folder with train.jsonl/test.jsonl "
    '({"text", "label"} rows) and an optional labels.txt.'
)


class DatasetUnavailableError(RuntimeError):
    """A registered Hub dataset could not be loaded (usually: no network), so callers can point to offline data."""


def available_datasets() -> list[str]:
    """The registered dataset names, so that command lines and error messages can list the choices."""
    return sorted(_registry())


def dataset_labels(name_or_path: str) -> list[str]:
    """The label set in `ClassLabel` order, from the registry or `labels.txt` when possible so no texts are loaded."""
    entry = _registry().get(name_or_path)
    if entry is not None and not entry.get("builtin"):
        return list(entry["labels"])
    folder = _folder(name_or_path, entry)
    return _folder_labels(folder, _split_files(folder))


def load_classification_dataset(
    name_or_path: str, split: str = "train", max_samples: int | None = None, seed: int = 0
) -> datasets.Dataset:
    """Load one split of a registered dataset or a local folder as columns `text` and `label` (a `ClassLabel`).

    The label set is the whole dataset's (registry, `labels.txt`, or the sorted labels of all the folder's splits),
    never just the labels a split or subsample happens to contain. `dev` and `validation` name the same split.
    `max_samples` keeps the first N rows after a shuffle seeded with `seed`: a reproducible, class-mixed subsample.
    """
    if max_samples is not None and max_samples < 0:
        raise ValueError(f"max_samples must be >= 0 or None, got {max_samples}.")
    split = SPLIT_ALIASES.get(split, split)
    if split not in SPLIT_FILE_STEMS:
        raise ValueError(f"Unknown split {split!r}: use train, validation (alias dev) or test.")
    entry = _registry().get(name_or_path)
    if entry is not None and not entry.get("builtin"):
        dataset = _load_hub(name_or_path, entry, split)
    else:
        dataset = _load_folder(_folder(name_or_path, entry), split)
    if max_samples is not None:
        dataset = dataset.shuffle(seed=seed).select(range(min(max_samples, len(dataset))))
    return dataset


def _registry() -> dict[str, dict]:
    return json.loads((files("trl_gta") / "data" / "registry.json").read_text(encoding="utf-8"))


def _folder(name_or_path: str, entry: dict | None) -> Traversable:
    """The folder of a built-in entry (package data) or of a local path."""
    if entry is not None:
        return files("trl_gta") / "data" / entry["path"]
    folder = Path(name_or_path)
    if not folder.is_dir():
        raise ValueError(
            f"Unknown dataset {name_or_path!r}: neither a registered name ({', '.join(available_datasets())}) "
            "nor an existing folder."
        )
    return folder


def _split_files(folder: Traversable) -> dict[str, Traversable]:
    """Map each split present in the folder to its file, refusing two files for one split (which would be meant?)."""
    found: dict[str, Traversable] = {}
    for file in folder.iterdir():
        stem, _, extension = file.name.rpartition(".")
        split = SPLIT_ALIASES.get(stem, stem)
        if extension in ("jsonl", "csv") and split in SPLIT_FILE_STEMS:
            if split in found:
                raise ValueError(f"{folder}: both {found[split].name} and {file.name} hold the {split} split.")
            found[split] = file
    return found


def _folder_labels(folder: Traversable, split_files: dict[str, Traversable]) -> list[str]:
    """`labels.txt` in file order, else the sorted labels of all splits, so that train and test share one label set."""
    labels_file = folder / "labels.txt"
    if labels_file.is_file():
        labels = [line.strip() for line in labels_file.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if not labels or duplicates:
            raise ValueError(f"{labels_file}: needs one distinct label per line (empty, or duplicates {duplicates}).")
        return labels
    if not split_files:
        raise ValueError(f"{folder}: no labels.txt and no train/dev/validation/test .jsonl or .csv file.")
    return sorted({label for file in split_files.values() for _, label in _validated(str(file), _read_records(file))})


def _load_folder(folder: Traversable, split: str) -> datasets.Dataset:
    split_files = _split_files(folder)
    if split not in split_files:
        expected = ", ".join(f"{stem}.jsonl, {stem}.csv" for stem in SPLIT_FILE_STEMS[split])
        present = ", ".join(sorted(file.name for file in folder.iterdir())) or "none"
        raise ValueError(f"{folder}: no {split} split file (one of {expected}); files present: {present}.")
    labels = _folder_labels(folder, split_files)
    file = split_files[split]
    return _to_dataset(_validated(str(file), _read_records(file), labels, "labels.txt"), labels)


def _load_hub(name: str, entry: dict, split: str) -> datasets.Dataset:
    if split not in entry["splits"]:
        raise ValueError(f"Dataset {name!r} has no {split} split (it has: {', '.join(entry['splits'])}).")
    try:
        raw = datasets.load_dataset(entry["hub_id"], entry.get("config"), split=entry["splits"][split])
    except Exception as err:
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise DatasetUnavailableError(
            f"Dataset {name!r} ({entry['hub_id']}) is unavailable: the Hugging Face Hub could not be reached "
            f"({reason}). {OFFLINE_ALTERNATIVES}"
        ) from err
    text_column, label_column, names = entry["text_column"], entry["label_column"], entry["labels"]
    missing = {text_column, label_column} - set(raw.column_names)
    if missing:
        raise ValueError(f"{entry['hub_id']} has no column(s) {sorted(missing)}; it has {raw.column_names}.")
    feature = raw.features[label_column]
    if isinstance(feature, datasets.ClassLabel) and feature.names != names:
        raise ValueError(f"registry.json lists {names} for {name!r} but the Hub's ClassLabel is {feature.names}.")
    values = [names[v] if isinstance(v, int) and 0 <= v < len(names) else v for v in raw[label_column]]
    records = [{"text": text, "label": label} for text, label in zip(raw[text_column], values, strict=True)]
    source = f"{entry['hub_id']} ({entry['splits'][split]} split)"
    return _to_dataset(_validated(source, records, names, f"the registry's labels for {name!r}"), names)


def _read_records(file: Traversable) -> list[dict | str]:
    """The rows of a `.jsonl` or `.csv` file; a string stands for a line that is not a JSON object (reported later)."""
    text = file.read_text(encoding="utf-8-sig")
    if file.name.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        if not {"text", "label"} <= set(reader.fieldnames or ()):
            raise ValueError(
                f"{file}: the CSV header must have the columns text and label, found {reader.fieldnames}."
            )
        return list(reader)
    lines = text.split("\n")  # not splitlines(): JSON strings may hold raw U+2028 and other line separators
    if lines[-1] == "":
        lines.pop()
    records: list[dict | str] = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            records.append(f"malformed JSON on line {number} ({err.msg})")
            continue
        records.append(record if isinstance(record, dict) else f"line {number} is not a JSON object")
    return records


def _validated(
    source: str, records: Iterable[dict | str], labels: Collection[str] | None = None, label_source: str = ""
) -> list[tuple[str, str]]:
    """The (text, label) rows, or a ValueError naming the bad rows by 0-based index (the first few, and the count)."""
    rows, problems = [], []
    for index, record in enumerate(records):
        problem = _row_problem(record, labels, label_source)
        if problem is None:
            rows.append((record["text"], record["label"]))
        else:
            problems.append(f"row {index}: {problem}")
    if problems:
        raise bad_rows_error(source, problems)
    return rows


def bad_rows_error(source: str, problems: list[str]) -> ValueError:
    """One error for all of a source's bad rows: their count and the first few, each naming its row."""
    more = f"; ... and {len(problems) - MAX_REPORTED_ROWS} more" if len(problems) > MAX_REPORTED_ROWS else ""
    return ValueError(f"{source}: {len(problems)} bad row(s): {'; '.join(problems[:MAX_REPORTED_ROWS])}{more}.")


def _row_problem(record: dict | str, labels: Collection[str] | None, label_source: str) -> str | None:
    """Why a row is unusable, or None. `labels` None means the label set is taken from the data itself."""
    if isinstance(record, str):
        return record
    text, label = record.get("text"), record.get("label")
    if text is None:
        return "missing text"
    if not isinstance(text, str):
        return f"text is not a string ({text!r})"
    if not text.strip():
        return "empty text"
    if label is None or label == "":
        return "missing label"
    if labels is None:
        return None if isinstance(label, str) else f"label {label!r} is not a string"
    if not isinstance(label, str) or label not in labels:
        return f"label {label!r} is not in {label_source}"
    return None


def _to_dataset(rows: list[tuple[str, str]], labels: list[str]) -> datasets.Dataset:
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=labels)})
    index = {label: i for i, label in enumerate(labels)}
    return datasets.Dataset.from_dict(
        {"text": [text for text, _ in rows], "label": [index[label] for _, label in rows]}, features=features
    )
