"""ONNX export, parity check, dynamic int8 quantisation and GLUE evaluation with onnxruntime.

Needs the optional `edge` dependencies (`pip install "light-mobilebert[edge]"`): `onnx`, `onnxruntime` and, for the
export, `onnxscript`.

From the command line, a fine-tuned classifier folder becomes a deployable ONNX folder (fp32, optionally int8, with the
tokenizer and a report of the parity check and of the accuracy cost of quantisation on a GLUE dev set):

    python -m light_mobilebert.export MODEL_DIR OUTPUT_DIR --int8 --task sst2 --glue-dir ../shared/data/glue

The export uses the `torch.export`-based ("dynamo") exporter. The legacy TorchScript exporter (`dynamo=False`) also
gives a correct graph for LightMobileBERT and exports faster, but it is deprecated since PyTorch 2.9 and traces: any
Python branch on a shape is silently frozen into the graph, whereas `torch.export` records it as a guard on the
dynamic axes or fails loudly. Both graphs run equally fast with onnxruntime.
"""

import argparse
import importlib
import inspect
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

from .cli_logging import enable_info_logging
from .file_utils import staged_folder
from .modeling import LightMobileBertForSequenceClassification
from .nonorm_folding import fold_no_norm


if TYPE_CHECKING:
    import onnxruntime


logger = logging.get_logger(__name__)

__all__ = [
    "ONNX_INPUT_NAMES",
    "ExportError",
    "check_onnx_parity",
    "classifier_input_names",
    "export_classifier",
    "export_onnx",
    "onnx_accuracy",
    "onnx_logits",
    "onnx_session",
    "quantize_dynamic_int8",
]

# The inputs a sequence classifier may take, in the order they are exported; those its `forward` lacks (DistilBERT
# has no token types) are left out.
ONNX_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")

# Two sentences of different lengths: the traced example is a padded batch, so padding is exercised during export.
_EXAMPLE_SENTENCES = ("A short example.", "A longer example sentence, so that the first one needs padding.")

# ONNX protobufs cannot exceed 2 GiB; larger models must keep their weights in an external data file.
_PROTOBUF_LIMIT = 2**31

# The largest logit difference between PyTorch and the float32 export that `export_classifier` accepts.
PARITY_TOLERANCE = 1e-4
# `export_classifier` checks parity on this many dev sentences of the task, or on these sentences without a task.
PARITY_SENTENCES = 64
_DEFAULT_PARITY_SENTENCES = (
    "The movie was a delight from start to finish.",
    "I would not recommend this restaurant to anyone.",
    "The committee postponed its decision until next week.",
    "Is this the train that goes to the airport?",
    "A quiet, thoughtful film that rewards patience, though its second half drags.",
    "Numbers: 3.14, 2,718 and 1e-4 tokenise into several word pieces.",
)


class ExportError(Exception):
    """A problem with the inputs of [`export_classifier`] or with its result, with a one-line explanation."""


def _require(module: str) -> Any:
    """Imports an optional dependency of the `edge` extra, or raises an `ImportError` saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"This feature needs `{module}`, an optional dependency of light-mobilebert: install it with "
            '`pip install "light-mobilebert[edge]"` (onnx, onnxruntime, onnxscript).'
        ) from error


def classifier_input_names(model: PreTrainedModel) -> list[str]:
    """The names of [`ONNX_INPUT_NAMES`] that the model's `forward` accepts, in that order."""
    accepted = inspect.signature(model.forward).parameters
    return [name for name in ONNX_INPUT_NAMES if name in accepted]


def export_onnx(
    model: PreTrainedModel,
    tokenizer_or_example_inputs: PreTrainedTokenizerBase | Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    opset: int = 18,
    dynamo: bool = True,
    fold_norms: bool = True,
) -> Path:
    """
    Exports a sequence classifier to ONNX with dynamic batch and sequence axes.

    The graph takes `input_ids`, `attention_mask` and (when the model's `forward` accepts it) `token_type_ids`, all
    int64 of shape `(batch, sequence)`, and returns `logits` of shape `(batch, num_labels)`. The model is exported in
    evaluation mode (no dropout) and its training flag restored afterwards. A NoNorm LightMobileBERT is exported with
    its NoNorms folded into its linear layers ([`~nonorm_folding.fold_no_norm`]): the same logits, and about a quarter
    fewer graph nodes.

    Args:
        model (`PreTrainedModel`):
            A sequence classifier on CPU, for example a [`LightMobileBertForSequenceClassification`].
        tokenizer_or_example_inputs (`PreTrainedTokenizerBase` or `Mapping[str, torch.Tensor]`):
            A tokenizer, used to build a padded example batch of two sentences, or the example inputs themselves
            (`input_ids`, `attention_mask`, ...). Their values do not matter beyond shape and dtype: the axes are
            dynamic.
        path (`str` or `os.PathLike`):
            The `.onnx` file to write; its folder is created. Models over 2 GiB also write `<path>.data`.
        opset (`int`, *optional*, defaults to 18):
            The ONNX opset version.
        dynamo (`bool`, *optional*, defaults to `True`):
            Use the `torch.export`-based exporter; `False` selects the deprecated TorchScript exporter (see the
            module docstring).
        fold_norms (`bool`, *optional*, defaults to `True`):
            Fold the NoNorms of a LightMobileBERT classifier before exporting. Where folding is refused (a product of
            NoNorm weights near zero) the model is exported as it is, with a warning. Other models are unaffected.

    Returns:
        `Path`: the path of the written model.
    """
    _require("onnx")
    if dynamo:
        _require("onnxscript")
    if isinstance(tokenizer_or_example_inputs, Mapping):
        example_inputs = dict(tokenizer_or_example_inputs)
    else:
        example_inputs = dict(tokenizer_or_example_inputs(list(_EXAMPLE_SENTENCES), padding=True, return_tensors="pt"))
    input_names = [name for name in classifier_input_names(model) if name in example_inputs]
    if "input_ids" not in input_names:
        raise ValueError(f"The example inputs must contain `input_ids`, got {sorted(example_inputs)}.")
    kwargs = {name: torch.as_tensor(example_inputs[name], dtype=torch.long) for name in input_names}
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    export_kwargs = {
        "kwargs": kwargs,
        "input_names": input_names,
        "output_names": ["logits"],
        "opset_version": opset,
        "dynamo": dynamo,
    }
    if dynamo:
        # String axis names become `Dim.DYNAMIC` dimensions and name the ONNX axes.
        num_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        export_kwargs.update(dynamic_shapes=dynamic_axes, external_data=num_bytes >= _PROTOBUF_LIMIT, verbose=False)
    else:
        export_kwargs.update(dynamic_axes={**dynamic_axes, "logits": {0: "batch"}})

    if fold_norms:
        model = _folded_if_possible(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            torch.onnx.export(model, (), path, **export_kwargs)
    finally:
        model.train(was_training)
    logger.info(f"Exported {type(model).__name__} to {path} (opset {opset}, inputs {input_names}).")
    return path


def _folded_if_possible(model: PreTrainedModel) -> PreTrainedModel:
    """The model with its NoNorms folded when it is a NoNorm LightMobileBERT classifier; otherwise the model itself."""
    if not isinstance(model, LightMobileBertForSequenceClassification) or model.config.normalization_type != "no_norm":
        return model
    try:
        return fold_no_norm(model)
    except ValueError as error:
        logger.warning(f"Exporting without folding the NoNorms: {error}.")
        return model


def onnx_session(path: str | os.PathLike, num_threads: int | None = None) -> "onnxruntime.InferenceSession":
    """
    Opens an ONNX model with onnxruntime on CPU, with every graph optimisation enabled.

    Args:
        path (`str` or `os.PathLike`):
            The `.onnx` file.
        num_threads (`int`, *optional*):
            Intra-op threads; by default `torch.get_num_threads()`, so that PyTorch and onnxruntime timings of the
            same process use the same number of cores.

    Returns:
        `onnxruntime.InferenceSession`
    """
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = num_threads or torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _session_feed(session: "onnxruntime.InferenceSession", encoding: Mapping[str, Any]) -> dict[str, np.ndarray]:
    missing = [i.name for i in session.get_inputs() if i.name not in encoding]
    if missing:
        raise ValueError(f"The ONNX model needs inputs {missing} that the tokenizer does not produce.")
    return {i.name: np.asarray(encoding[i.name], dtype=np.int64) for i in session.get_inputs()}


def onnx_logits(
    session: "onnxruntime.InferenceSession",
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    text_pairs: Sequence[str] | None = None,
    batch_size: int = 32,
    max_length: int = 128,
) -> np.ndarray:
    """
    Runs an exported classifier on texts (or text pairs), tokenised in batches padded to their longest member.

    Args:
        session (`onnxruntime.InferenceSession`):
            A session from [`onnx_session`].
        tokenizer (`PreTrainedTokenizerBase`):
            The model's tokenizer.
        texts (`Sequence[str]`):
            The first (or only) text of each example.
        text_pairs (`Sequence[str]`, *optional*):
            The second text of each example, for sentence-pair tasks.
        batch_size (`int`, *optional*, defaults to 32):
            Examples per run.
        max_length (`int`, *optional*, defaults to 128):
            Longer examples are truncated.

    Returns:
        `np.ndarray` of shape `(len(texts), num_labels)`: the logits.
    """
    if text_pairs is not None and len(text_pairs) != len(texts):
        raise ValueError(f"Got {len(texts)} texts but {len(text_pairs)} text pairs.")
    logits = []
    for start in range(0, len(texts), batch_size):
        pairs = None if text_pairs is None else list(text_pairs[start : start + batch_size])
        encoding = tokenizer(
            list(texts[start : start + batch_size]),
            pairs,
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="np",
        )
        logits.append(session.run(["logits"], _session_feed(session, encoding))[0])
    return np.concatenate(logits)


def check_onnx_parity(
    model: PreTrainedModel,
    onnx_path: str | os.PathLike,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[str],
    batch_size: int = 8,
    max_length: int = 128,
) -> float:
    """
    Compares an exported model's logits with the PyTorch model's on real sentences.

    The sentences are tokenised in batches padded to their longest member, so both the padding mask and the dynamic
    axes are exercised. Expect about 1e-6 in float32; anything above 1e-4 means the export is wrong.

    Args:
        model (`PreTrainedModel`):
            The PyTorch sequence classifier that was exported (run in evaluation mode, on CPU).
        onnx_path (`str` or `os.PathLike`):
            The exported model.
        tokenizer (`PreTrainedTokenizerBase`):
            The model's tokenizer.
        sentences (`Sequence[str]`):
            The sentences to compare on.
        batch_size (`int`, *optional*, defaults to 8):
            Sentences per batch.
        max_length (`int`, *optional*, defaults to 128):
            Longer sentences are truncated.

    Returns:
        `float`: the largest absolute difference between corresponding logits.
    """
    session = onnx_session(onnx_path)
    onnx_output = onnx_logits(session, tokenizer, sentences, batch_size=batch_size, max_length=max_length)
    was_training = model.training
    model.eval()
    torch_output = []
    try:
        with torch.inference_mode():
            for start in range(0, len(sentences), batch_size):
                encoding = tokenizer(
                    list(sentences[start : start + batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                )
                inputs = {name: encoding[name] for name in classifier_input_names(model) if name in encoding}
                torch_output.append(model(**inputs).logits.float().numpy())
    finally:
        model.train(was_training)
    return float(np.abs(np.concatenate(torch_output) - onnx_output).max())


def quantize_dynamic_int8(
    onnx_path: str | os.PathLike,
    out_path: str | os.PathLike,
    per_channel: bool = True,
    quantize_embeddings: bool = False,
) -> Path:
    """
    Quantises an exported model's weight matrices to int8 with onnxruntime's dynamic quantisation.

    Every `MatMul` by a weight matrix becomes an int8 matrix product whose activation scale is computed on the fly
    (onnxruntime fuses them into `DynamicQuantizeMatMul` / `MatMulIntegerToFloat`); products of two activations
    (attention scores and context) stay in float32, which is as fast and keeps the softmax inputs exact. No
    calibration data is needed.

    Measured on LightMobileBERT (batch 1, length 128, AVX2 CPU without VNNI, 2 threads): 1.15x to 1.3x faster than
    onnxruntime float32 with the NoNorms folded (23.1 vs 26.5, 23.2 vs 30.2 and 24.5 vs 29.9 ms in three runs of
    `python -m light_mobilebert.bench`); 1.4x (2 threads) to 1.5x (1 thread) before folding, whose element-wise
    nodes quantisation does not touch. Per-channel
    scales, also quantising the attention products, `reduce_range`, onnxruntime's `quant_pre_process`, other graph
    optimisation levels and merging the matrix products that share an input each change the latency by less than 2%,
    or slow it down (measured before folding); so do uint8 weights. PyTorch's dynamic quantisation
    (`torch.ao.quantization.quantize_dynamic`) is 1.7x to 1.9x slower than this.

    Args:
        onnx_path (`str` or `os.PathLike`):
            A float32 model from [`export_onnx`].
        out_path (`str` or `os.PathLike`):
            Where to write the int8 model; its folder is created.
        per_channel (`bool`, *optional*, defaults to `True`):
            One weight scale per output column instead of one per matrix: the same speed, and more accurate. On the
            study's fine-tuned SST-2 model (`+ CP default + joint + LMBert_Adam`, seed 0) the dev accuracy moves by
            +0.34 points from float32 with per-column scales and by -0.57 with one scale per matrix.
        quantize_embeddings (`bool`, *optional*, defaults to `False`):
            Also store the embedding tables in int8 (per-tensor scale): a smaller file (LightMobileBERT: 17 MB
            instead of 29 MB) at the same speed, at some risk to accuracy; check it with [`onnx_accuracy`].

    Returns:
        `Path`: `out_path`.
    """
    quantization = _require("onnxruntime.quantization")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    quantization.quantize_dynamic(
        Path(onnx_path),
        out_path,
        op_types_to_quantize=["MatMul", "Gather"] if quantize_embeddings else ["MatMul"],
        per_channel=per_channel,
        weight_type=quantization.QuantType.QInt8,
        extra_options={"MatMulConstBOnly": True},
    )
    logger.info(f"Wrote the int8 model {out_path}.")
    return out_path


def onnx_accuracy(
    onnx_path: str | os.PathLike,
    tokenizer: PreTrainedTokenizerBase,
    task: str,
    glue_dir: str | os.PathLike,
    batch_size: int = 32,
    max_length: int = 128,
) -> dict[str, float]:
    """
    Computes the GLUE dev metrics of an exported (fp32 or int8) classifier with onnxruntime.

    Run it on a fine-tuned model and its int8 version to report the accuracy cost of quantisation.

    Args:
        onnx_path (`str` or `os.PathLike`):
            The exported model, fine-tuned on `task`.
        tokenizer (`PreTrainedTokenizerBase`):
            The model's tokenizer.
        task (`str`):
            A GLUE task name (`"sst2"`, `"cola"`, `"stsb"`, ...); MNLI is scored on its matched dev set.
        glue_dir (`str` or `os.PathLike`):
            The root of the official GLUE TSV release (see [`load_glue_tsv`]).
        batch_size (`int`, *optional*, defaults to 32):
            Examples per run.
        max_length (`int`, *optional*, defaults to 128):
            Longer examples are truncated, as in fine-tuning.

    Returns:
        `dict[str, float]`: the task's metrics, as [`compute_glue_metrics`] returns them.
    """
    # Imported here: `glue` pulls in datasets, scikit-learn and SciPy, which exporting and benchmarking do not need.
    from .glue import compute_glue_metrics, get_glue_task, load_glue_tsv

    glue_task = get_glue_task(task)
    split = glue_task.validation_files[0][0]
    dataset = load_glue_tsv(glue_dir, glue_task.name, split)
    first_key, second_key = glue_task.sentence_keys
    session = onnx_session(onnx_path)
    logits = onnx_logits(
        session,
        tokenizer,
        dataset[first_key],
        None if second_key is None else dataset[second_key],
        batch_size=batch_size,
        max_length=max_length,
    )
    return compute_glue_metrics(glue_task.name, logits, np.asarray(dataset["label"]))


def export_classifier(
    model_dir: str | os.PathLike,
    output: str | os.PathLike,
    *,
    int8: bool = False,
    per_channel: bool = True,
    quantize_embeddings: bool = False,
    task: str | None = None,
    glue_dir: str | os.PathLike | None = None,
    max_length: int = 128,
    opset: int = 18,
    fold_norms: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """
    Exports a fine-tuned sequence classifier folder to a folder ready for onnxruntime.

    The output holds `model.onnx` (float32), `model.int8.onnx` with `int8=True`, the tokenizer and config, and
    `export_report.json`. The float32 graph is checked against PyTorch on real sentences (the first
    [`PARITY_SENTENCES`] dev sentences of `task`, or built-in sentences): a difference above [`PARITY_TOLERANCE`] is
    an error. With `task`, both graphs are scored on the task's dev set and the report gives the metrics and the
    int8 - fp32 difference in points. Nothing is written unless every step succeeds.

    Args:
        model_dir (`str` or `os.PathLike`):
            A folder (or Hub id) with a sequence classifier and its tokenizer, e.g. the output of `run_glue.py`.
        output (`str` or `os.PathLike`):
            The folder to write.
        int8 (`bool`, *optional*, defaults to `False`):
            Also write the dynamically quantised model (see [`quantize_dynamic_int8`]).
        per_channel (`bool`, *optional*, defaults to `True`):
            Per-column weight scales for the int8 model; `False` uses one scale per matrix.
        quantize_embeddings (`bool`, *optional*, defaults to `False`):
            Also store the embedding tables of the int8 model in int8.
        task (`str`, *optional*):
            A GLUE task the model was fine-tuned on, to score the exported models on its dev set.
        glue_dir (`str` or `os.PathLike`, *optional*):
            The root of the official GLUE TSV release; required with `task`.
        max_length (`int`, *optional*, defaults to 128):
            Longer examples are truncated (use the fine-tuning length).
        opset (`int`, *optional*, defaults to 18):
            The ONNX opset version.
        fold_norms (`bool`, *optional*, defaults to `True`):
            Fold a NoNorm LightMobileBERT's NoNorms into its linear layers (see [`export_onnx`]).
        overwrite (`bool`, *optional*, defaults to `False`):
            Replace `output` if it exists.

    Returns:
        `dict[str, Any]`: the content of `export_report.json`.

    Raises:
        ExportError: for a bad input or a failed parity check, before anything is written.
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise ExportError(f"output {output} already exists; pass --overwrite to replace it")
    if (task is None) != (glue_dir is None):
        raise ExportError("--task and --glue-dir go together: the dev set is read from the GLUE folder")
    if not int8 and (not per_channel or quantize_embeddings):
        raise ExportError("--per-tensor and --quantize-embeddings only apply to the int8 model: add --int8")
    if max_length < 2:
        raise ExportError(f"--max-length must be at least 2 (room for [CLS] and [SEP]), got {max_length}")
    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            _require(module)
        except ImportError as error:
            raise ExportError(str(error)) from None

    # Imported here: `glue` pulls in datasets, scikit-learn and SciPy, which exporting alone does not need.
    from .glue import get_glue_task, load_glue_tsv

    parity_sentences = list(_DEFAULT_PARITY_SENTENCES)
    if task is not None:
        try:
            glue_task = get_glue_task(task)
            dev = load_glue_tsv(glue_dir, glue_task.name, glue_task.validation_files[0][0])
        except (ValueError, OSError) as error:
            raise ExportError(str(error)) from None
        parity_sentences = list(dev[glue_task.sentence_keys[0]][:PARITY_SENTENCES])

    try:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as error:
        raise ExportError(f"cannot load a sequence classifier and its tokenizer from {model_dir}: {error}") from None
    if task is not None and model.config.num_labels != glue_task.num_labels:
        raise ExportError(
            f"the model has {model.config.num_labels} labels but {glue_task.name} has {glue_task.num_labels}: "
            "was it fine-tuned on another task?"
        )

    report: dict[str, Any] = {
        "model": str(model_dir),
        "opset": opset,
        "max_length": max_length,
        "fold_norms": fold_norms,
    }
    with staged_folder(output) as staging:
        fp32_path = export_onnx(model, tokenizer, staging / "model.onnx", opset=opset, fold_norms=fold_norms)
        difference = check_onnx_parity(model, fp32_path, tokenizer, parity_sentences, max_length=max_length)
        report["parity"] = {"max_abs_logit_difference": difference, "sentences": len(parity_sentences)}
        if not difference <= PARITY_TOLERANCE:
            raise ExportError(
                f"the float32 ONNX model differs from PyTorch by {difference:.3g} (tolerance {PARITY_TOLERANCE:g}); "
                "nothing was written"
            )
        paths = {"fp32": fp32_path}
        if int8:
            paths["int8"] = quantize_dynamic_int8(
                fp32_path,
                staging / "model.int8.onnx",
                per_channel=per_channel,
                quantize_embeddings=quantize_embeddings,
            )
            report["int8"] = {"per_channel": per_channel, "quantize_embeddings": quantize_embeddings}
        report["files"] = {name: path.name for name, path in paths.items()}
        if task is not None:
            report["task"] = glue_task.name
            metrics = {}
            for name, path in paths.items():
                logger.info(f"Scoring the {name} model on the {glue_task.name} dev set.")
                metrics[name] = onnx_accuracy(path, tokenizer, glue_task.name, glue_dir, max_length=max_length)
            report["dev_metrics"] = metrics
            if int8:
                report["int8_minus_fp32_points"] = {
                    key: 100 * (metrics["int8"][key] - metrics["fp32"][key]) for key in metrics["fp32"]
                }
        tokenizer.save_pretrained(staging)
        model.config.save_pretrained(staging)
        (staging / "export_report.json").write_text(json.dumps(report, indent=2) + "\n")
    logger.info(f"Wrote {output}.")
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m light_mobilebert.export",
        description="Export a fine-tuned sequence classifier to ONNX (float32, optionally int8), check parity with "
        "PyTorch and, with --task, score the exported models on a GLUE dev set.",
    )
    parser.add_argument("model", help="fine-tuned classifier folder (or Hub id) with its tokenizer")
    parser.add_argument("output", help="folder to write")
    parser.add_argument("--int8", action="store_true", help="also write the dynamically quantised int8 model")
    parser.add_argument(
        "--per-tensor", action="store_true", help="int8: one weight scale per matrix instead of one per output column"
    )
    parser.add_argument("--quantize-embeddings", action="store_true", help="int8: also store embeddings in int8")
    parser.add_argument("--task", default=None, help="GLUE task the model was fine-tuned on, to score the exports")
    parser.add_argument("--glue-dir", default=None, help="root of the official GLUE TSV files (with --task)")
    parser.add_argument("--max-length", type=int, default=128, help="truncation length (default: %(default)s)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default: %(default)s)")
    parser.add_argument(
        "--no-fold-norms",
        action="store_true",
        help="keep a NoNorm LightMobileBERT's NoNorms as graph nodes instead of folding them into the linear layers",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace the output folder if it exists")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (`python -m light_mobilebert.export`, `light-mobilebert-export`)."""
    args = build_parser().parse_args(argv)
    enable_info_logging("light_mobilebert")
    try:
        report = export_classifier(
            args.model,
            args.output,
            int8=args.int8,
            per_channel=not args.per_tensor,
            quantize_embeddings=args.quantize_embeddings,
            task=args.task,
            glue_dir=args.glue_dir,
            max_length=args.max_length,
            opset=args.opset,
            fold_norms=not args.no_fold_norms,
            overwrite=args.overwrite,
        )
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    lines = [f"{args.output}: parity {report['parity']['max_abs_logit_difference']:.2g} (max |logit difference|)"]
    for name, metrics in report.get("dev_metrics", {}).items():
        scores = ", ".join(f"{key} {100 * value:.2f}" for key, value in metrics.items())
        lines.append(f"  {report['task']} dev, {name}: {scores}")
    if "int8_minus_fp32_points" in report:
        deltas = ", ".join(f"{key} {value:+.2f}" for key, value in report["int8_minus_fp32_points"].items())
        lines.append(f"  int8 - fp32 (points): {deltas}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
