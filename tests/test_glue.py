"""Tests for `light_mobilebert.glue`: the task registry, the official metrics and the offline TSV loader."""

import math
from collections import Counter

import numpy as np
import pytest

from light_mobilebert.glue import (
    GLUE_TASKS,
    GlueDataError,
    compute_glue_metrics,
    get_glue_task,
    load_glue,
    load_glue_tsv,
)


# --------------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------------


def test_registry_covers_glue_with_hub_label_order():
    assert sorted(GLUE_TASKS) == sorted(["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"])
    # The label ids of nyu-mll/glue; getting one order wrong would silently invert a task.
    expected = {
        "cola": ("unacceptable", "acceptable"),
        "sst2": ("negative", "positive"),
        "mrpc": ("not_equivalent", "equivalent"),
        "qqp": ("not_duplicate", "duplicate"),
        "stsb": None,
        "mnli": ("entailment", "neutral", "contradiction"),
        "qnli": ("entailment", "not_entailment"),
        "rte": ("entailment", "not_entailment"),
        "wnli": ("not_entailment", "entailment"),
    }
    assert {name: task.label_names for name, task in GLUE_TASKS.items()} == expected
    assert GLUE_TASKS["stsb"].is_regression and GLUE_TASKS["stsb"].num_labels == 1
    assert GLUE_TASKS["mnli"].num_labels == 3
    assert list(GLUE_TASKS["mnli"].split_files) == ["train", "validation_matched", "validation_mismatched"]
    assert GLUE_TASKS["qnli"].sentence_keys == ("question", "sentence")
    assert GLUE_TASKS["sst2"].sentence_keys == ("sentence", None)


def test_get_glue_task_is_case_insensitive_and_lists_known_tasks():
    assert get_glue_task("RTE") is GLUE_TASKS["rte"]
    with pytest.raises(ValueError, match="Unknown GLUE task 'sst-2'.*cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte"):
        get_glue_task("sst-2")


# --------------------------------------------------------------------------------------------------------------------
# Metrics, against closed-form computations
# --------------------------------------------------------------------------------------------------------------------

LABELS = np.array([1, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1, 0])
PREDS = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1, 1])


def _confusion(labels, preds):
    tp = int(np.sum((labels == 1) & (preds == 1)))
    tn = int(np.sum((labels == 0) & (preds == 0)))
    fp = int(np.sum((labels == 0) & (preds == 1)))
    fn = int(np.sum((labels == 1) & (preds == 0)))
    return tp, tn, fp, fn


def _pearson(x, y):
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    return float(np.sum(x * y) / math.sqrt(np.sum(x * x) * np.sum(y * y)))


def test_cola_matthews_correlation_matches_confusion_matrix_formula():
    tp, tn, fp, fn = _confusion(LABELS, PREDS)
    assert (tp, tn, fp, fn) == (5, 3, 2, 2)
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert compute_glue_metrics("cola", PREDS, LABELS) == {"matthews_correlation": pytest.approx(expected, abs=1e-12)}
    # Constant predictions make the formula 0/0; the official (scikit-learn) definition reports 0.
    assert compute_glue_metrics("cola", np.ones_like(LABELS), LABELS) == {"matthews_correlation": 0.0}


@pytest.mark.parametrize("task", ["mrpc", "qqp"])
def test_f1_and_accuracy_match_closed_form(task):
    tp, tn, fp, fn = _confusion(LABELS, PREDS)
    metrics = compute_glue_metrics(task, PREDS.tolist(), LABELS.tolist())
    assert metrics == {
        "f1": pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12),
        "accuracy": pytest.approx((tp + tn) / len(LABELS), abs=1e-12),
    }
    assert all(type(value) is float for value in metrics.values())


@pytest.mark.parametrize("task", ["sst2", "mnli", "qnli", "rte", "wnli"])
def test_accuracy_from_logits_uses_argmax(task):
    num_labels = GLUE_TASKS[task].num_labels
    labels = np.array([0, 1, 1, 0, 1])
    logits = np.full((5, num_labels), -1.0)
    # Rows 0, 1 and 3 put their maximum on the gold class, rows 2 and 4 on another one.
    for row, cls in enumerate([0, 1, 0, 0, 0]):
        logits[row, cls] = 2.0
    assert compute_glue_metrics(task, logits, labels) == {"accuracy": pytest.approx(3 / 5)}
    assert compute_glue_metrics(task, logits.argmax(-1), labels) == {"accuracy": pytest.approx(3 / 5)}


def test_stsb_pearson_and_spearman_match_their_definitions():
    labels = np.array([0.0, 1.2, 2.5, 3.1, 4.8, 5.0, 2.2])
    preds = np.array([0.3, 1.0, 3.0, 2.6, 4.1, 4.9, 1.5])
    # No ties: Spearman's rho is the Pearson correlation of the ranks.
    ranks = lambda x: np.argsort(np.argsort(x)).astype(np.float64)  # noqa: E731
    expected = {"pearson": _pearson(preds, labels), "spearmanr": _pearson(ranks(preds), ranks(labels))}
    assert compute_glue_metrics("stsb", preds, labels) == pytest.approx(expected, abs=1e-12)
    # A regression head returns shape (n, 1).
    assert compute_glue_metrics("stsb", preds[:, None], labels) == pytest.approx(expected, abs=1e-12)


def test_stsb_spearman_uses_average_ranks_for_ties():
    labels = np.array([1.0, 2.0, 2.0, 3.0, 4.0])
    preds = np.array([1.0, 3.0, 2.0, 2.0, 5.0])
    # Ties share the mean of the ranks they span.
    expected = _pearson([1, 4, 2.5, 2.5, 5], [1, 2.5, 2.5, 4, 5])
    assert compute_glue_metrics("stsb", preds, labels)["spearmanr"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "task, predictions, labels, message",
    [
        ("rte", np.zeros((3, 3)), [0, 1, 0], "rte has 2 classes but the logits have shape"),
        ("rte", [0, 1], [0, 1, 0], "Got 2 predictions for 3 labels"),
        ("rte", [0, 1, 0], [0, 1, -1], r"rte labels must be class ids in \[0, 1\]"),
        ("mnli", [0, 3, 0], [0, 1, 2], r"mnli predictions must be class ids in \[0, 2\]"),
        ("cola", [0.5, 1.0], [0, 1], "cola predictions must be class ids"),
        ("stsb", np.zeros((3, 2)), [0.0, 1.0, 2.0], "Unexpected shape"),
        ("sst2", [], [], "zero examples"),
        ("glue", [0], [0], "Unknown GLUE task"),
    ],
)
def test_metric_input_errors(task, predictions, labels, message):
    with pytest.raises(ValueError, match=message):
        compute_glue_metrics(task, predictions, labels)


# --------------------------------------------------------------------------------------------------------------------
# Loader on the real shared files (row counts and label counts from the folder's MANIFEST.md)
# --------------------------------------------------------------------------------------------------------------------

MANIFEST = {
    ("cola", "train"): (8551, {1: 6023, 0: 2528}),
    ("cola", "validation"): (1043, {1: 721, 0: 322}),
    ("sst2", "train"): (67349, {1: 37569, 0: 29780}),
    ("sst2", "validation"): (872, {1: 444, 0: 428}),
    ("rte", "train"): (2490, {0: 1249, 1: 1241}),
    ("rte", "validation"): (277, {0: 146, 1: 131}),
    ("stsb", "train"): (5749, None),
    ("stsb", "validation"): (1500, None),
    ("qnli", "validation"): (5463, {0: 2702, 1: 2761}),
    # WNLI's TSV ids are the Hub ids: 0 is not_entailment.
    ("wnli", "train"): (635, {0: 323, 1: 312}),
    ("wnli", "validation"): (71, {0: 40, 1: 31}),
}


@pytest.mark.integration
@pytest.mark.parametrize("task, split", list(MANIFEST))
def test_real_files_match_manifest(glue_dir, task, split):
    num_rows, label_counts = MANIFEST[task, split]
    dataset = load_glue_tsv(glue_dir, task, split)
    assert dataset.num_rows == num_rows
    assert dataset.features == GLUE_TASKS[task].features
    assert dataset.column_names == [*(name for name, _ in GLUE_TASKS[task].text_columns), "label", "idx"]
    assert dataset["idx"] == list(range(num_rows))
    if label_counts is None:
        scores = np.array(dataset["label"])
        assert scores.min() == 0.0 and scores.max() == 5.0
    else:
        assert dict(Counter(dataset["label"])) == label_counts
    assert all(text for name, _ in GLUE_TASKS[task].text_columns for text in dataset[name])


@pytest.mark.integration
def test_real_rows_keep_text_verbatim(glue_dir):
    cola = load_glue_tsv(glue_dir, "cola", "train")
    assert cola[0] == {
        "sentence": "Our friends won't buy this analysis, let alone the next one we propose.",
        "label": 1,
        "idx": 0,
    }
    # SST-2's sentences end with a space in the official files; the Hub dataset keeps it.
    assert load_glue_tsv(glue_dir, "sst2", "train")[0]["sentence"] == "hide new secretions from the parental units "
    rte = load_glue_tsv(glue_dir, "rte", "validation")
    assert rte[0]["sentence2"] == "Christopher Reeve had an accident."
    assert rte.features["label"].int2str(rte[0]["label"]) == "not_entailment"
    stsb = load_glue_tsv(glue_dir, "stsb", "train")
    assert stsb[1] == {
        "sentence1": "A man is playing a large flute.",
        "sentence2": "A man is playing a flute.",
        "label": pytest.approx(3.8),
        "idx": 1,
    }


@pytest.mark.integration
def test_load_glue_returns_train_and_validation(glue_dir):
    splits = load_glue("RTE", glue_dir)
    assert list(splits) == ["train", "validation"]
    assert (splits["train"].num_rows, splits["validation"].num_rows) == (2490, 277)


# --------------------------------------------------------------------------------------------------------------------
# Loader on small hand-made files: layouts the shared folder lacks, and every user mistake
# --------------------------------------------------------------------------------------------------------------------

MNLI_HEADER = (
    "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
    "sentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label"
)


def _write(root, relative, text, encoding="utf-8"):
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return str(path)


def test_mnli_dev_uses_gold_label_and_hub_names(tmp_path):
    rows = [
        "0\t1\t1e\tfiction\t( a )\t( b )\t(a)\t(b)\tA premise.\tA hypothesis.\t"
        "neutral\tneutral\tcontradiction\tneutral\tneutral\tneutral",
        "1\t2\t2c\tslate\t( c )\t( d )\t(c)\t(d)\tAnother premise.\tNo.\tcontradiction\t\t\t\t\tcontradiction",
    ]
    _write(tmp_path, "MNLI/dev_mismatched.tsv", "\n".join([MNLI_HEADER, *rows]) + "\n")
    dataset = load_glue_tsv(tmp_path, "mnli", "validation_mismatched")
    assert dataset.column_names == ["premise", "hypothesis", "label", "idx"]
    assert dataset[:] == {
        "premise": ["A premise.", "Another premise."],
        "hypothesis": ["A hypothesis.", "No."],
        "label": [1, 2],
        "idx": [0, 1],
    }


def test_mrpc_and_qqp_layouts(tmp_path):
    # MRPC's files inherit a byte-order mark from the raw Microsoft corpus.
    _write(
        tmp_path,
        "MRPC/train.tsv",
        '\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t702876\t702977\tHe said "yes.\tHe agreed.\n',
    )
    mrpc = load_glue_tsv(tmp_path, "mrpc", "train")
    # Quoting is off: an unbalanced quote is text, not the start of a multi-line field.
    assert mrpc[0] == {"sentence1": 'He said "yes.', "sentence2": "He agreed.", "label": 1, "idx": 0}
    _write(
        tmp_path,
        "QQP/dev.tsv",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n7\t15\t16\tHow?\tWhy?\t0\n8\t17\t18\tWho?\tWho?\t1\n",
    )
    qqp = load_glue_tsv(tmp_path, "qqp", "validation")
    assert qqp[:] == {"question1": ["How?", "Who?"], "question2": ["Why?", "Who?"], "label": [0, 1], "idx": [0, 1]}


def test_unknown_task_and_split(tmp_path):
    with pytest.raises(ValueError, match="Unknown GLUE task 'imdb'; the known tasks are: cola, sst2"):
        load_glue_tsv(tmp_path, "imdb", "train")
    with pytest.raises(ValueError, match=r"Unknown split 'validation' for GLUE task 'mnli'.*'validation_matched'"):
        load_glue_tsv(tmp_path, "mnli", "validation")
    with pytest.raises(ValueError, match="Unknown split 'test'"):
        load_glue_tsv(tmp_path, "rte", "test")


def test_missing_split_names_the_path(tmp_path):
    _write(tmp_path, "RTE/train.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    expected = str(tmp_path / "RTE" / "dev.tsv")
    with pytest.raises(FileNotFoundError, match="rte validation split is missing") as error:
        load_glue("rte", tmp_path)
    assert expected in str(error.value)
    with pytest.raises(FileNotFoundError) as error:
        load_glue_tsv(tmp_path / "nowhere", "mnli", "validation_matched")
    assert str(tmp_path / "nowhere" / "MNLI" / "dev_matched.tsv") in str(error.value)


@pytest.mark.parametrize(
    "task, relative, text, message",
    [
        # A row with a missing tab: the file and the 1-based line (header included) are named.
        (
            "rte",
            "RTE/train.tsv",
            "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta b\tnot_entailment\n",
            "RTE/train.tsv, line 3: expected 4 tab-separated columns for rte, found 3",
        ),
        (
            "cola",
            "CoLA/dev.tsv",
            "gj04\t1\t\tFine.\ngj04\t0\t*\tBad one\textra\n",
            "CoLA/dev.tsv, line 2: expected 4 tab-separated columns for cola, found 5",
        ),
        # A file of another task: its header lacks the columns this task reads.
        (
            "rte",
            "RTE/dev.tsv",
            "sentence\tlabel\nfine .\t1\n",
            "RTE/dev.tsv, line 1: the header has no column 'sentence1'",
        ),
        # CoLA has no header: given the wrong file, the column count of its first row trips first.
        (
            "cola",
            "CoLA/train.tsv",
            "sentence\tlabel\nfine .\t1\n",
            "CoLA/train.tsv, line 1: expected 4 tab-separated columns for cola, found 2",
        ),
        (
            "rte",
            "RTE/train.tsv",
            "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tneutral\n",
            "RTE/train.tsv, line 3: label 'neutral' is not one of the rte labels ['entailment', 'not_entailment']",
        ),
        (
            "cola",
            "CoLA/train.tsv",
            "gj04\t1\t\tFine.\ngj04\t2\t\tHuh.\n",
            "CoLA/train.tsv, line 2: label '2' is not one of the cola labels ['0', '1']",
        ),
        (
            "wnli",
            "WNLI/dev.tsv",
            "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n",
            "WNLI/dev.tsv, line 2: label 'entailment' is not one of the wnli labels ['0', '1']",
        ),
        (
            "stsb",
            "STS-B/dev.tsv",
            "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
            "0\tg\tf\t2012\t0\tnone\tnone\ta\tb\t5.500\n",
            "STS-B/dev.tsv, line 2: label '5.500' is not a stsb score in [0, 5]",
        ),
        (
            "stsb",
            "STS-B/train.tsv",
            "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
            "0\tg\tf\t2012\t0\tnone\tnone\ta\tb\t1.0\n1\tg\tf\t2012\t1\tnone\tnone\ta\tb\thigh\n",
            "STS-B/train.tsv, line 3: label 'high' is not a stsb score in [0, 5]",
        ),
        ("sst2", "SST-2/train.tsv", "", "SST-2/train.tsv is empty; expected a header line"),
        ("cola", "CoLA/train.tsv", "", "CoLA/train.tsv is empty; it has no data rows"),
        ("sst2", "SST-2/dev.tsv", "sentence\tlabel\n", "SST-2/dev.tsv is empty; it has no data rows"),
        (
            "sst2",
            "SST-2/train.tsv",
            "sentence\tlabel\n" + "x" * 200_000 + "\t1\n",
            "SST-2/train.tsv, line 2: field larger than field limit",
        ),
        (
            "sst2",
            "SST-2/dev.tsv",
            b"sentence\tlabel\ngood .\t1\n" + "caf\xe9 .\t1\n".encode("latin-1"),
            "SST-2/dev.tsv, line 3: not valid UTF-8",
        ),
    ],
)
def test_bad_files_raise_glue_data_error_naming_file_and_line(tmp_path, task, relative, text, message):
    path = _write(tmp_path, relative, text)
    split = "train" if relative.endswith("train.tsv") else "validation"
    with pytest.raises(GlueDataError) as error:
        load_glue_tsv(tmp_path, task, split)
    assert message in str(error.value)
    assert path in str(error.value)
    # A ValueError, so callers that catch bad input generically still do.
    assert isinstance(error.value, ValueError)
