# Copyright 2025 The light-mobilebert Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Optimizers and learning-rate schedule of the LightMobileBERT recipe.

They reproduce `LMBertAdam`, `BertAdam` and the schedule built in `run_glue.py` of DeguangChen/LightMobileBert
(`mobileBert_and_theseus/optimization.py`), as standard `torch.optim` objects: the schedule lives in a `LambdaLR`
instead of inside the optimizer, and the state is kept in `Optimizer.state`, so both checkpoint and resume with
`state_dict()`/`load_state_dict()` like any other optimizer and scheduler.
"""

import math
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.adamw import adamw
from torch.optim.lr_scheduler import LambdaLR


__all__ = ["BertAdam", "LMBertAdam", "get_paper_schedule"]

# The constant `clip_grad_norm_` adds to the norm before dividing by it.
_CLIP_EPS = 1e-6


class _BertAdamBase(Optimizer):
    """
    Adam with decoupled weight decay and per-parameter gradient-norm clipping; subclasses choose the bias correction.

    The update of a parameter \\(p\\) with gradient \\(g\\) at step \\(t\\) (counted from 1) is:

    1. \\(g \\leftarrow g \\cdot \\min(1, c / (\\lVert g \\rVert_2 + 10^{-6}))\\), the norm of this
       parameter's gradient alone (`torch.nn.utils.clip_grad_norm_(p, c)` in the authors' code), skipped when
       `max_grad_norm` is `None`;
    2. \\(m \\leftarrow \\beta_1 m + (1 - \\beta_1) g\\), \\(v \\leftarrow \\beta_2 v + (1 - \\beta_2) g^2\\);
    3. \\(\\hat m = m / (1 - \\beta_1^t)\\), \\(\\hat v = v / (1 - \\beta_2^t)\\) with bias correction,
       \\(\\hat m = m\\), \\(\\hat v = v\\) without;
    4. \\(p \\leftarrow p - \\eta \\left( \\hat m / (\\sqrt{\\hat v} + \\epsilon) + \\lambda p \\right)\\): the weight
       decay \\(\\lambda\\) is decoupled from the moments and scaled by the learning rate, as in AdamW.

    As in the authors' code (`clip_grad_norm_`), the clipping scales `p.grad` in place.
    """

    bias_correction: bool

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        max_grad_norm: float | None = 1.0,
    ):
        if not (math.isfinite(lr) and lr >= 0.0):
            raise ValueError(f"Invalid learning rate: {lr}, should be a finite number >= 0.")
        if len(betas) != 2 or not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"Invalid betas: {betas}, should be two numbers in [0, 1).")
        if not (math.isfinite(eps) and eps >= 0.0):
            raise ValueError(f"Invalid epsilon: {eps}, should be a finite number >= 0.")
        if not (math.isfinite(weight_decay) and weight_decay >= 0.0):
            raise ValueError(f"Invalid weight_decay: {weight_decay}, should be a finite number >= 0.")
        if max_grad_norm is not None and not max_grad_norm > 0.0:
            raise ValueError(f"Invalid max_grad_norm: {max_grad_norm}, should be > 0 (or None to disable clipping).")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "max_grad_norm": max_grad_norm,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """
        Performs a single optimization step.

        Args:
            closure (`Callable`, *optional*):
                A closure that reevaluates the model and returns the loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            params = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients.")
                state = self.state[p]
                if len(state) == 0:
                    # The layout of `torch.optim.AdamW`'s state, whose kernel runs the update.
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
            if self.bias_correction:
                # The kernel reads each parameter's step count where it lives: no synchronisation with the device.
                self._update(group, params)
            else:
                # The cancelled corrections depend on the step count: parameters that have stepped equally often
                # (usually the whole group) share one call.
                buckets: dict[float, list[torch.Tensor]] = {}
                for p in params:
                    buckets.setdefault(float(self.state[p]["step"]), []).append(p)
                for step, bucket in buckets.items():
                    self._update(group, bucket, step + 1)

        return loss

    def _update(self, group: dict[str, Any], params: list[torch.Tensor], step: float | None = None) -> None:
        """Runs the update of `params` with torch's AdamW kernel; without bias correction, all are at step `step`
        (counted from 1).

        With bias correction the update is exactly AdamW's on the clipped gradients. Without it, AdamW's corrections
        are cancelled through its hyper-parameters: with b1 = 1 - beta1^t and b2 = 1 - beta2^t, AdamW's step
        lr' (m / b1) / (sqrt(v / b2) + eps') equals lr m / (sqrt(v) + eps) for lr' = lr b1 / sqrt(b2) and
        eps' = eps / sqrt(b2), and its decay lr' wd' p equals lr wd p for wd' = wd sqrt(b2) / b1.
        """
        beta1, beta2 = group["betas"]
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        if not self.bias_correction:
            correction1, root_correction2 = 1.0 - beta1**step, math.sqrt(1.0 - beta2**step)
            lr, eps = lr * correction1 / root_correction2, eps / root_correction2
            weight_decay = weight_decay * root_correction2 / correction1
        grads = [p.grad for p in params]
        if group["max_grad_norm"] is not None:
            # Each parameter's gradient clipped by its own norm, in place as `clip_grad_norm_` does (a copy of
            # MiniLM's 11.7M-entry embedding gradient costs more than the whole AdamW step); no synchronisation.
            for grad in grads:
                grad.mul_((group["max_grad_norm"] / (torch.linalg.vector_norm(grad) + _CLIP_EPS)).clamp(max=1.0))
        states = [self.state[p] for p in params]
        adamw(
            params,
            grads,
            [state["exp_avg"] for state in states],
            [state["exp_avg_sq"] for state in states],
            [],
            [state["step"] for state in states],
            # The fused kernel reads and writes each tensor once. `benchmarks/bench_optimizer.py` (3-layer MiniLM
            # shapes): 33 ms per step, against 16 ms for torch's fused AdamW (the clipping adds a norm and a scaling
            # pass) and 85 ms for foreach AdamW.
            fused=all(p.device.type in ("cpu", "cuda") for p in params),
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=lr,
            weight_decay=weight_decay,
            eps=eps,
            maximize=False,
        )


class LMBertAdam(_BertAdamBase):
    """
    The optimizer of the LightMobileBERT paper: Adam with bias correction, decoupled weight decay and per-parameter
    gradient-norm clipping.

    See `_BertAdamBase` for the update. The authors also clip the global gradient norm before the step; the Trainer
    does that with `TrainingArguments.max_grad_norm`.

    Args:
        params (`Iterable[torch.nn.Parameter]` or `Iterable[dict]`):
            The parameters to optimize, or dicts defining parameter groups.
        lr (`float`):
            The learning rate.
        betas (`tuple[float, float]`, *optional*, defaults to `(0.9, 0.999)`):
            The decay rates of the first and second moments.
        eps (`float`, *optional*, defaults to 1e-6):
            Added to the square root of the second moment.
        weight_decay (`float`, *optional*, defaults to 0.01):
            The decoupled weight decay. Give biases and normalisation weights a group with `weight_decay=0.0`.
        max_grad_norm (`float`, *optional*, defaults to 1.0):
            The maximum L2 norm of each parameter's gradient; `None` disables the clipping.
    """

    bias_correction = True


class BertAdam(_BertAdamBase):
    """
    [`LMBertAdam`] without bias correction, as in the original BERT optimizer: the baseline of the authors' ablation.

    The authors' `BertAdam` also ignores its weight decay (the line is commented out in their code); pass
    `weight_decay=0.0` to reproduce that. The arguments are those of [`LMBertAdam`].
    """

    bias_correction = False


def _paper_lr_lambda(current_step: int, *, num_constant_steps: int, num_training_steps: int) -> float:
    # The authors' optimizer numbers its updates from 1 (`state["step"]` is incremented before use) while a LambdaLR
    # numbers them from 0: update `current_step` is their update `current_step + 1`.
    step = current_step + 1
    if step <= num_constant_steps:
        return 1.0
    return max(0.0, 1.0 - (step - num_constant_steps) / num_training_steps)


def get_paper_schedule(optimizer: Optimizer, num_training_steps: int, last_epoch: int = -1) -> LambdaLR:
    """
    The learning-rate schedule of the LightMobileBERT authors: constant, then linearly decreasing, no warm-up.

    With \\(T\\) = `num_training_steps` and \\(W = \\lfloor T / 3 \\rfloor\\), the update number
    \\(t = 1, \\dots, T\\) uses the learning rate \\(\\eta\\) for \\(t \\leq W\\) and
    \\(\\eta \\left(1 - (t - W) / T\\right)\\) after, so the last update uses \\(\\eta W / T\\), i.e. \\(\\eta / 3\\)
    when 3 divides \\(T\\). This is the rule of their optimizer with `warmup_steps=int(t_total / 3)`,
    `schedule="warmup_linear"` and `warmup=-1`. The `LambdaLR` counts updates from 0: its step \\(k\\) is their
    update \\(t = k + 1\\).

    Args:
        optimizer (`torch.optim.Optimizer`):
            The optimizer whose learning rate is scheduled.
        num_training_steps (`int`):
            The total number of optimizer updates \\(T\\).
        last_epoch (`int`, *optional*, defaults to -1):
            The index of the last update, when resuming.

    Returns:
        `torch.optim.lr_scheduler.LambdaLR` with the schedule.
    """
    if num_training_steps <= 0:
        raise ValueError(f"`num_training_steps` must be a positive number of updates, got {num_training_steps}.")
    lr_lambda = partial(
        _paper_lr_lambda, num_constant_steps=num_training_steps // 3, num_training_steps=num_training_steps
    )
    return LambdaLR(optimizer, lr_lambda, last_epoch)
