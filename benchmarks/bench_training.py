"""CPU training throughput: MobileBERT vs the default LightMobileBERT, measured in one run.

    python benchmarks/bench_training.py [--steps 5] [--batch-size 32] [--seq-len 128]

Both models are built from the real `google/mobilebert-uncased` configuration with random weights (speed does not
depend on weight values); LightMobileBERT keeps 12 layers with a shared query/key width of 64. Each step is a full
forward, backward and `LMBertAdam` update on random tokens; the figure is the median step time after one warm-up step.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import MobileBertConfig, MobileBertForSequenceClassification

from light_mobilebert import LightMobileBertConfig, LightMobileBertForSequenceClassification, LMBertAdam


FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "mobilebert-uncased.config.json"


def step_seconds(model: torch.nn.Module, batch_size: int, seq_len: int, steps: int) -> float:
    model.train()
    optimizer = LMBertAdam(model.parameters(), lr=7e-5)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1, 30522, (batch_size, seq_len), generator=generator)
    labels = torch.randint(0, 2, (batch_size,), generator=generator)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        model(input_ids, attention_mask=torch.ones_like(input_ids), labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=FIXTURE)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args()

    fields = {k: v for k, v in json.loads(args.config.read_text()).items() if k not in ("architectures", "model_type")}
    torch.manual_seed(0)
    models = {
        "MobileBERT (24 layers)": MobileBertForSequenceClassification(MobileBertConfig(**fields, num_labels=2)),
        "LightMobileBERT (12 layers, rank 64)": LightMobileBertForSequenceClassification(
            LightMobileBertConfig(**{**fields, "num_hidden_layers": 12}, shared_qk_size=64, num_labels=2)
        ),
    }
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, length {args.seq_len}"
    )
    throughput = {}
    for name, model in models.items():
        seconds = step_seconds(model, args.batch_size, args.seq_len, args.steps)
        throughput[name] = args.batch_size / seconds
        print(f"{name}: {seconds:.2f} s/step, {throughput[name]:.1f} examples/s")
    mobilebert, light = throughput.values()
    print(f"LightMobileBERT / MobileBERT training throughput: {light / mobilebert:.2f}x")


if __name__ == "__main__":
    main()
