# Copyright 2025 The LightMobileBERT authors. Licensed under the Apache License, Version 2.0.
"""CP decomposition of a self-attention layer's query/key product into collaborative attention.

For an attention layer with input width `d_in` and `H` heads of size `d_h`, head `h` scores a query token `x_i`
against a key token `x_j` with

    (W_Q,h^T x_i + b_Q,h) . (W_K,h^T x_j + b_K,h)
        = x_i^T W_Q,h W_K,h^T x_j  +  x_j . (W_K,h b_Q,h)  +  (terms constant over the keys j).

The terms constant over `j` (everything involving the key bias) vanish in the softmax over keys. Stacking the
bilinear forms gives the tensor `T[a, h, b] = (W_Q,h W_K,h^T)[a, b]` of shape `(d_in, H, d_in)`, and a rank-`R` CP
decomposition `T ~ sum_r A[:, r] (x) M[:, r] (x) B[:, r]` turns the layer into collaborative attention (Cordonnier
et al., 2020): one query projection `A^T` and one key projection `B^T` of width `R` shared by all heads, a mixing
matrix `M` of shape `(H, R)`, and a per-head content bias `c_h = W_K,h b_Q,h` on the keys, which is exact and needs no
decomposition. The factors reproduce `W_Q,h W_K,h^T` itself, so the scores keep the original `1 / sqrt(d_h)` scale.

Two recipes are offered:

- `"paper"` reproduces the authors' call, `parafac(T, rank, init="random", tol=1e-6)` with tensorly's default 100
  iterations, seeded through `random_state` (their code was not seeded).
- `"default"` is ours. It starts from deterministic SVD-based guesses instead of random factors, refines them with
  alternating least squares (ALS) until the relative error stops improving, and returns balanced factors. See
  `benchmarks/bench_decompose.py` for the measurements behind each choice.
"""

import itertools
import numbers
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import tensorly as tl
import torch
from tensorly.decomposition import parafac
from threadpoolctl import threadpool_limits
from transformers.utils import logging


logger = logging.get_logger(__name__)

RECIPES = ("default", "paper")

# The authors' stopping tolerance; their iteration cap is tensorly's default `n_iter_max=100`.
PAPER_TOL = 1e-6

# Default recipe, measured in `benchmarks/bench_decompose.py`. ALS keeps improving slowly for thousands of sweeps on
# these tensors. On the MobileBERT shape (128 x 4 x 128, rank 64), the authors' own tolerance of 1e-6 stops after
# 290-360 sweeps (0.5-0.7 s on two cores); 3e-6 saves 0.2 s and loses 0.0005 in relative error, 3e-7 doubles the time
# for 0.0004. The cap keeps a MobileBERT layer to about a second, so a 12-layer conversion stays well under 20 s.
DEFAULT_TOL = 1e-6
DEFAULT_MAX_ITERATIONS = 500
# Sweeps spent on each candidate start before keeping the better one. On MiniLM at rank 192 this keeps the better
# start on 4 of 6 layers; on the other two the runs cross over only after 100-300 sweeps, and differ by 0.002-0.006.
SELECTION_ITERATIONS = 25


@dataclass
class CPAttention:
    """A rank-`R` collaborative-attention replacement for one layer's query and key projections.

    Attributes:
        query_weight (`torch.Tensor` of shape `(R, d_in)`): shared query projection (no bias), `A^T`.
        key_weight (`torch.Tensor` of shape `(R, d_in)`): shared key projection (no bias), `B^T`.
        mixing (`torch.Tensor` of shape `(H, R)`): head `h` scores `sum_r q[r] * mixing[h, r] * k[r]`.
        content_bias (`torch.Tensor` of shape `(H, d_in)`): head `h` adds `x_j . content_bias[h]` to the score of
            key token `x_j`, before the `1 / sqrt(d_h)` scaling. Exact, from the original query bias.
        relative_error (`float`): `||T - T_hat|| / ||T||`, computed in float64 from the returned float32 factors.
        n_iterations (`int`): ALS sweeps performed in total (over all candidate starts for the default recipe).
        seconds (`float`): wall-clock time of the decomposition.
        converged (`bool`): whether the stopping tolerance was met before the iteration cap.
    """

    query_weight: torch.Tensor
    key_weight: torch.Tensor
    mixing: torch.Tensor
    content_bias: torch.Tensor
    relative_error: float
    n_iterations: int
    seconds: float
    converged: bool

    @property
    def rank(self) -> int:
        return self.mixing.shape[1]


def _is_positive_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def _check_projection(weight: torch.Tensor, name: str, num_heads: int) -> int:
    """Validates one `(H * d_h, d_in)` projection weight and returns `d_h`."""
    if not _is_positive_integer(num_heads):
        raise ValueError(f"num_heads must be a positive integer, got {num_heads!r}.")
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise ValueError(f"{name} must be a 2-D tensor of shape (num_heads * head_dim, d_in).")
    if weight.shape[0] % num_heads != 0:
        raise ValueError(f"{name} has {weight.shape[0]} output rows, which {num_heads} heads do not divide.")
    if not torch.isfinite(weight).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    return weight.shape[0] // num_heads


def _check_query_key(query_weight: torch.Tensor, key_weight: torch.Tensor, num_heads: int) -> int:
    head_dim = _check_projection(query_weight, "query_weight", num_heads)
    _check_projection(key_weight, "key_weight", num_heads)
    if query_weight.shape != key_weight.shape:
        raise ValueError(
            f"query_weight {tuple(query_weight.shape)} and key_weight {tuple(key_weight.shape)} must have the same "
            "shape: the heads' query and key vectors are compared by a dot product."
        )
    return head_dim


def max_rank(query_weight: torch.Tensor, num_heads: int) -> int:
    """The largest CP rank worth asking for: `H * min(d_h, d_in)`.

    Each head's slice `W_Q,h W_K,h^T` has matrix rank at most `min(d_h, d_in)`, so writing every slice as a sum of
    its own rank-one terms (the per-head start of the default recipe) reproduces the tensor exactly at this rank.
    A larger rank cannot lower the error, makes the ALS normal equations singular, and gives a collaborative layer
    wider than the original query/key projections.
    """
    head_dim = _check_projection(query_weight, "query_weight", num_heads)
    return num_heads * min(head_dim, query_weight.shape[1])


def query_key_tensor(query_weight: torch.Tensor, key_weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Stacks the heads' bilinear forms into `T[a, h, b] = sum_e W_Q,h[a, e] W_K,h[b, e]`.

    Args:
        query_weight (`torch.Tensor` of shape `(H * d_h, d_in)`): the query `nn.Linear` weight; head `h` owns rows
            `h * d_h : (h + 1) * d_h`.
        key_weight (`torch.Tensor` of shape `(H * d_h, d_in)`): the key `nn.Linear` weight, laid out the same way.
        num_heads (`int`): number of attention heads `H`.

    Returns:
        `torch.Tensor` of shape `(d_in, H, d_in)`, float64.
    """
    head_dim = _check_query_key(query_weight, key_weight, num_heads)
    query = query_weight.detach().to(torch.float64).reshape(num_heads, head_dim, -1)
    key = key_weight.detach().to(torch.float64).reshape(num_heads, head_dim, -1)
    return torch.einsum("hea,heb->ahb", query, key)


def content_bias(query_bias: torch.Tensor, key_weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The query bias seen through the keys: `c_h = W_K,h b_Q,h`, one `d_in` vector per head.

    Args:
        query_bias (`torch.Tensor` of shape `(H * d_h,)`): the query `nn.Linear` bias.
        key_weight (`torch.Tensor` of shape `(H * d_h, d_in)`): the key `nn.Linear` weight.
        num_heads (`int`): number of attention heads `H`.

    Returns:
        `torch.Tensor` of shape `(H, d_in)`, float64.
    """
    head_dim = _check_projection(key_weight, "key_weight", num_heads)
    if not isinstance(query_bias, torch.Tensor) or query_bias.shape != (key_weight.shape[0],):
        raise ValueError(f"query_bias must be a tensor of shape ({key_weight.shape[0]},).")
    if not torch.isfinite(query_bias).all():
        raise ValueError("query_bias contains NaN or infinite values.")
    bias = query_bias.detach().to(torch.float64).reshape(num_heads, head_dim)
    key = key_weight.detach().to(torch.float64).reshape(num_heads, head_dim, -1)
    return torch.einsum("he,hea->ha", bias, key)


def _per_head_start(tensor: np.ndarray, rank: int) -> list[np.ndarray]:
    """Truncated SVD of every head's slice, with the `rank` components shared out by singular value.

    Component `r` taken from head `h`'s triplet `(u, s, v)` is `A[:, r] = u sqrt(s)`, `B[:, r] = v sqrt(s)` and a
    one-hot `M[:, r]` on head `h`. Ranking the triplets of all heads together, rather than giving every head
    `rank / H` of them, also settles ranks that `H` does not divide, and starts much closer on trained weights whose
    heads differ in spectrum. At `max_rank` the start is the exact tensor.
    """
    d_in, num_heads, _ = tensor.shape
    svds = [np.linalg.svd(tensor[:, h, :], full_matrices=False) for h in range(num_heads)]
    values = np.concatenate([s for _, s, _ in svds])
    heads = np.concatenate([np.full(len(s), h) for h, (_, s, _) in enumerate(svds)])
    # A stable sort keeps ties in head order, so the start is deterministic.
    counts = np.bincount(heads[np.argsort(-values, kind="stable")[:rank]], minlength=num_heads)
    a_cols, m_cols, b_cols = [], [], []
    for h, (u, s, vt) in enumerate(svds):
        root = np.sqrt(s[: counts[h]])
        a_cols.append(u[:, : counts[h]] * root)
        b_cols.append(vt[: counts[h]].T * root)
        one_hot = np.zeros((num_heads, counts[h]))
        one_hot[h] = 1.0
        m_cols.append(one_hot)
    return [np.concatenate(a_cols, axis=1), np.concatenate(m_cols, axis=1), np.concatenate(b_cols, axis=1)]


def _shared_subspace_start(tensor: np.ndarray, rank: int) -> list[np.ndarray]:
    """Leading singular vectors of the query-side and key-side unfoldings, with the mixing solved for exactly.

    This is tensorly's `init="svd"` for the two wide modes, but the head mode (smaller than the rank) gets the
    least-squares mixing for those subspaces instead of random columns. Requires `rank <= d_in`.
    """
    d_in = tensor.shape[0]
    query_basis = np.linalg.svd(tensor.reshape(d_in, -1), full_matrices=False)[0][:, :rank]
    key_basis = np.linalg.svd(tensor.transpose(2, 0, 1).reshape(d_in, -1), full_matrices=False)[0][:, :rank]
    # With orthonormal bases the Gram matrix of the normal equations is the identity: M[h, r] = a_r^T T[:, h, :] b_r.
    projected = (tensor.reshape(-1, d_in) @ key_basis).reshape(d_in, -1, rank)
    mixing = np.einsum("ahr,ar->hr", projected, query_basis)
    return [query_basis, mixing, key_basis]


def _als(tensor: np.ndarray, factors: list[np.ndarray]) -> Iterator[tuple[list[np.ndarray], float]]:
    """Alternating least squares for a 3-way CP model, with extrapolation: yields the factors and their relative
    error after every sweep, for as long as it is asked to.

    Each sweep makes the same least-squares updates as `tensorly.decomposition.parafac` (A, then M, then B), but
    forms the matricised-tensor times Khatri-Rao products as GEMMs against the unfolded tensor instead of against an
    explicit `(d_in * d_in, R)` Khatri-Rao matrix: about 8x faster on the MobileBERT shape, more on larger ones.
    From the third sweep on, the step just taken is also extrapolated by a factor `sqrt(sweep)` (Bro's line search)
    and kept if it lowers the error: ALS crawls through long flat stretches on these tensors, and this reaches in 200
    sweeps the error plain ALS needs 500 or more for.
    """
    d_in, num_heads, _ = tensor.shape
    rank = factors[0].shape[1]
    by_query = tensor.reshape(d_in * num_heads, d_in)  # rows (a, h), columns b
    by_key = np.ascontiguousarray(tensor.transpose(2, 1, 0)).reshape(d_in * num_heads, d_in)  # rows (b, h), columns a
    norm_sq = float(np.sum(tensor * tensor))

    def key_side(a: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The MTTKRP and Gram matrix of B's normal equations."""
        projected = (by_key @ a).reshape(d_in, num_heads, rank)
        return np.einsum("bhr,hr->br", projected, m), (a.T @ a) * (m.T @ m)

    def relative_error(b: np.ndarray, mttkrp: np.ndarray, gram: np.ndarray) -> float:
        # ||T - T_hat||^2 = ||T||^2 + ||T_hat||^2 - 2 <T, T_hat>, from B's normal equations without rebuilding T_hat.
        residual_sq = norm_sq + np.sum(gram * (b.T @ b)) - 2.0 * np.sum(mttkrp * b)
        return float(np.sqrt(abs(residual_sq) / norm_sq))

    a, m, b = factors
    for sweep in itertools.count(1):
        before = (a, m, b)
        projected = (by_query @ b).reshape(d_in, num_heads, rank)
        a = np.linalg.solve((m.T @ m) * (b.T @ b), np.einsum("ahr,hr->ra", projected, m)).T
        m = np.linalg.solve((a.T @ a) * (b.T @ b), np.einsum("ahr,ar->rh", projected, a)).T
        mttkrp, gram = key_side(a, m)
        b = np.linalg.solve(gram, mttkrp.T).T
        error = relative_error(b, mttkrp, gram)
        if sweep > 2:
            jump = np.sqrt(sweep)
            a_far, m_far, b_far = (old + jump * (new - old) for old, new in zip(before, (a, m, b), strict=True))
            far_error = relative_error(b_far, *key_side(a_far, m_far))
            if far_error < error:
                a, m, b, error = a_far, m_far, b_far, far_error
        yield [a, m, b], error


def _run(
    sweeps: Iterator[tuple[list[np.ndarray], float]], max_sweeps: int, tol: float, error: float | None = None
) -> tuple[list[np.ndarray], float, int, bool]:
    """Runs up to `max_sweeps` sweeps, stopping when the relative error decreases by less than `tol` in one sweep
    (tensorly's `cvg_criterion="abs_rec_error"`). `error` is the error before the first of them, when known.

    Returns:
        The factors, their relative error, the number of sweeps run and whether `tol` was met.
    """
    for count, (factors, new_error) in enumerate(itertools.islice(sweeps, max_sweeps), start=1):
        if error is not None and abs(error - new_error) < tol:
            return factors, new_error, count, True
        error = new_error
    return factors, error, max_sweeps, False


def _balance(factors: list[np.ndarray]) -> list[np.ndarray]:
    """Gives every component the same norm in A, M and B, and orders components by decreasing weight.

    The CP model only fixes the product of the three column norms. Equal norms are the smallest factors for the same
    tensor (the point weight decay pulls towards during fine-tuning) and keep float32 rounding even across factors.
    """
    norms = [np.linalg.norm(f, axis=0) for f in factors]
    weight = norms[0] * norms[1] * norms[2]
    target = np.cbrt(weight)
    scaled = [np.divide(f * target, n, out=np.zeros_like(f), where=n > 0) for f, n in zip(factors, norms, strict=True)]
    order = np.argsort(-weight, kind="stable")
    return [f[:, order] for f in scaled]


def _default_recipe(
    tensor: np.ndarray, rank: int, exact_rank: int, max_iterations: int, tol: float
) -> tuple[list[np.ndarray], int, bool]:
    per_head = _per_head_start(tensor, rank)
    if rank == exact_rank:
        # The per-head start is the tensor itself; ALS could only add rounding (and its normal equations are
        # singular when a head's product is rank-deficient).
        return per_head, 0, True
    starts = [per_head]
    if rank <= tensor.shape[0]:
        starts.append(_shared_subspace_start(tensor, rank))
    # Neither start wins everywhere: the per-head one is better on random weights and at rank 96 of MiniLM, the shared
    # subspaces on half of MiniLM's layers at rank 192. A short run of each picks the better basin, which is then
    # continued; running both to convergence instead doubles the time for 0.001 of mean relative error (measured).
    runs = [_als(tensor, start) for start in starts]
    results = [_run(run, min(SELECTION_ITERATIONS, max_iterations), tol) for run in runs]
    n_iterations = sum(result[2] for result in results)
    best = min(range(len(runs)), key=lambda index: results[index][1])
    factors, error, done, converged = results[best]
    if not converged and done < max_iterations:
        factors, _, more, converged = _run(runs[best], max_iterations - done, tol, error)
        n_iterations += more
    return factors, n_iterations, converged


def _paper_recipe(tensor: np.ndarray, rank: int, seed: int) -> tuple[list[np.ndarray], int, bool]:
    errors = []
    with tl.backend_context("numpy"):
        weights, factors = parafac(
            tl.tensor(tensor),
            rank,
            init="random",
            tol=PAPER_TOL,
            random_state=seed,
            callback=lambda _, error: errors.append(float(error)),
        )
    # tensorly reports the start's error first, then one error per sweep.
    n_iterations = len(errors) - 1
    converged = n_iterations >= 2 and abs(errors[-2] - errors[-1]) < PAPER_TOL
    # The weights are all ones without `normalize_factors`; folding them in keeps this correct either way.
    return [factors[0] * weights, factors[1], factors[2]], n_iterations, converged


def decompose_attention(
    query_weight: torch.Tensor,
    query_bias: torch.Tensor | None,
    key_weight: torch.Tensor,
    num_heads: int,
    rank: int,
    recipe: str = "default",
    seed: int = 0,
    max_iterations: int | None = None,
    tol: float | None = None,
) -> CPAttention:
    """Decomposes one attention layer's query/key product into rank-`rank` collaborative attention.

    Args:
        query_weight (`torch.Tensor` of shape `(H * d_h, d_in)`): the query `nn.Linear` weight.
        query_bias (`torch.Tensor` of shape `(H * d_h,)`, *optional*): the query bias; becomes the exact content
            bias. `None` for a layer without one. (The key bias is not needed: it does not change the softmax.)
        key_weight (`torch.Tensor` of shape `(H * d_h, d_in)`): the key `nn.Linear` weight.
        num_heads (`int`): number of attention heads `H`.
        rank (`int`): CP rank `R`, the width of the shared query/key projections, in `[1, max_rank(...)]` where
            `max_rank = H * min(d_h, d_in)` (see `max_rank`).
        recipe (`str`, *optional*, defaults to `"default"`): `"default"` (deterministic SVD starts, ALS to
            convergence) or `"paper"` (the authors' random-start `parafac`, 100 iterations).
        seed (`int`, *optional*, defaults to 0): seeds the paper recipe's random start. The default recipe is
            deterministic and does not use it.
        max_iterations (`int`, *optional*): the default recipe's cap on ALS sweeps (500 when `None`).
        tol (`float`, *optional*): the default recipe's tolerance on the per-sweep decrease of the relative error
            (1e-6 when `None`). The paper recipe's stopping rule is fixed.

    Returns:
        [`CPAttention`]: float32 factors and content bias, with the relative error of the returned factors.
    """
    head_dim = _check_query_key(query_weight, key_weight, num_heads)
    exact_rank = max_rank(query_weight, num_heads)
    if not _is_positive_integer(rank) or rank > exact_rank:
        raise ValueError(
            f"rank must be an integer in [1, {exact_rank}] (num_heads * min(head_dim, d_in) = {num_heads} * "
            f"min({head_dim}, {query_weight.shape[1]})): the tensor is reproduced exactly at {exact_rank}, and a "
            f"larger rank only adds parameters. Got {rank!r}."
        )
    rank = int(rank)
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}.")
    if recipe == "paper" and (max_iterations is not None or tol is not None):
        raise ValueError("The paper recipe's stopping rule is fixed; max_iterations and tol apply to 'default'.")
    max_iterations = DEFAULT_MAX_ITERATIONS if max_iterations is None else max_iterations
    tol = DEFAULT_TOL if tol is None else tol
    if not _is_positive_integer(max_iterations):
        raise ValueError(f"max_iterations must be a positive integer, got {max_iterations!r}.")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol!r}.")
    if query_bias is None:
        bias = torch.zeros(num_heads, query_weight.shape[1], dtype=torch.float64)
    else:
        bias = content_bias(query_bias, key_weight, num_heads)

    tensor = query_key_tensor(query_weight, key_weight, num_heads).numpy()
    if not np.any(tensor):
        raise ValueError("The query/key product is zero: there is nothing to decompose (and no error to measure).")
    start = time.perf_counter()
    # One BLAS thread: these products are too small to gain from more, a shared machine makes OpenBLAS's spinning
    # threads 10x slower (measured), and a fixed summation order keeps the result bitwise reproducible anywhere.
    with threadpool_limits(limits=1, user_api="blas"):
        if recipe == "paper":
            factors, n_iterations, converged = _paper_recipe(tensor, rank, seed)
        else:
            factors, n_iterations, converged = _default_recipe(tensor, rank, exact_rank, max_iterations, tol)
    query, mixing, key = (torch.from_numpy(f).to(torch.float32) for f in _balance(factors))
    seconds = time.perf_counter() - start

    # Measure what the caller gets: the float32 factors, reconstructed in float64.
    reconstruction = torch.einsum("ar,hr,br->ahb", query.double(), mixing.double(), key.double())
    relative_error = float(torch.linalg.norm(reconstruction - torch.from_numpy(tensor)) / np.linalg.norm(tensor))
    logger.info(
        f"CP rank {rank} ({recipe}): relative error {relative_error:.4f} after {n_iterations} iterations "
        f"in {seconds:.2f}s{'' if converged else ' (iteration cap reached)'}."
    )
    return CPAttention(
        query_weight=query.T.contiguous(),
        key_weight=key.T.contiguous(),
        mixing=mixing.contiguous(),
        content_bias=bias.to(torch.float32),
        relative_error=relative_error,
        n_iterations=n_iterations,
        seconds=seconds,
        converged=converged,
    )
