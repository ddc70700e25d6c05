"""`python -m conversion.compress`: exactness against transformers' own models, determinism, errors, output folder."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertModel,
    MobileBertConfig,
    MobileBertForSequenceClassification,
    MobileBertModel,
)

from light_mobilebert import LightMobileBertForSequenceClassification, LightMobileBertModel
from light_mobilebert.conversion.compress import compress, main, select_layers
from light_mobilebert.conversion.sources import ConversionError


TINY_MOBILEBERT = dict(
    vocab_size=30522,
    embedding_size=8,
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=2,
    intermediate_size=16,
    intra_bottleneck_size=16,
    num_feedforward_networks=2,
    classifier_activation=False,
    max_position_embeddings=64,
    attention_probs_dropout_prob=0.0,
    num_labels=3,
)
TINY_BERT = dict(
    vocab_size=30522,
    hidden_size=24,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=20,
    max_position_embeddings=64,
    num_labels=2,
)


def sharpen(model: torch.nn.Module, seed: int) -> None:
    """Peaked attention and non-trivial norms, so that an attention or norm mistake shows in the logits."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".attention.self.query." in name or ".attention.self.key." in name:
                param.normal_(0.0, 0.4, generator=generator)
            elif "LayerNorm" in name:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))


def save_source(model: torch.nn.Module, folder, tokenizer=None):
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def mobilebert_source(tmp_path, minilm_tokenizer):
    torch.manual_seed(0)
    model = MobileBertForSequenceClassification(MobileBertConfig(**TINY_MOBILEBERT)).eval()
    sharpen(model, 1)
    return save_source(model, tmp_path / "mobilebert-source", minilm_tokenizer)


@pytest.fixture
def bert_source(tmp_path):
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**TINY_BERT)).eval()
    sharpen(model, 2)
    return save_source(model, tmp_path / "bert-source")


def source_logits(model_class, folder, kept_layers: list[int], input_ids, attention_mask) -> torch.Tensor:
    """The source run by transformers itself, truncated to the kept layers."""
    model = model_class.from_pretrained(folder, attn_implementation="eager").eval()
    encoder = model.base_model.encoder
    encoder.layer = torch.nn.ModuleList([encoder.layer[index] for index in kept_layers])
    with torch.no_grad():
        return model(input_ids, attention_mask=attention_mask).logits


def converted_logits(folder, input_ids, attention_mask) -> torch.Tensor:
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert isinstance(model, LightMobileBertForSequenceClassification)
    with torch.no_grad():
        return model(input_ids, attention_mask=attention_mask).logits


def sample_inputs(vocab_size: int = 30522):
    input_ids = torch.randint(1, vocab_size, (3, 12), generator=torch.Generator().manual_seed(3))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 8:] = 0
    return input_ids, attention_mask


@pytest.mark.parametrize(
    ("source_fixture", "model_class"),
    [("mobilebert_source", MobileBertForSequenceClassification), ("bert_source", BertForSequenceClassification)],
)
@pytest.mark.parametrize("layer_selection", ["bottom", [1, 3]])
def test_without_cp_the_conversion_is_exact(request, tmp_path, source_fixture, model_class, layer_selection):
    source = request.getfixturevalue(source_fixture)
    report = compress(tmp_path / "out", str(source), cp_rank=None, layer_selection=layer_selection)
    kept = [0, 1] if layer_selection == "bottom" else layer_selection
    assert report.kept_layers == kept
    inputs = sample_inputs()
    expected = source_logits(model_class, source, kept, *inputs)
    torch.testing.assert_close(converted_logits(tmp_path / "out", *inputs), expected, rtol=0, atol=1e-5)
    # And the comparison is sensitive: other layers give other logits.
    other = source_logits(model_class, source, [2, 3] if kept == [0, 1] else [0, 1], *inputs)
    assert (other - expected).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("source_fixture", "model_class", "width"),
    [
        ("mobilebert_source", MobileBertForSequenceClassification, 16),
        ("bert_source", BertForSequenceClassification, 24),
    ],
)
def test_full_rank_cp_reproduces_the_source(request, tmp_path, source_fixture, model_class, width):
    source = request.getfixturevalue(source_fixture)
    report = compress(tmp_path / "out", str(source), cp_rank=width)
    assert max(layer.relative_error for layer in report.layers) < 1e-4
    inputs = sample_inputs()
    expected = source_logits(model_class, source, [0, 1], *inputs)
    torch.testing.assert_close(converted_logits(tmp_path / "out", *inputs), expected, rtol=0, atol=1e-4)


def test_output_folder_contents(tmp_path, mobilebert_source):
    report = compress(tmp_path / "out", str(mobilebert_source), seed=3)
    out = tmp_path / "out"
    names = {path.name for path in out.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "modeling_light_mobilebert.py",
        "configuration_light_mobilebert.py",
        "conversion_report.json",
        "README.md",
        "tokenizer.json",
        "tokenizer_config.json",
    } <= names
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSequenceClassification"].endswith(
        "LightMobileBertForSequenceClassification"
    )
    assert config["shared_qk_size"] == 8  # half of the 16-wide bottleneck
    assert config["source_layers"] == [0, 1]
    assert config["attention_scale"] == pytest.approx(8**-0.5)  # the source's per-head scale (head size 8), kept
    saved = json.loads((out / "conversion_report.json").read_text())
    assert saved["seed"] == 3 and saved["recipe"] == "default" and saved["cp_rank"] == 8
    assert [layer["source_layer"] for layer in saved["layers"]] == [0, 1]
    assert all(0 < layer["relative_error"] < 1 for layer in saved["layers"])
    assert saved["parameters_after"] == LightMobileBertForSequenceClassification.from_pretrained(out).num_parameters()
    assert saved["dropped_tensors"]["encoder.layer.2.*"] == "layer not kept"
    assert report.parameters_after < report.parameters_before
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "light-mobilebert" in card
    # Without the package, every Auto class asks about the checkpoint's custom code unless told to trust it.
    loading_lines = [line for line in card.splitlines() if ".from_pretrained(" in line]
    assert len(loading_lines) == 2 and all("trust_remote_code=True" in line for line in loading_lines)
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".out.partial")]


def test_paper_recipe_changes_the_score_scale(tmp_path, mobilebert_source):
    compress(tmp_path / "out", str(mobilebert_source), recipe="paper", cp_rank=4)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["attention_scale"] == pytest.approx((4 / 2) ** -0.5)  # 1/sqrt(rank / heads), the authors' choice


def test_same_seed_gives_byte_identical_weights(tmp_path, mobilebert_source):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        compress(tmp_path / name, str(mobilebert_source), recipe="paper", seed=seed)
    weights = {name: (tmp_path / name / "model.safetensors").read_bytes() for name in "abc"}
    assert weights["a"] == weights["b"]
    assert weights["a"] != weights["c"]


def test_layer_selection():
    assert select_layers(24, None, "bottom", 0) == list(range(12))
    theseus = select_layers(24, None, "theseus", 7)
    assert len(theseus) == 12
    assert all(index // 2 == pair for pair, index in enumerate(theseus))  # one layer of each consecutive pair
    assert theseus == select_layers(24, None, "theseus", 7)
    assert theseus != select_layers(24, None, "theseus", 8)
    assert select_layers(6, 2, "theseus", 0)[1] in (3, 4, 5)
    assert select_layers(24, 3, [0, 5, 23], 0) == [0, 5, 23]
    for bad in ([3, 1], [0, 24], []):
        with pytest.raises(ConversionError):
            select_layers(24, None, bad, 0)
    with pytest.raises(ConversionError, match="divides"):
        select_layers(24, 5, "theseus", 0)


def test_real_mobilebert_structure_converts_within_the_paper_size(tmp_path, mobilebert_config):
    torch.manual_seed(0)
    fields = {key: value for key, value in mobilebert_config.items() if key not in ("architectures", "model_type")}
    MobileBertModel(MobileBertConfig(**fields)).save_pretrained(tmp_path / "source")
    report = compress(tmp_path / "out", str(tmp_path / "source"))
    assert report.kept_layers == list(range(12))
    assert report.cp_rank == 64
    assert report.parameters_after <= 14_470_000
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out", num_labels=2)
    assert isinstance(model, LightMobileBertForSequenceClassification)
    assert isinstance(LightMobileBertModel.from_pretrained(tmp_path / "out"), LightMobileBertModel)
    assert model.num_parameters() == report.parameters_after + 512 * 2 + 2  # plus the new 2-label classifier


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()  # drop what earlier steps printed
    code = main(args)
    return code, capsys.readouterr().err


def test_bad_inputs_get_one_clear_line_and_leave_nothing(tmp_path, mobilebert_source, capsys, monkeypatch):
    out = tmp_path / "out"
    cases = [
        (["--source", str(tmp_path / "missing")], "does not exist"),
        (["--source", str(mobilebert_source), "--cp-rank", "0"], "--cp-rank must be in [1, 16]"),
        (["--source", str(mobilebert_source), "--cp-rank", "17"], "--cp-rank must be in [1, 16]"),
        (["--source", str(mobilebert_source), "--num-layers", "5"], "--num-layers must be in [1, 4]"),
        (["--source", str(mobilebert_source), "--layer-selection", "0,9"], "layer indices must be in [0, 4)"),
    ]
    # Unsupported architecture.
    DistilBertModel(DistilBertConfig(dim=16, hidden_dim=16, n_layers=1, n_heads=2)).save_pretrained(tmp_path / "dbert")
    cases.append(
        (["--source", str(tmp_path / "dbert")], "unsupported architecture 'distilbert'; supported: MobileBERT")
    )
    # Non-finite source weights.
    poisoned = tmp_path / "poisoned"
    poisoned.mkdir()
    for file in ("config.json",):
        (poisoned / file).write_text((mobilebert_source / file).read_text())
    weights = load_file(mobilebert_source / "model.safetensors")
    weights["mobilebert.encoder.layer.1.intermediate.dense.weight"][0, 0] = float("nan")
    save_file(weights, poisoned / "model.safetensors", metadata={"format": "pt"})
    cases.append((["--source", str(poisoned)], "non-finite values"))
    # The Hub cannot be reached (tests run with HF_HUB_OFFLINE=1).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cases.append((["--source", "google/mobilebert-uncased"], "pass a local checkpoint folder with --source"))

    for args, message in cases:
        code, err = run_cli([*args, "--output", str(out)], capsys)
        assert code == 2, (args, err)
        assert message in err, (args, err)
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert not out.exists()
        assert not any(path.name.startswith(".out") for path in tmp_path.iterdir())

    # An existing output is left untouched without --overwrite, and replaced with it.
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = run_cli(["--source", str(mobilebert_source), "--output", str(out)], capsys)
    assert code == 2 and "already exists; pass --overwrite" in err
    assert (out / "keep.txt").read_text() == "mine"
    assert main(["--source", str(mobilebert_source), "--output", str(out), "--overwrite"]) == 0
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


def test_failure_while_writing_leaves_nothing(tmp_path, mobilebert_source, monkeypatch):
    def failing_card(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("light_mobilebert.conversion.compress.model_card", failing_card)
    with pytest.raises(RuntimeError, match="disk full"):
        compress(tmp_path / "out", str(mobilebert_source))
    assert [path.name for path in tmp_path.iterdir()] == ["mobilebert-source"]


def test_unaccounted_source_tensor_is_an_error(tmp_path, mobilebert_source):
    weights = load_file(mobilebert_source / "model.safetensors")
    weights["mobilebert.encoder.extra.weight"] = torch.zeros(2)
    save_file(weights, mobilebert_source / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ConversionError, match="'encoder.extra.weight' has no place"):
        compress(tmp_path / "out", str(mobilebert_source))


def test_module_command_line(tmp_path, bert_source):
    result = subprocess.run(
        [sys.executable, "-m", "conversion.compress", "--source", str(bert_source), "--output", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "CP-decomposing attention" in result.stderr  # the per-layer progress bar
    assert "layers [0, 1]" in result.stdout
    assert (tmp_path / "o" / "model.safetensors").is_file()
    # Without CP there is no reconstruction error to summarise.
    assert main(["--source", str(bert_source), "--output", str(tmp_path / "plain"), "--cp-rank", "none"]) == 0


def test_console_script_is_installed():
    executable = shutil.which("light-mobilebert-compress")
    assert executable is not None
    result = subprocess.run([executable, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--cp-rank" in result.stdout
