"""Text-classification datasets by the names TRL's scripts take, loaded as a `text` column and a `label` `ClassLabel`.

A dataset name is one of:
- a name in `data/registry.json`, the single list of named datasets (adding one means adding an entry there): a Hub
  dataset with its columns and label order, or `"builtin": true`, a folder shipped inside the package
  (`hwu64-scenario`), which works offline;
- a local folder: split files (`train.jsonl`, `dev.csv`, `test.parquet`, ...), or a Hub dataset repository laid out on
  disk (data files and a `README.md` naming its configs), with an optional `labels.txt` (one label per line);
- a local `.jsonl`, `.json`, `.csv` or `.parquet` file: one split, `train`;
- any other Hub dataset id, with its config.

All of them load through `datasets.load_dataset`. The text and label columns are `text` and `label` unless named.
Labels may be strings, `ClassLabel` ids, or integer ids named by `label_names` (or `labels.txt`). Bad rows are
reported, never dropped or relabelled, so a slip in the data cannot silently change results.
"""

import json
import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from importlib.resources import files

import datasets

SPLIT_ALIASES = {"dev": "validation", "validation": "dev"}
DATA_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
"""The `datasets` builder of each data file extension a local file may have."""
MAX_REPORTED_ROWS = 5
OFFLINE_ALTERNATIVES = (
    "Offline alternatives: the built-in 'hwu64-scenario', or a local folder or file (.jsonl, .csv, .parquet) with a "
    "text and a label column."
)


class DatasetUnavailableError(RuntimeError):
    """A Hub dataset could not be loaded (usually: no network), so callers can point to offline data."""


@dataclass
class _Source:
    """Where a dataset comes from and how to read it: what `datasets.load_dataset` is given, and the columns."""

    name: str
    path: str
    config: str | None = None
    data_files: str | None = None
    local: bool = True
    text_column: str = "text"
    label_column: str = "label"
    label_names: list[str] | None = None
    label_source: str = "label_names"
    split_names: dict[str, str] = field(default_factory=dict)


def available_datasets() -> list[str]:
    """The registered dataset names, so that command lines and error messages can list the choices."""
    return sorted(_registry())


def needs_hub(name_or_path: str) -> bool:
    """Whether loading a dataset needs the Hub (a registered Hub dataset or another Hub id), not local files.

    Raises:
        ValueError: A local path that does not exist.
    """
    return not _resolve(name_or_path, None, None, None, None).local


def dataset_labels(
    name_or_path: str,
    *,
    config: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    label_names: Sequence[str] | None = None,
) -> list[str]:
    """The label set in `ClassLabel` order: the registry's, `label_names`, `labels.txt`, the `ClassLabel`'s, or the
    sorted labels of all splits."""
    source = _resolve(name_or_path, config, text_column, label_column, label_names)
    return source.label_names or _label_set(source, _load(source))


def load_classification_dataset(
    name_or_path: str,
    split: str = "train",
    max_samples: int | None = None,
    seed: int = 0,
    *,
    config: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    label_names: Sequence[str] | None = None,
) -> datasets.Dataset:
    """Load one split of a dataset (see the module's docstring for the names it takes) as `text` and `label` (a
    `ClassLabel`).

    Args:
        name_or_path: A registered name, a local folder or data file, or a Hub dataset id.
        split: The split; `dev` and `validation` name the same split when the dataset has only one of them.
        max_samples: Keep the first N rows after a shuffle seeded with `seed`: a reproducible, class-mixed subsample.
        seed: The subsample's seed.
        config: The dataset's configuration (`name` of `datasets.load_dataset`).
        text_column: The column of texts (default: the registry's, else `text`).
        label_column: The column of labels (default: the registry's, else `label`).
        label_names: The label set in id order: names integer labels, and fixes the order of string labels
            (default: the registry's, the folder's `labels.txt`, the `ClassLabel`'s, else the sorted labels of all
            splits). The label set is the whole dataset's, never just the labels a split or subsample contains.

    Raises:
        ValueError: No such local file or folder, a missing split or column, integer labels without names, or bad
            rows (all counted, the first few named).
        DatasetUnavailableError: A Hub dataset could not be loaded (offline, the Hub cannot be reached).
    """
    if max_samples is not None and max_samples < 0:
        raise ValueError(f"max_samples must be >= 0 or None, got {max_samples}.")
    source = _resolve(name_or_path, config, text_column, label_column, label_names)
    splits = _load(source)
    split_name = _split_name(source, splits, split)
    data = splits[split_name]
    labels = source.label_names or _label_set(source, splits)
    feature = data.features[source.label_column]
    if isinstance(feature, datasets.ClassLabel) and feature.names != labels:
        raise ValueError(f"{source.label_source} lists {labels} but {source.name}'s ClassLabel is {feature.names}.")
    values = string_labels(data, source.label_column, labels)
    records = [{"text": text, "label": label} for text, label in zip(data[source.text_column], values, strict=True)]
    where = f"{source.name} ({split_name} split)"
    dataset = _to_dataset(_validated(where, records, labels, source.label_source), labels)
    if max_samples is not None:
        dataset = dataset.shuffle(seed=seed).select(range(min(max_samples, len(dataset))))
    return dataset


def string_labels(dataset: datasets.Dataset, label_column: str, labels: Sequence[str] | None) -> list[str | None]:
    """The labels of a column as strings: `ClassLabel` ids by their names, integer ids by `labels` (an id outside
    them as `<id N>`, reported later), anything else as its string; None for a missing label."""
    feature = dataset.features[label_column]
    values = dataset[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return [feature.int2str(v) if v is not None and v >= 0 else None for v in values]
    if labels is not None and all(isinstance(v, int) and not isinstance(v, bool) for v in values if v is not None):
        return [labels[v] if v is not None and 0 <= v < len(labels) else f"<id {v}>" for v in values]
    return [None if v is None else str(v) for v in values]


def _registry() -> dict[str, dict]:
    return json.loads((files("trl_gta") / "data" / "registry.json").read_text(encoding="utf-8"))


def _resolve(
    name: str,
    config: str | None,
    text_column: str | None,
    label_column: str | None,
    label_names: Sequence[str] | None,
) -> _Source:
    """What to load for a name: options given here override the registry's."""
    entry = _registry().get(name)
    if entry is not None and not entry.get("builtin"):
        source = _Source(
            name,
            entry["hub_id"],
            entry.get("config"),
            local=False,
            text_column=entry["text_column"],
            label_column=entry["label_column"],
            label_names=list(entry["labels"]),
            label_source=f"the registry's labels for {name!r}",
            split_names=dict(entry["splits"]),
        )
    elif entry is not None:
        source = _Source(name, str(files("trl_gta") / "data" / entry["path"]))
    elif os.path.isdir(name):
        source = _Source(name, name)
    elif os.path.isfile(name):
        builder = DATA_FILE_BUILDERS.get(os.path.splitext(name)[1].lower())
        if builder is None:
            raise ValueError(f"{name}: cannot tell the format of this file; use {', '.join(DATA_FILE_BUILDERS)}.")
        source = _Source(name, builder, data_files=name)
    elif name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith(tuple(DATA_FILE_BUILDERS)):
        raise ValueError(f"Unknown dataset {name!r}: no such local file or folder.")
    else:
        source = _Source(name, name, local=False)
    if source.local and label_names is None and os.path.isfile(os.path.join(source.path, "labels.txt")):
        source.label_names, source.label_source = (
            _read_labels_txt(os.path.join(source.path, "labels.txt")),
            "labels.txt",
        )
    source.config = config if config is not None else source.config
    source.text_column = text_column or source.text_column
    source.label_column = label_column or source.label_column
    if label_names is not None:
        if not label_names or len(set(label_names)) != len(label_names):
            raise ValueError(f"label_names must be distinct labels, got {list(label_names)}.")
        source.label_names, source.label_source = list(label_names), "label_names"
    return source


def _read_labels_txt(path: str) -> list[str]:
    with open(path, encoding="utf-8-sig") as f:
        labels = [line.strip() for line in f if line.strip()]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if not labels or duplicates:
        raise ValueError(f"{path}: needs one distinct label per line (empty, or duplicates {duplicates}).")
    return labels


def _deepest_reason(error: BaseException) -> str:
    """The innermost cause of an error, on one line: `datasets` wraps the parser's own message."""
    while error.__cause__ is not None:
        error = error.__cause__
    return " ".join(f"{type(error).__name__}: {error}".split())


def _load(source: _Source) -> datasets.DatasetDict:
    """Every split, through `datasets.load_dataset`, the columns checked; a failure becomes one line."""
    kwargs = {"data_files": source.data_files} if source.data_files else {}
    bars = datasets.is_progress_bar_enabled()
    try:
        if source.local:  # local files load at once: no progress bars
            datasets.disable_progress_bars()
        splits = datasets.load_dataset(source.path, source.config, **kwargs)
    except Exception as err:
        reason = _deepest_reason(err)
        if source.local:
            raise ValueError(f"{source.name}: datasets.load_dataset could not read it ({reason}).") from err
        registered = source.name in _registry()
        what = (
            "the Hugging Face Hub could not be reached"
            if isinstance(err, ConnectionError)
            else "loading it from the Hugging Face Hub failed"
        )
        named = (
            f"Dataset {source.name!r} ({source.path})"
            if registered
            else f"Dataset {source.name!r} (not a registered name: {', '.join(available_datasets())}; no such local "
            "file or folder)"
        )
        raise DatasetUnavailableError(f"{named} is unavailable: {what} ({reason}). {OFFLINE_ALTERNATIVES}") from err
    finally:
        if bars:
            datasets.enable_progress_bars()
    for split_name, data in splits.items():
        for role, column in (("text", source.text_column), ("label", source.label_column)):
            if column not in data.column_names:
                raise ValueError(
                    f"{source.name} ({split_name} split) has no {role} column {column!r} (its columns: "
                    f"{', '.join(data.column_names)}); name it with {role}_column (--{role}_column)."
                )
    return splits


def _split_name(source: _Source, splits: datasets.DatasetDict, split: str) -> str:
    for candidate in (split, SPLIT_ALIASES.get(split)):
        name = source.split_names.get(candidate, candidate)
        if name in splits:
            return name
    raise ValueError(f"Dataset {source.name!r} has no {split} split (it has: {', '.join(splits)}).")


def _label_set(source: _Source, splits: datasets.DatasetDict) -> list[str]:
    """The label set when no names are given: the `ClassLabel`'s, else the sorted string labels of all splits."""
    features = [data.features[source.label_column] for data in splits.values()]
    class_labels = [feature for feature in features if isinstance(feature, datasets.ClassLabel)]
    if class_labels:
        return list(class_labels[0].names)
    dtypes = {feature.dtype for feature in features if isinstance(feature, datasets.Value)}
    if any("int" in dtype for dtype in dtypes):
        raise ValueError(
            f"{source.name}: the label column {source.label_column!r} holds integers; name them in id order with "
            "label_names (--dataset_label_names) or a labels.txt."
        )
    labels = {label for data in splits.values() for label in string_labels(data, source.label_column, None)}
    return sorted(label for label in labels if label)


def _validated(
    source: str, records: Iterable[dict], labels: Collection[str], label_source: str
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


def _row_problem(record: dict, labels: Collection[str], label_source: str) -> str | None:
    """Why a row is unusable, or None."""
    text, label = record["text"], record["label"]
    if text is None:
        return "missing text"
    if not isinstance(text, str):
        return f"text is not a string ({text!r})"
    if not text.strip():
        return "empty text"
    if label is None or label == "":
        return "missing label"
    if label not in labels:
        return f"label {label!r} is not in {label_source}"
    return None


def _to_dataset(rows: list[tuple[str, str]], labels: list[str]) -> datasets.Dataset:
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=labels)})
    index = {label: i for i, label in enumerate(labels)}
    return datasets.Dataset.from_dict(
        {"text": [text for text, _ in rows], "label": [index[label] for _, label in rows]}, features=features
    )
