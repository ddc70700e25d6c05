"""The benchmark CLI, end to end on two one-layer models, and its published configurations."""

import json
import statistics

import numpy as np
import pytest
import torch
from transformers import MobileBertConfig, MobileBertForSequenceClassification

from light_mobilebert import LightMobileBertConfig, LightMobileBertForSequenceClassification
from light_mobilebert.bench import BENCH_MODELS, MOBILEBERT_UNCASED, BenchSettings, build_model, main, measure_model
from light_mobilebert.export import export_onnx, quantize_dynamic_int8


pytest.importorskip("matplotlib")

# Fields of the Hub config file that are not constructor arguments of the architecture.
NON_ARCHITECTURE_FIELDS = ("architectures", "model_type", "true_hidden_size")


def test_mobilebert_configuration_is_the_published_one(mobilebert_config):
    published = {k: v for k, v in mobilebert_config.items() if k not in NON_ARCHITECTURE_FIELDS}
    assert MOBILEBERT_UNCASED == published


def test_cli_end_to_end(tmp_path, mobilebert_config, capsys):
    output_dir = tmp_path / "results"
    argv = ["--models", "mobilebert", "light-mobilebert", "--num-hidden-layers", "1", "--runs", "3", "--warmup", "1"]
    argv += ["--rounds", "2"]
    argv += ["--batch-sizes", "1", "2", "--seq-len", "8", "--threads", "1", "--output-dir", str(output_dir)]
    assert main(argv) == 0

    results = json.loads((output_dir / "bench.json").read_text())
    rows = {row["name"]: row for row in results["models"]}
    assert list(rows) == ["mobilebert", "light-mobilebert"]
    assert results["environment"]["threads"] == 1
    assert {"torch", "transformers", "cpu", "load_average_before"} <= set(results["environment"])

    # Parameter counts equal those of the same models built here from the published configuration.
    fields = {k: v for k, v in mobilebert_config.items() if k not in NON_ARCHITECTURE_FIELDS}
    fields.update(num_hidden_layers=1, num_labels=2)
    expected = {
        "mobilebert": MobileBertForSequenceClassification(MobileBertConfig(**fields)),
        "light-mobilebert": LightMobileBertForSequenceClassification(LightMobileBertConfig(**fields)),
    }
    for name, model in expected.items():
        assert rows[name]["parameters"] == sum(p.numel() for p in model.parameters())
    assert rows["light-mobilebert"]["parameters_vs_mobilebert"] == pytest.approx(
        rows["light-mobilebert"]["parameters"] / rows["mobilebert"]["parameters"]
    )

    for row in rows.values():
        assert set(row["batches"]) == {"1", "2"}
        for batch_size, figures in row["batches"].items():
            # Two rounds of 3 timed runs, pooled; each round's own median is kept.
            assert figures["runs"] == len(figures["latencies_ms"]) == 6
            assert figures["median_ms"] == pytest.approx(statistics.median(figures["latencies_ms"]))
            latencies = figures["latencies_ms"]
            expected_rounds = [statistics.median(latencies[:3]), statistics.median(latencies[3:])]
            assert figures["round_medians_ms"] == pytest.approx(expected_rounds)
            assert 0 < figures["median_ms"] <= figures["p90_ms"] <= max(figures["latencies_ms"])
            assert figures["throughput_per_s"] == pytest.approx(int(batch_size) / figures["median_ms"] * 1000)
            reference = rows["mobilebert"]["batches"][batch_size]
            assert figures["latency_vs_mobilebert"] == pytest.approx(figures["median_ms"] / reference["median_ms"])
            assert figures["latency_vs_mobilebert_by_round"] == pytest.approx(
                np.divide(figures["round_medians_ms"], reference["round_medians_ms"])
            )

    markdown = (output_dir / "bench.md").read_text()
    assert markdown in capsys.readouterr().out
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table) == 3  # header and two rows
    assert table[2].startswith(f"| {BENCH_MODELS['light-mobilebert'].label} | PyTorch |")
    by_round = rows["light-mobilebert"]["batches"]["1"]["latency_vs_mobilebert_by_round"]
    assert f"x ({min(by_round):.2f}-{max(by_round):.2f}) |" in table[2]
    assert (output_dir / "bench.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_onnx_row_is_measured(tmp_path):
    pytest.importorskip("onnxruntime")
    settings = BenchSettings(threads=1, runs=3, warmup=0, batch_sizes=(1, 2), seq_len=8, num_hidden_layers=1)
    model = build_model(BENCH_MODELS["light-mobilebert-onnx-int8"], settings)
    example = {"input_ids": torch.tensor([[101, 2023, 102]]), "attention_mask": torch.ones(1, 3, dtype=torch.long)}
    example["token_type_ids"] = torch.zeros(1, 3, dtype=torch.long)
    # The TorchScript exporter: much faster than the default, and the export itself is tested elsewhere.
    fp32_path = export_onnx(model, example, tmp_path / "model.onnx", dynamo=False)
    int8_path = quantize_dynamic_int8(fp32_path, tmp_path / "model.int8.onnx")

    result = measure_model("light-mobilebert-onnx-int8", settings, str(int8_path))
    assert result["weights_bytes"] == int8_path.stat().st_size
    assert set(result["batches"]) == {"1", "2"}
    assert all(figures["runs"] == 3 and figures["median_ms"] > 0 for figures in result["batches"].values())
    with pytest.raises(ValueError, match="ONNX"):
        measure_model("light-mobilebert-onnx-int8", settings)


def test_unknown_model_is_rejected(tmp_path):
    with pytest.raises(SystemExit):
        main(["--models", "gpt-5", "--output-dir", str(tmp_path)])
