# Copyright 2025 The light-mobilebert Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""GLUE tasks: a registry of the nine tasks, an offline loader for the official TSV release and the official metrics.

The loader reads the files written by the standard `download_glue_data.py` script (one folder per task, `train.tsv`,
`dev.tsv`, and `dev_matched.tsv`/`dev_mismatched.tsv` for MNLI) and returns datasets shaped like the Hub dataset
`nyu-mll/glue`: same column names, same label ids, an `idx` column. The metrics follow the definitions of the `glue`
metric of the `evaluate` library, computed locally with scikit-learn and SciPy because `evaluate.load("glue")` fetches
its script from the Hub.
"""

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef
from transformers.utils import logging


logger = logging.get_logger(__name__)

__all__ = [
    "GLUE_TASKS",
    "GlueDataError",
    "GlueTask",
    "compute_glue_metrics",
    "get_glue_task",
    "load_glue",
    "load_glue_tsv",
]


@dataclass(frozen=True)
class GlueTask:
    """
    Description of one GLUE task: where its official TSV files keep each field and how the Hub dataset names them.

    Args:
        name (`str`):
            The task name used by the Hub dataset `nyu-mll/glue` (`"cola"`, `"sst2"`, ...).
        folder (`str`):
            The task's folder in the official GLUE release (`"CoLA"`, `"SST-2"`, ...).
        text_columns (`tuple[tuple[str, str | int], ...]`):
            For each text feature, in the order the model reads them, the Hub column name and the TSV column holding
            it: a header name, or a 0-based position for files without a header.
        label_column (`str | int`):
            The TSV column holding the label, as a header name or a 0-based position.
        label_names (`tuple[str, ...] | None`):
            The class names in the order of the Hub dataset's `ClassLabel`, so that label ids agree with it. `None`
            for the regression task STS-B.
        tsv_labels (`tuple[str, ...] | None`):
            How the TSV files spell each class, in the same order as `label_names`: some tasks write the class name,
            others its id. `None` for STS-B.
        metric_keys (`tuple[str, ...]`):
            The keys returned by [`compute_glue_metrics`] for this task.
        validation_files (`tuple[tuple[str, str], ...]`):
            The validation split names of the Hub dataset and the TSV file holding each.
        has_header (`bool`):
            Whether the TSV files start with a header line (CoLA's train and dev files do not).
        num_columns (`int | None`):
            For files without a header, the number of tab-separated columns of every row.
        label_range (`tuple[float, float] | None`):
            For regression, the closed interval the scores must lie in.
    """

    name: str
    folder: str
    text_columns: tuple[tuple[str, str | int], ...]
    label_column: str | int
    label_names: tuple[str, ...] | None
    tsv_labels: tuple[str, ...] | None
    metric_keys: tuple[str, ...]
    validation_files: tuple[tuple[str, str], ...] = (("validation", "dev.tsv"),)
    has_header: bool = True
    num_columns: int | None = None
    label_range: tuple[float, float] | None = None

    @property
    def is_regression(self) -> bool:
        """Whether the task predicts a real-valued score (STS-B) rather than a class."""
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        """The number of model outputs: the number of classes, or 1 for regression."""
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def sentence_keys(self) -> tuple[str, str | None]:
        """The Hub column names of the first and (for sentence-pair tasks) second text."""
        names = [name for name, _ in self.text_columns]
        return names[0], names[1] if len(names) > 1 else None

    @property
    def split_files(self) -> dict[str, str]:
        """The Hub split names this loader supports, mapped to their TSV file names."""
        return {"train": "train.tsv", **dict(self.validation_files)}

    @property
    def features(self) -> datasets.Features:
        """The `datasets.Features` of the Hub dataset for this task (text columns, `label`, `idx`)."""
        features = {name: datasets.Value("string") for name, _ in self.text_columns}
        if self.label_names is None:
            features["label"] = datasets.Value("float32")
        else:
            features["label"] = datasets.ClassLabel(names=list(self.label_names))
        features["idx"] = datasets.Value("int32")
        return datasets.Features(features)


_BINARY_IDS = ("0", "1")

# Column layouts follow the official TSV release; label names follow `nyu-mll/glue` (see its former loading script,
# huggingface/datasets `datasets/glue/glue.py`), which also defines the Hub column names.
GLUE_TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        # CoLA's train/dev files have no header: source, label, original annotation, sentence.
        GlueTask(
            name="cola",
            folder="CoLA",
            text_columns=(("sentence", 3),),
            label_column=1,
            label_names=("unacceptable", "acceptable"),
            tsv_labels=_BINARY_IDS,
            metric_keys=("matthews_correlation",),
            has_header=False,
            num_columns=4,
        ),
        GlueTask(
            name="sst2",
            folder="SST-2",
            text_columns=(("sentence", "sentence"),),
            label_column="label",
            label_names=("negative", "positive"),
            tsv_labels=_BINARY_IDS,
            metric_keys=("accuracy",),
        ),
        GlueTask(
            name="mrpc",
            folder="MRPC",
            text_columns=(("sentence1", "#1 String"), ("sentence2", "#2 String")),
            label_column="Quality",
            label_names=("not_equivalent", "equivalent"),
            tsv_labels=_BINARY_IDS,
            metric_keys=("f1", "accuracy"),
        ),
        GlueTask(
            name="qqp",
            folder="QQP",
            text_columns=(("question1", "question1"), ("question2", "question2")),
            label_column="is_duplicate",
            label_names=("not_duplicate", "duplicate"),
            tsv_labels=_BINARY_IDS,
            metric_keys=("f1", "accuracy"),
        ),
        GlueTask(
            name="stsb",
            folder="STS-B",
            text_columns=(("sentence1", "sentence1"), ("sentence2", "sentence2")),
            label_column="score",
            label_names=None,
            tsv_labels=None,
            metric_keys=("pearson", "spearmanr"),
            label_range=(0.0, 5.0),
        ),
        # MNLI's dev files carry five annotator labels; `gold_label` is the consensus the benchmark scores against.
        GlueTask(
            name="mnli",
            folder="MNLI",
            text_columns=(("premise", "sentence1"), ("hypothesis", "sentence2")),
            label_column="gold_label",
            label_names=("entailment", "neutral", "contradiction"),
            tsv_labels=("entailment", "neutral", "contradiction"),
            metric_keys=("accuracy",),
            validation_files=(
                ("validation_matched", "dev_matched.tsv"),
                ("validation_mismatched", "dev_mismatched.tsv"),
            ),
        ),
        GlueTask(
            name="qnli",
            folder="QNLI",
            text_columns=(("question", "question"), ("sentence", "sentence")),
            label_column="label",
            label_names=("entailment", "not_entailment"),
            tsv_labels=("entailment", "not_entailment"),
            metric_keys=("accuracy",),
        ),
        GlueTask(
            name="rte",
            folder="RTE",
            text_columns=(("sentence1", "sentence1"), ("sentence2", "sentence2")),
            label_column="label",
            label_names=("entailment", "not_entailment"),
            tsv_labels=("entailment", "not_entailment"),
            metric_keys=("accuracy",),
        ),
        # WNLI writes ids, and id 1 is entailment: the reverse of RTE/QNLI's order.
        GlueTask(
            name="wnli",
            folder="WNLI",
            text_columns=(("sentence1", "sentence1"), ("sentence2", "sentence2")),
            label_column="label",
            label_names=("not_entailment", "entailment"),
            tsv_labels=_BINARY_IDS,
            metric_keys=("accuracy",),
        ),
    )
}


class GlueDataError(ValueError):
    """Raised when a GLUE TSV file does not have the layout or the labels its task requires."""


def get_glue_task(task: str) -> GlueTask:
    """
    Returns the [`GlueTask`] registered under `task` (case-insensitive).

    Raises:
        `ValueError`: if `task` is not a GLUE task; the message lists the known ones.
    """
    key = task.lower()
    if key not in GLUE_TASKS:
        raise ValueError(f"Unknown GLUE task {task!r}; the known tasks are: {', '.join(GLUE_TASKS)}.")
    return GLUE_TASKS[key]


def _column_index(path: str, header: list[str], column: str) -> int:
    if column not in header:
        raise GlueDataError(
            f"{path}, line 1: the header has no column {column!r}; found columns {header}. "
            "Is this the official GLUE TSV for this task?"
        )
    return header.index(column)


def _parse_label(task: GlueTask, path: str, line: int, value: str) -> int | float:
    if task.tsv_labels is not None:
        if value not in task.tsv_labels:
            raise GlueDataError(
                f"{path}, line {line}: label {value!r} is not one of the {task.name} labels {list(task.tsv_labels)}."
            )
        return task.tsv_labels.index(value)
    low, high = task.label_range
    try:
        score = float(value)
    except ValueError:
        score = math.nan
    # `not low <= score <= high` also rejects NaN, whether parsed from "nan" or from an unparsable value.
    if not low <= score <= high:
        raise GlueDataError(f"{path}, line {line}: label {value!r} is not a {task.name} score in [{low:g}, {high:g}].")
    return score


def _first_undecodable_line(path: str) -> int:
    # The text decoder reads ahead in blocks, so the reader's line count at the failure can be past the culprit.
    with open(path, "rb") as f:
        for line, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return line
    return line


def load_glue_tsv(glue_dir: str | os.PathLike, task: str, split: str) -> datasets.Dataset:
    """
    Loads one split of a GLUE task from the official TSV release, shaped like the Hub dataset `nyu-mll/glue`.

    Files are read as UTF-8 (a leading byte-order mark is ignored) and split on tabs with quoting disabled
    (`csv.QUOTE_NONE`), as the GLUE baselines and the Hub loading script did: quote characters are part of the text.

    Args:
        glue_dir (`str` or `os.PathLike`):
            The root of the GLUE release, holding one folder per task (`CoLA/`, `SST-2/`, `MNLI/`, ...).
        task (`str`):
            A GLUE task name, as in the Hub dataset (`"cola"`, `"sst2"`, `"mrpc"`, `"qqp"`, `"stsb"`, `"mnli"`,
            `"qnli"`, `"rte"`, `"wnli"`).
        split (`str`):
            `"train"`, or `"validation"` (`"validation_matched"` / `"validation_mismatched"` for MNLI).

    Returns:
        `datasets.Dataset`: the task's text columns under their Hub names, `label` (a `ClassLabel` with the Hub's
        names and ids, or a `float32` score for STS-B) and `idx`, the 0-based data row number. `idx` equals the Hub's
        for every task but MRPC, whose Hub split is rebuilt from the raw corpus in a different row order.

    Raises:
        `ValueError`: for an unknown task or split.
        `FileNotFoundError`: when the split's file is missing; the message names the expected path.
        [`GlueDataError`]: when the file is empty, not UTF-8 or not tab-separated text, lacks a column, has a row
            with the wrong number of columns or a label outside the task's set; the message names the file and line.
    """
    glue_task = get_glue_task(task)
    split_files = glue_task.split_files
    if split not in split_files:
        raise ValueError(
            f"Unknown split {split!r} for GLUE task {glue_task.name!r}; expected one of {list(split_files)}."
        )
    path = os.path.join(os.fspath(glue_dir), glue_task.folder, split_files[split])
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"The {glue_task.name} {split} split is missing: no file {path}. Expected the official GLUE layout "
            f"<glue_dir>/{glue_task.folder}/{split_files[split]}."
        )

    columns = {name: [] for name in glue_task.features}
    # `newline=""` lets the csv module see line ends itself, as its documentation asks; `utf-8-sig` drops the
    # byte-order mark that MRPC's files inherit from the raw Microsoft corpus, which would otherwise hide the first
    # header name.
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            if glue_task.has_header:
                header = next(reader, None)
                if header is None:
                    raise GlueDataError(f"{path} is empty; expected a header line and data rows.")
                num_columns = len(header)
                text_indices = [_column_index(path, header, column) for _, column in glue_task.text_columns]
                label_index = _column_index(path, header, glue_task.label_column)
            else:
                num_columns = glue_task.num_columns
                text_indices = [column for _, column in glue_task.text_columns]
                label_index = glue_task.label_column

            for row in reader:
                line = reader.line_num
                if len(row) != num_columns:
                    raise GlueDataError(
                        f"{path}, line {line}: expected {num_columns} tab-separated columns for {glue_task.name}, "
                        f"found {len(row)}."
                    )
                for (name, _), index in zip(glue_task.text_columns, text_indices, strict=True):
                    columns[name].append(row[index])
                columns["label"].append(_parse_label(glue_task, path, line, row[label_index]))
                columns["idx"].append(len(columns["idx"]))
        except UnicodeDecodeError:
            raise GlueDataError(f"{path}, line {_first_undecodable_line(path)}: not valid UTF-8 text.") from None
        except csv.Error as error:
            # For instance a field over the csv module's size limit: a sign of a file that is not GLUE TSV.
            raise GlueDataError(f"{path}, line {reader.line_num}: {error}.") from None

    if not columns["idx"]:
        raise GlueDataError(f"{path} is empty; it has no data rows.")
    logger.info(f"Loaded {len(columns['idx'])} rows of GLUE {glue_task.name} {split} from {path}.")
    return datasets.Dataset.from_dict(columns, features=glue_task.features, split=split)


def load_glue(
    task: str, glue_dir: str | os.PathLike | None = None, cache_dir: str | None = None
) -> datasets.DatasetDict:
    """
    Loads the train and validation splits of a GLUE task.

    Args:
        task (`str`):
            A GLUE task name, as in the Hub dataset `nyu-mll/glue`.
        glue_dir (`str` or `os.PathLike`, *optional*):
            The root of the official GLUE TSV release, read offline with [`load_glue_tsv`]. When `None`, the task
            is loaded from the Hub dataset `nyu-mll/glue` (which needs network access or a warm cache).
        cache_dir (`str`, *optional*):
            The `datasets` cache folder for the Hub path; unused with `glue_dir`.

    Returns:
        `datasets.DatasetDict`: `train` and `validation` (for MNLI `validation_matched` and
        `validation_mismatched`). The unlabelled test splits are left out on both paths.
    """
    glue_task = get_glue_task(task)
    if glue_dir is None:
        hub_splits = datasets.load_dataset("nyu-mll/glue", glue_task.name, cache_dir=cache_dir)
        return datasets.DatasetDict({split: hub_splits[split] for split in glue_task.split_files})
    return datasets.DatasetDict(
        {split: load_glue_tsv(glue_dir, glue_task.name, split) for split in glue_task.split_files}
    )


def compute_glue_metrics(
    task: str, predictions: np.ndarray | Sequence, labels: np.ndarray | Sequence
) -> dict[str, float]:
    """
    Computes the official GLUE dev metrics of a task, as the `glue` metric of the `evaluate` library defines them.

    CoLA: Matthews correlation; MRPC and QQP: F1 of the positive class (`equivalent` / `duplicate`, id 1) and
    accuracy; STS-B: Pearson and Spearman correlations; every other task: accuracy.

    Args:
        task (`str`):
            A GLUE task name (`"mnli"` covers both of its validation sets).
        predictions (`np.ndarray` or sequence):
            For classification tasks, either class ids of shape `(n,)` or logits / probabilities of shape
            `(n, num_labels)`, reduced with an argmax over the last axis. For STS-B, scores of shape `(n,)` or
            `(n, 1)`.
        labels (`np.ndarray` or sequence):
            The gold class ids (or scores for STS-B), shape `(n,)`.

    Returns:
        `dict[str, float]`: the task's metric keys (see [`GlueTask.metric_keys`]) mapped to Python floats. As in the
        official definitions, a correlation is `nan` when the predictions are constant, except the Matthews
        correlation, which scikit-learn defines as 0 then.
    """
    glue_task = get_glue_task(task)
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"`labels` must be one-dimensional, got shape {labels.shape}.")

    if glue_task.is_regression:
        if predictions.ndim == 2 and predictions.shape[1] == 1:
            predictions = predictions[:, 0]
    elif predictions.ndim == 2:
        if predictions.shape[1] != glue_task.num_labels:
            raise ValueError(
                f"{glue_task.name} has {glue_task.num_labels} classes but the logits have shape {predictions.shape}."
            )
        predictions = predictions.argmax(axis=-1)
    if predictions.ndim != 1:
        raise ValueError(f"Unexpected shape {predictions.shape} of {glue_task.name} predictions.")
    if len(predictions) != len(labels):
        raise ValueError(f"Got {len(predictions)} predictions for {len(labels)} labels.")
    if len(labels) == 0:
        raise ValueError("Cannot compute GLUE metrics on zero examples.")

    if glue_task.is_regression:
        predictions = predictions.astype(np.float64)
        labels = labels.astype(np.float64)
        return {
            "pearson": float(pearsonr(predictions, labels)[0]),
            "spearmanr": float(spearmanr(predictions, labels)[0]),
        }

    for name, values in (("predictions", predictions), ("labels", labels)):
        # Test-split labels are -1 on the Hub; scoring against them would silently count every example wrong.
        if not (np.all(np.mod(values, 1) == 0) and values.min() >= 0 and values.max() < glue_task.num_labels):
            raise ValueError(f"{glue_task.name} {name} must be class ids in [0, {glue_task.num_labels - 1}].")
    predictions = predictions.astype(np.int64)
    labels = labels.astype(np.int64)

    if glue_task.name == "cola":
        return {"matthews_correlation": float(matthews_corrcoef(labels, predictions))}
    accuracy = float((predictions == labels).mean())
    if glue_task.name in ("mrpc", "qqp"):
        return {"f1": float(f1_score(labels, predictions)), "accuracy": accuracy}
    return {"accuracy": accuracy}
