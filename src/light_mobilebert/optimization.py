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

    Unlike the authors' code, the clipping works on a copy: `p.grad` is left as the caller computed it.
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
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients.")

                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                step = state["step"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]

                if group["max_grad_norm"] is not None:
                    clip_coef = group["max_grad_norm"] / (torch.linalg.vector_norm(grad) + _CLIP_EPS)
                    grad = grad * clip_coef.clamp(max=1.0)

                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                # In place, one temporary: on MiniLM's 11.7M-entry word embeddings each extra full-size temporary
                # costs about as much as the whole torch AdamW step. (m / b1) / (sqrt(v / b2) + eps) is computed as
                # m / (sqrt(v) / sqrt(b2) + eps) scaled by 1 / b1, and the decay p - lr * wd * p as p * (1 - lr * wd).
                step_size = group["lr"]
                denominator = exp_avg_sq.sqrt()
                if self.bias_correction:
                    step_size /= 1.0 - beta1**step
                    denominator.div_(math.sqrt(1.0 - beta2**step))
                denominator.add_(group["eps"])
                if group["weight_decay"] > 0.0:
                    p.mul_(1.0 - group["lr"] * group["weight_decay"])
                p.addcdiv_(exp_avg, denominator, value=-step_size)

        return loss


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
