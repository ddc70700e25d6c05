"""Size, latency, throughput and memory of LightMobileBERT against MobileBERT and other compact BERTs.

    python -m light_mobilebert.bench --output-dir bench-results

Every model is built from its published configuration with random weights (speed and memory do not depend on weight
values; parameters that initialise to a constant get a little noise, so that no ONNX optimiser can fold or share them)
as a two-class sequence classifier, and measured in a fresh subprocess, one model at a time, on random token ids
without padding. Every ratio in the report is computed from measurements of the same run. Writes `bench.json`
(every raw figure and the environment), `bench.md` (the table, also printed) and `bench.png` (latency against size).

What is measured:

- latency: wall-clock time of one forward pass under `torch.inference_mode` (`InferenceSession.run` for ONNX), median
  and 90th percentile of the timed runs that follow the warm-up runs; on CUDA, timed with CUDA events after
  synchronising.
- throughput: examples per second at the largest batch size, `batch size / median latency`.
- memory (CPU): the growth of the process's resident set size (RSS) when the model is built or the ONNX session
  opened ("model memory": weights, prepacked weights, runtime state), and the working memory of one forward pass:
  the peak RSS during the pass (Linux `VmHWM`, reset just before through `/proc/self/clear_refs`) minus the RSS just
  before it. Freed heap memory is returned to the system (`malloc_trim`) before each pass, so earlier passes do not
  hide later ones. On CUDA: the growth of `torch.cuda.memory_allocated` and of `torch.cuda.max_memory_allocated`.
"""

import argparse
import ctypes
import gc
import importlib.util
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    MobileBertConfig,
    MobileBertForSequenceClassification,
    PreTrainedModel,
)
from transformers.utils import logging
from transformers.utils.logging import tqdm

from .export import classifier_input_names, export_onnx, onnx_session, quantize_dynamic_int8
from .modeling import LightMobileBertConfig, LightMobileBertForSequenceClassification


logger = logging.get_logger(__name__)

__all__ = ["BENCH_MODELS", "BenchModel", "BenchSettings", "build_model", "main", "measure_model", "run_benchmark"]

# `google/mobilebert-uncased`'s config.json on the Hub (the `uncased_L-24_H-128_B-512_A-4_F-4_OPT` checkpoint of
# google-research/google-research `mobilebert/`), less the derived `true_hidden_size`.
MOBILEBERT_UNCASED = {
    "attention_probs_dropout_prob": 0.1,
    "classifier_activation": False,
    "embedding_size": 128,
    "hidden_act": "relu",
    "hidden_dropout_prob": 0.0,
    "hidden_size": 512,
    "initializer_range": 0.02,
    "intermediate_size": 512,
    "intra_bottleneck_size": 128,
    "key_query_shared_bottleneck": True,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "normalization_type": "no_norm",
    "num_attention_heads": 4,
    "num_feedforward_networks": 4,
    "num_hidden_layers": 24,
    "pad_token_id": 0,
    "trigram_input": True,
    "type_vocab_size": 2,
    "use_bottleneck": True,
    "use_bottleneck_attention": False,
    "vocab_size": 30522,
}

# MobileBERT-tiny (Sun et al., 2020, Table 1: 15.1M parameters), as released in google-research/google-research
# `mobilebert/config/uncased_L-24_H-128_B-512_A-4_F-2_tiny_OPT.json`: query, key and value all read the 128-d
# bottleneck and each layer stacks 2 feed-forward networks instead of 4. That file leaves `key_query_shared_bottleneck`
# at the TensorFlow code's default, False; transformers defaults it to True and would build an unused bottleneck.
MOBILEBERT_TINY = {
    **MOBILEBERT_UNCASED,
    "use_bottleneck_attention": True,
    "key_query_shared_bottleneck": False,
    "num_feedforward_networks": 2,
}

# `bert-base-uncased`'s config.json on the Hub.
BERT_BASE_UNCASED = {
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "type_vocab_size": 2,
    "vocab_size": 30522,
}

# `huawei-noah/TinyBERT_General_4L_312D`'s config.json on the Hub, less its unused `cell`, `emb_size`, `pre_trained`
# and `structure` fields.
TINYBERT_4L_312D = {
    **BERT_BASE_UNCASED,
    "hidden_size": 312,
    "intermediate_size": 1200,
    "num_hidden_layers": 4,
}

# `distilbert-base-uncased`'s config.json on the Hub.
DISTILBERT_BASE_UNCASED = {
    "activation": "gelu",
    "attention_dropout": 0.1,
    "dim": 768,
    "dropout": 0.1,
    "hidden_dim": 3072,
    "initializer_range": 0.02,
    "max_position_embeddings": 512,
    "n_heads": 12,
    "n_layers": 6,
    "pad_token_id": 0,
    "qa_dropout": 0.1,
    "seq_classif_dropout": 0.2,
    "sinusoidal_pos_embds": False,
    "tie_weights_": True,
    "vocab_size": 30522,
}

# LightMobileBERT: the bottom 12 of MobileBERT's 24 layers, collaborative query/key of width 64.
LIGHT_MOBILEBERT = {**MOBILEBERT_UNCASED, "num_hidden_layers": 12, "shared_qk_size": 64}
# The authors' recipe scales the scores by 1 / sqrt(shared width / heads) instead of keeping MobileBERT's
# 1 / sqrt(head size); only this factor and the weight values differ from the default recipe.
LIGHT_MOBILEBERT_PAPER = {**LIGHT_MOBILEBERT, "attention_scale": (64 / 4) ** -0.5}

REFERENCE_MODEL = "mobilebert"
NUM_LABELS = 2
# Below this many timed runs a median and a 90th percentile say little, whatever the time budget.
MIN_RUNS = 3


@dataclass(frozen=True)
class BenchModel:
    """
    One row of the benchmark.

    Args:
        name (`str`): The key used by `--models`.
        label (`str`): The name shown in the table and the plot.
        model_class (`type[PreTrainedModel]`): The sequence classifier to build.
        config_class (`type`): Its configuration class.
        config (`dict`): The published configuration fields.
        attn_implementation (`str`, *optional*): Fixed attention implementation; `None` uses the run's
            `--attn-implementation`.
        onnx (`str`, *optional*): `"fp32"` or `"int8"`: run the model exported to ONNX with onnxruntime.
        fold_norms (`bool`): For ONNX rows, export with the NoNorms folded into the linear layers (the default of
            `export_onnx`).
        note (`str`): A remark for the report.
    """

    name: str
    label: str
    model_class: type[PreTrainedModel]
    config_class: type
    config: dict[str, Any]
    attn_implementation: str | None = None
    onnx: str | None = None
    fold_norms: bool = True
    note: str = ""

    @property
    def runtime(self) -> str:
        return "PyTorch" if self.onnx is None else f"onnxruntime {self.onnx}"


def _light(name: str, label: str, config: dict[str, Any], **kwargs) -> BenchModel:
    return BenchModel(name, label, LightMobileBertForSequenceClassification, LightMobileBertConfig, config, **kwargs)


BENCH_MODELS: dict[str, BenchModel] = {
    model.name: model
    for model in (
        BenchModel(
            "mobilebert",
            "MobileBERT",
            MobileBertForSequenceClassification,
            MobileBertConfig,
            MOBILEBERT_UNCASED,
            note="google/mobilebert-uncased, transformers' implementation; the reference of every ratio",
        ),
        _light("light-mobilebert", "LightMobileBERT", LIGHT_MOBILEBERT, attn_implementation="eager"),
        _light("light-mobilebert-sdpa", "LightMobileBERT (SDPA)", LIGHT_MOBILEBERT, attn_implementation="sdpa"),
        _light(
            "light-mobilebert-paper",
            "LightMobileBERT (paper recipe)",
            LIGHT_MOBILEBERT_PAPER,
            attn_implementation="eager",
            note="same architecture as LightMobileBERT: only the weights and the attention score scale differ",
        ),
        _light(
            "light-mobilebert-ordinary",
            "Half-depth MobileBERT (ordinary attention)",
            {**LIGHT_MOBILEBERT, "shared_qk_size": None},
            attn_implementation="eager",
            note="ablation: LightMobileBERT's 12 layers without collaborative attention",
        ),
        _light(
            "light-mobilebert-onnx",
            "LightMobileBERT ONNX",
            LIGHT_MOBILEBERT,
            attn_implementation="eager",
            onnx="fp32",
            note="LightMobileBERT exported with `light_mobilebert.export.export_onnx`",
        ),
        _light(
            "light-mobilebert-onnx-int8",
            "LightMobileBERT ONNX int8",
            LIGHT_MOBILEBERT,
            attn_implementation="eager",
            onnx="int8",
            note="the ONNX model after `light_mobilebert.export.quantize_dynamic_int8`",
        ),
        _light(
            "light-mobilebert-onnx-int8-unfolded",
            "LightMobileBERT ONNX int8 (NoNorms kept)",
            LIGHT_MOBILEBERT,
            attn_implementation="eager",
            onnx="int8",
            fold_norms=False,
            note="ablation: exported with `fold_norms=False`, the 97 NoNorms left as graph nodes",
        ),
        BenchModel("bert-base", "BERT-base", BertForSequenceClassification, BertConfig, BERT_BASE_UNCASED),
        BenchModel(
            "distilbert", "DistilBERT", DistilBertForSequenceClassification, DistilBertConfig, DISTILBERT_BASE_UNCASED
        ),
        BenchModel("tinybert-4l", "TinyBERT-4L-312", BertForSequenceClassification, BertConfig, TINYBERT_4L_312D),
        BenchModel(
            "mobilebert-tiny",
            "MobileBERT-tiny",
            MobileBertForSequenceClassification,
            MobileBertConfig,
            MOBILEBERT_TINY,
        ),
    )
}


@dataclass
class BenchSettings:
    """What to measure and how; see `python -m light_mobilebert.bench --help` for each field."""

    device: str = "cpu"
    threads: int = field(default_factory=torch.get_num_threads)
    runs: int = 30
    warmup: int = 2
    max_seconds: float = 10.0
    rounds: int = 1
    batch_sizes: tuple[int, ...] = (1, 32)
    seq_len: int = 128
    attn_implementation: str = "eager"
    num_hidden_layers: int | None = None


def build_model(spec: BenchModel, settings: BenchSettings) -> PreTrainedModel:
    """Builds the randomly initialised PyTorch classifier of a row (for ONNX rows, the model that is exported)."""
    config = dict(spec.config)
    if settings.num_hidden_layers is not None:
        # `num_hidden_layers` is an alias of DistilBERT's `n_layers`: drop the original so the override wins.
        config.pop("n_layers", None)
        config["num_hidden_layers"] = settings.num_hidden_layers
    attn_implementation = spec.attn_implementation or settings.attn_implementation
    model_config = spec.config_class(**config, num_labels=NUM_LABELS, attn_implementation=attn_implementation)
    model = spec.model_class(model_config).eval()
    # A freshly initialised model has constant tensors (zero biases, unit norm weights) that an ONNX exporter or
    # optimiser may share or fold away; a trained checkpoint has none, so give them a little noise.
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.numel() > 1 and bool((parameter == parameter.flatten()[0]).all()):
                parameter.add_(torch.randn_like(parameter) * model_config.initializer_range)
    return model


def _example_inputs(
    input_names: Sequence[str], batch_size: int, settings: BenchSettings, vocab_size: int
) -> dict[str, torch.Tensor]:
    # Ordinary word pieces (uncased BERT vocabulary ids >= 1000 are not special tokens), no padding.
    input_ids = torch.randint(1000, vocab_size, (batch_size, settings.seq_len))
    values = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "token_type_ids": torch.zeros_like(input_ids),
    }
    return {name: values[name] for name in input_names}


def _read_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _release_free_memory() -> None:
    gc.collect()
    try:
        # glibc keeps freed heap memory resident; hand it back so that it does not hide the next peak.
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


class _Runner:
    """One forward pass of a PyTorch model or an onnxruntime session on fixed inputs, with a clock to time it."""

    def __init__(self, spec: BenchModel, settings: BenchSettings, onnx_path: str | None):
        self.cuda = settings.device == "cuda"
        if onnx_path is None:
            self.model = build_model(spec, settings).to(settings.device)
            self.parameters = sum(p.numel() for p in self.model.parameters())
            tensors = [*self.model.parameters(), *self.model.buffers()]
            self.weights_bytes = sum(t.numel() * t.element_size() for t in tensors)
            self.input_names = classifier_input_names(self.model)
            self.vocab_size = self.model.config.vocab_size
            self.session = None
        else:
            self.session = onnx_session(onnx_path, settings.threads)
            self.model = None
            self.weights_bytes = os.path.getsize(onnx_path)
            self.input_names = [i.name for i in self.session.get_inputs()]
            self.vocab_size = spec.config["vocab_size"]
        self.settings = settings
        self.inputs: dict[str, Any] = {}

    def set_batch_size(self, batch_size: int) -> None:
        inputs = _example_inputs(self.input_names, batch_size, self.settings, self.vocab_size)
        if self.session is not None:
            self.inputs = {name: tensor.numpy() for name, tensor in inputs.items()}
        else:
            self.inputs = {name: tensor.to(self.settings.device) for name, tensor in inputs.items()}

    def __call__(self) -> None:
        if self.session is not None:
            self.session.run(None, self.inputs)
        else:
            self.model(**self.inputs)

    def timed(self) -> float:
        """Runs once and returns the latency in milliseconds."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            self()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
        start_ns = time.perf_counter_ns()
        self()
        return (time.perf_counter_ns() - start_ns) / 1e6

    def forward_memory(self) -> int | None:
        """Runs once and returns the working memory of the pass in bytes (see the module docstring)."""
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            self()
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - before
        _release_free_memory()
        if not _reset_peak_rss():
            self()
            return None
        before = _read_status_kib("VmRSS")
        self()
        return _read_status_kib("VmHWM") - before


def _model_memory(settings: BenchSettings) -> int | None:
    if settings.device == "cuda":
        return torch.cuda.memory_allocated()
    _release_free_memory()
    return _read_status_kib("VmRSS")


def measure_model(name: str, settings: BenchSettings, onnx_path: str | None = None) -> dict[str, Any]:
    """
    Measures one row of the benchmark in the current process.

    `run_benchmark` calls it in a fresh subprocess per model, so that memory figures and allocator state do not
    depend on the models measured before.

    Args:
        name (`str`): A key of [`BENCH_MODELS`].
        settings (`BenchSettings`): What to measure.
        onnx_path (`str`, *optional*): For ONNX rows, the model file to run.

    Returns:
        `dict`: parameters (PyTorch rows), weight bytes, model memory and, per batch size, every latency (ms), their
        median, 90th percentile, mean and standard deviation, the throughput (examples/s) and the working memory of
        a pass.
    """
    spec = BENCH_MODELS[name]
    if (spec.onnx is None) != (onnx_path is None):
        raise ValueError(f"{name} needs an ONNX file if and only if it is an ONNX row.")
    torch.set_num_threads(settings.threads)
    torch.manual_seed(0)
    memory_before = _model_memory(settings)
    with torch.inference_mode():
        runner = _Runner(spec, settings, onnx_path)
        memory_after = _model_memory(settings)
        result: dict[str, Any] = {
            "name": name,
            "weights_bytes": runner.weights_bytes,
            "model_memory_bytes": None if memory_before is None else memory_after - memory_before,
            "batches": {},
        }
        if runner.model is not None:
            result["parameters"] = runner.parameters
        for batch_size in settings.batch_sizes:
            runner.set_batch_size(batch_size)
            # The first pass at a batch size is measured for memory only: it also allocates the caches.
            memory = runner.forward_memory()
            for _ in range(settings.warmup):
                runner()
            latencies: list[float] = []
            deadline = time.perf_counter() + settings.max_seconds
            while len(latencies) < settings.runs and (len(latencies) < MIN_RUNS or time.perf_counter() < deadline):
                latencies.append(runner.timed())
            result["batches"][str(batch_size)] = {
                **_latency_figures(latencies, batch_size),
                "forward_memory_bytes": memory,
            }
    return result


def _latency_figures(latencies: list[float], batch_size: int) -> dict[str, Any]:
    median = float(np.median(latencies))
    return {
        "latencies_ms": latencies,
        "runs": len(latencies),
        "median_ms": median,
        "p90_ms": float(np.percentile(latencies, 90)),
        "mean_ms": float(np.mean(latencies)),
        "std_ms": float(np.std(latencies)),
        "throughput_per_s": batch_size / median * 1000,
    }


def _merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the same model's rounds: latencies pooled, each round's median kept; memory from the first."""
    merged = {**rounds[0], "batches": {}}
    for batch_size, first in rounds[0]["batches"].items():
        latencies = [latency for result in rounds for latency in result["batches"][batch_size]["latencies_ms"]]
        merged["batches"][batch_size] = {
            **first,
            **_latency_figures(latencies, int(batch_size)),
            "round_medians_ms": [result["batches"][batch_size]["median_ms"] for result in rounds],
        }
    return merged


def _measure_in_subprocess(name: str, settings: BenchSettings, onnx_path: str | None) -> dict[str, Any]:
    # "spawn", not "fork": a forked child inherits the parent's memory and OpenMP state, which is not fork-safe.
    with multiprocessing.get_context("spawn").Pool(processes=1) as pool:
        return pool.apply(measure_model, (name, settings, onnx_path))


def _export_onnx_models(names: Sequence[str], settings: BenchSettings, folder: Path) -> dict[str, tuple[str, int]]:
    """Exports (and quantises) the PyTorch model of each ONNX row; returns its file and parameter count."""
    exported: dict[str, tuple[str, int]] = {}
    # Rows that export the same model (fp32 and int8) share one export.
    fp32_exports: dict[str, tuple[Path, int]] = {}
    for name in names:
        spec = BENCH_MODELS[name]
        key = json.dumps(
            [spec.model_class.__name__, spec.config, spec.attn_implementation, spec.fold_norms], sort_keys=True
        )
        if key not in fp32_exports:
            logger.info(f"Exporting {spec.label} to ONNX.")
            torch.manual_seed(0)
            model = build_model(spec, settings)
            inputs = _example_inputs(classifier_input_names(model), 2, settings, model.config.vocab_size)
            path = export_onnx(model, inputs, folder / f"model{len(fp32_exports)}.onnx", fold_norms=spec.fold_norms)
            fp32_exports[key] = (path, sum(p.numel() for p in model.parameters()))
        path, parameters = fp32_exports[key]
        if spec.onnx == "int8":
            path = quantize_dynamic_int8(path, folder / f"{name}.onnx")
        exported[name] = (str(path), parameters)
    return exported


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _environment(settings: BenchSettings) -> dict[str, Any]:
    environment = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": settings.threads,
        "device": settings.device,
    }
    try:
        import onnxruntime

        environment["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        environment["onnxruntime"] = None
    if settings.device == "cuda":
        environment["gpu"] = torch.cuda.get_device_name()
    return environment


def run_benchmark(names: Sequence[str], settings: BenchSettings) -> dict[str, Any]:
    """
    Measures the given rows, each in a fresh subprocess, and adds the ratios to MobileBERT when it is among them.

    Returns:
        `dict`: `environment` (versions, CPU, threads, load averages), `settings` and `models` (one entry per row,
        see [`measure_model`], plus `label`, `runtime`, `note` and the ratios).
    """
    unknown = [name for name in names if name not in BENCH_MODELS]
    if unknown:
        raise ValueError(f"Unknown models {unknown}; choose among {list(BENCH_MODELS)}.")
    if settings.device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("`--device cuda` needs a CUDA build of PyTorch and a GPU.")
        onnx_rows = [name for name in names if BENCH_MODELS[name].onnx is not None]
        if onnx_rows:
            logger.warning(f"The ONNX rows run on CPU only; skipping {onnx_rows} on CUDA.")
            names = [name for name in names if name not in onnx_rows]
    environment = _environment(settings)
    environment["load_average_before"] = os.getloadavg()
    if environment["load_average_before"][0] > (os.cpu_count() or 1) / 2:
        logger.warning(
            f"The 1-minute load average is {environment['load_average_before'][0]:.1f} on {os.cpu_count()} CPUs: "
            "other processes compete for the cores and will inflate the latencies."
        )

    # Every model is measured once per round, in the same order: a machine whose speed drifts during the run (a
    # shared VM) then slows every row alike instead of whichever rows were measured during the slow minutes.
    measured: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="light-mobilebert-bench-") as folder:
        onnx_names = [name for name in names if BENCH_MODELS[name].onnx is not None]
        exported = _export_onnx_models(onnx_names, settings, Path(folder))
        progress = tqdm(total=len(names) * settings.rounds, desc="Benchmarking", unit="model")
        for round_index in range(settings.rounds):
            for name in names:
                progress.set_postfix_str(f"round {round_index + 1}: {name}")
                onnx_path = exported[name][0] if name in exported else None
                measured[name].append(_measure_in_subprocess(name, settings, onnx_path))
                progress.update()
        progress.close()
    environment["load_average_after"] = os.getloadavg()

    rows = []
    for name in names:
        row = _merge_rounds(measured[name])
        if name in exported:
            row["parameters"] = exported[name][1]
        spec = BENCH_MODELS[name]
        rows.append({**row, "label": spec.label, "runtime": spec.runtime, "note": spec.note})

    reference = next((row for row in rows if row["name"] == REFERENCE_MODEL), None)
    for row in rows:
        row["parameters_vs_mobilebert"] = None if reference is None else row["parameters"] / reference["parameters"]
        for batch_size, figures in row["batches"].items():
            reference_median = None if reference is None else reference["batches"][batch_size]["median_ms"]
            figures["latency_vs_mobilebert"] = None if reference is None else figures["median_ms"] / reference_median
            reference_rounds = None if reference is None else reference["batches"][batch_size]["round_medians_ms"]
            figures["latency_vs_mobilebert_by_round"] = (
                None
                if reference is None
                else [own / ref for own, ref in zip(figures["round_medians_ms"], reference_rounds, strict=True)]
            )
    return {"environment": environment, "settings": asdict(settings), "models": rows}


def _megabytes(num_bytes: int | None) -> str:
    return "n/a" if num_bytes is None else f"{num_bytes / 2**20:.1f}"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def format_markdown(results: dict[str, Any]) -> str:
    """The report as a markdown table with the environment and the definitions of each column."""
    environment, settings = results["environment"], results["settings"]
    batch_sizes = [str(b) for b in settings["batch_sizes"]]
    largest = batch_sizes[-1]
    header = ["Model", "Runtime", "Params (M)", "Weights (MB)", "Model memory (MB)"]
    for batch_size in batch_sizes:
        header += [f"b{batch_size} latency ms, median (p90)", f"b{batch_size} vs MobileBERT"]
    header += [f"b{largest} throughput (ex/s)"] + [f"b{b} forward memory (MB)" for b in batch_sizes]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in results["models"]:
        cells = [
            row["label"],
            row["runtime"],
            f"{row['parameters'] / 1e6:.2f}",
            _megabytes(row["weights_bytes"]),
            _megabytes(row["model_memory_bytes"]),
        ]
        for batch_size in batch_sizes:
            figures = row["batches"][batch_size]
            ratio = _ratio(figures["latency_vs_mobilebert"])
            by_round = figures["latency_vs_mobilebert_by_round"]
            if by_round is not None and len(by_round) > 1:
                ratio += f" ({min(by_round):.2f}-{max(by_round):.2f})"
            cells += [f"{figures['median_ms']:.1f} ({figures['p90_ms']:.1f})", ratio]
        cells.append(f"{row['batches'][largest]['throughput_per_s']:.1f}")
        cells += [_megabytes(row["batches"][b]["forward_memory_bytes"]) for b in batch_sizes]
        lines.append("| " + " | ".join(cells) + " |")

    device = environment.get("gpu") if settings["device"] == "cuda" else environment["cpu"]
    runs = {row["batches"][b]["runs"] for row in results["models"] for b in batch_sizes}
    load_before, load_after = environment["load_average_before"][0], environment["load_average_after"][0]
    notes = [
        f"Device: {settings['device']} ({device}), {environment['threads']} threads; torch {environment['torch']}, "
        f"transformers {environment['transformers']}, onnxruntime {environment['onnxruntime']}.",
        f"Sequence length {settings['seq_len']}, random token ids, no padding; {settings['rounds']} round(s), each "
        f"measuring every model in turn in a fresh process: {settings['warmup']} warm-up runs, then up to "
        f"{settings['runs']} timed runs per cell (fewer after {settings['max_seconds']:g} s); {min(runs)}-{max(runs)} "
        "timed runs per cell over all rounds, pooled for the median and p90; in brackets after a ratio, the smallest "
        f"and largest ratio of single rounds. PyTorch attention `{settings['attn_implementation']}` unless the row "
        f"says otherwise. 1-minute load average {load_before:.2f} before, {load_after:.2f} after.",
        "Ratios divide by MobileBERT's figure of the same run. Weights: parameter and buffer bytes (PyTorch) or the "
        "model file (ONNX). Model memory: resident memory added by building the model or opening the session (CUDA: "
        "allocated). Forward memory: peak resident memory during one pass minus the resident memory before it "
        "(CUDA: peak allocated).",
    ]
    notes += [f"{row['label']}: {row['note']}." for row in results["models"] if row["note"]]
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {note}" for note in notes) + "\n"


def plot_latency_vs_parameters(results: dict[str, Any], path: str | os.PathLike) -> None:
    """Writes a log-log scatter plot of batch-1 (smallest batch) median latency against parameters."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    batch_size = str(results["settings"]["batch_sizes"][0])
    figure, axes = plt.subplots(figsize=(9, 6))
    axes.set_xscale("log")
    axes.set_yscale("log")
    markers = {"PyTorch": "o", "onnxruntime fp32": "s", "onnxruntime int8": "D"}
    points = []
    for runtime, marker in markers.items():
        rows = [row for row in results["models"] if row["runtime"] == runtime]
        if rows:
            parameters = [row["parameters"] / 1e6 for row in rows]
            latencies = [row["batches"][batch_size]["median_ms"] for row in rows]
            axes.scatter(parameters, latencies, marker=marker, label=runtime, s=50)
            points += [(row["label"], x, y) for row, x, y in zip(rows, parameters, latencies, strict=True)]
    # Variants of one architecture sit on top of each other: from the top down, move each label below any label
    # it would overlap (positions in display pixels; 11 points of line height, labels assumed 200 pixels wide).
    axes.autoscale_view()
    line_height = 11 * figure.dpi / 72
    placed: list[tuple[float, float]] = []
    for label, x, y in sorted(points, key=lambda point: -point[2]):
        point_x, point_y = axes.transData.transform((x, y))
        label_y = point_y + 3 * figure.dpi / 72
        while any(
            abs(point_x - other_x) < 200 and abs(label_y - other_y) < line_height for other_x, other_y in placed
        ):
            label_y -= line_height
        placed.append((point_x, label_y))
        offset = (7, (label_y - point_y) * 72 / figure.dpi)
        axes.annotate(label, (x, y), textcoords="offset points", xytext=offset, fontsize=8)
    for axis in (axes.xaxis, axes.yaxis):
        axis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axes.set_xlabel("parameters (millions)")
    axes.set_ylabel(f"median latency, batch {batch_size} (ms)")
    environment = results["environment"]
    axes.set_title(
        f"Latency vs size, sequence length {results['settings']['seq_len']}, "
        f"{results['settings']['device']} {environment['threads']} threads"
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)


def write_reports(results: dict[str, Any], output_dir: str | os.PathLike) -> dict[str, Path]:
    """Writes `bench.json`, `bench.md` and `bench.png` into `output_dir`; returns their paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": output_dir / "bench.json", "markdown": output_dir / "bench.md", "plot": output_dir / "bench.png"}
    paths["json"].write_text(json.dumps(results, indent=2) + "\n")
    paths["markdown"].write_text(format_markdown(results))
    plot_latency_vs_parameters(results, paths["plot"])
    return paths


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m light_mobilebert.bench",
        description="Parameters, latency, throughput and memory of LightMobileBERT, MobileBERT and compact BERTs.",
    )
    parser.add_argument(
        "--models", nargs="+", choices=list(BENCH_MODELS), default=list(BENCH_MODELS), help="rows to measure (all)"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (cpu)")
    parser.add_argument(
        "--threads", type=_positive_int, default=torch.get_num_threads(), help="CPU threads (torch's default)"
    )
    parser.add_argument("--runs", type=_positive_int, default=30, help="timed runs per cell, at most (30)")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=10.0,
        help=f"stop timing a cell after this many seconds, once {MIN_RUNS} runs are done (10)",
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs before timing each cell (2)")
    parser.add_argument(
        "--rounds",
        type=_positive_int,
        default=1,
        help="measure every model this many times, in turn, and pool the timings: on a machine whose speed drifts, "
        "3 or more make the ratios trustworthy (1)",
    )
    parser.add_argument("--batch-sizes", nargs="+", type=_positive_int, default=[1, 32], help="batch sizes (1 32)")
    parser.add_argument("--seq-len", type=_positive_int, default=128, help="tokens per example (128)")
    parser.add_argument(
        "--attn-implementation",
        choices=("eager", "sdpa"),
        default="eager",
        help="attention of the transformers models and of rows without their own (eager)",
    )
    parser.add_argument("--output-dir", default="bench-results", help="where to write the reports (bench-results)")
    # Testing only: shrinks every model to this many layers.
    parser.add_argument("--num-hidden-layers", type=_positive_int, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: `python -m light_mobilebert.bench`."""
    args = build_parser().parse_args(argv)
    # Checked first: the plot is written only after minutes of measurements.
    if importlib.util.find_spec("matplotlib") is None:
        raise ImportError('The benchmark plot needs matplotlib: `pip install "light-mobilebert[bench]"`.')
    settings = BenchSettings(
        device=args.device,
        threads=args.threads,
        runs=args.runs,
        warmup=args.warmup,
        max_seconds=args.max_seconds,
        rounds=args.rounds,
        batch_sizes=tuple(sorted(set(args.batch_sizes))),
        seq_len=args.seq_len,
        attn_implementation=args.attn_implementation,
        num_hidden_layers=args.num_hidden_layers,
    )
    results = run_benchmark(list(dict.fromkeys(args.models)), settings)
    paths = write_reports(results, args.output_dir)
    print(format_markdown(results))
    print(f"Wrote {', '.join(str(path) for path in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
