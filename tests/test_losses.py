"""Tests of `light_mobilebert.losses` against references written here: NumPy loops in float64 and, for gradients, a
line-by-line transcription of the authors' `SupConLoss` (DeguangChen/LightMobileBert,
`mobileBert_and_theseus/losses.py`).
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from light_mobilebert.losses import joint_loss, paper_supervised_contrastive_loss, supervised_contrastive_loss


ATOL = 1e-6


def reference_paper_scl(logits, labels, temperature=10.0, base_temperature=100.0, denominator_scale=1.05):
    """The authors' formula, one anchor at a time, in float64. The denominator uses a stable log-sum-exp."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).tolist()
    batch_size = len(y)
    total = 0.0
    for i in range(batch_size):
        positives = [j for j in range(batch_size) if j != i and y[j] == y[i]]
        if not positives:
            continue  # contributes 0 / (0 + 1); their code gives NaN for a batch of one, where nothing is contrasted
        s = [float(np.dot(z[i], z[k])) / temperature for k in range(batch_size)]
        row_max = max(s)
        scaled_row_max = max(denominator_scale * value for value in s)
        others = [denominator_scale * s[k] for k in range(batch_size) if k != i]
        top = max(others)
        log_denominator = top + math.log(sum(math.exp(value - top) for value in others)) - scaled_row_max
        summed = sum((s[j] - row_max) - log_denominator for j in positives)
        total += -(temperature / base_temperature) * summed / (len(positives) + 1)
    return total / batch_size


def reference_supcon(features, labels, temperature=0.1):
    """Khosla et al. (2020) eq. (2) in float64, anchors without positives left out."""
    f = np.asarray(features, dtype=np.float64)
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    y = np.asarray(labels).tolist()
    batch_size = len(y)
    per_anchor = []
    for i in range(batch_size):
        positives = [j for j in range(batch_size) if j != i and y[j] == y[i]]
        if not positives:
            continue
        s = [float(np.dot(f[i], f[k])) / temperature for k in range(batch_size)]
        log_denominator = math.log(sum(math.exp(s[k]) for k in range(batch_size) if k != i))
        per_anchor.append(sum(s[j] - log_denominator for j in positives) / len(positives))
    return -sum(per_anchor) / len(per_anchor) if per_anchor else 0.0


def reference_cross_entropy(logits, labels):
    z = np.asarray(logits, dtype=np.float64)
    total = 0.0
    for row, label in zip(z, np.asarray(labels).tolist(), strict=True):
        top = row.max()
        total += top + math.log(sum(math.exp(v - top) for v in row)) - row[label]
    return total / len(z)


def authors_supcon(features, labels, temperature=10, base_temperature=100):
    """The authors' `SupConLoss.forward` with `labels`, `contrast_mode='all'`, transcribed line by line."""
    batch_size = features.shape[0]
    labels = labels.contiguous().view(-1, 1)
    mask = torch.eq(labels, torch.transpose(labels, 1, 0)).to(features.dtype)
    anchor_dot_contrast = torch.div(torch.matmul(features, torch.transpose(features, 1, 0)), temperature)
    logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
    logits = anchor_dot_contrast - logits_max.detach()
    anchor_dot_contrast_den = anchor_dot_contrast * 1.05
    logits_max_den, _ = torch.max(anchor_dot_contrast_den, dim=1, keepdim=True)
    logits_den = anchor_dot_contrast_den - logits_max_den.detach()
    logits_mask = torch.scatter(torch.ones_like(mask), 1, torch.arange(batch_size).view(-1, 1), 0)
    mask = mask * logits_mask
    exp_logits = torch.exp(logits_den) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    mean_log_prob_pos = (mask * log_prob).sum(1) / (mask.sum(1) + 1)
    loss = -(temperature / base_temperature) * mean_log_prob_pos
    return loss.view(1, batch_size).mean()


def make_batch(batch_size=8, num_labels=3, scale=3.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch_size, num_labels, generator=generator) * scale
    labels = torch.randint(0, num_labels, (batch_size,), generator=generator)
    return logits, labels


# ---- paper variant ----


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper_scl_matches_reference(seed):
    logits, labels = make_batch(seed=seed)
    loss = paper_supervised_contrastive_loss(logits, labels)
    assert loss.dtype == torch.float32
    assert abs(loss.item() - reference_paper_scl(logits.numpy(), labels.numpy())) < ATOL


def test_paper_scl_hyperparameters_match_reference():
    logits, labels = make_batch(seed=3)
    loss = paper_supervised_contrastive_loss(
        logits, labels, temperature=2.0, base_temperature=7.0, denominator_scale=1.3
    )
    expected = reference_paper_scl(logits.numpy(), labels.numpy(), 2.0, 7.0, 1.3)
    assert abs(loss.item() - expected) < ATOL


def test_paper_scl_value_and_gradient_match_authors_code():
    logits, labels = make_batch(seed=4)
    ours = logits.double().requires_grad_()
    theirs = logits.double().requires_grad_()
    loss = paper_supervised_contrastive_loss(ours, labels)
    expected = authors_supcon(theirs, labels)
    loss.backward()
    expected.backward()
    assert abs(loss.item() - expected.item()) < ATOL
    # Their detached maxima make the gradient differ from that of the loss's value as a function: compare to theirs.
    torch.testing.assert_close(ours.grad, theirs.grad, atol=ATOL, rtol=0)


def test_paper_scl_extra_term_from_shifts_is_kept():
    # The two detached shifts leave (c - 1) * max_k s_ik in every log-probability; a loss without it differs.
    logits, labels = make_batch(seed=5)
    loss = paper_supervised_contrastive_loss(logits, labels).item()
    z = logits.double().numpy()
    s = z @ z.T / 10.0
    np.fill_diagonal(s, -np.inf)
    log_denominator = np.log(np.exp(1.05 * s).sum(axis=1, keepdims=True))
    np.fill_diagonal(s, 0.0)
    log_prob = s - log_denominator
    positives = (labels[:, None] == labels[None, :]).numpy() & ~np.eye(8, dtype=bool)
    without_shift = -(0.1 * (log_prob * positives).sum(1) / (positives.sum(1) + 1)).mean()
    assert abs(loss - without_shift) > 1e-3
    assert abs(loss - reference_paper_scl(z, labels.numpy())) < ATOL


def test_paper_scl_large_logits_stay_finite():
    # MobileBERT's logits are large: the off-diagonal exponentials underflow and the authors' code gives inf.
    logits, labels = make_batch(seed=6, scale=300.0)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    with torch.no_grad():
        assert not torch.isfinite(authors_supcon(logits, labels))
    leaf = logits.clone().requires_grad_()
    loss = paper_supervised_contrastive_loss(leaf, labels)
    loss.backward()
    expected = reference_paper_scl(logits.numpy(), labels.numpy())
    assert math.isfinite(loss.item())
    assert abs(loss.item() - expected) <= 1e-6 * abs(expected)
    assert torch.isfinite(leaf.grad).all()


def test_paper_scl_batch_of_one_is_zero_with_zero_gradient():
    logits = torch.randn(1, 3, requires_grad=True)
    loss = paper_supervised_contrastive_loss(logits, torch.tensor([1]))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_paper_scl_one_class_and_all_distinct_classes():
    logits, _ = make_batch(batch_size=5, num_labels=5, seed=7)
    one_class = torch.zeros(5, dtype=torch.long)
    loss = paper_supervised_contrastive_loss(logits, one_class)
    assert abs(loss.item() - reference_paper_scl(logits.numpy(), one_class.numpy())) < ATOL
    # No positives anywhere: every anchor contributes 0 / (0 + 1).
    all_distinct = torch.arange(5)
    assert paper_supervised_contrastive_loss(logits, all_distinct).item() == 0.0
    assert reference_paper_scl(logits.numpy(), all_distinct.numpy()) == 0.0


def test_paper_scl_bf16_is_computed_in_float32():
    logits, labels = make_batch(seed=8)
    logits = logits.bfloat16().requires_grad_()
    loss = paper_supervised_contrastive_loss(logits, labels)
    loss.backward()
    assert loss.dtype == torch.float32
    assert abs(loss.item() - reference_paper_scl(logits.detach().float().numpy(), labels.numpy())) < ATOL
    assert logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad.float()).all()


# ---- standard variant ----


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_supcon_matches_reference(temperature):
    generator = torch.Generator().manual_seed(10)
    features = torch.randn(10, 6, generator=generator)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 3, 4])  # classes 3 and 4 have no positive
    loss = supervised_contrastive_loss(features, labels, temperature=temperature)
    assert abs(loss.item() - reference_supcon(features.numpy(), labels.numpy(), temperature)) < ATOL


def test_supcon_normalises_features():
    generator = torch.Generator().manual_seed(11)
    features = torch.randn(6, 4, generator=generator)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    scales = torch.tensor([1.0, 5.0, 0.1, 2.0, 30.0, 0.5])[:, None]
    torch.testing.assert_close(
        supervised_contrastive_loss(features * scales, labels), supervised_contrastive_loss(features, labels)
    )


def test_supcon_anchors_without_positives_are_excluded():
    generator = torch.Generator().manual_seed(12)
    features = torch.randn(4, 5, generator=generator)
    labels = torch.tensor([0, 0, 1, 2])
    loss = supervised_contrastive_loss(features, labels).item()
    # Only anchors 0 and 1 count: the mean is over 2 anchors, not 4.
    f = F.normalize(features.double(), dim=1).numpy() / 0.1**0.5
    s = f @ f.T
    anchor_terms = [s[0, 1] - np.log(np.exp(s[0, [1, 2, 3]]).sum()), s[1, 0] - np.log(np.exp(s[1, [0, 2, 3]]).sum())]
    assert abs(loss - (-np.mean(anchor_terms))) < ATOL


@pytest.mark.parametrize("labels", [[0], [0, 1, 2, 3]], ids=["batch_of_one", "all_distinct"])
def test_supcon_without_any_positive_is_zero_with_zero_gradient(labels):
    features = torch.randn(len(labels), 4, requires_grad=True)
    loss = supervised_contrastive_loss(features, torch.tensor(labels))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(features.grad, torch.zeros_like(features))


def test_supcon_one_class_and_bf16():
    generator = torch.Generator().manual_seed(13)
    features = torch.randn(6, 8, generator=generator).bfloat16().requires_grad_()
    labels = torch.zeros(6, dtype=torch.long)
    loss = supervised_contrastive_loss(features, labels)
    loss.backward()
    assert loss.dtype == torch.float32
    assert abs(loss.item() - reference_supcon(features.detach().float().numpy(), labels.numpy())) < ATOL
    assert torch.isfinite(features.grad.float()).all()


# ---- joint loss ----


def test_joint_loss_paper_matches_reference():
    logits, labels = make_batch(seed=20)
    expected = reference_cross_entropy(logits.numpy(), labels.numpy()) + reference_paper_scl(
        logits.numpy(), labels.numpy()
    )
    assert abs(joint_loss(logits, labels).item() - expected) < ATOL


def test_joint_loss_weight_and_temperature():
    logits, labels = make_batch(seed=21)
    expected = reference_cross_entropy(logits.numpy(), labels.numpy()) + 0.3 * reference_paper_scl(
        logits.numpy(), labels.numpy(), temperature=4.0
    )
    loss = joint_loss(logits, labels, scl_weight=0.3, scl_temperature=4.0)
    assert abs(loss.item() - expected) < ATOL
    ce_only = joint_loss(logits, labels, scl_weight=0.0)
    assert abs(ce_only.item() - reference_cross_entropy(logits.numpy(), labels.numpy())) < ATOL


def test_joint_loss_standard_matches_reference():
    logits, labels = make_batch(seed=22)
    features = torch.randn(8, 16, generator=torch.Generator().manual_seed(22))
    expected = reference_cross_entropy(logits.numpy(), labels.numpy()) + 0.5 * reference_supcon(
        features.numpy(), labels.numpy(), temperature=0.2
    )
    loss = joint_loss(logits, labels, features=features, scl_variant="standard", scl_weight=0.5, scl_temperature=0.2)
    assert abs(loss.item() - expected) < ATOL


def test_joint_loss_regression_is_mse_only():
    generator = torch.Generator().manual_seed(23)
    predictions = torch.randn(7, 1, generator=generator)
    targets = torch.rand(7, generator=generator) * 5
    expected = sum((p - t) ** 2 for p, t in zip(predictions[:, 0].tolist(), targets.tolist(), strict=True)) / 7
    for variant in ("paper", "standard"):
        assert abs(joint_loss(predictions, targets, scl_variant=variant).item() - expected) < ATOL
    # Regression in bf16 is also computed in float32.
    loss = joint_loss(predictions.bfloat16(), targets)
    assert loss.dtype == torch.float32


@pytest.mark.parametrize("variant", ["paper", "standard"])
@pytest.mark.parametrize(
    "labels", [[2], [1, 1, 1, 1], [0, 1, 2]], ids=["batch_of_one", "one_class", "every_class_once"]
)
def test_joint_loss_edge_cases_are_finite_and_correct(variant, labels):
    labels = torch.tensor(labels)
    generator = torch.Generator().manual_seed(24)
    logits = torch.randn(len(labels), 3, generator=generator, requires_grad=True)
    features = torch.randn(len(labels), 5, generator=generator, requires_grad=True)
    loss = joint_loss(logits, labels, features=features, scl_variant=variant)
    loss.backward()
    scl = (
        reference_paper_scl(logits.detach().numpy(), labels.numpy())
        if variant == "paper"
        else reference_supcon(features.detach().numpy(), labels.numpy())
    )
    expected = reference_cross_entropy(logits.detach().numpy(), labels.numpy()) + scl
    assert abs(loss.item() - expected) < ATOL
    assert torch.isfinite(logits.grad).all()
    if variant == "standard":
        assert torch.isfinite(features.grad).all()


@pytest.mark.parametrize("variant", ["paper", "standard"])
def test_joint_loss_bf16(variant):
    logits, labels = make_batch(seed=25)
    features = torch.randn(8, 16, generator=torch.Generator().manual_seed(25))
    logits, features = logits.bfloat16().requires_grad_(), features.bfloat16().requires_grad_()
    loss = joint_loss(logits, labels, features=features, scl_variant=variant)
    loss.backward()
    z, f = logits.detach().float().numpy(), features.detach().float().numpy()
    scl = reference_paper_scl(z, labels.numpy()) if variant == "paper" else reference_supcon(f, labels.numpy())
    assert loss.dtype == torch.float32
    assert abs(loss.item() - (reference_cross_entropy(z, labels.numpy()) + scl)) < ATOL
    assert torch.isfinite(logits.grad.float()).all()


def test_joint_loss_accepts_column_labels():
    logits, labels = make_batch(seed=26)
    torch.testing.assert_close(joint_loss(logits, labels[:, None]), joint_loss(logits, labels))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"labels": torch.zeros(5, dtype=torch.long)}, "one label per example"),
        ({"logits": torch.randn(8)}, "shape"),
        ({"logits": torch.randn(0, 3), "labels": torch.zeros(0, dtype=torch.long)}, "empty"),
        ({"scl_variant": "simclr"}, "scl_variant"),
        ({"scl_variant": "standard"}, "features"),
        ({"scl_variant": "standard", "features": torch.randn(5, 4)}, "rows"),
        ({"scl_weight": -1.0}, "scl_weight"),
        ({"scl_weight": math.nan}, "scl_weight"),
        ({"scl_temperature": 0.0}, "scl_temperature"),
        ({"labels": torch.zeros(8)}, "integer class labels"),
    ],
)
def test_joint_loss_rejects_bad_input(kwargs, message):
    logits, labels = make_batch(seed=27)
    arguments = {"logits": logits, "labels": labels, **kwargs}
    with pytest.raises(ValueError, match=message):
        joint_loss(arguments.pop("logits"), arguments.pop("labels"), **arguments)


def test_contrastive_losses_reject_bad_input():
    with pytest.raises(ValueError, match="one label per example"):
        paper_supervised_contrastive_loss(torch.randn(4, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        paper_supervised_contrastive_loss(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), temperature=-1.0)
    with pytest.raises(ValueError, match="shape"):
        supervised_contrastive_loss(torch.randn(4, 3, 2), torch.zeros(4, dtype=torch.long))
