"""Tests of `light_mobilebert.optimization` against step-by-step NumPy references and closed forms.

The references follow `LMBertAdam.step`, `BertAdam.step` and the schedule of `run_glue.py` in
DeguangChen/LightMobileBert.
"""

import io
import math

import numpy as np
import pytest
import torch

from light_mobilebert.optimization import BertAdam, LMBertAdam, get_paper_schedule


ATOL = 1e-6


def reference_adam(params, grads, lr, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, max_grad_norm=1.0, **options):
    """
    Runs the authors' update on NumPy arrays: `params` is a list of arrays, `grads` a list (one per step) of lists of
    arrays. `bias_correction` selects LMBertAdam (True) or BertAdam (False); `global_clip` clips the norm of all the
    gradients together instead of each parameter's, to check that the tests can tell the two apart.
    """
    bias_correction = options.get("bias_correction", True)
    global_clip = options.get("global_clip", False)
    beta1, beta2 = betas
    params = [np.array(p, dtype=np.float64) for p in params]
    exp_avg = [np.zeros_like(p) for p in params]
    exp_avg_sq = [np.zeros_like(p) for p in params]
    for step, step_grads in enumerate(grads, start=1):
        step_grads = [np.array(g, dtype=np.float64) for g in step_grads]
        if max_grad_norm is not None:
            if global_clip:
                norms = [math.sqrt(sum(float((g**2).sum()) for g in step_grads))] * len(step_grads)
            else:
                norms = [math.sqrt(float((g**2).sum())) for g in step_grads]
            step_grads = [g * min(1.0, max_grad_norm / (n + 1e-6)) for g, n in zip(step_grads, norms, strict=True)]
        for i, g in enumerate(step_grads):
            exp_avg[i] = beta1 * exp_avg[i] + (1 - beta1) * g
            exp_avg_sq[i] = beta2 * exp_avg_sq[i] + (1 - beta2) * g * g
            if bias_correction:
                m_hat, v_hat = exp_avg[i] / (1 - beta1**step), exp_avg_sq[i] / (1 - beta2**step)
            else:
                m_hat, v_hat = exp_avg[i], exp_avg_sq[i]
            update = m_hat / (np.sqrt(v_hat) + eps)
            if weight_decay > 0:
                update = update + weight_decay * params[i]
            params[i] = params[i] - lr * update
    return params


def authors_lr_multiplier(step, t_total):
    """`lr_scheduled / lr` in the authors' optimizer for its update `state["step"] = step` (counted from 1)."""
    warmup_steps = int(t_total / 3)
    if warmup_steps > step:
        return 1.0
    progress = float(step - warmup_steps) / t_total
    warmup = max(-1, 0.0)  # `run_glue.py` passes warmup=-1, which `_LRSchedule` clamps to 0
    return max((progress - 1.0) / (warmup - 1.0), 0.0)


def make_problem(num_steps=5, seed=0, grad_scales=(3.0, 0.05)):
    """Two float64 parameters and a sequence of gradients, one clipped and one not (with max_grad_norm=1)."""
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=(3, 4)), rng.normal(size=(5,))]
    grads = [
        [rng.normal(size=p.shape) * scale for p, scale in zip(params, grad_scales, strict=True)]
        for _ in range(num_steps)
    ]
    return params, grads


def run_torch(optimizer_cls, params, grads, **kwargs):
    tensors = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in params]
    optimizer = optimizer_cls(tensors, **kwargs)
    for step_grads in grads:
        for tensor, g in zip(tensors, step_grads, strict=True):
            tensor.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
    return [t.detach().numpy() for t in tensors], optimizer


def assert_all_close(actual, expected, atol=ATOL):
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(a, e, atol=atol, rtol=0)


@pytest.mark.parametrize("optimizer_cls, bias_correction", [(LMBertAdam, True), (BertAdam, False)])
@pytest.mark.parametrize("max_grad_norm", [1.0, None])
def test_matches_reference(optimizer_cls, bias_correction, max_grad_norm):
    params, grads = make_problem()
    kwargs = {"lr": 0.05, "weight_decay": 0.1, "max_grad_norm": max_grad_norm}
    actual, _ = run_torch(optimizer_cls, params, grads, **kwargs)
    expected = reference_adam(params, grads, bias_correction=bias_correction, **kwargs)
    assert_all_close(actual, expected)
    other = reference_adam(params, grads, bias_correction=not bias_correction, **kwargs)
    assert not all(np.allclose(a, o, atol=1e-4) for a, o in zip(actual, other, strict=True))


def test_first_step_bias_correction_closed_form():
    # Step 1: m = 0.1 g and v = 0.001 g^2, so LMBertAdam moves by lr * g / (|g| + eps) and BertAdam by
    # lr * 0.1 g / (sqrt(0.001) |g| + eps), about 3.16 times more.
    p0 = np.array([0.5, -1.0, 2.0])
    g = np.array([0.3, -0.02, 0.7])
    lr, eps = 0.01, 1e-6
    kwargs = {"lr": lr, "eps": eps, "weight_decay": 0.0, "max_grad_norm": None}
    (lm,), _ = run_torch(LMBertAdam, [p0], [[g]], **kwargs)
    (bert,), _ = run_torch(BertAdam, [p0], [[g]], **kwargs)
    np.testing.assert_allclose(lm, p0 - lr * g / (np.abs(g) + eps), atol=ATOL, rtol=0)
    np.testing.assert_allclose(bert, p0 - lr * 0.1 * g / (math.sqrt(0.001) * np.abs(g) + eps), atol=ATOL, rtol=0)


def test_second_step_bias_correction_closed_form():
    p0, g1, g2 = np.array([1.0]), np.array([0.2]), np.array([-0.4])
    lr = 0.01
    (actual,), _ = run_torch(LMBertAdam, [p0], [[g1], [g2]], lr=lr, weight_decay=0.0, max_grad_norm=None)
    m2 = 0.9 * 0.1 * 0.2 + 0.1 * -0.4
    v2 = 0.999 * 0.001 * 0.04 + 0.001 * 0.16
    first = 0.2 / (0.2 + 1e-6)
    second = (m2 / (1 - 0.81)) / (math.sqrt(v2 / (1 - 0.998001)) + 1e-6)
    np.testing.assert_allclose(actual, 1.0 - lr * first - lr * second, atol=ATOL, rtol=0)


@pytest.mark.parametrize("optimizer_cls", [LMBertAdam, BertAdam])
def test_weight_decay_is_decoupled(optimizer_cls):
    # With a zero gradient the Adam direction is 0 / (0 + eps) = 0: only the decay moves the weights, by lr * wd * p.
    # Weight decay folded into the gradient (L2) would instead move them by about lr * sign(p).
    p0 = np.array([2.0, -3.0, 0.5])
    (actual,), _ = run_torch(optimizer_cls, [p0], [[np.zeros(3)]] * 3, lr=0.1, weight_decay=0.01)
    np.testing.assert_allclose(actual, p0 * (1 - 0.1 * 0.01) ** 3, atol=ATOL, rtol=0)


def test_parameter_groups_have_their_own_weight_decay():
    params, grads = make_problem(num_steps=3, seed=1)
    tensors = [torch.tensor(p, requires_grad=True) for p in params]
    optimizer = LMBertAdam([{"params": [tensors[0]]}, {"params": [tensors[1]], "weight_decay": 0.0}], lr=0.05)
    for step_grads in grads:
        for tensor, g in zip(tensors, step_grads, strict=True):
            tensor.grad = torch.tensor(g)
        optimizer.step()
    expected_decayed = reference_adam([params[0]], [[g[0]] for g in grads], lr=0.05, weight_decay=0.01)
    expected_not_decayed = reference_adam([params[1]], [[g[1]] for g in grads], lr=0.05, weight_decay=0.0)
    assert_all_close([t.detach().numpy() for t in tensors], expected_decayed + expected_not_decayed)


def test_clipping_is_per_parameter():
    params, grads = make_problem(seed=2, grad_scales=(5.0, 0.1))
    kwargs = {"lr": 0.05, "weight_decay": 0.0, "max_grad_norm": 1.0}
    actual, _ = run_torch(LMBertAdam, params, grads, **kwargs)
    assert_all_close(actual, reference_adam(params, grads, **kwargs))
    # Clipping the global norm instead shrinks the small gradient too, which Adam does not fully undo through the
    # moments of later steps: the result differs.
    global_clipping = reference_adam(params, grads, global_clip=True, **kwargs)
    assert not np.allclose(actual[1], global_clipping[1], atol=1e-4)


def test_clipping_scales_grad_in_place_like_clip_grad_norm():
    # Norm 50 > 1: the gradient becomes (30, -40) / (50 + 1e-6), as `clip_grad_norm_(p, 1.0)` leaves it.
    p = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    p.grad = torch.tensor([30.0, -40.0], dtype=torch.float64)
    LMBertAdam([p], lr=0.1, max_grad_norm=1.0).step()
    torch.testing.assert_close(p.grad, torch.tensor([30.0, -40.0], dtype=torch.float64) / (50.0 + 1e-6))


def test_parameters_without_gradient_are_skipped():
    p, q = torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    p.grad = torch.ones(2)
    optimizer = LMBertAdam([p, q], lr=0.1)
    optimizer.step()
    assert torch.equal(q.detach(), torch.ones(2))
    assert q not in optimizer.state and optimizer.state[p]["step"] == 1


def test_float32_parameters_match_reference():
    params, grads = make_problem(seed=3)
    tensors = [torch.tensor(p, dtype=torch.float32, requires_grad=True) for p in params]
    optimizer = LMBertAdam(tensors, lr=1e-3)
    for step_grads in grads:
        for tensor, g in zip(tensors, step_grads, strict=True):
            tensor.grad = torch.tensor(g, dtype=torch.float32)
        optimizer.step()
    assert_all_close([t.detach().double().numpy() for t in tensors], reference_adam(params, grads, lr=1e-3))


@pytest.mark.parametrize("optimizer_cls, bias_correction", [(LMBertAdam, True), (BertAdam, False)])
def test_state_dict_round_trip(optimizer_cls, bias_correction):
    params, grads = make_problem(num_steps=5, seed=4)
    kwargs = {"lr": 0.05, "weight_decay": 0.1}
    first_params, first = run_torch(optimizer_cls, params, grads[:3], **kwargs)

    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state_dict = torch.load(buffer, weights_only=True)

    tensors = [torch.tensor(p, requires_grad=True) for p in first_params]
    resumed = optimizer_cls(tensors, lr=1.0)  # hyper-parameters come back with the state dict
    resumed.load_state_dict(state_dict)
    assert resumed.param_groups[0]["lr"] == 0.05
    for step_grads in grads[3:]:
        for tensor, g in zip(tensors, step_grads, strict=True):
            tensor.grad = torch.tensor(g)
        resumed.step()
    assert resumed.state[tensors[0]]["step"] == 5
    expected = reference_adam(params, grads, bias_correction=bias_correction, **kwargs)
    assert_all_close([t.detach().numpy() for t in tensors], expected)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": -1e-3}, "learning rate"),
        ({"lr": math.nan}, "learning rate"),
        ({"betas": (1.0, 0.999)}, "betas"),
        ({"betas": (0.9, -0.1)}, "betas"),
        ({"eps": -1e-8}, "epsilon"),
        ({"weight_decay": -0.01}, "weight_decay"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"max_grad_norm": -1.0}, "max_grad_norm"),
    ],
)
@pytest.mark.parametrize("optimizer_cls", [LMBertAdam, BertAdam])
def test_rejects_bad_hyperparameters(optimizer_cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        optimizer_cls([torch.zeros(1, requires_grad=True)], **{"lr": 1e-3, **kwargs})


def test_sparse_gradients_are_rejected():
    p = torch.zeros(3, requires_grad=True)
    p.grad = torch.zeros(3).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        LMBertAdam([p], lr=0.1).step()


# ---- schedule ----


def schedule_lrs(num_training_steps, lr=0.1):
    """The learning rate each of the `num_training_steps` updates uses, and the scheduler's after the last one."""
    p = torch.zeros(1, requires_grad=True)
    optimizer = LMBertAdam([p], lr=lr)
    scheduler = get_paper_schedule(optimizer, num_training_steps)
    used = []
    for _ in range(num_training_steps):
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return used, scheduler.get_last_lr()[0]


@pytest.mark.parametrize("num_training_steps", [30, 31, 7, 1])
def test_schedule_matches_authors_code(num_training_steps):
    used, _ = schedule_lrs(num_training_steps)
    expected = [0.1 * authors_lr_multiplier(t, num_training_steps) for t in range(1, num_training_steps + 1)]
    np.testing.assert_allclose(used, expected, atol=1e-12, rtol=0)


def test_schedule_closed_form_at_key_steps():
    # T = 30: constant for the first T/3 = 10 updates, then lr * (1 - (t - 10) / 30) for update t (from 1).
    used, after_last = schedule_lrs(30, lr=0.1)
    assert used[0] == pytest.approx(0.1, abs=1e-12)  # step 0
    assert used[9] == pytest.approx(0.1, abs=1e-12)  # update t = T/3 is the last constant one
    assert used[10] == pytest.approx(0.1 * (1 - 1 / 30), abs=1e-12)  # step T/3: the first decayed update
    assert used[15] == pytest.approx(0.1 * (1 - 6 / 30), abs=1e-12)  # step T/2
    assert used[29] == pytest.approx(0.1 / 3, abs=1e-12)  # update t = T ends at lr / 3
    assert after_last == pytest.approx(0.1 * (1 / 3 - 1 / 30), abs=1e-12)  # step T, used by no update


def test_schedule_state_dict_round_trip():
    p = torch.zeros(1, requires_grad=True)
    optimizer = LMBertAdam([p], lr=0.1)
    scheduler = get_paper_schedule(optimizer, 30)
    for _ in range(17):
        optimizer.step()
        scheduler.step()

    # The order of `Trainer` when resuming: build both, then load the optimizer's state and the scheduler's.
    resumed_optimizer = LMBertAdam([torch.zeros(1, requires_grad=True)], lr=0.1)
    resumed = get_paper_schedule(resumed_optimizer, 30)
    resumed_optimizer.load_state_dict(optimizer.state_dict())
    resumed.load_state_dict(scheduler.state_dict())
    assert resumed.last_epoch == 17
    # Update 18 (counted from 1) is the next one, then update 19.
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * authors_lr_multiplier(18, 30), abs=1e-12)
    resumed_optimizer.step()
    resumed.step()
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * authors_lr_multiplier(19, 30), abs=1e-12)


def test_schedule_rejects_no_steps():
    with pytest.raises(ValueError, match="num_training_steps"):
        get_paper_schedule(LMBertAdam([torch.zeros(1, requires_grad=True)], lr=0.1), 0)
