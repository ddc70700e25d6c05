"""Tests of `light_mobilebert.trainer` with tiny random BERT models (hidden size 32, 2 layers, no dropout).

References are computed here from the model's own forward pass with plain PyTorch autograd or NumPy, never with the
trainer: the loss of a batch, the gradient of a full batch, the gradient of a distributed global batch.
"""

import copy
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_losses import authors_supcon, reference_cross_entropy, reference_paper_scl, reference_supcon
from torch import nn
from torch.utils.data import Dataset, SequentialSampler
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    HfArgumentParser,
    MobileBertConfig,
    MobileBertForSequenceClassification,
    TrainerCallback,
    TrainingArguments,
)
from transformers.models.mobilebert.modeling_mobilebert import NoNorm

from light_mobilebert.optimization import BertAdam, LMBertAdam
from light_mobilebert.trainer import LightMobileBertTrainer, LightMobileBertTrainingArguments


SEQ_LEN = 8
VOCAB = 99


def tiny_bert(num_labels=3, seed=0):
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=num_labels,
        # Logits of order 1 rather than 0.01: the paper's contrastive term on the logits is then far from negligible.
        initializer_range=0.5,
    )
    return BertForSequenceClassification(config)


class ToyDataset(Dataset):
    def __init__(self, size=16, num_labels=3, seed=0):
        generator = torch.Generator().manual_seed(seed)
        self.input_ids = torch.randint(1, VOCAB, (size, SEQ_LEN), generator=generator)
        if num_labels == 1:
            self.labels = torch.rand(size, generator=generator) * 5
        else:
            self.labels = torch.randint(0, num_labels, (size,), generator=generator)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {
            "input_ids": self.input_ids[index],
            "attention_mask": torch.ones(SEQ_LEN, dtype=torch.long),
            "labels": self.labels[index],
        }

    def batch(self, indices=None):
        indices = range(len(self)) if indices is None else indices
        return {key: torch.stack([self[i][key] for i in indices]) for key in ("input_ids", "attention_mask", "labels")}


def make_args(tmp_path, **kwargs):
    defaults = {
        "output_dir": str(tmp_path),
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
        "seed": 0,
        "learning_rate": 1e-3,
        "per_device_train_batch_size": 4,
    }
    return LightMobileBertTrainingArguments(**{**defaults, **kwargs})


class GradientRecorder(TrainerCallback):
    """Keeps a copy of the gradients the optimizer is about to use (after accumulation and clipping)."""

    def __init__(self):
        self.gradients = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.gradients.append({name: p.grad.detach().clone() for name, p in model.named_parameters()})


class RecordingTrainer(LightMobileBertTrainer):
    """Records the loss of every micro-batch, and reads the training set in order when `sequential` is set."""

    sequential = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.losses = []

    def _get_train_sampler(self, train_dataset=None):
        if self.sequential:
            return SequentialSampler(self.train_dataset if train_dataset is None else train_dataset)
        return super()._get_train_sampler(train_dataset)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.losses.append(loss.item())
        return loss


def reference_gradients(model, batches, loss_fn):
    """Plain autograd: the mean over `batches` of the gradients of `loss_fn(logits, labels, hidden_states)`."""
    model = copy.deepcopy(model)
    model.zero_grad()
    for batch in batches:
        outputs = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
        )
        (loss_fn(outputs.logits, batch["labels"], outputs.hidden_states) / len(batches)).backward()
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


def assert_gradients_close(actual, expected, atol=1e-6):
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=atol, rtol=1e-5, msg=name)


# ---- arguments ----


def test_arguments_defaults_and_help(tmp_path):
    args = make_args(tmp_path)
    assert (args.loss, args.scl_variant, args.scl_weight, args.scl_temperature) == ("joint", "paper", 1.0, None)
    assert (args.optimizer, args.lr_schedule, args.weight_decay, args.adam_epsilon) == (
        "lmbert_adam",
        "paper",
        0.01,
        1e-6,
    )
    fields = LightMobileBertTrainingArguments.__dataclass_fields__
    for name in ("loss", "scl_variant", "scl_weight", "scl_temperature", "optimizer", "lr_schedule"):
        assert fields[name].metadata["help"]


def test_arguments_parse_from_command_line(tmp_path):
    parser = HfArgumentParser(LightMobileBertTrainingArguments)
    (args,) = parser.parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--loss", "ce", "--scl_temperature", "0.5", "--optimizer", "bert_adam"]
    )
    assert (args.loss, args.scl_temperature, args.optimizer) == ("ce", 0.5, "bert_adam")
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--lr_schedule", "cosine"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"loss": "mse"}, "loss"),
        ({"scl_variant": "simclr"}, "scl_variant"),
        ({"scl_weight": -0.5}, "scl_weight"),
        ({"scl_temperature": 0.0}, "scl_temperature"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"lr_schedule": "cosine"}, "lr_schedule"),
        ({"label_smoothing_factor": 0.1}, "label_smoothing_factor"),
    ],
)
def test_arguments_validation(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_args(tmp_path, **kwargs)


def test_trainer_rejects_foreign_arguments(tmp_path):
    with pytest.raises(TypeError, match="LightMobileBertTrainingArguments"):
        LightMobileBertTrainer(model=tiny_bert(), args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True))
    with pytest.raises(ValueError, match="compute_loss_func"):
        LightMobileBertTrainer(model=tiny_bert(), args=make_args(tmp_path), compute_loss_func=lambda *a, **k: 0)


# ---- optimizer and schedule ----


def no_decay_reference(model, norm_types):
    """Names of the parameters that must not be decayed: biases and the weights of normalisation modules."""
    names = {name for name, _ in model.named_parameters() if name.endswith(".bias")}
    for module_name, module in model.named_modules():
        if isinstance(module, norm_types):
            names.update(f"{module_name}.{param_name}" for param_name, _ in module.named_parameters())
    return names


def tiny_mobilebert():
    torch.manual_seed(0)
    config = MobileBertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        embedding_size=16,
        intra_bottleneck_size=16,
        true_hidden_size=16,
        num_attention_heads=4,
        intermediate_size=37,
        num_hidden_layers=2,
        num_feedforward_networks=2,
        max_position_embeddings=64,
        num_labels=3,
    )
    return MobileBertForSequenceClassification(config)


@pytest.mark.parametrize(
    "make_model, norm_types", [(tiny_bert, (nn.LayerNorm,)), (tiny_mobilebert, (nn.LayerNorm, NoNorm))]
)
@pytest.mark.parametrize("optimizer, optimizer_cls", [("lmbert_adam", LMBertAdam), ("bert_adam", BertAdam)])
def test_optimizer_and_weight_decay_groups(tmp_path, make_model, norm_types, optimizer, optimizer_cls):
    model = make_model()
    args = make_args(tmp_path, optimizer=optimizer, weight_decay=0.02, adam_beta2=0.98, max_grad_norm=2.0)
    built = LightMobileBertTrainer(model=model, args=args).create_optimizer()
    assert type(built) is optimizer_cls
    names = {id(p): name for name, p in model.named_parameters()}
    decayed = {names[id(p)] for g in built.param_groups if g["weight_decay"] == 0.02 for p in g["params"]}
    not_decayed = {names[id(p)] for g in built.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    expected_not_decayed = no_decay_reference(model, norm_types)
    assert not_decayed == expected_not_decayed
    assert decayed == set(names.values()) - expected_not_decayed
    if make_model is tiny_mobilebert:
        assert any(isinstance(m, NoNorm) for m in model.modules())
    for group in built.param_groups:
        assert group["lr"] == 1e-3 and group["betas"] == (0.9, 0.98) and group["eps"] == 1e-6
        assert group["max_grad_norm"] == 2.0


def test_optimizer_clipping_follows_max_grad_norm_and_adamw(tmp_path):
    built = LightMobileBertTrainer(model=tiny_bert(), args=make_args(tmp_path, max_grad_norm=0.0)).create_optimizer()
    assert all(group["max_grad_norm"] is None for group in built.param_groups)
    adamw = LightMobileBertTrainer(model=tiny_bert(), args=make_args(tmp_path, optimizer="adamw")).create_optimizer()
    assert isinstance(adamw, torch.optim.AdamW)


def test_paper_schedule(tmp_path):
    trainer = LightMobileBertTrainer(model=tiny_bert(), args=make_args(tmp_path, learning_rate=0.1))
    trainer.create_optimizer_and_scheduler(num_training_steps=30)
    used = []
    for _ in range(30):
        used.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.optimizer.step()  # no gradients: only keeps the optimizer-then-scheduler order
        trainer.lr_scheduler.step()
    # Constant for the first 10 updates, then 0.1 * (1 - (t - 10) / 30) for update t counted from 1.
    expected = [0.1 if t <= 10 else 0.1 * (1 - (t - 10) / 30) for t in range(1, 31)]
    np.testing.assert_allclose(used, expected, atol=1e-12, rtol=0)


def test_hf_schedule(tmp_path):
    args = make_args(tmp_path, learning_rate=0.1, lr_schedule="hf", lr_scheduler_type="linear", warmup_steps=3)
    trainer = LightMobileBertTrainer(model=tiny_bert(), args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=30)
    used = []
    for _ in range(30):
        used.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.optimizer.step()  # no gradients: only keeps the optimizer-then-scheduler order
        trainer.lr_scheduler.step()
    expected = [0.1 * k / 3 if k < 3 else 0.1 * (30 - k) / 27 for k in range(30)]
    np.testing.assert_allclose(used, expected, atol=1e-12, rtol=0)


# ---- loss ----


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"scl_weight": 0.5, "scl_temperature": 3.0}, {"loss": "ce"}, {"scl_variant": "standard", "scl_weight": 0.7}],
    ids=["paper", "paper_weighted", "ce", "standard"],
)
def test_compute_loss_matches_reference(tmp_path, kwargs):
    model, data = tiny_bert(), ToyDataset(size=8)
    args = make_args(tmp_path, **kwargs)
    trainer = LightMobileBertTrainer(model=model, args=args)
    batch = data.batch()
    loss, outputs = trainer.compute_loss(model, dict(batch), return_outputs=True)

    with torch.no_grad():
        reference = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
        )
    logits, labels = reference.logits.numpy(), batch["labels"].numpy()
    expected = reference_cross_entropy(logits, labels)
    if args.loss == "joint" and args.scl_variant == "paper":
        expected += args.scl_weight * reference_paper_scl(logits, labels, temperature=args.scl_temperature or 10.0)
    elif args.loss == "joint":
        features = reference.hidden_states[-1][:, 0].numpy()
        expected += args.scl_weight * reference_supcon(features, labels, temperature=0.1)
    assert abs(loss.item() - expected) < 1e-6
    # Evaluation reads every output but the loss as predictions: the hidden states the loss needed are not returned.
    assert "hidden_states" not in outputs
    torch.testing.assert_close(outputs["logits"], reference.logits)


def test_compute_loss_regression_is_mse(tmp_path):
    model, data = tiny_bert(num_labels=1), ToyDataset(size=6, num_labels=1)
    trainer = LightMobileBertTrainer(model=model, args=make_args(tmp_path))
    batch = data.batch()
    loss = trainer.compute_loss(model, dict(batch))
    with torch.no_grad():
        predictions = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]
    expected = float(np.mean((predictions.double().numpy() - batch["labels"].double().numpy()) ** 2))
    assert abs(loss.item() - expected) < 1e-6


def test_compute_loss_needs_labels(tmp_path):
    model = tiny_bert()
    trainer = LightMobileBertTrainer(model=model, args=make_args(tmp_path))
    batch = ToyDataset(size=2).batch()
    del batch["labels"]
    with pytest.raises(ValueError, match="labels"):
        trainer.compute_loss(model, batch)


def test_evaluate_with_standard_variant(tmp_path):
    model, data = tiny_bert(), ToyDataset(size=8)
    args = make_args(tmp_path, scl_variant="standard", per_device_eval_batch_size=8)
    trainer = LightMobileBertTrainer(model=model, args=args, eval_dataset=data)
    prediction = trainer.predict(data)
    assert prediction.predictions.shape == (8, 3)
    with torch.no_grad():
        reference = model(**{k: v for k, v in data.batch().items() if k != "labels"}, output_hidden_states=True)
    labels = data.labels.numpy()
    expected = reference_cross_entropy(reference.logits.numpy(), labels) + reference_supcon(
        reference.hidden_states[-1][:, 0].numpy(), labels
    )
    assert abs(prediction.metrics["test_loss"] - expected) < 1e-5


# ---- gradient accumulation ----


def train_one_step(tmp_path, model, data, batch_size, accumulation, **kwargs):
    recorder = GradientRecorder()
    args = make_args(
        tmp_path,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        max_grad_norm=0.0,  # no clipping: a gradient twice too large must not be rescaled to the same norm
        **kwargs,
    )
    trainer = RecordingTrainer(model=model, args=args, train_dataset=data, callbacks=[recorder])
    trainer.sequential = True
    trainer.train()
    return recorder.gradients[0]


def test_gradient_accumulation_matches_full_batch_for_ce(tmp_path):
    data = ToyDataset(size=16)
    reference_model = tiny_bert()
    expected = reference_gradients(
        reference_model, [data.batch()], lambda logits, labels, _: F.cross_entropy(logits, labels)
    )

    full, accumulated = tiny_bert(), tiny_bert()
    full_gradients = train_one_step(tmp_path / "full", full, data, 16, 1, loss="ce")
    accumulated_gradients = train_one_step(tmp_path / "accumulated", accumulated, data, 8, 2, loss="ce")
    assert_gradients_close(full_gradients, expected)
    assert_gradients_close(accumulated_gradients, expected)
    for (name, p), q in zip(full.named_parameters(), accumulated.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0, msg=name)


def test_gradient_accumulation_averages_joint_loss_over_micro_batches(tmp_path):
    # The contrastive term of each micro-batch sees only that micro-batch (see the trainer's docstring).
    data = ToyDataset(size=16)

    def joint(logits, labels, _):
        return F.cross_entropy(logits, labels) + authors_supcon(logits, labels)

    expected = reference_gradients(tiny_bert(), [data.batch(range(8)), data.batch(range(8, 16))], joint)
    gradients = train_one_step(tmp_path, tiny_bert(), data, 8, 2)
    assert_gradients_close(gradients, expected)


# ---- resume ----


def test_resume_continues_the_same_run(tmp_path):
    data = ToyDataset(size=12)
    kwargs = {"num_train_epochs": 2, "save_strategy": "steps", "save_steps": 3, "learning_rate": 1e-2}

    uninterrupted_model = tiny_bert()
    uninterrupted = RecordingTrainer(
        model=uninterrupted_model, args=make_args(tmp_path / "a", **kwargs), train_dataset=data
    )
    uninterrupted.train()
    assert len(uninterrupted.losses) == 6

    resumed_model = tiny_bert(seed=1)  # the checkpoint's weights replace these
    resumed = RecordingTrainer(model=resumed_model, args=make_args(tmp_path / "b", **kwargs), train_dataset=data)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-3"))
    assert resumed.state.global_step == 6
    np.testing.assert_allclose(resumed.losses, uninterrupted.losses[3:], atol=1e-6, rtol=0)
    assert resumed.optimizer.state[next(resumed_model.parameters())]["step"] == 6
    assert resumed.lr_scheduler.last_epoch == 6
    for (name, p), q in zip(uninterrupted_model.named_parameters(), resumed_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0, msg=name)


# ---- distributed data parallel ----

DDP_WORKER = textwrap.dedent(
    """
    import os
    import sys

    import torch
    from test_trainer import GradientRecorder, RecordingTrainer, ToyDataset, make_args, tiny_bert


    class InputRecordingTrainer(RecordingTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            if not hasattr(self, "first_inputs"):
                self.first_inputs = {key: value.clone() for key, value in inputs.items()}
            return super().training_step(model, inputs, num_items_in_batch)


    output_dir, rank = sys.argv[1], int(os.environ["RANK"])
    for variant in ("paper", "standard"):
        model, recorder = tiny_bert(), GradientRecorder()
        args = make_args(
            os.path.join(output_dir, variant), max_steps=3, max_grad_norm=0.0, scl_variant=variant, ddp_backend="gloo"
        )
        trainer = InputRecordingTrainer(
            model=model, args=args, train_dataset=ToyDataset(size=16), callbacks=[recorder]
        )
        trainer.train()
        result = {
            "world_size": args.world_size,
            "first_inputs": trainer.first_inputs,
            "first_gradients": recorder.gradients[0],
            "state_dict": model.state_dict(),
        }
        torch.save(result, os.path.join(output_dir, f"{variant}-rank{rank}.pt"))
    """
)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_contrasts_the_global_batch(tmp_path):
    script = tmp_path / "ddp_worker.py"
    script.write_text(DDP_WORKER)
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    completed = subprocess.run(
        [*command, str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-5000:]

    losses = {
        "paper": lambda logits, labels, _: F.cross_entropy(logits, labels) + authors_supcon(logits, labels),
        "standard": lambda logits, labels, hidden: (
            F.cross_entropy(logits, labels) + torch_supcon(hidden[-1][:, 0], labels)
        ),
    }
    for variant, loss_fn in losses.items():
        ranks = [torch.load(tmp_path / f"{variant}-rank{rank}.pt", weights_only=True) for rank in (0, 1)]
        assert [r["world_size"] for r in ranks] == [2, 2]
        # Every process ends with the same weights.
        for name, value in ranks[0]["state_dict"].items():
            assert torch.equal(value, ranks[1]["state_dict"][name]), name

        shards = [{k: r["first_inputs"][k] for k in ("input_ids", "attention_mask", "labels")} for r in ranks]
        global_batch = {key: torch.cat([shard[key] for shard in shards]) for key in shards[0]}
        expected = reference_gradients(tiny_bert(), [global_batch], loss_fn)
        for r in ranks:
            assert_gradients_close(r["first_gradients"], expected, atol=1e-5)
        # Contrasting each process's shard alone gives another gradient: the test tells the two apart.
        per_shard = reference_gradients(tiny_bert(), shards, loss_fn)
        assert any(not torch.allclose(per_shard[name], expected[name], atol=1e-4, rtol=0) for name in expected), (
            variant
        )


def torch_supcon(features, labels, temperature=0.1):
    """Khosla et al. eq. (2), one anchor at a time with autograd, anchors without positives left out."""
    features = features / features.norm(dim=1, keepdim=True)
    terms = []
    for i in range(len(labels)):
        positives = [j for j in range(len(labels)) if j != i and labels[j] == labels[i]]
        if not positives:
            continue
        others = torch.stack([features[i] @ features[k] / temperature for k in range(len(labels)) if k != i])
        log_denominator = torch.log(torch.exp(others).sum())
        terms.append(
            torch.stack([features[i] @ features[j] / temperature - log_denominator for j in positives]).mean()
        )
    return -torch.stack(terms).mean()
