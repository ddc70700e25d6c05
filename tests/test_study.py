"""The accuracy study's bookkeeping (`benchmarks/study.py`): summary statistics, the RTE rule and the resume logic.
Nothing is trained."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest


STUDY_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "study.py"


@pytest.fixture(scope="module")
def study():
    """`benchmarks/study.py`, imported from its path (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location("study", STUDY_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_result(study, row: str, task: str, seed: int, score: float) -> dict:
    """A result file's content with the fields the summary reads, recorded with the current settings."""
    variant = study.VARIANTS[study.ROWS[row].variant]
    return {
        "row": row,
        "task": task,
        "seed": seed,
        "score": score,
        "run_glue_args": study.recorded_args(study.Cell(row, task, seed)),
        "seconds": 60.0 * variant.num_layers,
        "parameters_without_classifier": 1_000_000 * variant.num_layers,
        "compression": {"mean_relative_error": None if variant.cp_rank is None else 0.3},
        "environment": {"torch_threads": 2},
    }


def write_results(study, folder: Path, scores: dict[tuple[str, str], list[float]]) -> None:
    for (row, task), values in scores.items():
        for seed, score in enumerate(values):
            cell = study.Cell(row, task, seed)
            study.write_json_atomic(study.cell_path(folder, cell), fake_result(study, row, task, seed, score))


def test_means_stds_and_small_n(study, tmp_path):
    scores = {
        ("half", "sst2"): [85.0, 86.5, 84.2],
        ("half", "cola"): [20.0, 25.0],
        ("half", "stsb"): [80.0],
        ("source", "sst2"): [88.0, 89.0, 90.5, 87.0],
    }
    write_results(study, tmp_path, scores)
    stats = study.aggregate(study.load_results(tmp_path))
    for key, values in scores.items():
        assert stats[key].n == len(values)
        assert stats[key].mean == pytest.approx(np.mean(values))
        if len(values) > 1:
            assert stats[key].std == pytest.approx(np.std(values, ddof=1))
        else:
            assert math.isnan(stats[key].std)

    assert study.format_stats(stats["half", "stsb"]) == "80.0 (n=1)"
    assert "(n=2) ⚠" in study.format_stats(stats["half", "cola"])
    assert study.format_stats(stats["half", "sst2"]) == f"85.2 ± {np.std(scores['half', 'sst2'], ddof=1):.1f} (n=3)"

    text = study.render(study.load_results(tmp_path), {}, image=None)
    assert "80.0 (n=1)" in text  # a one-seed cell is shown, not hidden


def test_average_over_tasks(study, tmp_path):
    scores = {("half", task): [50.0 + i, 52.0 + i, 54.0 + i] for i, task in enumerate(study.TASKS)}
    write_results(study, tmp_path, scores)
    stats = study.aggregate(study.load_results(tmp_path))
    tasks = ["sst2", "cola", "stsb"]
    value = study.average(stats, "half", tasks)
    assert value.mean == pytest.approx(np.mean([np.mean(scores["half", task]) for task in tasks]))
    assert value.n == 3
    assert study.average(stats, "source", tasks) is None  # no result for that row yet


@pytest.mark.parametrize(
    "source_rte, included",
    [
        ([53.0, 54.5, 52.0], False),  # the measured case: the source is at chance
        ([66.0, 67.5, 65.0], True),  # clearly above the 52.7% majority rate
        ([66.0, 67.5], False),  # too few seeds to judge
    ],
)
def test_rte_enters_the_average_only_if_the_source_beats_chance(study, tmp_path, source_rte, included):
    scores = {("source", task): [80.0, 81.0, 82.0] for task in ("sst2", "cola", "stsb")}
    scores["source", "rte"] = source_rte
    write_results(study, tmp_path, scores)
    stats = study.aggregate(study.load_results(tmp_path))
    verdict, reason = study.rte_beats_chance(stats)
    assert verdict is included
    assert reason
    text = study.render(study.load_results(tmp_path), {}, image=None)
    assert ("RTE is included" if included else "RTE is excluded") in text
    tasks = ["sst2", "cola", "stsb"] + (["rte"] if included else [])
    expected = np.mean([np.mean(scores["source", task]) for task in tasks])
    assert study.average(stats, "source", tasks).mean == pytest.approx(expected)


def test_constant_prediction_cells_are_counted(study, tmp_path):
    # RTE's dev set has 146 entailment and 131 not_entailment examples: predicting either class for every example
    # scores 146/277 or 131/277; a constant CoLA prediction has MCC 0.
    write_results(
        study,
        tmp_path,
        {
            ("half", "cola"): [0.0, 12.5, 0.0],
            ("half", "rte"): [100 * 146 / 277, 55.2, 100 * 131 / 277],
            ("source", "cola"): [20.0, 25.0, 30.0],
            ("source", "rte"): [60.0, 58.1, 52.0],
        },
    )
    text = study.render(study.load_results(tmp_path), {}, image=None)
    assert "CoLA `half` 2/3; RTE `half` 2/3." in text
    assert "`source`" not in text.split("Cells at the score of a constant prediction")[1].split("\n")[0]


def test_missing_cells_skip_done_cells_in_breadth_first_order(study, tmp_path):
    write_results(study, tmp_path, {("half", "cola"): [70.0]})
    cells = study.missing_cells(["source", "half"], ["sst2", "cola"], [0, 1], tmp_path)
    assert study.Cell("half", "cola", 0) not in cells
    assert [cell.seed for cell in cells] == [0, 0, 0, 1, 1, 1, 1]
    first = [study.Cell("source", "sst2", 0), study.Cell("half", "sst2", 0), study.Cell("source", "cola", 0)]
    assert cells[:3] == first


def test_a_diagnostic_row_runs_only_its_tasks(study, tmp_path):
    cells = study.missing_cells(["half", "cp-full-rank"], list(study.TASKS), [0], tmp_path)
    assert [cell for cell in cells if cell.row == "cp-full-rank"] == [study.Cell("cp-full-rank", "stsb", 0)]
    assert len([cell for cell in cells if cell.row == "half"]) == len(study.TASKS)


def test_a_result_from_other_settings_is_stale(study, tmp_path):
    write_results(study, tmp_path, {("half", "cola"): [70.0], ("half", "sst2"): [80.0]})
    path = study.cell_path(tmp_path, study.Cell("half", "cola", 0))
    result = json.loads(path.read_text())
    result["run_glue_args"] = [arg for arg in result["run_glue_args"] if not arg.startswith("--num_train_epochs")]
    result["run_glue_args"].append("--num_train_epochs=1")
    study.write_json_atomic(path, result)

    assert study.missing_cells(["half"], ["sst2", "cola"], [0], tmp_path) == [study.Cell("half", "cola", 0)]
    assert [(r["row"], r["task"]) for r in study.load_results(tmp_path)] == [("half", "sst2")]


def test_recorded_args_follow_the_task_settings(study):
    cola = study.recorded_args(study.Cell("half", "cola", 1))
    assert f"--num_train_epochs={study.TASKS['cola'].num_train_epochs}" in cola
    assert "--seed=1" in cola
    assert "--model_name_or_path=$WORK_DIR/checkpoints/half" in cola
    assert not any(arg.startswith("--max_train_samples") for arg in cola)  # CoLA trains on its full training set
    sst2 = study.recorded_args(study.Cell("lmbert-adam", "sst2", 0))
    assert "--max_train_samples=4000" in sst2 and "--optimizer=lmbert_adam" in sst2


def test_run_does_not_rerun_a_done_cell(study, tmp_path, monkeypatch):
    write_results(study, tmp_path, {("half", "cola"): [70.0]})
    ran = []

    def fake_run_cell(cell, *args, **kwargs):
        ran.append(cell)
        return {"score": 0.0, "seconds": 0.0}

    monkeypatch.setattr(study, "run_cell", fake_run_cell)
    study.main(["--results-dir", str(tmp_path), "run", "--rows", "half", "--tasks", "cola", "sst2", "--seeds", "0"])
    assert ran == [study.Cell("half", "sst2", 0)]


def test_write_json_atomic_leaves_no_temporary_file(study, tmp_path):
    path = tmp_path / "cell.json"
    study.write_json_atomic(path, {"score": 1.5})
    assert json.loads(path.read_text()) == {"score": 1.5}
    assert [p.name for p in tmp_path.iterdir()] == ["cell.json"]


def test_summary_writes_results_md(study, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    results, docs = tmp_path / "results", tmp_path / "docs"
    scores = {(row, task): [60.0, 61.0, 62.5] for row in study.MAIN_ROWS for task in study.TASKS}
    write_results(study, results, {**scores, ("cp-full-rank", "stsb"): [70.0, 71.0, 72.5]})
    study.write_json_atomic(
        study.latency_path(results, "cp-default"), {"latency_ms": 12.345, "environment": {"torch_threads": 2}}
    )
    study.main(["--results-dir", str(results), "summary", "--docs-dir", str(docs)])
    text = (docs / "RESULTS.md").read_text()
    assert f"[light_mobilebert.study] Wrote {docs / 'RESULTS.md'}" in capsys.readouterr().err
    table = [line.split(" | ") for line in text.splitlines() if line.startswith("| `")][: len(study.MAIN_ROWS)]
    latency = {cells[0].split("`")[1]: cells[-2] for cells in table}
    # The rows fine-tuned from the default-recipe checkpoint show its latency; the others have none yet.
    default_rows = {"cp-default", "joint", "lmbert-adam", "bert-adam"}
    assert latency == {row: "12.3 ms" if row in default_rows else "—" for row in study.MAIN_ROWS}
    # The diagnostic row is compared with half depth on STS-B only: +10 points, 2 SE of the difference of two
    # 3-seed means with the same spread.
    two_se = 2 * math.sqrt(2 * np.var([60.0, 61.0, 62.5], ddof=1) / 3)
    diagnostic = next(line for line in text.splitlines() if line.startswith("| `cp-full-rank`"))
    assert f"| STS-B | 71.2 ± 1.3 (n=3) | +10.0 ± {two_se:.1f} points (better) |" in diagnostic
    assert (docs / "study.png").stat().st_size > 0
    assert study.SUMMARY_COMMAND in text
    assert "holds" in text  # the claims are checked from the numbers


def test_expected_seconds_scale_with_depth(study):
    results = [{**fake_result(study, "half", "sst2", 0, 80.0), "seconds": 120.0}]
    assert study.expected_seconds(study.Cell("half", "sst2", 1), results) == 120.0
    assert study.expected_seconds(study.Cell("source", "sst2", 0), results) == 240.0  # 6 layers instead of 3
    assert study.expected_seconds(study.Cell("half", "cola", 0), results) == study.DEFAULT_CELL_SECONDS
