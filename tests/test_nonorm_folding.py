"""NoNorm folding: the folded classifier computes the original's logits without a single NoNorm."""

import pytest
import torch

from light_mobilebert import LightMobileBertConfig, LightMobileBertForSequenceClassification
from light_mobilebert.modeling.modeling_light_mobilebert import NoNorm
from light_mobilebert.nonorm_folding import fold_no_norm


TINY = {
    "vocab_size": 99,
    "embedding_size": 16,
    "hidden_size": 48,
    "intra_bottleneck_size": 24,
    "intermediate_size": 40,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_feedforward_networks": 3,
    "max_position_embeddings": 64,
    "num_labels": 3,
    "initializer_range": 0.2,
    "attn_implementation": "eager",
}

# Every way the attention inputs and the residual streams are wired, with ordinary and collaborative attention.
VARIANTS = {
    "mobilebert": {},
    "collaborative": {"shared_qk_size": 8},
    "bottleneck-attention": {"use_bottleneck_attention": True, "shared_qk_size": 8},
    # Queries and keys read the hidden states themselves (which needs a bottleneck as wide as the hidden states).
    "unbottlenecked-attention": {"key_query_shared_bottleneck": False, "hidden_size": 24},
    "unbottlenecked-collaborative": {"key_query_shared_bottleneck": False, "hidden_size": 24, "shared_qk_size": 8},
    "no-bottleneck": {"use_bottleneck": False, "hidden_size": 24, "shared_qk_size": 8},
    "pooler-dense": {"classifier_activation": True, "shared_qk_size": 8},
    "no-trigram": {"trigram_input": False, "embedding_size": 48},
}


def random_no_norm_model(**overrides) -> LightMobileBertForSequenceClassification:
    """A classifier whose NoNorms have trained-looking weights: signed, from 0.2 to 3 in size, and biases."""
    torch.manual_seed(0)
    model = LightMobileBertForSequenceClassification(LightMobileBertConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, NoNorm):
                magnitude = torch.empty_like(module.weight).uniform_(0.2, 3.0)
                sign = torch.where(torch.rand_like(module.weight) < 0.2, -1.0, 1.0)
                module.weight.copy_(magnitude * sign)
                module.bias.normal_(0.0, 1.0)
    return model


def inputs(batch: int = 3, seq: int = 12) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, TINY["vocab_size"], (batch, seq), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, 7:] = 0  # padding, so the folded graph is also checked on masked positions
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, 6:] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_folded_model_has_no_no_norm_and_the_same_logits(variant):
    model = random_no_norm_model(**VARIANTS[variant])
    folded = fold_no_norm(model)

    assert not any(isinstance(module, NoNorm) for module in folded.modules())
    with torch.no_grad():
        expected = model(**inputs()).logits
        actual = folded(**inputs()).logits
    # The NoNorm weights compound over the layers: the logits are of order 10-1000, so compare relatively.
    assert expected.abs().max() > 1.0
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_original_model_is_untouched():
    model = random_no_norm_model()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    fold_no_norm(model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)
    # Embeddings, then per layer: two bottlenecks, attention output, two extra FFNs, output, output bottleneck.
    assert sum(isinstance(module, NoNorm) for module in model.modules()) == 1 + 3 * (2 + 1 + 2 + 1 + 1)


def test_near_zero_scale_is_refused():
    model = random_no_norm_model()
    model.mobilebert.encoder.layer[1].attention.output.LayerNorm.weight.data[5] = 1e-9
    with pytest.raises(ValueError, match="scale .* below 1e-06"):
        fold_no_norm(model)


def test_layer_norm_models_and_other_classes_are_refused():
    with pytest.raises(ValueError, match="normalization_type='layer_norm'"):
        fold_no_norm(random_no_norm_model(normalization_type="layer_norm"))
    with pytest.raises(ValueError, match="got LightMobileBertModel"):
        fold_no_norm(random_no_norm_model().mobilebert)
