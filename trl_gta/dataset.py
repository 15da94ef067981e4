"""Turn a labelled text dataset into GTA training rows.

The label set travels with the rows as the names of a `ClassLabel` column (`label_id`), so it survives `select`,
`shuffle` and subsampling: the trainer never has to guess it from the labels a subsample happens to contain.
"""

import logging
from collections.abc import Sequence

from datasets import ClassLabel, Dataset, Features, IterableDataset, Value
from transformers import PreTrainedTokenizerBase

from .prompts import GTAPromptTemplate, fitted_prompts
from .registry import bad_rows_error, string_labels
from .reply_format import check_label_set, normalize_label

logger = logging.getLogger(__name__)

LABEL_SET_COLUMN = "label_id"


def first_row(dataset: Dataset | IterableDataset) -> dict:
    """The first row of a dataset (an iterable one is read, not consumed: iterating again starts over)."""
    return next(iter(dataset), {})


def check_columns(dataset: Dataset | IterableDataset, name: str, required: Sequence[str]) -> None:
    """Raise a `ValueError` naming the columns of `required` that `dataset` lacks, before any training starts.

    A streaming dataset after `.map()` does not know its column names; its first row is read instead."""
    columns = dataset.column_names if dataset.column_names is not None else list(first_row(dataset))
    missing = [column for column in required if column not in columns]
    if missing:
        raise ValueError(
            f"{name} has no column(s) {missing} (it has {list(columns)}); build it with build_gta_dataset."
        )


def dataset_label_set(dataset: Dataset | IterableDataset) -> list[str] | None:
    """The label set a dataset carries in its features (a GTA dataset's `label_id`, or a `ClassLabel` label)."""
    for column in (LABEL_SET_COLUMN, "label"):
        feature = dataset.features.get(column) if dataset.features else None
        if isinstance(feature, ClassLabel):
            return list(feature.names)
    return None


def build_gta_dataset(
    dataset: Dataset,
    labels: Sequence[str] | None = None,
    text_column: str = "text",
    label_column: str = "label",
    template: GTAPromptTemplate | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_prompt_tokens: int | None = None,
) -> Dataset:
    """Build GTA rows: a `prompt` stating the task and label set, the gold `label` string, and `label_id`.

    Args:
        dataset: Labelled texts.
        labels: The label set, in prompt order. None takes it from the features (`ClassLabel` names), else the
            sorted labels found in the data.
        text_column: The column of texts.
        label_column: The column of labels (strings, `ClassLabel` ids, or integer ids into `labels`).
        template: The prompt template (default: `GTAPromptTemplate()`).
        tokenizer: Needed for a template with a `response_prefix` (the prompt is then a chat-templated string) and
            for `max_prompt_tokens`.
        max_prompt_tokens: Cut texts so each prompt fits; cut rows are counted, logged and flagged in a
            `text_truncated` column.

    Returns:
        A `Dataset` with `prompt`, `label`, `label_id` (a `ClassLabel` carrying the label set, so it survives
        `select` and `shuffle`), `text_truncated`, and `response_prefix` when the template opens the reply.

    Raises:
        ValueError: A column is missing, the label set is invalid, or rows are bad (all of them are named;
            nothing is dropped or relabelled).

    Example:
        ```python
        rows = build_gta_dataset(raw, template=GTAPromptTemplate(response_prefix="<guess>"), tokenizer=tokenizer)
        ```
    """
    template = template or GTAPromptTemplate()
    missing = [c for c in (text_column, label_column) if c not in dataset.column_names]
    if missing:
        raise ValueError(f"Column(s) {missing} not in the dataset; it has {dataset.column_names}.")

    if labels is None:
        labels = dataset_label_set(dataset) if label_column == "label" else None
        if labels is None and isinstance(dataset.features[label_column], ClassLabel):
            labels = list(dataset.features[label_column].names)
    values = string_labels(dataset, label_column, list(labels) if labels is not None else None)
    if labels is None:
        labels = sorted({label for label in values if label is not None})
    labels = check_label_set(labels)
    by_normal = {normalize_label(label): label for label in labels}

    problems: list[str] = []
    texts = dataset[text_column]
    gold: list[str] = []
    for index, (text, label) in enumerate(zip(texts, values, strict=True)):
        if not isinstance(text, str) or not text.strip():
            problems.append(f"row {index}: empty or missing text")
        if label is None:
            problems.append(f"row {index}: missing label")
        elif normalize_label(label) not in by_normal:
            problems.append(f"row {index}: label {label!r} is not in the label set {labels}")
        else:
            gold.append(by_normal[normalize_label(label)])
    if problems:
        raise bad_rows_error("the dataset", problems)

    prompts, truncated = fitted_prompts(template, texts, labels, tokenizer, max_prompt_tokens)
    if any(truncated):
        logger.warning(
            "Truncated %d of %d texts to fit max_prompt_tokens=%s.", sum(truncated), len(texts), max_prompt_tokens
        )

    columns = {
        "prompt": prompts,
        "label": gold,
        LABEL_SET_COLUMN: [labels.index(label) for label in gold],
        "text_truncated": truncated,
    }
    prompt_feature = (
        Value("string") if template.response_prefix else [{"role": Value("string"), "content": Value("string")}]
    )
    features = {
        "prompt": prompt_feature,
        "label": Value("string"),
        LABEL_SET_COLUMN: ClassLabel(names=labels),
        "text_truncated": Value("bool"),
    }
    if template.response_prefix:
        columns["response_prefix"] = [template.response_prefix] * len(gold)
        features["response_prefix"] = Value("string")
    return Dataset.from_dict(columns, features=Features(features))
