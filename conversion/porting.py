"""Copying a source checkpoint's tensors into a LightMobileBERT, accounting for every one of them.

In the spirit of nanoGPT's `from_pretrained`: every target tensor is filled from exactly one source tensor of the same
shape (or from the CP factors), and every source tensor is either used or dropped for a stated reason.
"""

import re

import torch

from .decompose import CPAttention
from .sources import ConversionError, SourceCheckpoint


LAYER_KEY = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
# Ordinary attention parameters that collaborative attention replaces by CP factors and the content bias.
QUERY_KEY_PARAMETERS = (
    "attention.self.query.weight",
    "attention.self.query.bias",
    "attention.self.key.weight",
    "attention.self.key.bias",
)
COLLABORATIVE_PARAMETERS = (
    "attention.self.query.weight",
    "attention.self.key.weight",
    "attention.self.mixing",
    "attention.self.content_bias.weight",
)


def drop_reason(key: str, kept_layers: list[int], compressed: bool) -> str | None:
    """Why a source tensor has no place in the target, or None if it should have one."""
    match = LAYER_KEY.match(key)
    if match:
        layer, name = int(match.group(1)), match.group(2)
        if layer not in kept_layers:
            return "layer not kept"
        if compressed and name in QUERY_KEY_PARAMETERS:
            # Weights and the query bias went into the CP factors and the content bias; the key bias only shifts
            # each query's scores by a constant, which the softmax ignores.
            return "replaced by collaborative attention"
        return None
    if key.endswith("position_ids"):
        return "index buffer, rebuilt by the model"
    if key.startswith("embeddings.embedding_transformation."):
        # transformers' MobileBERT stores this projection even when its configuration never applies it (LightMobileBERT
        # builds it only when used, so a used one was ported).
        return "unused by the source configuration"
    return None


def port_weights(
    source: SourceCheckpoint,
    model: torch.nn.Module,
    kept_layers: list[int],
    factors: dict[int, CPAttention] | None = None,
) -> dict[str, str]:
    """Fill `model` (a LightMobileBertModel or ...ForSequenceClassification) from `source`, in place.

    Args:
        kept_layers: source layer index of each target layer, in order.
        factors: target layer index -> CP factors, for collaborative attention (None: ordinary attention).

    Returns:
        The source tensors left out, with the reason for each.

    Raises:
        ConversionError: a target tensor without a source, a shape mismatch, or a source tensor nobody accounts for.
    """
    compressed = factors is not None
    base = getattr(model, model.base_model_prefix, model)
    prefix = f"{model.base_model_prefix}." if base is not model else ""
    target = model.state_dict()
    source_tensors = dict(source.encoder)
    for key in ("classifier.weight", "classifier.bias"):
        if key in source.heads and key in target:
            source_tensors[key] = source.heads[key]

    filled: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for target_key in target:
        key = target_key.removeprefix(prefix) if target_key.startswith(prefix) else target_key
        match = LAYER_KEY.match(key)
        if match:
            position, name = int(match.group(1)), match.group(2)
            if compressed and name in COLLABORATIVE_PARAMETERS:
                cp = factors[position]
                value = {
                    "attention.self.query.weight": cp.query_weight,
                    "attention.self.key.weight": cp.key_weight,
                    "attention.self.mixing": cp.mixing,
                    "attention.self.content_bias.weight": cp.content_bias,
                }[name]
                filled[target_key] = value
                continue
            key = f"encoder.layer.{kept_layers[position]}.{name}"
        if key not in source_tensors:
            raise ConversionError(f"the source checkpoint has no tensor {key!r} for {target_key!r}")
        filled[target_key] = source_tensors[key]
        used.add(key)

    for target_key, value in filled.items():
        if tuple(value.shape) != tuple(target[target_key].shape):
            raise ConversionError(
                f"shape mismatch for {target_key!r}: source {tuple(value.shape)}, "
                f"model {tuple(target[target_key].shape)}"
            )
    assert len(filled) == len(target), (len(filled), len(target))

    dropped = {}
    for key in source_tensors.keys() - used:
        reason = drop_reason(key, kept_layers, compressed)
        if reason is None:
            raise ConversionError(f"source tensor {key!r} has no place in the LightMobileBERT model")
        dropped[key] = reason
    for key in source.heads.keys() - source_tensors.keys():
        dropped[key] = "task head of the source (not ported)"

    model.load_state_dict({key: value.to(target[key].dtype) for key, value in filled.items()}, strict=True)
    return dict(sorted(dropped.items()))
