"""Build a LightMobileBERT checkpoint from a MobileBERT or BERT-family checkpoint.

    python -m conversion.compress --source google/mobilebert-uncased --output light-mobilebert-uncased

Steps: read the source, keep half of its layers (bottom, or one per consecutive group as in BERT-of-Theseus),
CP-decompose each kept layer's query/key products into collaborative attention, and write a Hub-ready folder
(weights, modeling code, tokenizer, conversion report, model card). The folder is written next to its destination
and moved into place at the end, so a failed run leaves nothing behind.
"""

import argparse
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from huggingface_hub import HfApi, ModelCard, ModelCardData
from transformers import AutoTokenizer
from transformers.utils import logging

from light_mobilebert import LightMobileBertConfig, LightMobileBertForSequenceClassification, LightMobileBertModel
from light_mobilebert.cli_logging import enable_info_logging
from light_mobilebert.file_utils import staged_folder

from .decompose import RECIPES, decompose_attention
from .porting import port_weights
from .sources import ConversionError, SourceCheckpoint, light_config_fields, load_source


logger = logging.get_logger(__name__)

DEFAULT_SOURCE = "google/mobilebert-uncased"
LAYER_SELECTIONS = ("bottom", "theseus")


@dataclass
class LayerReport:
    layer: int
    source_layer: int
    relative_error: float | None = None
    iterations: int | None = None
    converged: bool | None = None
    seconds: float | None = None


@dataclass
class ConversionReport:
    """What `conversion_report.json` holds."""

    source: str
    source_revision: str | None
    source_model_type: str
    source_num_layers: int
    kept_layers: list[int]
    layer_selection: str
    cp_rank: int | None
    recipe: str | None
    seed: int
    attention_scale: float
    parameters_before: int
    parameters_after: int
    seconds: float
    layers: list[LayerReport] = field(default_factory=list)
    dropped_tensors: dict[str, str] = field(default_factory=dict)


def select_layers(num_source_layers: int, num_layers: int | None, selection: str | list[int], seed: int) -> list[int]:
    """Source layer indices to keep, in order.

    Args:
        num_layers: how many to keep (default: half the source's, rounded up).
        selection: "bottom" (the first `num_layers`, the paper's choice), "theseus" (the source split into
            `num_layers` consecutive groups of equal size and one layer drawn from each with `seed`, as in
            BERT-of-Theseus), or an explicit increasing list of indices.
    """
    if isinstance(selection, list):
        if num_layers is not None and num_layers != len(selection):
            raise ConversionError(f"--num-layers {num_layers} but {len(selection)} layer indices were listed")
        if not selection:
            raise ConversionError("the list of layers to keep is empty")
        if any(not 0 <= index < num_source_layers for index in selection):
            raise ConversionError(f"layer indices must be in [0, {num_source_layers}), got {selection}")
        if any(b <= a for a, b in zip(selection, selection[1:], strict=False)):
            raise ConversionError(f"layer indices must be strictly increasing, got {selection}")
        return list(selection)
    if num_layers is None:
        num_layers = (num_source_layers + 1) // 2
    if not 0 < num_layers <= num_source_layers:
        raise ConversionError(
            f"--num-layers must be in [1, {num_source_layers}] (the source's layers), got {num_layers}"
        )
    if selection == "bottom":
        return list(range(num_layers))
    if selection == "theseus":
        if num_source_layers % num_layers:
            raise ConversionError(
                f"theseus selection splits the source's {num_source_layers} layers into {num_layers} groups of equal "
                "size; choose a --num-layers that divides it"
            )
        group = num_source_layers // num_layers
        rng = random.Random(seed)
        return [start + rng.randrange(group) for start in range(0, num_source_layers, group)]
    raise ConversionError(f"unknown layer selection {selection!r}; use one of {LAYER_SELECTIONS} or a list of indices")


def convert(
    source: SourceCheckpoint,
    *,
    num_layers: int | None = None,
    layer_selection: str | list[int] = "bottom",
    cp_rank: int | str | None = "auto",
    recipe: str = "default",
    seed: int = 0,
) -> tuple[LightMobileBertModel | LightMobileBertForSequenceClassification, ConversionReport]:
    """Build the LightMobileBERT model in memory.

    Args:
        cp_rank: shared query/key width; "auto" is half the source's (64 for MobileBERT), None keeps ordinary
            attention (an exact copy of the kept layers).
        recipe: "default" (ours) or "paper" (the authors'); see `conversion.decompose`.

    Returns:
        The model (a classifier if the source has a classification head, else the bare encoder) and its report.
    """
    start = time.perf_counter()
    if recipe not in RECIPES:
        raise ConversionError(f"unknown recipe {recipe!r}; use one of {tuple(RECIPES)}")
    kept = select_layers(source.num_layers, num_layers, layer_selection, seed)
    fields = light_config_fields(source.config)
    width = fields["intra_bottleneck_size"] if fields["use_bottleneck"] else fields["hidden_size"]
    num_heads = fields["num_attention_heads"]
    if cp_rank == "auto":
        cp_rank = width // 2
    if cp_rank is not None and not (isinstance(cp_rank, int) and 0 < cp_rank <= width):
        raise ConversionError(
            f"--cp-rank must be in [1, {width}] (the source's query/key width) or none, got {cp_rank}"
        )

    attention_scale = (width // num_heads) ** -0.5
    if cp_rank is not None and recipe == "paper":
        # The authors scale scores by the new per-head width, silently changing the softmax temperature.
        attention_scale = (cp_rank / num_heads) ** -0.5

    classifier = "classifier.weight" in source.heads
    labels = {"id2label": source.config.id2label, "label2id": source.config.label2id} if classifier else {}
    config = LightMobileBertConfig(
        **fields,
        num_hidden_layers=len(kept),
        shared_qk_size=cp_rank,
        attention_scale=attention_scale,
        source_checkpoint=source.name,
        source_revision=source.revision,
        source_layers=kept,
        **labels,
    )

    layers = [LayerReport(layer=position, source_layer=index) for position, index in enumerate(kept)]
    factors = None
    if cp_rank is not None:
        factors = {}
        for report in logging.tqdm(layers, desc="CP-decomposing attention", unit="layer"):
            prefix = f"encoder.layer.{report.source_layer}.attention.self"
            cp = decompose_attention(
                source.encoder[f"{prefix}.query.weight"],
                source.encoder[f"{prefix}.query.bias"],
                source.encoder[f"{prefix}.key.weight"],
                num_heads=num_heads,
                rank=cp_rank,
                recipe=recipe,
                # One seed per layer, derived from the run's seed: reproducible, and not the same start everywhere.
                seed=seed + report.source_layer,
            )
            factors[report.layer] = cp
            report.relative_error = cp.relative_error
            report.iterations = cp.n_iterations
            report.converged = cp.converged
            report.seconds = cp.seconds

    torch.manual_seed(seed)
    model_class = LightMobileBertForSequenceClassification if classifier else LightMobileBertModel
    model = model_class(config).eval()
    dropped = port_weights(source, model, kept, factors)

    report = ConversionReport(
        source=source.name,
        source_revision=source.revision,
        source_model_type=source.config.model_type,
        source_num_layers=source.num_layers,
        kept_layers=kept,
        layer_selection=layer_selection if isinstance(layer_selection, str) else "explicit",
        cp_rank=cp_rank,
        recipe=recipe if cp_rank is not None else None,
        seed=seed,
        attention_scale=attention_scale,
        parameters_before=sum(
            tensor.numel() for key, tensor in source.encoder.items() if not key.endswith("position_ids")
        ),
        parameters_after=model.num_parameters(),
        seconds=time.perf_counter() - start,
        layers=layers,
        dropped_tensors=summarize_dropped(dropped),
    )
    return model, report


def summarize_dropped(dropped: dict[str, str]) -> dict[str, str]:
    """Dropped tensors grouped by layer, e.g. `encoder.layer.13.*` -> "layer not kept", to keep the report short."""
    summary = {}
    for key, reason in dropped.items():
        parts = key.split(".")
        if key.startswith("encoder.layer.") and reason == "layer not kept":
            key = ".".join(parts[:3]) + ".*"
        summary[key] = reason
    return summary


MODEL_CARD = """
# {name}

A **LightMobileBERT** encoder converted from [`{source}`]({source_link}) with
[light-mobilebert](https://pypi.org/project/light-mobilebert/): {num_layers} of the source's {num_source_layers} layers
(`{kept_layers}`), {attention}. It is meant to be fine-tuned (e.g. on GLUE) before use.

| | |
|---|---|
| parameters | {parameters_after:,} (source: {parameters_before:,}) |
| layer selection | {layer_selection} |
| CP recipe | {recipe} (seed {seed}) |
| attention score scale | {attention_scale:.6g} |

{layer_table}

## Use

```python
from transformers import AutoModelForSequenceClassification, AutoTokenizer

# AutoTokenizer reads config.json first, whose model type is custom, even for this plain BertTokenizer.
tokenizer = AutoTokenizer.from_pretrained("{repo}", trust_remote_code=True)
model = AutoModelForSequenceClassification.from_pretrained("{repo}", trust_remote_code=True, num_labels=2)
```

With `light_mobilebert` installed, `import light_mobilebert` registers the classes and `trust_remote_code` is not
needed.
"""


def model_card(report: ConversionReport, repo: str) -> ModelCard:
    """The checkpoint's README.md: what was converted, how, and how to load it."""
    if report.cp_rank is None:
        attention = "ordinary multi-head attention (an exact copy of the kept layers)"
        layer_table = ""
    else:
        attention = f"collaborative attention with a shared query/key width of {report.cp_rank}"
        rows = "\n".join(
            f"| {layer.layer} | {layer.source_layer} | {layer.relative_error:.4f} | {layer.iterations} |"
            for layer in report.layers
        )
        layer_table = (
            "Relative reconstruction error of each layer's stacked W_Q,h W_K,h^T tensor:\n\n"
            "| layer | source layer | relative error | ALS iterations |\n|---|---|---|---|\n" + rows
        )
    is_hub_id = not os.path.isdir(report.source)
    data = ModelCardData(
        library_name="transformers",
        base_model=report.source if is_hub_id else None,
        tags=["light-mobilebert", "mobilebert", "cp-decomposition", "model-compression"],
        pipeline_tag="text-classification",
    )
    text = MODEL_CARD.format(
        name=repo.split("/")[-1],
        repo=repo,
        source=report.source,
        source_link=f"https://huggingface.co/{report.source}" if is_hub_id else report.source,
        num_layers=len(report.kept_layers),
        num_source_layers=report.source_num_layers,
        kept_layers=report.kept_layers,
        attention=attention,
        parameters_after=report.parameters_after,
        parameters_before=report.parameters_before,
        layer_selection=report.layer_selection,
        recipe=report.recipe or "none",
        seed=report.seed,
        attention_scale=report.attention_scale,
        layer_table=layer_table,
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{text}")


def write_checkpoint(
    model: torch.nn.Module, report: ConversionReport, source: SourceCheckpoint, folder: Path, repo: str
) -> None:
    """Weights, configuration with `auto_map`, modeling code, tokenizer, report and model card, into `folder`."""
    model.save_pretrained(folder)
    try:
        AutoTokenizer.from_pretrained(source.folder).save_pretrained(folder)
    except (OSError, ValueError) as error:
        logger.warning(f"No tokenizer could be loaded from {source.folder} ({error}); the checkpoint has none.")
    (folder / "conversion_report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    model_card(report, repo).save(folder / "README.md")


def compress(
    output: str | os.PathLike,
    source: str = DEFAULT_SOURCE,
    *,
    revision: str | None = None,
    num_layers: int | None = None,
    layer_selection: str | list[int] = "bottom",
    cp_rank: int | str | None = "auto",
    recipe: str = "default",
    seed: int = 0,
    overwrite: bool = False,
    push_to_hub: str | None = None,
) -> ConversionReport:
    """Convert `source` into a LightMobileBERT checkpoint folder at `output` (see `convert` for the arguments).

    Nothing is written unless the whole conversion succeeds: the folder is built next to `output` and renamed into
    place at the end (replacing an existing `output` only with `overwrite=True`). With `push_to_hub`, the folder is
    then uploaded to that Hub repository (created if needed).

    Raises:
        ConversionError: for any problem with the inputs, with a one-line explanation.
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise ConversionError(f"output {output} already exists; pass --overwrite to replace it")
    source_checkpoint = load_source(source, revision)
    model, report = convert(
        source_checkpoint,
        num_layers=num_layers,
        layer_selection=layer_selection,
        cp_rank=cp_rank,
        recipe=recipe,
        seed=seed,
    )

    with staged_folder(output) as staging:
        write_checkpoint(model, report, source_checkpoint, staging, repo=push_to_hub or output.name)
    logger.info(f"Wrote {output} ({report.parameters_after:,} parameters, {report.seconds:.1f} s).")

    if push_to_hub:
        try:
            api = HfApi()
            api.create_repo(push_to_hub, exist_ok=True)
            api.upload_folder(repo_id=push_to_hub, folder_path=output, commit_message="Add LightMobileBERT checkpoint")
        except OSError as error:
            raise ConversionError(
                f"the checkpoint is in {output} but pushing it to {push_to_hub!r} failed: {error}"
            ) from error
    return report


def parse_layer_selection(value: str) -> str | list[int]:
    if value in LAYER_SELECTIONS:
        return value
    try:
        return [int(index) for index in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected one of {LAYER_SELECTIONS} or comma-separated layer indices, got {value!r}"
        ) from None


def parse_rank(value: str) -> int | str | None:
    if value.lower() in ("none", "auto"):
        return value.lower() if value.lower() == "auto" else None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'none', got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m conversion.compress",
        description="Build a LightMobileBERT checkpoint (half depth, CP-decomposed attention) from a MobileBERT "
        "or BERT-family checkpoint.",
    )
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="Hub id or local folder (default: %(default)s)")
    parser.add_argument("--revision", default=None, help="Hub revision of the source (branch, tag or commit)")
    parser.add_argument("--output", required=True, help="folder to write the checkpoint to")
    parser.add_argument("--num-layers", type=int, default=None, help="layers to keep (default: half the source's)")
    parser.add_argument(
        "--layer-selection",
        type=parse_layer_selection,
        default="bottom",
        help="'bottom' (default, the paper's), 'theseus' (one layer drawn per consecutive group, with --seed) or "
        "comma-separated source layer indices",
    )
    parser.add_argument(
        "--cp-rank",
        type=parse_rank,
        default="auto",
        help="shared query/key width (default: half the source's, 64 for MobileBERT); 'none' keeps ordinary attention",
    )
    parser.add_argument(
        "--recipe",
        choices=tuple(RECIPES),
        default="default",
        help="CP decomposition recipe: 'default' (ours: seeded, converged, per-head SVD start, score scale kept) "
        "or 'paper' (the authors': random start, 100 iterations, score scale from the shared width)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for layer selection and decomposition")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="upload the result to this Hub repo")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (`python -m conversion.compress`, `light-mobilebert-compress`)."""
    args = build_parser().parse_args(argv)
    # The modules log as `light_mobilebert.conversion.*` when installed, as `conversion.*` from the repository, and
    # this one as `__main__` under `python -m conversion.compress`.
    enable_info_logging("light_mobilebert", "conversion", "__main__")
    try:
        report = compress(
            args.output,
            args.source,
            revision=args.revision,
            num_layers=args.num_layers,
            layer_selection=args.layer_selection,
            cp_rank=args.cp_rank,
            recipe=args.recipe,
            seed=args.seed,
            overwrite=args.overwrite,
            push_to_hub=args.push_to_hub,
        )
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    errors = [layer.relative_error for layer in report.layers if layer.relative_error is not None]
    summary = f"mean CP relative error {sum(errors) / len(errors):.4f}, " if errors else ""
    print(
        f"{args.output}: layers {report.kept_layers}, {summary}"
        f"{report.parameters_before:,} -> {report.parameters_after:,} parameters, {report.seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
