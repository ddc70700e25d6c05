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
"""A `Trainer` for the LightMobileBERT fine-tuning recipe: joint CE + SCL loss, `LMBertAdam` and the paper schedule.

It works with any `AutoModelForSequenceClassification` model (LightMobileBERT, MobileBERT, BERT baselines...): the
loss only needs the logits, and the final hidden states for the `"standard"` contrastive variant.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import SchedulerType
from transformers.utils import logging

from .losses import SCL_VARIANTS, joint_loss
from .optimization import BertAdam, LMBertAdam, get_paper_schedule


logger = logging.get_logger(__name__)

__all__ = ["LightMobileBertTrainer", "LightMobileBertTrainingArguments"]

LOSSES = ("joint", "ce")
OPTIMIZERS = ("lmbert_adam", "bert_adam", "adamw")
LR_SCHEDULES = ("paper", "hf")


@dataclass
class LightMobileBertTrainingArguments(TrainingArguments):
    """
    [`~transformers.TrainingArguments`] with the choices of the LightMobileBERT recipe: the loss, the optimizer and
    the learning-rate schedule. The defaults reproduce the authors' recipe (joint loss with their contrastive term,
    `LMBertAdam` with weight decay 0.01 and epsilon 1e-6, constant-then-linear schedule without warm-up); their other
    hyper-parameters (learning rate 7e-5, batch size 6) are left to the caller. `max_grad_norm` sets both the global
    gradient clipping of the Trainer and the per-parameter clipping of `LMBertAdam`/`BertAdam` (both 1.0 in the
    authors' code).
    """

    loss: str = field(
        default="joint",
        metadata={
            "help": "The training loss: `joint` (cross-entropy + `scl_weight` x contrastive loss) or `ce` "
            "(cross-entropy alone). Regression tasks (one label, e.g. STS-B) always use the mean squared error.",
            "choices": list(LOSSES),
        },
    )
    scl_variant: str = field(
        default="paper",
        metadata={
            "help": "The contrastive term of the joint loss: `paper` (the authors' loss on the logits) or "
            "`standard` (SupCon of Khosla et al. 2020 on the final hidden state of the first token).",
            "choices": list(SCL_VARIANTS),
        },
    )
    scl_weight: float = field(
        default=1.0, metadata={"help": "The weight of the contrastive term in the joint loss (1.0 in the paper)."}
    )
    scl_temperature: float | None = field(
        default=None,
        metadata={
            "help": "The contrastive temperature; defaults to the variant's own: 10 for `paper`, 0.1 for `standard`."
        },
    )
    optimizer: str = field(
        default="lmbert_adam",
        metadata={
            "help": "The optimizer: `lmbert_adam` (the paper's), `bert_adam` (the same without bias correction) or "
            "`adamw` (the transformers optimizer selected by `optim`).",
            "choices": list(OPTIMIZERS),
        },
    )
    lr_schedule: str = field(
        default="paper",
        metadata={
            "help": "The learning-rate schedule: `paper` (constant for a third of the updates, then linear decay "
            "ending at a third of the learning rate, no warm-up) or `hf` (`lr_scheduler_type` with `warmup_steps`).",
            "choices": list(LR_SCHEDULES),
        },
    )
    weight_decay: float = field(
        default=0.01,
        metadata={
            "help": "Decoupled weight decay, not applied to biases and normalisation parameters (0.01 in the paper)."
        },
    )
    adam_epsilon: float = field(default=1e-6, metadata={"help": "Epsilon of the Adam optimizers (1e-6 in the paper)."})

    def __post_init__(self):
        for name, choices in (
            ("loss", LOSSES),
            ("scl_variant", SCL_VARIANTS),
            ("optimizer", OPTIMIZERS),
            ("lr_schedule", LR_SCHEDULES),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"`{name}` must be one of {choices}, got {getattr(self, name)!r}.")
        if not (math.isfinite(self.scl_weight) and self.scl_weight >= 0):
            raise ValueError(f"`scl_weight` must be a finite non-negative number, got {self.scl_weight}.")
        if self.scl_temperature is not None and not (math.isfinite(self.scl_temperature) and self.scl_temperature > 0):
            raise ValueError(
                f"`scl_temperature` must be a finite positive number or None, got {self.scl_temperature}."
            )
        if self.label_smoothing_factor != 0:
            raise ValueError(
                "`label_smoothing_factor` is not supported: `LightMobileBertTrainer` computes its own loss."
            )
        super().__post_init__()
        if self.lr_schedule == "paper" and (
            self.warmup_steps != 0 or SchedulerType(self.lr_scheduler_type) != SchedulerType.LINEAR
        ):
            logger.warning(
                "`lr_schedule='paper'` ignores `warmup_steps` and `lr_scheduler_type`; set `lr_schedule='hf'` to use "
                "them."
            )


class _GatherWithGradient(torch.autograd.Function):
    """
    Concatenates a tensor from every process along the first dimension (sizes may differ), with a gradient.

    Every process computes the same loss from the gathered batch, so the gradient with respect to this process's rows
    is the sum of the gradients of all the processes' copies: the backward all-reduces and keeps this process's
    slice. Written on `all_gather`/`all_reduce` because `torch.distributed.nn.functional.all_gather` is deprecated and
    its replacement needs a reduce-scatter, which gloo lacks.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        world_size = dist.get_world_size()
        local_size = torch.tensor([tensor.shape[0]], device=tensor.device)
        sizes = [torch.zeros_like(local_size) for _ in range(world_size)]
        dist.all_gather(sizes, local_size)
        sizes = [int(size.item()) for size in sizes]

        padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        gathered = [torch.empty_like(padded) for _ in range(world_size)]
        dist.all_gather(gathered, padded)

        rank = dist.get_rank()
        ctx.start, ctx.end = sum(sizes[:rank]), sum(sizes[: rank + 1])
        return torch.cat([chunk[:size] for chunk, size in zip(gathered, sizes, strict=True)])

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.end]


class LightMobileBertTrainer(Trainer):
    """
    [`~transformers.Trainer`] for the LightMobileBERT fine-tuning recipe, configured by
    [`LightMobileBertTrainingArguments`].

    - **Loss**: [`~light_mobilebert.losses.joint_loss`] on the model's logits. The labels are not passed to the
      model, so it neither computes its own loss nor fills in `config.problem_type`. For `scl_variant="standard"` the
      model is called with `output_hidden_states=True` and the features are the final hidden state of the first
      token.
    - **Optimizer**: [`~light_mobilebert.optimization.LMBertAdam`] or [`~light_mobilebert.optimization.BertAdam`]
      built by [`~transformers.Trainer.create_optimizer`], so biases and normalisation parameters (found by
      `get_decay_parameter_names`, which also catches MobileBERT's `NoNorm`, named `LayerNorm`) get no weight decay.
    - **Schedule**: [`~light_mobilebert.optimization.get_paper_schedule`] unless `lr_schedule="hf"`.

    Gradient accumulation: the loss is a per-batch mean, so `loss_is_scaled_for_ga = False` makes the Trainer divide
    it by the number of accumulation steps (transformers v5 otherwise assumes that models taking `**kwargs` already
    normalised it). The accumulated gradient is then the mean of the micro-batch gradients: for cross-entropy (and the
    mean squared error) this is exactly the gradient of the full batch when the micro-batches have equal sizes. The
    contrastive term is not additive over examples: each micro-batch contrasts only its own examples, so accumulating
    `k` micro-batches of `b` optimises the mean of `k` contrastive losses over `b` examples, not one loss over `k * b`,
    and sees fewer positive and negative pairs per anchor. Use larger micro-batches rather than more accumulation steps
    when the contrastive term matters.

    Distributed data parallel: when the contrastive term is active, the logits, labels (and features) of every process
    are gathered before the loss, so it contrasts the whole global batch exactly as a single process with the same
    batch would. Each process then computes the same loss; the gather's backward sums the gradients of the copies and
    DDP's averaging divides by the number of processes, which gives exactly the gradient of the single-process loss.

    Resuming: the optimizers keep their state in `Optimizer.state` and the schedule is a `LambdaLR`, both saved in
    and restored from checkpoints by the Trainer, so `train(resume_from_checkpoint=...)` continues the same run.

    Args:
        model (`nn.Module`, *optional*):
            The sequence classification model.
        args (`LightMobileBertTrainingArguments`, *optional*):
            The training arguments; plain `TrainingArguments` are refused.
        kwargs:
            The other arguments of [`~transformers.Trainer`], by keyword, except `compute_loss_func`.
    """

    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model: nn.Module | None = None,
        args: LightMobileBertTrainingArguments | None = None,
        **kwargs: Any,
    ):
        if args is None:
            args = LightMobileBertTrainingArguments(output_dir="tmp_trainer")
            logger.info(f"No `TrainingArguments` passed, using `output_dir={args.output_dir}`.")
        elif not isinstance(args, LightMobileBertTrainingArguments):
            raise TypeError(
                f"`args` must be a `LightMobileBertTrainingArguments`, got a `{type(args).__name__}`; use "
                "`transformers.Trainer` for a plain `TrainingArguments`."
            )
        if kwargs.get("compute_loss_func") is not None:
            raise ValueError("`compute_loss_func` is not supported: `LightMobileBertTrainer` computes its own loss.")
        super().__init__(model=model, args=args, **kwargs)
        # The loss never receives `num_items_in_batch`: this spares the Trainer counting (and, across processes,
        # gathering) it, and makes releases without `loss_is_scaled_for_ga` divide the loss by the accumulation steps.
        self.model_accepts_loss_kwargs = False

    @staticmethod
    def get_optimizer_cls_and_kwargs(args: TrainingArguments, model: nn.Module | None = None) -> tuple[Any, Any]:
        """
        Returns the optimizer class and keyword arguments selected by `args.optimizer`: `LMBertAdam` or `BertAdam`
        with the learning rate, betas and epsilon of `args` and `args.max_grad_norm` as per-parameter clipping, or
        the transformers optimizer selected by `args.optim` for `"adamw"`. The parameter groups (with and without
        weight decay) are built by `Trainer.create_optimizer`.
        """
        optimizer_name = getattr(args, "optimizer", "adamw")
        if optimizer_name == "adamw":
            return Trainer.get_optimizer_cls_and_kwargs(args, model)
        optimizer_cls = LMBertAdam if optimizer_name == "lmbert_adam" else BertAdam
        optimizer_kwargs = {
            "lr": args.learning_rate,
            "betas": (args.adam_beta1, args.adam_beta2),
            "eps": args.adam_epsilon,
            "max_grad_norm": args.max_grad_norm if args.max_grad_norm is not None and args.max_grad_norm > 0 else None,
        }
        return optimizer_cls, optimizer_kwargs

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """
        Sets up the paper schedule ([`~light_mobilebert.optimization.get_paper_schedule`]) over `num_training_steps`
        updates, or the transformers scheduler when `lr_schedule="hf"`.
        """
        if self.args.lr_schedule == "hf":
            return super().create_scheduler(num_training_steps, optimizer=optimizer)
        if self.lr_scheduler is None:
            self.lr_scheduler = get_paper_schedule(
                self.optimizer if optimizer is None else optimizer, num_training_steps
            )
            # Lets `train` rebuild it for a new number of steps, as the Trainer does for its own schedulers.
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """
        Computes the loss selected by `args.loss` from the model's logits.

        Args:
            model (`nn.Module`):
                The (possibly wrapped) sequence classification model.
            inputs (`dict[str, torch.Tensor | Any]`):
                The model inputs and the `labels`.
            return_outputs (`bool`, *optional*, defaults to `False`):
                Whether to return the model outputs with the loss.
            num_items_in_batch (`torch.Tensor` or `int`, *optional*):
                Unused: the loss is a per-batch mean, see `loss_is_scaled_for_ga`.

        Returns:
            The loss, and the model outputs when `return_outputs=True`.
        """
        if inputs.get("labels") is None:
            raise ValueError(
                "`LightMobileBertTrainer` computes its loss from `labels`, which the batch does not have."
            )
        inputs = dict(inputs)
        labels = inputs.pop("labels")

        scl_weight = self.args.scl_weight if self.args.loss == "joint" else 0.0
        needs_features = scl_weight > 0 and self.args.scl_variant == "standard"
        forces_hidden_states = (
            needs_features
            and not inputs.get("output_hidden_states", False)
            and not getattr(getattr(self.model, "config", None), "output_hidden_states", False)
        )
        if needs_features:
            inputs["output_hidden_states"] = True
        outputs = model(**inputs)

        logits = outputs["logits"]
        features = None
        if needs_features:
            if outputs.get("hidden_states") is None:
                raise ValueError(
                    "`scl_variant='standard'` needs the final hidden states, but the model returned none with "
                    "`output_hidden_states=True`."
                )
            features = outputs["hidden_states"][-1][:, 0]

        is_distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if scl_weight > 0 and logits.shape[-1] > 1 and is_distributed:
            # The contrastive term couples the examples: contrast the global batch, not each process's shard.
            logits = _GatherWithGradient.apply(logits.float())
            labels = _GatherWithGradient.apply(labels.reshape(-1))
            if features is not None:
                features = _GatherWithGradient.apply(features.float())

        loss = joint_loss(
            logits,
            labels,
            features=features,
            scl_variant=self.args.scl_variant,
            scl_weight=scl_weight,
            scl_temperature=self.args.scl_temperature,
        )
        if not return_outputs:
            return loss
        if forces_hidden_states:
            # Evaluation treats every output but the loss as predictions: drop what the caller did not ask for.
            outputs = type(outputs)(**{key: value for key, value in outputs.items() if key != "hidden_states"})
        return loss, outputs
