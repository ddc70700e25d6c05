"""Reading a source checkpoint (MobileBERT or BERT family) from the Hub or a local folder.

The raw tensors are read from the checkpoint files rather than through `from_pretrained`, so that the porting step
sees every tensor the checkpoint holds and can account for each one.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.torch import load_file
from transformers import AutoConfig, PreTrainedConfig


SUPPORTED_MODEL_TYPES = {
    "mobilebert": "MobileBERT (MobileBertModel, MobileBertForPreTraining, MobileBertForSequenceClassification, ...)",
    "bert": "BERT family (BertModel, BertForPreTraining, BertForSequenceClassification, ...; e.g. MiniLM)",
}
# Prefixes under which transformers stores the encoder in task-head checkpoints.
BASE_MODEL_PREFIXES = ("mobilebert.", "bert.")
# Files worth fetching from a Hub repository: configuration, weights and tokenizer, not TF/Flax/ONNX exports.
HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors"]


class ConversionError(Exception):
    """A user-facing conversion problem, reported as one line by the command-line tool."""


@dataclass
class SourceCheckpoint:
    """A source model's configuration and raw tensors, with encoder keys stripped of their task-model prefix."""

    name: str
    folder: Path
    revision: str | None
    config: PreTrainedConfig
    # Encoder tensors, keyed as in the base model (`embeddings.`, `encoder.layer.N.`, `pooler.`).
    encoder: dict[str, torch.Tensor]
    # Task-head tensors (`classifier.`, `cls.`, `qa_outputs.`, ...), keyed as in the checkpoint.
    heads: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers


def resolve_folder(source: str, revision: str | None) -> tuple[Path, str | None]:
    """A local folder as is, or a Hub repository downloaded (weights, config and tokenizer files only)."""
    if os.path.isdir(source):
        return Path(source), revision
    # A Hub id is `name` or `owner/name`; anything else is a path.
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise ConversionError(f"source folder {source!r} does not exist")
    try:
        folder = Path(snapshot_download(source, revision=revision, allow_patterns=HUB_PATTERNS))
        if not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(source, revision=revision, allow_patterns=["pytorch_model*.bin"]))
    except (RepositoryNotFoundError, GatedRepoError, HFValidationError) as error:
        raise ConversionError(
            f"source {source!r} is neither a local folder nor a Hub model you can access ({type(error).__name__})"
        ) from error
    except RevisionNotFoundError as error:
        raise ConversionError(f"revision {revision!r} not found for source {source!r}") from error
    except (LocalEntryNotFoundError, OSError) as error:
        raise ConversionError(
            f"cannot reach the Hugging Face Hub to fetch {source!r} and it is not cached; "
            "pass a local checkpoint folder with --source"
        ) from error
    # The snapshot folder is named after the commit it holds.
    return folder, folder.name


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder: safetensors (single or sharded), else a PyTorch `.bin`."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [folder / shard for shard in shards]
    else:
        files = sorted(folder.glob("*.safetensors"))
    if files:
        state_dict = {}
        for file in files:
            state_dict.update(load_file(file))
        return state_dict
    bins = sorted(folder.glob("pytorch_model*.bin"))
    if not bins:
        raise ConversionError(f"no weights (model.safetensors or pytorch_model.bin) in {folder}")
    state_dict = {}
    for file in bins:
        state_dict.update(torch.load(file, map_location="cpu", weights_only=True))
    return state_dict


def normalize_key(key: str) -> str:
    # Checkpoints written before transformers renamed TF-style LayerNorm parameters.
    return key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def load_source(source: str, revision: str | None = None) -> SourceCheckpoint:
    """Read a MobileBERT or BERT-family checkpoint, checking its architecture and that every weight is finite."""
    folder, revision = resolve_folder(source, revision)
    if not (folder / "config.json").is_file():
        raise ConversionError(f"no config.json in source folder {folder}")
    config = AutoConfig.from_pretrained(folder)
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        supported = "; ".join(SUPPORTED_MODEL_TYPES.values())
        raise ConversionError(f"unsupported architecture {config.model_type!r}; supported: {supported}")
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise ConversionError(
            f"unsupported position_embedding_type {config.position_embedding_type!r}; only 'absolute' maps onto "
            "MobileBERT"
        )

    encoder, heads = {}, {}
    for key, tensor in read_state_dict(folder).items():
        key = normalize_key(key)
        if not torch.is_floating_point(tensor) and not key.endswith("position_ids"):
            raise ConversionError(f"source tensor {key!r} has non-floating dtype {tensor.dtype}")
        if torch.is_floating_point(tensor) and not torch.isfinite(tensor).all():
            raise ConversionError(f"source tensor {key!r} has non-finite values (NaN or inf)")
        stripped = key.removeprefix(BASE_MODEL_PREFIXES[0]).removeprefix(BASE_MODEL_PREFIXES[1])
        if stripped.startswith(("embeddings.", "encoder.", "pooler.")):
            encoder[stripped] = tensor
        else:
            heads[key] = tensor
    return SourceCheckpoint(name=source, folder=folder, revision=revision, config=config, encoder=encoder, heads=heads)


def light_config_fields(config: PreTrainedConfig) -> dict:
    """The LightMobileBERT configuration fields that reproduce a source architecture exactly.

    MobileBERT's own fields carry over. BERT is MobileBERT without bottlenecks, with one feed-forward network,
    LayerNorm, no trigram embedding and a tanh pooler: the same module names, the same computation.
    """
    common = {
        name: getattr(config, name)
        for name in (
            "vocab_size",
            "hidden_size",
            "num_attention_heads",
            "intermediate_size",
            "hidden_act",
            "hidden_dropout_prob",
            "attention_probs_dropout_prob",
            "max_position_embeddings",
            "type_vocab_size",
            "initializer_range",
            "layer_norm_eps",
            "pad_token_id",
            "classifier_dropout",
        )
    }
    if config.model_type == "mobilebert":
        mobilebert_only = (
            "embedding_size",
            "trigram_input",
            "use_bottleneck",
            "intra_bottleneck_size",
            "use_bottleneck_attention",
            "key_query_shared_bottleneck",
            "num_feedforward_networks",
            "normalization_type",
            "classifier_activation",
        )
        return {**common, **{name: getattr(config, name) for name in mobilebert_only}}
    return {
        **common,
        "embedding_size": config.hidden_size,
        "trigram_input": False,
        "use_bottleneck": False,
        "intra_bottleneck_size": config.hidden_size,
        "use_bottleneck_attention": False,
        "key_query_shared_bottleneck": False,
        "num_feedforward_networks": 1,
        "normalization_type": "layer_norm",
        "classifier_activation": True,
    }
