"""End-to-end tests of `examples/run_glue.py`, offline, on samples of the real GLUE files and a tiny random BERT."""

import importlib.util
import json
import math
from pathlib import Path

import datasets
import pytest
import torch
import transformers
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
)

from light_mobilebert.glue import compute_glue_metrics, load_glue_tsv


REPO_ROOT = Path(__file__).resolve().parents[1]

# Flags every run shares: a handful of CPU steps, no checkpoints, no integrations, quiet.
COMMON_ARGS = [
    "--max_seq_length",
    "64",
    "--per_device_train_batch_size",
    "8",
    "--per_device_eval_batch_size",
    "16",
    "--save_strategy",
    "no",
    "--report_to",
    "none",
    "--use_cpu",
    "--disable_tqdm",
    "true",
    "--log_level",
    "warning",
    "--seed",
    "0",
]


@pytest.fixture(scope="module")
def run_glue():
    """The example script, imported as a module so that `main` runs in this process (no second torch start-up)."""
    spec = importlib.util.spec_from_file_location("run_glue", REPO_ROOT / "examples" / "run_glue.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def restore_library_verbosity():
    # `main` sets the transformers and datasets log levels, as a script should; keep them out of the other tests.
    transformers_level = transformers.utils.logging.get_verbosity()
    datasets_level = datasets.utils.logging.get_verbosity()
    yield
    transformers.utils.logging.set_verbosity(transformers_level)
    datasets.utils.logging.set_verbosity(datasets_level)


def save_tiny_bert(path: Path, tokenizer_path: Path, model_class: type = BertModel, **config_overrides) -> Path:
    """Saves a randomly initialised 32-wide BERT (2 layers unless overridden) with the real MiniLM (uncased)
    tokenizer."""
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        **config_overrides,
    )
    torch.manual_seed(0)
    model_class(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, minilm_path) -> Path:
    """A tiny BERT without a head."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), minilm_path)


def _read_json(path: Path) -> dict:
    assert path.is_file(), f"{path.name} was not written"
    return json.loads(path.read_text())


def _assert_finite(metrics: dict):
    for key, value in metrics.items():
        assert isinstance(value, (int, float)) and math.isfinite(value), f"{key} = {value!r}"


@pytest.mark.integration
def test_rte_trains_and_reports_the_final_checkpoint(run_glue, tiny_model_dir, glue_dir, tmp_path):
    output_dir = tmp_path / "rte"
    returned = run_glue.main(
        [
            "--model_name_or_path",
            str(tiny_model_dir),
            "--task_name",
            "rte",
            "--glue_dir",
            str(glue_dir),
            "--do_train",
            "--do_eval",
            "--max_train_samples",
            "32",
            "--max_eval_samples",
            "32",
            "--max_steps",
            "4",
            # Dev evaluations during training must not change which checkpoint is reported.
            "--eval_strategy",
            "steps",
            "--eval_steps",
            "2",
            "--loss",
            "joint",
            "--optimizer",
            "lmbert_adam",
            "--lr_schedule",
            "paper",
            "--output_dir",
            str(output_dir),
            *COMMON_ARGS,
        ]
    )

    train = _read_json(output_dir / "train_results.json")
    assert {"train_loss", "train_runtime", "epoch"} <= train.keys() and train["train_samples"] == 32
    evaluation = _read_json(output_dir / "eval_results.json")
    assert {"eval_accuracy", "eval_loss", "epoch"} <= evaluation.keys() and evaluation["eval_samples"] == 32
    assert 0.0 <= evaluation["eval_accuracy"] <= 1.0
    _assert_finite(train)
    _assert_finite(evaluation)
    assert _read_json(output_dir / "all_results.json") == {**train, **evaluation}
    assert returned == evaluation
    assert "GLUE RTE" in (output_dir / "README.md").read_text()

    # The head follows the task, in the Hub dataset's label order.
    model = AutoModelForSequenceClassification.from_pretrained(output_dir).eval()
    assert model.config.id2label == {0: "entailment", 1: "not_entailment"}
    assert model.config.problem_type == "single_label_classification"

    # The reported accuracy is the saved (final) model's on the first 32 dev rows, recomputed here independently.
    dev = load_glue_tsv(glue_dir, "rte", "validation")[:32]
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    batch = tokenizer(
        dev["sentence1"], dev["sentence2"], padding="max_length", max_length=64, truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**batch).logits.numpy()
    expected = compute_glue_metrics("rte", logits, dev["label"])["accuracy"]
    assert evaluation["eval_accuracy"] == pytest.approx(expected)


@pytest.mark.integration
def test_stsb_regression_from_a_json_file(run_glue, tiny_model_dir, glue_dir, tmp_path):
    output_dir = tmp_path / "stsb"
    args = {
        "model_name_or_path": str(tiny_model_dir),
        "task_name": "stsb",
        "glue_dir": str(glue_dir),
        "do_train": True,
        "do_eval": True,
        "max_train_samples": 32,
        "max_eval_samples": 48,
        "max_steps": 3,
        "pad_to_max_length": False,
        "output_dir": str(output_dir),
        "max_seq_length": 64,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 16,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "log_level": "warning",
        "seed": 0,
    }
    json_file = tmp_path / "args.json"
    json_file.write_text(json.dumps(args))
    run_glue.main([str(json_file)])

    evaluation = _read_json(output_dir / "eval_results.json")
    assert {"eval_pearson", "eval_spearmanr", "eval_combined_score", "eval_loss"} <= evaluation.keys()
    assert evaluation["eval_samples"] == 48
    _assert_finite(evaluation)
    assert -1.0 <= evaluation["eval_pearson"] <= 1.0 and -1.0 <= evaluation["eval_spearmanr"] <= 1.0
    assert evaluation["eval_combined_score"] == pytest.approx(
        (evaluation["eval_pearson"] + evaluation["eval_spearmanr"]) / 2
    )
    assert {"train_loss", "eval_pearson"} <= _read_json(output_dir / "all_results.json").keys()
    config = _read_json(output_dir / "config.json")
    assert config["problem_type"] == "regression" and len(config["id2label"]) == 1


def test_mnli_evaluates_both_dev_sets_with_mm_suffix(run_glue, tiny_model_dir, tmp_path):
    # The shared folder has no MNLI; a few rows in the official layout (dev files carry five annotator labels).
    header = [
        "index",
        "promptID",
        "pairID",
        "genre",
        "sentence1_binary_parse",
        "sentence2_binary_parse",
        "sentence1_parse",
        "sentence2_parse",
        "sentence1",
        "sentence2",
        "label1",
        "label2",
        "label3",
        "label4",
        "label5",
        "gold_label",
    ]
    labels = ["entailment", "neutral", "contradiction"]
    glue_dir = tmp_path / "glue"
    (glue_dir / "MNLI").mkdir(parents=True)
    for name, num_rows in (("train.tsv", 4), ("dev_matched.tsv", 5), ("dev_mismatched.tsv", 7)):
        rows = [
            [str(i), str(i), f"{i}e", "fiction", "( a )", "( b )", "(a)", "(b)", f"Premise {i}.", f"Hypothesis {i}."]
            + [labels[i % 3]] * 6
            for i in range(num_rows)
        ]
        (glue_dir / "MNLI" / name).write_text("\n".join("\t".join(row) for row in [header, *rows]) + "\n")

    output_dir = tmp_path / "mnli"
    run_glue.main(
        [
            "--model_name_or_path",
            str(tiny_model_dir),
            "--task_name",
            "MNLI",
            "--glue_dir",
            str(glue_dir),
            "--do_eval",
            "--output_dir",
            str(output_dir),
            *COMMON_ARGS,
        ]
    )
    evaluation = _read_json(output_dir / "eval_results.json")
    assert {"eval_accuracy", "eval_loss", "eval_accuracy_mm", "eval_loss_mm"} <= evaluation.keys()
    assert (evaluation["eval_samples"], evaluation["eval_samples_mm"]) == (5, 7)
    _assert_finite(evaluation)
    assert not (output_dir / "train_results.json").exists()


def test_unknown_task_is_rejected_before_loading_anything(run_glue, tmp_path):
    with pytest.raises(ValueError, match="Unknown GLUE task 'sst-2'; the known tasks are: cola, sst2"):
        run_glue.main(["--model_name_or_path", "unused", "--task_name", "sst-2", "--output_dir", str(tmp_path)])


@pytest.fixture(scope="module")
def three_label_model_dir(tmp_path_factory, minilm_path) -> Path:
    """A tiny BERT classifier with a 3-label head, as after fine-tuning on MNLI."""
    path = tmp_path_factory.mktemp("tiny-bert-3-labels")
    return save_tiny_bert(path, minilm_path, BertForSequenceClassification, num_labels=3)


@pytest.mark.integration
def test_a_head_for_another_number_of_labels_needs_ignore_mismatched_sizes(
    run_glue, three_label_model_dir, glue_dir, tmp_path
):
    args = ["--model_name_or_path", str(three_label_model_dir), "--task_name", "sst2", "--glue_dir", str(glue_dir)]
    args += ["--do_eval", "--max_eval_samples", "16", *COMMON_ARGS]
    with pytest.raises(ValueError, match="pass --ignore_mismatched_sizes"):
        run_glue.main([*args, "--output_dir", str(tmp_path / "refused")])

    # With the flag, the 3-label head is replaced by a 2-label one and SST-2 is scored.
    metrics = run_glue.main([*args, "--output_dir", str(tmp_path / "sst2"), "--ignore_mismatched_sizes"])
    assert metrics["eval_samples"] == 16 and 0.0 <= metrics["eval_accuracy"] <= 1.0
