"""LightMobileBERT configuration.

This file is shipped inside every checkpoint (``trust_remote_code=True``): it imports nothing but
``transformers`` so that a checkpoint loads without the ``light_mobilebert`` package installed.
"""

import math

from transformers import PreTrainedConfig


NORMALIZATION_TYPES = ("no_norm", "layer_norm")


class LightMobileBertConfig(PreTrainedConfig):
    r"""
    Configuration of a LightMobileBERT model: MobileBERT's architecture (trigram embeddings, bottlenecks, stacked
    feed-forward networks, NoNorm or LayerNorm) with, optionally, *collaborative* self-attention (Cordonnier et al.,
    2020) obtained by a CP decomposition of each layer's query/key products.

    Every MobileBERT field keeps its meaning and name (see `transformers.MobileBertConfig`); the defaults describe the
    published LightMobileBERT: the bottom 12 of `google/mobilebert-uncased`'s 24 layers with a shared query/key width
    of 64.

    Args:
        shared_qk_size (`int` or `None`, *optional*, defaults to 64):
            Width of the query and key projections shared by all heads (the CP rank). `None` gives ordinary
            multi-head attention, exactly as in MobileBERT.
        attention_scale (`float`, *optional*):
            Factor applied to the attention scores before the softmax. Stored explicitly so that changing the shared
            width never silently changes the softmax temperature. Defaults to `1 / sqrt(head size)` of the ordinary
            attention (`true_hidden_size / num_attention_heads`), which is what a CP decomposition of the source
            attention must keep to reproduce it.
        source_checkpoint (`str`, *optional*):
            Hub id or path of the checkpoint this model was converted from.
        source_revision (`str`, *optional*):
            Revision (commit) of `source_checkpoint`.
        source_layers (`list[int]`, *optional*):
            Indices of the source's transformer layers kept, in order (one per layer of this model).

    Example:

    ```python
    >>> from light_mobilebert import LightMobileBertConfig, LightMobileBertForSequenceClassification

    >>> config = LightMobileBertConfig(num_labels=2)
    >>> model = LightMobileBertForSequenceClassification(config)
    ```
    """

    model_type = "light_mobilebert"

    def __init__(
        self,
        vocab_size: int = 30522,
        embedding_size: int = 128,
        hidden_size: int = 512,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 4,
        intermediate_size: int = 512,
        hidden_act: str = "relu",
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.1,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        pad_token_id: int | None = 0,
        trigram_input: bool = True,
        use_bottleneck: bool = True,
        intra_bottleneck_size: int = 128,
        use_bottleneck_attention: bool = False,
        key_query_shared_bottleneck: bool = True,
        num_feedforward_networks: int = 4,
        normalization_type: str = "no_norm",
        classifier_activation: bool = False,
        classifier_dropout: float | None = None,
        shared_qk_size: int | None = 64,
        attention_scale: float | None = None,
        source_checkpoint: str | None = None,
        source_revision: str | None = None,
        source_layers: list[int] | None = None,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.trigram_input = trigram_input
        self.use_bottleneck = use_bottleneck
        self.intra_bottleneck_size = intra_bottleneck_size
        self.use_bottleneck_attention = use_bottleneck_attention
        self.key_query_shared_bottleneck = key_query_shared_bottleneck
        self.num_feedforward_networks = num_feedforward_networks
        self.normalization_type = normalization_type
        self.classifier_activation = classifier_activation
        self.classifier_dropout = classifier_dropout
        self.shared_qk_size = shared_qk_size
        self.source_checkpoint = source_checkpoint
        self.source_revision = source_revision
        self.source_layers = list(source_layers) if source_layers is not None else None
        # Derived, as in MobileBERT: the width every sub-layer of the attention block works at.
        self.true_hidden_size = intra_bottleneck_size if use_bottleneck else hidden_size
        self._validate()
        if attention_scale is None:
            attention_scale = (self.true_hidden_size // num_attention_heads) ** -0.5
        self.attention_scale = float(attention_scale)
        if not (math.isfinite(self.attention_scale) and self.attention_scale > 0):
            raise ValueError(f"`attention_scale` must be a finite positive number, got {attention_scale}.")
        super().__init__(pad_token_id=pad_token_id, **kwargs)

    def _validate(self) -> None:
        """Raise a `ValueError` naming the first invalid field."""
        positive_ints = (
            "vocab_size",
            "embedding_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
            "intra_bottleneck_size",
            "num_feedforward_networks",
        )
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if self.true_hidden_size % self.num_attention_heads != 0:
            width = "intra_bottleneck_size" if self.use_bottleneck else "hidden_size"
            raise ValueError(
                f"`num_attention_heads` ({self.num_attention_heads}) must divide `{width}` ({self.true_hidden_size})."
            )
        if (
            self.use_bottleneck
            and not (self.use_bottleneck_attention or self.key_query_shared_bottleneck)
            and self.intra_bottleneck_size != self.hidden_size
        ):
            # Queries and keys then read the unbottlenecked hidden states with projections sized for the bottleneck
            # (as in MobileBERT, whose implementation fails with a shape error here).
            raise ValueError(
                "`key_query_shared_bottleneck` False without `use_bottleneck_attention` feeds the hidden states "
                f"({self.hidden_size}) to the query and key projections, which need `intra_bottleneck_size` "
                f"({self.intra_bottleneck_size}) inputs: make the two sizes equal or enable one of the two."
            )
        if self.normalization_type not in NORMALIZATION_TYPES:
            raise ValueError(
                f"`normalization_type` must be one of {NORMALIZATION_TYPES}, got {self.normalization_type!r}."
            )
        if self.shared_qk_size is not None and (
            isinstance(self.shared_qk_size, bool)
            or not isinstance(self.shared_qk_size, int)
            or self.shared_qk_size <= 0
        ):
            raise ValueError(
                "`shared_qk_size` must be a positive integer or None (ordinary attention), "
                f"got {self.shared_qk_size!r}."
            )
        if not (isinstance(self.layer_norm_eps, (int, float)) and self.layer_norm_eps > 0):
            raise ValueError(f"`layer_norm_eps` must be a positive number, got {self.layer_norm_eps!r}.")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {value!r}.")
        if self.classifier_dropout is not None and not 0.0 <= self.classifier_dropout < 1.0:
            raise ValueError(f"`classifier_dropout` must be in [0, 1) or None, got {self.classifier_dropout!r}.")
        if self.source_layers is not None and len(self.source_layers) != self.num_hidden_layers:
            raise ValueError(
                f"`source_layers` lists {len(self.source_layers)} layers but `num_hidden_layers` is "
                f"{self.num_hidden_layers}."
            )


__all__ = ["LightMobileBertConfig"]
