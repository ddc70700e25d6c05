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
"""Fine-tuning losses of LightMobileBERT: cross-entropy joined with a supervised contrastive loss (SCL).

Two SCL variants are provided:

- [`paper_supervised_contrastive_loss`], the loss of the LightMobileBERT authors (`SupConLoss` in
  `mobileBert_and_theseus/losses.py` of DeguangChen/LightMobileBert), applied to the classifier logits;
- [`supervised_contrastive_loss`], the SupCon loss of Khosla et al. (2020), "Supervised Contrastive Learning",
  equation (2), applied to L2-normalised features.

[`joint_loss`] combines either of them with cross-entropy for classification, and is the mean squared error alone for
regression (STS-B), as in the authors' `BertForSequenceClassification.forward`. Every loss is computed in float32 so
that bf16 or fp16 logits do not overflow in the exponentials.
"""

import math

import torch
import torch.nn.functional as F


__all__ = [
    "PAPER_SCL_BASE_TEMPERATURE",
    "PAPER_SCL_DENOMINATOR_SCALE",
    "PAPER_SCL_TEMPERATURE",
    "SCL_VARIANTS",
    "STANDARD_SCL_TEMPERATURE",
    "joint_loss",
    "paper_supervised_contrastive_loss",
    "supervised_contrastive_loss",
]

PAPER_SCL_TEMPERATURE = 10.0
PAPER_SCL_BASE_TEMPERATURE = 100.0
PAPER_SCL_DENOMINATOR_SCALE = 1.05
STANDARD_SCL_TEMPERATURE = 0.1
SCL_VARIANTS = ("paper", "standard")


def _check_batch(name: str, tensor: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Checks that `tensor` is `(batch_size, dim)` with one label per row, and returns the labels flattened."""
    if tensor.dim() != 2:
        raise ValueError(f"`{name}` must have shape (batch_size, dim), got shape {tuple(tensor.shape)}.")
    if tensor.shape[0] == 0:
        raise ValueError(f"`{name}` is an empty batch.")
    if labels.numel() != tensor.shape[0]:
        raise ValueError(
            f"`labels` has {labels.numel()} elements (shape {tuple(labels.shape)}) but `{name}` has "
            f"{tensor.shape[0]} rows: there must be exactly one label per example."
        )
    return labels.reshape(-1)


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a finite positive number, got {value}.")


def paper_supervised_contrastive_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = PAPER_SCL_TEMPERATURE,
    base_temperature: float = PAPER_SCL_BASE_TEMPERATURE,
    denominator_scale: float = PAPER_SCL_DENOMINATOR_SCALE,
) -> torch.Tensor:
    """
    The supervised contrastive loss of the LightMobileBERT authors, reproduced from their `SupConLoss`.

    With logits \\(z_i\\) (no normalisation), \\(s_{ij} = z_i \\cdot z_j / T\\), the row maximum
    \\(m_i = \\max_k s_{ik}\\) (diagonal included), the positives \\(P(i) = \\{j \\neq i : y_j = y_i\\}\\) and
    \\(c = \\) `denominator_scale`:

    \\[
        \\ell_{ij} = (s_{ij} - m_i) - \\log \\sum_{k \\neq i} \\exp(c\\, s_{ik} - c\\, m_i), \\qquad
        L = -\\frac{T}{T_\\text{base}} \\frac{1}{B} \\sum_i \\frac{1}{|P(i)| + 1} \\sum_{j \\in P(i)} \\ell_{ij}.
    \\]

    Step by step, as in the authors' code:

    1. similarities of the logits divided by `temperature` (their `anchor_dot_contrast`);
    2. numerator logits shifted by their row maximum, which is detached from the graph;
    3. denominator similarities multiplied by `denominator_scale` and shifted by *their own* detached row maximum.
       The two shifts do not cancel: since the diagonal \\(s_{ii} \\geq 0\\), \\(\\max_k c\\, s_{ik} = c\\, m_i\\) and
       every \\(\\ell_{ij}\\) carries an extra \\((c - 1) m_i\\) that the detach hides from the gradient. This is
       part of their loss and is kept;
    4. the denominator sums over every other example of the batch, the anchor itself excluded;
    5. the positives' log-probabilities are averaged over `count + 1` (their "smoothing"): an anchor without positives
       contributes 0 instead of NaN, and still counts in the batch mean;
    6. the result is multiplied by `-temperature / base_temperature` and averaged over all anchors.

    Deviations, for numerical safety only: the denominator is computed with `logsumexp` (their
    `log(sum(exp(.)))` gives `-inf` once every off-diagonal term underflows, which happens with MobileBERT's large
    logits), the whole computation runs in float32, and a batch of one example returns 0 (their code returns NaN:
    there is nothing to contrast with).

    Args:
        logits (`torch.Tensor` of shape `(batch_size, num_labels)`):
            The classifier logits.
        labels (`torch.Tensor` of shape `(batch_size,)`):
            The class of each example.
        temperature (`float`, *optional*, defaults to 10.0):
            The temperature \\(T\\) dividing the similarities.
        base_temperature (`float`, *optional*, defaults to 100.0):
            The loss is scaled by `temperature / base_temperature`.
        denominator_scale (`float`, *optional*, defaults to 1.05):
            The factor applied to the similarities of the denominator.

    Returns:
        `torch.Tensor`: the scalar loss, in float32.
    """
    labels = _check_batch("logits", logits, labels)
    _check_positive("temperature", temperature)
    _check_positive("base_temperature", base_temperature)
    _check_positive("denominator_scale", denominator_scale)

    features = logits.float()
    batch_size = features.shape[0]
    if batch_size == 1:
        # No other example to contrast with. Multiplying keeps the graph, so backward gives zero gradients.
        return features.sum() * 0.0

    similarity = features @ features.T / temperature
    numerator = similarity - similarity.max(dim=1, keepdim=True).values.detach()

    scaled_similarity = similarity * denominator_scale
    scaled_shift = scaled_similarity.max(dim=1, keepdim=True).values.detach()
    self_mask = torch.eye(batch_size, dtype=torch.bool, device=features.device)
    # log(sum_{k != i} exp(c * s_ik - shift_i)) = logsumexp_{k != i}(c * s_ik) - shift_i, same value and gradient as
    # the authors' expression but finite when the exponentials underflow.
    log_denominator = torch.logsumexp(scaled_similarity.masked_fill(self_mask, -math.inf), dim=1, keepdim=True)
    log_prob = numerator - (log_denominator - scaled_shift)

    positive_mask = (labels[:, None] == labels[None, :]) & ~self_mask
    positive_count = positive_mask.sum(dim=1)
    mean_log_prob_positive = log_prob.masked_fill(~positive_mask, 0.0).sum(dim=1) / (positive_count + 1)

    return -(temperature / base_temperature) * mean_log_prob_positive.mean()


def supervised_contrastive_loss(
    features: torch.Tensor, labels: torch.Tensor, temperature: float = STANDARD_SCL_TEMPERATURE
) -> torch.Tensor:
    """
    The supervised contrastive loss of Khosla et al. (2020), equation (2) ("\\(L^{sup}_{out}\\)"), on a single view.

    With L2-normalised features \\(f_i\\), \\(s_{ij} = f_i \\cdot f_j / \\tau\\) and the positives
    \\(P(i) = \\{j \\neq i : y_j = y_i\\}\\):

    \\[
        L = -\\frac{1}{|A|} \\sum_{i \\in A} \\frac{1}{|P(i)|} \\sum_{j \\in P(i)}
            \\left( s_{ij} - \\log \\sum_{k \\neq i} \\exp(s_{ik}) \\right), \\qquad A = \\{i : |P(i)| > 0\\}.
    \\]

    Anchors without positives are left out of the mean rather than divided by zero. A batch in which no anchor has
    a positive (one example, or every class appearing once) gives a zero loss with zero gradients.

    Args:
        features (`torch.Tensor` of shape `(batch_size, hidden_size)`):
            The representations to contrast, e.g. the final hidden state of the first token. They are L2-normalised
            here.
        labels (`torch.Tensor` of shape `(batch_size,)`):
            The class of each example.
        temperature (`float`, *optional*, defaults to 0.1):
            The temperature \\(\\tau\\).

    Returns:
        `torch.Tensor`: the scalar loss, in float32.
    """
    labels = _check_batch("features", features, labels)
    _check_positive("temperature", temperature)

    features = F.normalize(features.float(), dim=1)
    batch_size = features.shape[0]
    self_mask = torch.eye(batch_size, dtype=torch.bool, device=features.device)
    positive_mask = (labels[:, None] == labels[None, :]) & ~self_mask
    positive_count = positive_mask.sum(dim=1)
    anchors = positive_count > 0
    if not anchors.any():
        # Returned before the log-sum-exp, which is -inf (NaN gradient) for a batch of one example.
        return features.sum() * 0.0

    similarity = features @ features.T / temperature
    log_denominator = torch.logsumexp(similarity.masked_fill(self_mask, -math.inf), dim=1, keepdim=True)
    log_prob = similarity - log_denominator
    sum_log_prob_positive = log_prob.masked_fill(~positive_mask, 0.0).sum(dim=1)
    return -(sum_log_prob_positive[anchors] / positive_count[anchors]).mean()


def joint_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    features: torch.Tensor | None = None,
    scl_variant: str = "paper",
    scl_weight: float = 1.0,
    scl_temperature: float | None = None,
) -> torch.Tensor:
    """
    The LightMobileBERT fine-tuning loss: \\(\\mathrm{CE} + \\lambda\\, \\mathrm{SCL}\\) for classification, the mean
    squared error alone for regression.

    The task is a regression when `logits` has a single column (STS-B), as in transformers' sequence classification
    heads with `num_labels=1`; `labels` are then the float targets. Otherwise `labels` must hold integer classes. The
    authors' recipe is `scl_variant="paper"` with `scl_weight=1.0` (an unweighted sum); `scl_weight=0` gives plain
    cross-entropy.

    Args:
        logits (`torch.Tensor` of shape `(batch_size, num_labels)`):
            The classifier logits, in any floating dtype; the loss is computed in float32.
        labels (`torch.Tensor` of shape `(batch_size,)`):
            Class indices (classification) or targets (regression).
        features (`torch.Tensor` of shape `(batch_size, hidden_size)`, *optional*):
            The representations contrasted by the `"standard"` variant (required by it, unused otherwise).
        scl_variant (`str`, *optional*, defaults to `"paper"`):
            `"paper"` for [`paper_supervised_contrastive_loss`] on the logits, `"standard"` for
            [`supervised_contrastive_loss`] on `features`.
        scl_weight (`float`, *optional*, defaults to 1.0):
            The weight \\(\\lambda\\) of the contrastive term.
        scl_temperature (`float`, *optional*):
            The contrastive temperature; defaults to the variant's own (10.0 for `"paper"`, 0.1 for `"standard"`).

    Returns:
        `torch.Tensor`: the scalar loss, in float32.
    """
    if scl_variant not in SCL_VARIANTS:
        raise ValueError(f"Unknown `scl_variant` {scl_variant!r}, expected one of {SCL_VARIANTS}.")
    if not (math.isfinite(scl_weight) and scl_weight >= 0):
        raise ValueError(f"`scl_weight` must be a finite non-negative number, got {scl_weight}.")
    if scl_temperature is not None:
        _check_positive("scl_temperature", scl_temperature)
    labels = _check_batch("logits", logits, labels)

    if logits.shape[1] == 1:
        return F.mse_loss(logits.float().reshape(-1), labels.float())

    if labels.is_floating_point():
        raise ValueError(
            f"Classification with {logits.shape[1]} labels needs integer class labels, got dtype {labels.dtype} "
            "(multi-label classification is not supported)."
        )
    loss = F.cross_entropy(logits.float(), labels)
    if scl_weight == 0:
        return loss

    if scl_variant == "paper":
        temperature = PAPER_SCL_TEMPERATURE if scl_temperature is None else scl_temperature
        contrastive = paper_supervised_contrastive_loss(logits, labels, temperature=temperature)
    else:
        if features is None:
            raise ValueError("`scl_variant='standard'` contrasts `features`, which were not given.")
        if features.shape[0] != logits.shape[0]:
            raise ValueError(
                f"`features` has {features.shape[0]} rows but `logits` has {logits.shape[0]}: they must describe the "
                "same batch."
            )
        temperature = STANDARD_SCL_TEMPERATURE if scl_temperature is None else scl_temperature
        contrastive = supervised_contrastive_loss(features, labels, temperature=temperature)
    return loss + scl_weight * contrastive
