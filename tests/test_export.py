"""ONNX export of LightMobileBERT: parity on real sentences, dynamic axes, int8 quantisation, GLUE scoring."""

import json
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from light_mobilebert import LightMobileBertConfig, LightMobileBertForSequenceClassification, export
from light_mobilebert.export import (
    check_onnx_parity,
    export_onnx,
    onnx_accuracy,
    onnx_logits,
    onnx_session,
    quantize_dynamic_int8,
)
from light_mobilebert.modeling.modeling_light_mobilebert import NoNorm


onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

NUM_SENTENCES = 32


@pytest.fixture(scope="module")
def sentences(glue_dir) -> list[str]:
    """The first SST-2 dev sentences: real word pieces, lengths from 4 to 40 tokens."""
    lines = (glue_dir / "SST-2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1 : NUM_SENTENCES + 1]
    return [line.split("\t")[0] for line in lines]


@pytest.fixture(scope="module")
def model(minilm_tokenizer, sentences) -> LightMobileBertForSequenceClassification:
    """A tiny LightMobileBERT with collaborative attention and the full uncased vocabulary."""
    torch.manual_seed(0)
    config = LightMobileBertConfig(
        vocab_size=30522,
        embedding_size=32,
        hidden_size=64,
        intra_bottleneck_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        shared_qk_size=16,
        num_feedforward_networks=2,
        # Large enough for logits of order 1 despite NoNorm, so that 1e-4 is a strict tolerance.
        initializer_range=0.15,
        num_labels=2,
        attn_implementation="eager",
    )
    model = LightMobileBertForSequenceClassification(config).eval()
    # Trained-looking NoNorms (not the initial identity), so that the export's NoNorm folding has work to do.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, NoNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
    # A random classifier puts every sentence in one class; centre it on these sentences so that both classes occur
    # and the int8 agreement below is not trivially perfect.
    encoding = minilm_tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**encoding).logits
        model.classifier.bias[1] -= (logits[:, 1] - logits[:, 0]).median()
    return model


@pytest.fixture(scope="module")
def onnx_path(model, minilm_tokenizer, tmp_path_factory):
    return export_onnx(model, minilm_tokenizer, tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.fixture(scope="module")
def int8_path(onnx_path):
    return quantize_dynamic_int8(onnx_path, onnx_path.with_name("model.int8.onnx"))


def test_parity_on_padded_batches_of_real_sentences(model, onnx_path, minilm_tokenizer, sentences):
    batch = minilm_tokenizer(sentences[:8], padding=True)
    assert 0 in np.asarray(batch["attention_mask"])  # the comparison covers padding
    difference = check_onnx_parity(model, onnx_path, minilm_tokenizer, sentences, batch_size=8)
    assert difference <= 1e-4
    with torch.no_grad():
        logits = model(**minilm_tokenizer(sentences, padding=True, return_tensors="pt")).logits
    assert logits.std(0).min() > 0.1  # the logits vary: the tolerance is meaningful


def op_counts(path) -> Counter:
    """How many nodes of each operator type the ONNX graph at `path` has."""
    return Counter(node.op_type for node in onnx.load(path).graph.node)


def count_no_norms(model) -> int:
    return sum(isinstance(module, NoNorm) for module in model.modules())


def test_no_norms_are_folded_out_of_the_graph(model, onnx_path, minilm_tokenizer, sentences, tmp_path):
    unfolded_path = export_onnx(model, minilm_tokenizer, tmp_path / "unfolded.onnx", fold_norms=False)
    assert check_onnx_parity(model, unfolded_path, minilm_tokenizer, sentences) <= 1e-4

    folded, unfolded = op_counts(onnx_path), op_counts(unfolded_path)
    # Each NoNorm is a multiplication and an addition; folding removes exactly those and adds no node.
    num_no_norms = count_no_norms(model)
    assert num_no_norms == 1 + 2 * 6  # embeddings; per layer 2 bottlenecks, attention, 1 extra FFN, output, bottleneck
    assert unfolded - folded == Counter({"Mul": num_no_norms, "Add": num_no_norms})
    assert not folded - unfolded


def test_graph_has_dynamic_batch_and_sequence_axes(model, onnx_path):
    session = onnx_session(onnx_path)
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(i.shape == ["batch", "sequence"] for i in session.get_inputs())
    assert session.get_outputs()[0].shape[0] == "batch"
    generator = torch.Generator().manual_seed(0)
    for batch_size, length in ((1, 5), (3, 40), (2, 128)):
        input_ids = torch.randint(1000, 30522, (batch_size, length), generator=generator)
        attention_mask = torch.ones_like(input_ids)
        attention_mask[0, length // 2 :] = 0
        token_type_ids = torch.zeros_like(input_ids)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        (onnx_output,) = session.run(["logits"], {name: tensor.numpy() for name, tensor in inputs.items()})
        with torch.no_grad():
            expected = model(**inputs).logits.numpy()
        assert onnx_output.shape == (batch_size, 2)
        np.testing.assert_allclose(onnx_output, expected, atol=1e-4, rtol=0)


def test_export_from_example_inputs_restores_training_mode(model, tmp_path):
    example = {"input_ids": torch.tensor([[101, 2023, 102]]), "attention_mask": torch.ones(1, 3, dtype=torch.long)}
    model.train()
    try:
        path = export_onnx(model, example, tmp_path / "no_token_types.onnx", dynamo=False)
        assert model.training
    finally:
        model.eval()
    assert [i.name for i in onnx_session(path).get_inputs()] == ["input_ids", "attention_mask"]


def test_int8_model_agrees_with_fp32(onnx_path, int8_path, minilm_tokenizer, sentences):
    fp32 = onnx_logits(onnx_session(onnx_path), minilm_tokenizer, sentences, batch_size=8)
    int8 = onnx_logits(onnx_session(int8_path), minilm_tokenizer, sentences, batch_size=8)
    assert int8.shape == fp32.shape and np.isfinite(int8).all()
    fp32_margin, int8_margin = fp32[:, 1] - fp32[:, 0], int8[:, 1] - int8[:, 0]
    assert 0.25 < (fp32_margin > 0).mean() < 0.75
    assert (np.sign(fp32_margin) == np.sign(int8_margin)).mean() >= 0.75
    assert np.corrcoef(fp32_margin, int8_margin)[0, 1] > 0.9


def test_onnx_accuracy_scores_glue_dev(int8_path, minilm_tokenizer, glue_dir):
    metrics = onnx_accuracy(int8_path, minilm_tokenizer, "sst2", glue_dir, batch_size=64)
    assert set(metrics) == {"accuracy"}
    assert 0.0 <= metrics["accuracy"] <= 1.0


def test_clear_error_without_onnxruntime(monkeypatch, onnx_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"light-mobilebert\[edge\]"):
        onnx_session(onnx_path)


@pytest.fixture(scope="module")
def model_dir(model, minilm_tokenizer, tmp_path_factory):
    """The tiny classifier saved with its tokenizer, as `run_glue.py` leaves a fine-tuned model."""
    folder = tmp_path_factory.mktemp("fine-tuned")
    model.save_pretrained(folder)
    minilm_tokenizer.save_pretrained(folder)
    return folder


def torch_sst2_accuracy(model, tokenizer, glue_dir) -> float:
    """SST-2 dev accuracy of the PyTorch model, computed here from the TSV file."""
    rows = [line.split("\t") for line in (glue_dir / "SST-2" / "dev.tsv").read_text().splitlines()[1:]]
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(rows), 128):
            batch = rows[start : start + 128]
            encoding = tokenizer([r[0] for r in batch], padding=True, truncation=True, return_tensors="pt")
            predictions = model(**encoding).logits.argmax(-1)
            correct += sum(int(p) == int(r[1]) for p, r in zip(predictions, batch, strict=True))
    return correct / len(rows)


@pytest.mark.integration
def test_cli_exports_int8_and_reports_its_accuracy_cost(
    model, model_dir, minilm_tokenizer, glue_dir, tmp_path, capsys
):
    """End to end on the real SST-2 dev set."""
    output = tmp_path / "onnx"
    argv = [str(model_dir), str(output), "--int8", "--task", "sst2", "--glue-dir", str(glue_dir)]
    assert export.main(argv) == 0

    assert {"model.onnx", "model.int8.onnx", "config.json", "tokenizer.json", "export_report.json"} <= {
        path.name for path in output.iterdir()
    }
    report = json.loads((output / "export_report.json").read_text())
    assert report["parity"]["max_abs_logit_difference"] <= 1e-4
    assert report["parity"]["sentences"] == export.PARITY_SENTENCES
    # The float32 export scores what the PyTorch model scores; the int8 delta is reported against it.
    int8, fp32 = report["dev_metrics"]["int8"]["accuracy"], report["dev_metrics"]["fp32"]["accuracy"]
    assert fp32 == pytest.approx(torch_sst2_accuracy(model, minilm_tokenizer, glue_dir))
    assert report["int8_minus_fp32_points"]["accuracy"] == pytest.approx(100 * (int8 - fp32))
    assert "int8 - fp32 (points): accuracy" in capsys.readouterr().out


def test_cli_without_task_checks_parity_on_builtin_sentences(model_dir, tmp_path):
    output = tmp_path / "onnx"
    assert export.main([str(model_dir), str(output)]) == 0
    report = json.loads((output / "export_report.json").read_text())
    assert report["parity"]["max_abs_logit_difference"] <= 1e-4
    assert "dev_metrics" not in report and not (output / "model.int8.onnx").exists()
    assert report["fold_norms"] is True


def test_cli_can_keep_the_no_norms(model, model_dir, tmp_path):
    folded, unfolded = tmp_path / "folded", tmp_path / "unfolded"
    assert export.main([str(model_dir), str(folded)]) == 0
    assert export.main([str(model_dir), str(unfolded), "--no-fold-norms"]) == 0
    assert json.loads((unfolded / "export_report.json").read_text())["fold_norms"] is False
    multiplications = [op_counts(path / "model.onnx")["Mul"] for path in (folded, unfolded)]
    assert multiplications[1] - multiplications[0] == count_no_norms(model)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--task", "sst2"], "--task and --glue-dir go together"),
        (["--per-tensor"], "add --int8"),
        (["--quantize-embeddings"], "add --int8"),
        (["--max-length", "1"], "--max-length must be at least 2"),
        (["--task", "stsb", "--glue-dir", "GLUE"], "the model has 2 labels but stsb has 1"),
        (["--task", "mnli", "--glue-dir", "GLUE"], "MNLI"),  # not in the shared GLUE folder
        (["--task", "sts", "--glue-dir", "GLUE"], "Unknown GLUE task 'sts'"),
    ],
)
def test_cli_rejects_bad_input_in_one_line_and_writes_nothing(model_dir, glue_dir, tmp_path, capsys, extra, message):
    extra = [str(glue_dir) if arg == "GLUE" else arg for arg in extra]
    assert export.main([str(model_dir), str(tmp_path / "onnx"), *extra]) == 2
    # One line says what is wrong (loading the model may print progress bars before it).
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0]
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_an_existing_output_and_a_missing_model(model_dir, tmp_path, capsys):
    existing = tmp_path / "existing"
    existing.mkdir()
    assert export.main([str(model_dir), str(existing)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert export.main([str(tmp_path / "no-such-model"), str(tmp_path / "onnx")]) == 2
    assert "cannot load a sequence classifier" in capsys.readouterr().err
    assert [path.name for path in tmp_path.iterdir()] == ["existing"]


def test_failed_parity_leaves_nothing_behind(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(export, "check_onnx_parity", lambda *args, **kwargs: 0.5)
    assert export.main([str(model_dir), str(tmp_path / "onnx"), "--int8"]) == 2
    assert "differs from PyTorch by 0.5" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_console_script_is_installed():
    executable = shutil.which("light-mobilebert-export")
    assert executable is not None
    result = subprocess.run([executable, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--per-tensor" in result.stdout
