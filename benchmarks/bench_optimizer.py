"""Time of one optimizer step: LMBertAdam and BertAdam against torch's AdamW, fused and not.

    python benchmarks/bench_optimizer.py [--steps 20] [--model minilm|mobilebert]

The parameters have the shapes of a 3-layer MiniLM-L6-H384 classifier (the accuracy study's half-depth model, whose
30522 x 384 word embeddings dominate the step) or of LightMobileBERT (12 layers, 30522 x 128 embeddings), with random
gradients; every optimizer steps the same tensors, with the weight decay and clipping of the fine-tuning recipe.
The step cost does not depend on the values, so random gradients time it faithfully.
"""

import argparse
import time
from pathlib import Path

import torch

from light_mobilebert import BertAdam, LightMobileBertConfig, LightMobileBertForSequenceClassification, LMBertAdam


FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "mobilebert-uncased.config.json"
MINILM_HALF = {
    "vocab_size": 30522,
    "embedding_size": 384,
    "hidden_size": 384,
    "intra_bottleneck_size": 384,
    "intermediate_size": 1536,
    "num_hidden_layers": 3,
    "num_attention_heads": 12,
    "num_feedforward_networks": 1,
    "use_bottleneck": False,
    "trigram_input": False,
    "normalization_type": "layer_norm",
    "hidden_act": "gelu",
    "shared_qk_size": None,
}


def build_model(name: str) -> torch.nn.Module:
    if name == "minilm":
        config = LightMobileBertConfig(**MINILM_HALF, num_labels=2)
    else:
        config = LightMobileBertConfig.from_json_file(FIXTURE)
        config.num_hidden_layers, config.num_labels = 12, 2
    return LightMobileBertForSequenceClassification(config)


def step_ms(make_optimizer, model: torch.nn.Module, steps: int) -> float:
    """Median milliseconds of `optimizer.step()` after two warm-up steps; gradients are refreshed before each step
    (LMBertAdam clips them in place) and not timed."""
    parameters = list(model.parameters())
    optimizer = make_optimizer(parameters)
    generator = torch.Generator().manual_seed(0)
    gradients = [torch.randn(p.shape, generator=generator) * 1e-2 for p in parameters]
    timings = []
    for index in range(steps + 2):
        for parameter, gradient in zip(parameters, gradients, strict=True):
            parameter.grad = gradient.clone()
        start = time.perf_counter()
        optimizer.step()
        if index >= 2:
            timings.append(time.perf_counter() - start)
    return 1000 * sorted(timings)[len(timings) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--model", choices=("minilm", "mobilebert"), default="minilm")
    args = parser.parse_args()

    model = build_model(args.model)
    count = sum(p.numel() for p in model.parameters())
    print(f"{args.model}: {count / 1e6:.1f}M parameters, {torch.get_num_threads()} threads, median of {args.steps}")
    optimizers = {
        "torch AdamW (fused, the Trainer's default)": lambda p: torch.optim.AdamW(p, lr=1e-4, fused=True),
        "torch AdamW (foreach)": lambda p: torch.optim.AdamW(p, lr=1e-4, foreach=True),
        "LMBertAdam": lambda p: LMBertAdam(p, lr=1e-4),
        "BertAdam": lambda p: BertAdam(p, lr=1e-4),
    }
    for name, make_optimizer in optimizers.items():
        with torch.no_grad():
            print(f"{name:45s} {step_ms(make_optimizer, model, args.steps):7.1f} ms/step")


if __name__ == "__main__":
    main()
