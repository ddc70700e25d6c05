"""PyTorch LightMobileBERT model.

MobileBERT (Sun et al., 2020) with, optionally, *collaborative* self-attention (Cordonnier et al., 2020): the query
and key projections are shared by all heads and each head re-weights the shared dimensions with its own mixing vector.
A CP decomposition of MobileBERT's per-head query/key products gives these weights without pre-training.

The module and parameter names follow `transformers.models.mobilebert.modeling_mobilebert`, so MobileBERT weights map
one to one (under the same `mobilebert.` prefix) onto a LightMobileBERT with ordinary attention.

This file is shipped inside every checkpoint (``trust_remote_code=True``): it imports nothing but torch,
transformers and its sibling configuration file.
"""

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import logging

from .configuration_light_mobilebert import LightMobileBertConfig


logger = logging.get_logger(__name__)

# Every class a LightMobileBERT checkpoint can be loaded as with `trust_remote_code=True`, by module (file) name.
REMOTE_AUTO_MAP = {
    "AutoConfig": "configuration_light_mobilebert.LightMobileBertConfig",
    "AutoModel": "modeling_light_mobilebert.LightMobileBertModel",
    "AutoModelForSequenceClassification": "modeling_light_mobilebert.LightMobileBertForSequenceClassification",
}


class NoNorm(nn.Module):
    """MobileBERT's replacement for LayerNorm: an element-wise affine map, no statistics."""

    def __init__(self, feat_size: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(feat_size))
        self.weight = nn.Parameter(torch.ones(feat_size))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # One fused kernel instead of a multiply and an add: 97 NoNorms per forward pass of the 12-layer model, and at
        # batch 1 the cost of such small element-wise ops is mostly their dispatch.
        return torch.addcmul(self.bias, hidden_states, self.weight)


def build_norm(config: LightMobileBertConfig, size: int) -> nn.Module:
    # Unlike transformers' MobileBERT, every LayerNorm honours `layer_norm_eps` (it builds two with torch's 1e-5).
    if config.normalization_type == "layer_norm":
        return nn.LayerNorm(size, eps=config.layer_norm_eps)
    return NoNorm(size)


class LightMobileBertEmbeddings(nn.Module):
    """Word (optionally trigram-convolved), position and token-type embeddings."""

    def __init__(self, config: LightMobileBertConfig):
        super().__init__()
        self.trigram_input = config.trigram_input
        self.word_embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        embedded_input_size = config.embedding_size * (3 if config.trigram_input else 1)
        # Only built when used (transformers' MobileBERT always builds it).
        self.embedding_transformation = (
            nn.Linear(embedded_input_size, config.hidden_size)
            if embedded_input_size != config.hidden_size or config.trigram_input
            else None
        )
        self.LayerNorm = build_norm(config, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.position_ids = nn.Buffer(torch.arange(config.max_position_embeddings).expand((1, -1)), persistent=False)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)  # (batch, seq, embedding_size)
        seq_length = inputs_embeds.shape[1]
        if position_ids is None:
            position_ids = self.position_ids[:, :seq_length]
        if token_type_ids is None:
            token_type_ids = torch.zeros(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)

        if self.trigram_input:
            # A kernel-3 convolution over tokens, written as a concatenation of the next, current and previous
            # token's embedding: (batch, seq, 3 * embedding_size).
            inputs_embeds = torch.cat(
                [
                    nn.functional.pad(inputs_embeds[:, 1:], [0, 0, 0, 1, 0, 0], value=0.0),
                    inputs_embeds,
                    nn.functional.pad(inputs_embeds[:, :-1], [0, 0, 1, 0, 0, 0], value=0.0),
                ],
                dim=2,
            )
        if self.embedding_transformation is not None:
            inputs_embeds = self.embedding_transformation(inputs_embeds)  # (batch, seq, hidden_size)

        embeddings = (
            inputs_embeds + self.position_embeddings(position_ids) + self.token_type_embeddings(token_type_ids)
        )
        embeddings = self.LayerNorm(embeddings)
        return self.dropout(embeddings)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(scaling * q k^T + attention_mask) v, with the same contract as the SDPA interface."""
    # (batch, heads, q_len, qk_dim) x (batch, heads, qk_dim, k_len) -> (batch, heads, q_len, k_len)
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value)  # (batch, heads, q_len, head_size)
    return attn_output.transpose(1, 2).contiguous(), attn_weights


class LightMobileBertSelfAttention(nn.Module):
    """Multi-head self-attention, ordinary or collaborative.

    Ordinary (`config.shared_qk_size is None`), per head h:
        scores_h = scale * (x W_Q,h + b_Q,h)(x W_K,h + b_K,h)^T
    Collaborative (`config.shared_qk_size = D`): one query and one key projection of width D for all heads, a mixing
    vector m_h per head, and a per-head content bias c_h on the keys:
        scores_h = scale * ((x W_Q) diag(m_h) (x W_K)^T + 1 (x c_h)^T)
    The content bias is what survives of the ordinary query bias (c_h = W_K,h b_Q,h); the key bias only adds a
    per-query constant, to which the softmax is invariant, so it has no counterpart.
    """

    def __init__(self, config: LightMobileBertConfig):
        super().__init__()
        self.config = config
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.true_hidden_size // config.num_attention_heads
        self.all_head_size = self.num_attention_heads * self.attention_head_size
        self.scaling = config.attention_scale
        self.is_causal = False
        self.collaborative = config.shared_qk_size is not None

        if self.collaborative:
            self.query = nn.Linear(config.true_hidden_size, config.shared_qk_size, bias=False)
            self.key = nn.Linear(config.true_hidden_size, config.shared_qk_size, bias=False)
            self.mixing = nn.Parameter(torch.ones(config.num_attention_heads, config.shared_qk_size))
            self.content_bias = nn.Linear(config.true_hidden_size, config.num_attention_heads, bias=False)
        else:
            self.query = nn.Linear(config.true_hidden_size, self.all_head_size)
            self.key = nn.Linear(config.true_hidden_size, self.all_head_size)
        value_size = config.true_hidden_size if config.use_bottleneck_attention else config.hidden_size
        self.value = nn.Linear(value_size, self.all_head_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(
        self,
        query_tensor: torch.Tensor,
        key_tensor: torch.Tensor,
        value_tensor: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, seq_length = query_tensor.shape[:2]
        head_shape = (batch_size, seq_length, self.num_attention_heads, self.attention_head_size)
        value_layer = self.value(value_tensor).view(head_shape).transpose(1, 2)  # (batch, heads, seq, head_size)

        if self.collaborative:
            # (batch, 1, seq, D) * (heads, 1, D) -> (batch, heads, seq, D): each head re-weights the shared query.
            query_layer = self.query(query_tensor).unsqueeze(1) * self.mixing.unsqueeze(1)
            # The key is shared: expand (no copy) to (batch, heads, seq, D).
            key_layer = self.key(key_tensor).unsqueeze(1).expand(-1, self.num_attention_heads, -1, -1)
            # (batch, seq, heads) -> (batch, heads, 1, seq): the content bias scores keys, whatever the query. It is
            # part of the scaled scores, and both attention paths add the mask after scaling, so scale it here.
            content_scores = self.content_bias(key_tensor).transpose(1, 2).unsqueeze(2) * self.scaling
            attention_mask = content_scores if attention_mask is None else attention_mask + content_scores
        else:
            query_layer = self.query(query_tensor).view(head_shape).transpose(1, 2)  # (batch, heads, seq, head_size)
            key_layer = self.key(key_tensor).view(head_shape).transpose(1, 2)

        attention_interface: Callable = eager_attention_forward
        if self.config._attn_implementation != "eager":
            attention_interface = ALL_ATTENTION_FUNCTIONS[self.config._attn_implementation]

        attn_output, attn_weights = attention_interface(
            self,
            query_layer,
            key_layer,
            value_layer,
            attention_mask,
            dropout=self.dropout.p if self.training else 0.0,
            scaling=self.scaling,
            output_attentions=output_attentions,
        )
        attn_output = attn_output.reshape(batch_size, seq_length, self.all_head_size)  # (batch, seq, true_hidden)
        return attn_output, attn_weights


class LightMobileBertSelfOutput(nn.Module):
    def __init__(self, config: LightMobileBertConfig):
        super().__init__()
        self.use_bottleneck = config.use_bottleneck
        self.dense = nn.Linear(config.true_hidden_size, config.true_hidden_size)
        self.LayerNorm = build_norm(config, config.true_hidden_size)
        self.dropout = None if config.use_bottleneck else nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual_tensor: torch.Tensor) -> torch.Tensor:
        layer_outputs = self.dense(hidden_states)
        if self.dropout is not None:
            layer_outputs = self.dropout(layer_outputs)
        return self.LayerNorm(layer_outputs + residual_tensor)


class LightMobileBertAttention(nn.Module):
    def __init__(self, config: LightMobileBertConfig):
        super().__init__()
        self.self = LightMobileBertSelfAttention(config)
        self.output = LightMobileBertSelfOutput(config)

    def forward(
        self,
        query_tensor: torch.Tensor,
        key_tensor: torch.Tensor,
        value_tensor: torch.Tensor,
        layer_input: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention_output, attn_weights = self.self(
            query_tensor, key_tensor, value_tensor, attention_mask, output_attentions=output_attentions
        )
        # Project back and add the residual, which is the bottlenecked layer input.
        return self.output(attention_output, layer_input), attn_weights


class LightMobileBertIntermediate(nn.Module):
    def __init__(self, config: LightMobileBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.true_hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class OutputBottleneck(nn.Module):
    """Projects the block's output from the bottleneck width back to the inter-block width."""

    def __init__(self, config: LightMobileBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.true_hidden_size, config.hidden_size)
        self.LayerNorm = build_norm(config, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual_tensor: torch.Tensor) -> torch.Tensor:
        layer_outputs = self.dropout(self.dense(hidden_states))
        return self.LayerNorm(layer_outputs + residual_tensor)


class LightMobileBertOutput(nn.Module):
    def __init__(self, config: LightMobileBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.true_hidden_size)
        self.LayerNorm = build_norm(config, config.true_hidden_size)
        if config.use_bottleneck:
            self.bottleneck = OutputBottleneck(config)
            self.dropout = None
        else:
            self.bottleneck = None
            self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, intermediate_states: torch.Tensor, residual_tensor_1: torch.Tensor, residual_tensor_2: torch.Tensor
    ) -> torch.Tensor:
        layer_output = self.dense(intermediate_states)
        if self.bottleneck is None:
            return self.LayerNorm(self.dropout(layer_output) + residual_tensor_1)
        layer_output = self.LayerNorm(layer_output + residual_tensor_1)
        return self.bottleneck(layer_output, residual_tensor_2)


class BottleneckLayer(nn.Module):
    def __init__(self, config: LightMobileBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intra_bottleneck_size)
        self.LayerNorm = build_norm(config, config.intra_bottleneck_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(hidden_states))


class Bottleneck(nn.Module):
    """Projects the inter-block state (hidden_size) to the attention inputs and the block's residual.

    Returns (query input, key input, value input, residual), following MobileBERT's three configurations: everything
    bottlenecked (`use_bottleneck_attention`), query and key through one shared bottleneck and the value from the
    full-width state (`key_query_shared_bottleneck`, the released checkpoints), or query/key/value at full width.
    """

    def __init__(self, config: LightMobileBertConfig):
        super().__init__()
        self.key_query_shared_bottleneck = config.key_query_shared_bottleneck
        self.use_bottleneck_attention = config.use_bottleneck_attention
        self.input = BottleneckLayer(config)
        if self.key_query_shared_bottleneck:
            self.attention = BottleneckLayer(config)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        bottlenecked_hidden_states = self.input(hidden_states)
        if self.use_bottleneck_attention:
            return (bottlenecked_hidden_states,) * 4
        if self.key_query_shared_bottleneck:
            shared_attention_input = self.attention(hidden_states)
            return (shared_attention_input, shared_attention_input, hidden_states, bottlenecked_hidden_states)
        return (hidden_states, hidden_states, hidden_states, bottlenecked_hidden_states)


class FFNOutput(nn.Module):
    def __init__(self, config: LightMobileBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.true_hidden_size)
        self.LayerNorm = build_norm(config, config.true_hidden_size)

    def forward(self, hidden_states: torch.Tensor, residual_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(hidden_states) + residual_tensor)


class FFNLayer(nn.Module):
    """One of the extra feed-forward networks MobileBERT stacks after the attention."""

    def __init__(self, config: LightMobileBertConfig):
        super().__init__()
        self.intermediate = LightMobileBertIntermediate(config)
        self.output = FFNOutput(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.output(self.intermediate(hidden_states), hidden_states)


class LightMobileBertLayer(GradientCheckpointingLayer):
    def __init__(self, config: LightMobileBertConfig):
        super().__init__()
        self.attention = LightMobileBertAttention(config)
        self.intermediate = LightMobileBertIntermediate(config)
        self.output = LightMobileBertOutput(config)
        self.bottleneck = Bottleneck(config) if config.use_bottleneck else None
        # The last feed-forward network is `intermediate` + `output`; these are the ones before it.
        self.ffn = (
            nn.ModuleList([FFNLayer(config) for _ in range(config.num_feedforward_networks - 1)])
            if config.num_feedforward_networks > 1
            else None
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.bottleneck is not None:
            query_tensor, key_tensor, value_tensor, layer_input = self.bottleneck(hidden_states)
        else:
            query_tensor = key_tensor = value_tensor = layer_input = hidden_states

        attention_output, attn_weights = self.attention(
            query_tensor, key_tensor, value_tensor, layer_input, attention_mask, output_attentions=output_attentions
        )
        if self.ffn is not None:
            for ffn_module in self.ffn:
                attention_output = ffn_module(attention_output)
        intermediate_output = self.intermediate(attention_output)
        layer_output = self.output(intermediate_output, attention_output, hidden_states)
        return layer_output, attn_weights


class LightMobileBertEncoder(nn.Module):
    def __init__(self, config: LightMobileBertConfig):
        super().__init__()
        self.layer = nn.ModuleList([LightMobileBertLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BaseModelOutput:
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer_module in self.layer:
            hidden_states, attn_weights = layer_module(hidden_states, attention_mask, output_attentions)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attn_weights,)
        return BaseModelOutput(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states, attentions=all_attentions
        )


class LightMobileBertPooler(nn.Module):
    """The first token's state, through a tanh dense layer only if `config.classifier_activation`."""

    def __init__(self, config: LightMobileBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size) if config.classifier_activation else None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        first_token_tensor = hidden_states[:, 0]  # (batch, hidden_size)
        if self.dense is None:
            return first_token_tensor
        return torch.tanh(self.dense(first_token_tensor))


class LightMobileBertPreTrainedModel(PreTrainedModel):
    config_class = LightMobileBertConfig
    base_model_prefix = "mobilebert"
    supports_gradient_checkpointing = True
    # The SDPA interface takes the additive float mask that carries the content bias; flash and flex do not.
    _supports_sdpa = True
    # The classification loss is a per-batch mean, not a sum to be divided by `num_items_in_batch`: Trainer must
    # scale it for gradient accumulation itself.
    accepts_loss_kwargs = False

    def save_pretrained(self, save_directory, **kwargs) -> None:
        """`PreTrainedModel.save_pretrained`, recording every Auto class in `auto_map`.

        transformers records only the saved class; a checkpoint of the classifier should also load with `AutoModel`.
        """
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **REMOTE_AUTO_MAP}
        super().save_pretrained(save_directory, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, NoNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()
        elif isinstance(module, LightMobileBertSelfAttention) and module.collaborative:
            # All-ones mixing makes every head start as the same full-width dot product; the content bias starts
            # at zero like the ordinary query bias it replaces.
            module.mixing.fill_(1.0)
            module.content_bias.weight.zero_()
        elif isinstance(module, LightMobileBertEmbeddings):
            module.position_ids.copy_(torch.arange(module.position_ids.shape[-1]).expand((1, -1)))


def padding_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, seq) mask of 1 (attend) / 0 (padding) -> (batch, 1, 1, seq) additive bias of 0 / dtype minimum.

    The dtype's minimum, not a fixed constant: MobileBERT's scores reach the thousands, so a weak bias such as the
    original code's -6.0 lets padding leak into the softmax. exp(min - max) is exactly 0.
    """
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class LightMobileBertModel(LightMobileBertPreTrainedModel):
    """The bare LightMobileBERT encoder, returning the last hidden state and the pooled first token."""

    def __init__(self, config: LightMobileBertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = LightMobileBertEmbeddings(config)
        self.encoder = LightMobileBertEncoder(config)
        self.pooler = LightMobileBertPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): token ids.
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`): 1 for tokens, 0 for padding.
            token_type_ids, position_ids, inputs_embeds: as in `transformers.MobileBertModel`.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if output_attentions and self.config._attn_implementation != "eager":
            raise ValueError("`output_attentions=True` needs `attn_implementation='eager'`.")

        input_shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:-1]
        if len(input_shape) != 2:
            raise ValueError(f"Expected inputs of shape (batch, seq), got {tuple(input_shape)}.")
        if input_shape[1] > self.config.max_position_embeddings:
            raise ValueError(
                f"Sequence length {input_shape[1]} exceeds `max_position_embeddings` "
                f"({self.config.max_position_embeddings}); truncate the inputs."
            )
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_shape):
            raise ValueError(
                f"`attention_mask` has shape {tuple(attention_mask.shape)}, expected {tuple(input_shape)}."
            )

        embedding_output = self.embeddings(
            input_ids=input_ids, position_ids=position_ids, token_type_ids=token_type_ids, inputs_embeds=inputs_embeds
        )
        extended_mask = None if attention_mask is None else padding_bias(attention_mask, embedding_output.dtype)
        encoder_outputs = self.encoder(
            embedding_output,
            attention_mask=extended_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        sequence_output = encoder_outputs.last_hidden_state
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
        output = BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            hidden_states=encoder_outputs.hidden_states,
            attentions=encoder_outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


class LightMobileBertForSequenceClassification(LightMobileBertPreTrainedModel):
    """LightMobileBERT with a linear classification (or regression) head on the pooled first token."""

    def __init__(self, config: LightMobileBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mobilebert = LightMobileBertModel(config)
        classifier_dropout = (
            config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        )
        self.dropout = nn.Dropout(classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        r"""
        labels (`torch.Tensor` of shape `(batch_size,)`, *optional*):
            Class ids in `[0, num_labels)` (cross-entropy), or float targets when `num_labels == 1` (mean squared
            error) or for `problem_type="multi_label_classification"` (binary cross-entropy).
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.mobilebert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))  # (batch, num_labels)

        loss = None
        if labels is not None:
            loss = self._classification_loss(logits, labels)
        output = SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()

    def _classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # Same problem-type inference as every transformers sequence classifier.
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        if self.config.problem_type == "regression":
            return MSELoss()(logits.squeeze(-1), labels.to(logits.dtype).view(-1))
        if self.config.problem_type == "single_label_classification":
            labels = labels.view(-1)
            if ((labels < 0) | (labels >= self.num_labels)).any():
                raise ValueError(f"Labels must be in [0, {self.num_labels}), got {labels.tolist()}.")
            return CrossEntropyLoss()(logits.view(-1, self.num_labels), labels)
        return BCEWithLogitsLoss()(logits, labels.to(logits.dtype))


__all__ = ["LightMobileBertModel", "LightMobileBertForSequenceClassification", "LightMobileBertPreTrainedModel"]
