"""Folding MobileBERT's NoNorm layers into the neighbouring linear layers, for inference graphs.

A NoNorm is an element-wise affine map, `y = w * x + b`, applied after every residual addition (97 of them in the
12-layer LightMobileBERT). Its weights cannot be folded into the linear layer before it, because the residual branch
is scaled too. Instead the folded model carries each residual stream in *rescaled coordinates*: it computes `z` with
`x = s * z + t`, for per-feature vectors `s` and `t` that the folding tracks,

    residual step   x' = w * (f + x) + b      becomes   z' = z + f / s,   s' = w * s,   t' = w * t + b
    consumer        W x + c = W (s * z + t) + c  becomes   (W diag(s)) z + (W t + c),

where `f` is the output of a linear layer (its rows and bias divided by `s`) and a consumer is any linear layer that
reads the stream. Every NoNorm disappears: the graph keeps the residual additions and loses a multiplication and an
addition per NoNorm (194 of about 740 onnxruntime nodes after int8 quantisation), which at batch 1 cost mostly
dispatch time. The folded model's logits equal the original's up to float rounding; its hidden states are in the
rescaled coordinates, so it is for exporting classifiers only.
"""

import copy

import torch
from torch import nn
from transformers.utils import logging

from .modeling import LightMobileBertConfig, LightMobileBertForSequenceClassification


logger = logging.get_logger(__name__)

__all__ = ["fold_no_norm"]

# Stream scales smaller than this (in absolute value) would be divided by: refuse rather than lose precision.
MIN_SCALE = 1e-6


class _Stream:
    """The rescaled coordinates `x = scale * z + shift` of a residual stream (per-feature vectors)."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        self.scale = scale
        self.shift = shift

    @classmethod
    def exact(cls, size: int, like: torch.Tensor) -> "_Stream":
        return cls(torch.ones(size, dtype=like.dtype), torch.zeros(size, dtype=like.dtype))

    @property
    def is_exact(self) -> bool:
        return bool((self.scale == 1).all() and (self.shift == 0).all())


def _pop_no_norm(holder: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Replaces `holder.LayerNorm` (a NoNorm) by an identity and returns its weight and bias."""
    norm = holder.LayerNorm
    holder.LayerNorm = nn.Identity()
    return norm.weight.detach().clone(), norm.bias.detach().clone()


def _absorb_input(linear: nn.Linear, stream: _Stream) -> None:
    """Makes `linear` read the stream's rescaled coordinates: W x + c = (W diag(s)) z + (W t + c)."""
    if stream.is_exact:
        return
    weight = linear.weight.detach()  # (out_features, in_features)
    shift = weight @ stream.shift  # (out_features,)
    if linear.bias is None:
        if bool(shift.any()):  # only then: an added bias is an extra graph node
            linear.bias = nn.Parameter(shift)
    else:
        linear.bias.data.add_(shift)
    linear.weight.data.mul_(stream.scale)  # scales column j by s_j


def _residual_step(linear: nn.Linear, holder: nn.Module, residual: _Stream) -> _Stream:
    """Folds `holder.LayerNorm(linear(...) + residual)`: the branch is divided by the residual's scale."""
    scale = residual.scale
    if not bool((scale.abs() >= MIN_SCALE).all()):
        raise ValueError(
            f"cannot fold the NoNorm of {type(holder).__name__}: the residual stream's scale (the product of the "
            f"NoNorm weights so far) has entries below {MIN_SCALE:g} in absolute value"
        )
    linear.weight.data.div_(scale[:, None])  # (out_features, in_features): row i divided by s_i
    linear.bias.data.div_(scale)
    weight, bias = _pop_no_norm(holder)
    return _Stream(weight * scale, weight * residual.shift + bias)


def _fold_layer(layer: nn.Module, hidden: _Stream, config: LightMobileBertConfig) -> _Stream:
    """Folds the NoNorms of one LightMobileBertLayer whose input stream is `hidden`; returns its output stream."""
    attention = layer.attention.self
    if layer.bottleneck is None:
        layer_input = query_key = value = hidden
    else:
        bottlenecks = [layer.bottleneck.input]
        if config.key_query_shared_bottleneck:
            bottlenecks.append(layer.bottleneck.attention)
        for bottleneck in bottlenecks:
            # A NoNorm straight after a linear layer folds into it entirely: diag(w) (W x + c) + b.
            _absorb_input(bottleneck.dense, hidden)
            weight, bias = _pop_no_norm(bottleneck)
            bottleneck.dense.weight.data.mul_(weight[:, None])
            bottleneck.dense.bias.data.mul_(weight).add_(bias)
        exact = _Stream.exact(config.true_hidden_size, hidden.scale)
        layer_input = exact
        query_key = exact if config.use_bottleneck_attention or config.key_query_shared_bottleneck else hidden
        value = exact if config.use_bottleneck_attention else hidden
    for linear in (attention.query, attention.key) + ((attention.content_bias,) if attention.collaborative else ()):
        _absorb_input(linear, query_key)
    _absorb_input(attention.value, value)

    stream = _residual_step(layer.attention.output.dense, layer.attention.output, layer_input)
    for ffn in layer.ffn or ():
        _absorb_input(ffn.intermediate.dense, stream)
        stream = _residual_step(ffn.output.dense, ffn.output, stream)
    _absorb_input(layer.intermediate.dense, stream)
    stream = _residual_step(layer.output.dense, layer.output, stream)
    if layer.output.bottleneck is None:
        return stream
    _absorb_input(layer.output.bottleneck.dense, stream)
    return _residual_step(layer.output.bottleneck.dense, layer.output.bottleneck, hidden)


@torch.no_grad()
def fold_no_norm(model: LightMobileBertForSequenceClassification) -> LightMobileBertForSequenceClassification:
    """
    Returns a copy of a NoNorm LightMobileBERT classifier with every NoNorm folded away (see the module docstring).

    The copy computes the same logits (up to float rounding) with fewer element-wise operations; its hidden states
    and attention inputs are in rescaled coordinates, so use it for inference graphs (ONNX export), not for training
    or feature extraction. The original model is not modified.

    Args:
        model (`LightMobileBertForSequenceClassification`):
            A classifier with `normalization_type="no_norm"`.

    Returns:
        `LightMobileBertForSequenceClassification`: the folded copy, in evaluation mode.

    Raises:
        ValueError: if the model is not a NoNorm LightMobileBERT classifier, or if a residual stream's scale (a
            product of NoNorm weights) comes within `MIN_SCALE` of zero, where dividing by it would lose precision.
    """
    if not isinstance(model, LightMobileBertForSequenceClassification):
        raise ValueError(f"Only LightMobileBertForSequenceClassification can be folded, got {type(model).__name__}.")
    config = model.config
    if config.normalization_type != "no_norm":
        raise ValueError(f"Only NoNorm models can be folded, got normalization_type={config.normalization_type!r}.")

    folded = copy.deepcopy(model).eval()
    encoder = folded.mobilebert
    # The embeddings' NoNorm becomes the first stream's coordinates: the embedding sum is z, s = w and t = b.
    hidden = _Stream(*_pop_no_norm(encoder.embeddings))
    for layer in encoder.encoder.layer:
        hidden = _fold_layer(layer, hidden, config)
    # Only the first token's state is read, by the pooler's dense layer or straight by the classifier.
    head = encoder.pooler.dense if encoder.pooler.dense is not None else folded.classifier
    _absorb_input(head, hidden)
    logger.info(f"Folded the NoNorms of {len(encoder.encoder.layer)} layers into their linear layers.")
    return folded
