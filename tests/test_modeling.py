"""LightMobileBERT model: equivalence with transformers' MobileBERT, collaborative attention, masks, Auto classes."""

import ast
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    MobileBertConfig,
    MobileBertForSequenceClassification,
    pipeline,
)

import light_mobilebert
from light_mobilebert import LightMobileBertConfig, LightMobileBertForSequenceClassification, LightMobileBertModel
from light_mobilebert.modeling import modeling_light_mobilebert


def light_config(mobilebert_config: dict, **overrides) -> LightMobileBertConfig:
    fields = {k: v for k, v in mobilebert_config.items() if k not in ("architectures", "model_type")}
    return LightMobileBertConfig(**{**fields, **overrides})


def randomize_norms(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Give every norm a non-trivial affine map, so that a swapped or skipped norm changes the output."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "LayerNorm" in name:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))


def tiny_collaborative_config(**overrides) -> LightMobileBertConfig:
    fields = dict(
        vocab_size=99,
        embedding_size=8,
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        intra_bottleneck_size=8,
        num_feedforward_networks=2,
        max_position_embeddings=32,
        attention_probs_dropout_prob=0.0,
        shared_qk_size=6,
        num_labels=3,
    )
    return LightMobileBertConfig(**{**fields, **overrides})


def randomized_collaborative_model(config: LightMobileBertConfig, seed: int = 0):
    torch.manual_seed(seed)
    model = LightMobileBertForSequenceClassification(config).eval()
    generator = torch.Generator().manual_seed(seed)
    randomize_norms(model, generator)
    with torch.no_grad():
        for layer in model.mobilebert.encoder.layer:
            attention = layer.attention.self
            attention.mixing.copy_(torch.randn(attention.mixing.shape, generator=generator))
            attention.content_bias.weight.normal_(0.0, 0.5, generator=generator)
    return model


@pytest.mark.parametrize(
    "variant",
    [
        {},  # the real checkpoint's configuration: NoNorm, bottlenecks, 4 stacked FFNs, trigram input
        {"normalization_type": "layer_norm", "layer_norm_eps": 1e-5},
        {"normalization_type": "layer_norm", "layer_norm_eps": 1e-5, "classifier_activation": True},
    ],
    ids=["real-config", "layer-norm", "layer-norm-pooler"],
)
def test_matches_transformers_mobilebert(mobilebert_config, variant):
    # transformers builds two LayerNorms with torch's default eps (1e-5) whatever `layer_norm_eps` says; we honour
    # it everywhere, so the LayerNorm variant compares at eps 1e-5 where both agree.
    reference_fields = {**mobilebert_config, "num_hidden_layers": 3, "num_labels": 3, **variant}
    torch.manual_seed(0)
    reference = MobileBertForSequenceClassification(MobileBertConfig(**reference_fields)).eval()
    randomize_norms(reference, torch.Generator().manual_seed(1))
    model = LightMobileBertForSequenceClassification(
        light_config(reference_fields, shared_qk_size=None, attn_implementation="eager")
    ).eval()
    # Strict: the same modules under the same names, nothing missing, nothing extra.
    model.load_state_dict(reference.state_dict(), strict=True)

    input_ids = torch.randint(1, 30522, (3, 17), generator=torch.Generator().manual_seed(2))
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, 9:] = 1
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 12:] = 0
    with torch.no_grad():
        expected = reference(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits
        actual = model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits
    assert expected.abs().max() > 1e-3  # not a degenerate comparison
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_collaborative_attention_matches_direct_computation():
    config = tiny_collaborative_config(attn_implementation="eager")
    attention = randomized_collaborative_model(config).mobilebert.encoder.layer[0].attention.self
    generator = torch.Generator().manual_seed(3)
    batch, seq, width = 2, 5, config.true_hidden_size
    query_input = torch.randn(batch, seq, width, generator=generator)
    key_input = torch.randn(batch, seq, width, generator=generator)
    value_input = torch.randn(batch, seq, config.hidden_size, generator=generator)
    keep = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])

    wq, wk = attention.query.weight.detach(), attention.key.weight.detach()  # (D, width)
    mixing = attention.mixing.detach()  # (heads, D)
    content = attention.content_bias.weight.detach()  # (heads, width)
    wv, bv = attention.value.weight.detach(), attention.value.bias.detach()
    head_size = config.true_hidden_size // config.num_attention_heads
    expected = torch.zeros(batch, seq, config.num_attention_heads * head_size)
    for b in range(batch):
        keys = [j for j in range(seq) if keep[b, j]]
        for h in range(config.num_attention_heads):
            v_h = value_input[b] @ wv[h * head_size : (h + 1) * head_size].T + bv[h * head_size : (h + 1) * head_size]
            for i in range(seq):
                q = query_input[b, i] @ wq.T
                scores = torch.stack(
                    [(q * mixing[h] * (key_input[b, j] @ wk.T)).sum() + key_input[b, j] @ content[h] for j in keys]
                )
                probs = torch.softmax(config.attention_scale * scores, dim=0)
                expected[b, i, h * head_size : (h + 1) * head_size] = probs @ v_h[keys]

    mask = modeling_light_mobilebert.padding_bias(keep, torch.float32)
    with torch.no_grad():
        actual, _ = attention(query_input, key_input, value_input, mask)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shared_qk_size", [None, 6])
def test_eager_and_sdpa_agree(shared_qk_size):
    config = tiny_collaborative_config(shared_qk_size=shared_qk_size)
    model = randomized_collaborative_model(config) if shared_qk_size else None
    if model is None:
        torch.manual_seed(0)
        model = LightMobileBertForSequenceClassification(config).eval()
    input_ids = torch.randint(1, config.vocab_size, (3, 11), generator=torch.Generator().manual_seed(4))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, 7:] = 0
    outputs = {}
    for implementation in ("eager", "sdpa"):
        model.set_attn_implementation(implementation)
        with torch.no_grad():
            outputs[implementation] = model(input_ids, attention_mask=attention_mask).logits
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(outputs["sdpa"], outputs["eager"], rtol=0, atol=1e-5)


def mobilebert_scale_model(mobilebert_config: dict) -> LightMobileBertForSequenceClassification:
    """The real structure with MobileBERT-like scales: hidden states in the hundreds, attention scores ~1e4."""
    torch.manual_seed(0)
    model = LightMobileBertForSequenceClassification(
        light_config(mobilebert_config, num_hidden_layers=2, shared_qk_size=64, attention_probs_dropout_prob=0.0)
    ).eval()
    with torch.no_grad():
        model.mobilebert.embeddings.LayerNorm.weight.mul_(1000.0)
        for layer in model.mobilebert.encoder.layer:
            layer.bottleneck.attention.LayerNorm.weight.mul_(10.0)
    return model


def test_padding_does_not_change_real_token_logits(mobilebert_config, monkeypatch):
    model = mobilebert_scale_model(mobilebert_config)
    generator = torch.Generator().manual_seed(5)
    lengths = [12, 7, 4]
    sequences = [torch.randint(1, 30522, (n,), generator=generator) for n in lengths]
    padded = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    attention_mask = torch.zeros_like(padded)
    for row, sequence in enumerate(sequences):
        padded[row, : len(sequence)] = sequence
        attention_mask[row, : len(sequence)] = 1

    def logits_gap() -> float:
        with torch.no_grad():
            batched = model(padded, attention_mask=attention_mask).logits
            alone = torch.cat([model(sequence[None]).logits for sequence in sequences])
        return (batched - alone).abs().max().item()

    with torch.no_grad():
        hidden = model.mobilebert(padded, attention_mask=attention_mask).last_hidden_state
    assert hidden.abs().max() > 100  # the activation scale at which weak masks leak
    assert logits_gap() <= 1e-5

    # The comparison is sensitive: the original code's additive -6.0 mask leaks padding at this scale.
    monkeypatch.setattr(
        modeling_light_mobilebert, "padding_bias", lambda mask, dtype: (1.0 - mask[:, None, None, :].to(dtype)) * -6.0
    )
    assert logits_gap() > 1e-2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_attention_heads", 3),  # does not divide the bottleneck width 128
        ("shared_qk_size", 0),
        ("shared_qk_size", -4),
        ("hidden_size", 0),
        ("intra_bottleneck_size", -1),
        ("normalization_type", "batch_norm"),
        ("attention_scale", 0.0),
        ("attention_scale", float("nan")),
        ("layer_norm_eps", 0.0),
        ("attention_probs_dropout_prob", 1.5),
        ("num_feedforward_networks", 0),
        ("source_layers", [0, 2]),  # 2 layers listed for 12
        ("key_query_shared_bottleneck", False),  # queries and keys would read 512-wide states with 128-wide weights
    ],
)
def test_invalid_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"`{field}`"):
        LightMobileBertConfig(**{field: value})


def test_save_load_round_trip_is_exact_and_safetensors_only(tmp_path):
    model = randomized_collaborative_model(tiny_collaborative_config())
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert files >= {
        "model.safetensors",
        "config.json",
        "modeling_light_mobilebert.py",
        "configuration_light_mobilebert.py",
    }
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForSequenceClassification"}

    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, LightMobileBertForSequenceClassification)
    input_ids = torch.randint(1, 99, (2, 9), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids).logits, model(input_ids).logits)
    assert isinstance(AutoModel.from_pretrained(tmp_path), LightMobileBertModel)


def test_remote_code_loads_without_the_package(tmp_path):
    model = randomized_collaborative_model(tiny_collaborative_config())
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    # The shipped files import torch, transformers, the standard library and each other (relatively), nothing else.
    for name in ("modeling_light_mobilebert.py", "configuration_light_mobilebert.py"):
        tree = ast.parse((checkpoint / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert roots <= {"torch", "transformers", *sys.stdlib_module_names}, (name, roots)
    input_ids = torch.randint(1, 99, (2, 9), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = model(input_ids).logits
    torch.save(input_ids, tmp_path / "input_ids.pt")

    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["light_mobilebert"] = None  # any import of the package now fails
        try:
            import light_mobilebert
        except ImportError:
            pass
        else:
            raise SystemExit("light_mobilebert is importable")
        import torch
        from transformers import AutoModel, AutoModelForSequenceClassification
        model = AutoModelForSequenceClassification.from_pretrained({str(checkpoint)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert type(AutoModel.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)).__name__ == (
            "LightMobileBertModel"
        )
        with torch.no_grad():
            logits = model(torch.load({str(tmp_path / "input_ids.pt")!r})).logits
        torch.save(logits, {str(tmp_path / "logits.pt")!r})
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.equal(torch.load(tmp_path / "logits.pt"), expected)


def test_auto_classes_are_registered():
    config = AutoConfig.for_model("light_mobilebert", shared_qk_size=8, num_hidden_layers=1)
    assert isinstance(config, LightMobileBertConfig)
    assert isinstance(AutoModelForSequenceClassification.from_config(config), LightMobileBertForSequenceClassification)
    assert isinstance(AutoModel.from_config(config), LightMobileBertModel)
    assert light_mobilebert.LightMobileBertConfig is LightMobileBertConfig


def test_gradient_checkpointing_gives_the_same_gradients():
    config = tiny_collaborative_config(hidden_dropout_prob=0.0)
    input_ids = torch.randint(1, 99, (2, 8), generator=torch.Generator().manual_seed(8))
    labels = torch.tensor([0, 2])
    gradients = []
    for checkpointing in (False, True):
        model = randomized_collaborative_model(config).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        model(input_ids, labels=labels).loss.backward()
        gradients.append({name: param.grad.clone() for name, param in model.named_parameters()})
    assert model.is_gradient_checkpointing
    assert gradients[0].keys() == gradients[1].keys()
    for name in gradients[0]:
        torch.testing.assert_close(gradients[1][name], gradients[0][name], rtol=1e-5, atol=1e-6)


def test_bf16_forward_and_backward(mobilebert_config):
    model = mobilebert_scale_model(mobilebert_config)
    input_ids = torch.randint(1, 30522, (2, 10), generator=torch.Generator().manual_seed(9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    with torch.no_grad():
        reference = model(input_ids, attention_mask=attention_mask).logits
    model = model.to(torch.bfloat16).train()
    output = model(input_ids, attention_mask=attention_mask, labels=torch.tensor([0, 1]))
    assert output.logits.dtype == torch.bfloat16
    assert torch.isfinite(output.logits).all()
    output.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    scale = reference.abs().max()
    assert (output.logits.float() - reference).abs().max() <= 0.1 * scale


def test_text_classification_pipeline(minilm_tokenizer):
    model = randomized_collaborative_model(tiny_collaborative_config(vocab_size=30522))
    model.config.id2label = {0: "neg", 1: "neutral", 2: "pos"}
    classifier = pipeline("text-classification", model=model, tokenizer=minilm_tokenizer)
    predictions = classifier(["a small, fast model.", "another sentence, somewhat longer than the first one."])
    assert [p["label"] in {"neg", "neutral", "pos"} for p in predictions] == [True, True]
    with torch.no_grad():
        encoded = minilm_tokenizer(["a small, fast model."], return_tensors="pt")
        probs = torch.softmax(model(**encoded).logits, dim=-1)[0]
    assert predictions[0]["label"] == model.config.id2label[int(probs.argmax())]
    assert predictions[0]["score"] == pytest.approx(probs.max().item(), abs=1e-5)


def test_bad_inputs_get_clear_errors():
    model = randomized_collaborative_model(tiny_collaborative_config())
    input_ids = torch.randint(1, 99, (2, 8))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(torch.randint(1, 99, (1, 40)))
    with pytest.raises(ValueError, match="attention_mask"):
        model(input_ids, attention_mask=torch.ones(2, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model()
    with pytest.raises(ValueError, match=r"Labels must be in \[0, 3\)"):
        model(input_ids, labels=torch.tensor([0, 3]))
