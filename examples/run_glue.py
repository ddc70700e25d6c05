#!/usr/bin/env python
# Copyright 2025 The light-mobilebert Authors and The HuggingFace Inc. team. All rights reserved.
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
"""
Fine-tunes a sequence classification model on a GLUE task with the LightMobileBERT recipe.

Modelled on transformers' `examples/pytorch/text-classification/run_glue.py`. The differences:

- training runs through [`LightMobileBertTrainer`], so `--loss`, `--scl_variant`, `--scl_weight`,
  `--scl_temperature`, `--optimizer` and `--lr_schedule` choose between the paper's recipe and the stock one;
- `--glue_dir` reads the official GLUE TSV release offline instead of the Hub dataset `nyu-mll/glue`;
- metrics are computed locally (`light_mobilebert.glue.compute_glue_metrics`), since `evaluate.load("glue")` needs
  the Hub;
- the reported dev scores are those of the final checkpoint: nothing selects a checkpoint on the dev set unless the
  user asks for it with `--load_best_model_at_end`.

Any `AutoModelForSequenceClassification` checkpoint works, so baselines run through the same script:

```bash
python examples/run_glue.py \
    --model_name_or_path path/to/light-mobilebert \
    --task_name rte \
    --glue_dir path/to/glue_data \
    --do_train --do_eval \
    --output_dir outputs/rte
```

Arguments can also be given as a single JSON file: `python examples/run_glue.py args.json`.
"""

import logging
import os
import random
import sys
from dataclasses import dataclass, field

import datasets
import numpy as np
import transformers
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EvalPrediction,
    HfArgumentParser,
    default_data_collator,
    set_seed,
)

import light_mobilebert  # noqa: F401  (registers LightMobileBERT with the Auto classes)
from light_mobilebert.glue import GLUE_TASKS, compute_glue_metrics, get_glue_task, load_glue
from light_mobilebert.trainer import LightMobileBertTrainer, LightMobileBertTrainingArguments


logger = transformers.utils.logging.get_logger(__name__)


@dataclass
class DataTrainingArguments:
    """
    Arguments pertaining to what data we are going to input our model for training and eval.
    """

    task_name: str = field(metadata={"help": "The GLUE task to train on: " + ", ".join(GLUE_TASKS)})
    glue_dir: str | None = field(
        default=None,
        metadata={
            "help": (
                "The root of the official GLUE TSV release (one folder per task: CoLA/, SST-2/, MNLI/, ...), read "
                "offline. If not set, the task is loaded from the Hub dataset nyu-mll/glue."
            )
        },
    )
    max_seq_length: int = field(
        default=128,
        metadata={
            "help": (
                "The maximum total input sequence length after tokenization. Sequences longer "
                "than this will be truncated, sequences shorter will be padded."
            )
        },
    )
    pad_to_max_length: bool = field(
        default=True,
        metadata={
            "help": (
                "Whether to pad all samples to `max_seq_length`. "
                "If False, will pad the samples dynamically when batching to the maximum length in the batch."
            )
        },
    )
    max_train_samples: int | None = field(
        default=None,
        metadata={
            "help": (
                "For debugging purposes or quicker training, truncate the number of training examples to this "
                "value if set."
            )
        },
    )
    max_eval_samples: int | None = field(
        default=None,
        metadata={
            "help": (
                "For debugging purposes or quicker training, truncate the number of evaluation examples to this "
                "value if set."
            )
        },
    )

    def __post_init__(self):
        self.task_name = get_glue_task(self.task_name).name


@dataclass
class ModelArguments:
    """
    Arguments pertaining to which model/config/tokenizer we are going to fine-tune from.
    """

    model_name_or_path: str = field(
        metadata={"help": "Path to pretrained model or model identifier from huggingface.co/models"}
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Pretrained tokenizer name or path if not the same as model_name"}
    )
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "Where do you want to store the pretrained models and datasets downloaded from the Hub"},
    )
    model_revision: str = field(
        default="main",
        metadata={"help": "The specific model version to use (can be a branch name, tag name or commit id)."},
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={
            "help": (
                "Whether or not to allow for custom models defined on the Hub in their own modeling files. This "
                "option should only be set to `True` for repositories you trust and in which you have read the code, "
                "as it will execute code present on the Hub on your local machine. LightMobileBERT itself does not "
                "need it: importing light_mobilebert registers it with the Auto classes."
            )
        },
    )
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={
            "help": (
                "Start a new classification head when the checkpoint's has another number of labels (for example "
                "a model fine-tuned on MNLI, 3 labels, then fine-tuned on RTE, 2 labels)."
            )
        },
    )


def parse_args(
    args: list[str] | None = None,
) -> tuple[ModelArguments, DataTrainingArguments, LightMobileBertTrainingArguments]:
    """
    Parses command-line arguments (`sys.argv[1:]` when `args` is `None`), or a single JSON file holding them all.
    """
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, LightMobileBertTrainingArguments))
    args = sys.argv[1:] if args is None else args
    if len(args) == 1 and args[0].endswith(".json"):
        # If we pass only one argument to the script and it's the path to a json file,
        # let's parse it to get our arguments.
        return parser.parse_json_file(json_file=os.path.abspath(args[0]))
    return parser.parse_args_into_dataclasses(args=args)


def main(args: list[str] | None = None) -> dict[str, float]:
    """
    Runs the script with `args` (`sys.argv[1:]` when `None`) and returns the final dev metrics (empty without
    `--do_eval`).
    """
    model_args, data_args, training_args = parse_args(args)

    # Setup logging
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )

    if training_args.should_log:
        # The default of training_args.log_level is passive, so we set log level at info here to have that default.
        transformers.utils.logging.set_verbosity_info()

    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()

    # Log on each process the small summary:
    logger.warning(
        f"Process rank: {training_args.local_rank}, device: {training_args.device}, n_gpu: {training_args.n_gpu}, "
        f"distributed training: {training_args.parallel_mode.value == 'distributed'}"
    )
    logger.info(f"Training/evaluation parameters {training_args}")
    if training_args.load_best_model_at_end:
        logger.warning(
            "--load_best_model_at_end is set: the reported dev scores will be those of the checkpoint that scored "
            f"best on the same dev set by {training_args.metric_for_best_model!r}, an optimistic estimate. Leave it "
            "unset to report the final checkpoint."
        )

    # Set seed before initializing model.
    set_seed(training_args.seed)

    task = get_glue_task(data_args.task_name)
    # `load_glue` reads the official TSV files when `glue_dir` is given and the Hub dataset nyu-mll/glue otherwise;
    # both give the Hub's column names and label ids.
    raw_datasets = load_glue(task.name, glue_dir=data_args.glue_dir, cache_dir=model_args.cache_dir)

    # Load pretrained model and tokenizer. The task decides the head: its size, its label names (in the Hub
    # dataset's order, so ids agree with the data) and its loss, overriding whatever the checkpoint was trained for.
    if task.is_regression:
        label_kwargs = {"num_labels": 1}
    else:
        label_kwargs = {
            "id2label": dict(enumerate(task.label_names)),
            "label2id": {label: i for i, label in enumerate(task.label_names)},
        }
    config = AutoConfig.from_pretrained(
        model_args.model_name_or_path,
        finetuning_task=task.name,
        problem_type="regression" if task.is_regression else "single_label_classification",
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        trust_remote_code=model_args.trust_remote_code,
        **label_kwargs,
    )
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.tokenizer_name if model_args.tokenizer_name else model_args.model_name_or_path,
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        trust_remote_code=model_args.trust_remote_code,
    )
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_args.model_name_or_path,
            config=config,
            cache_dir=model_args.cache_dir,
            revision=model_args.model_revision,
            trust_remote_code=model_args.trust_remote_code,
            ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
        )
    except RuntimeError as error:
        if "ignore_mismatched_sizes" not in str(error):
            raise
        # transformers logs the table of mismatched tensors just before; say what it means for this script.
        raise ValueError(
            f"{model_args.model_name_or_path} has weights of other shapes than a {task.name} classifier needs "
            f"(usually a classification head for another number of labels than {task.num_labels}); pass "
            "--ignore_mismatched_sizes to start those weights afresh."
        ) from None

    # Preprocessing the raw_datasets
    sentence1_key, sentence2_key = task.sentence_keys

    # Padding strategy
    if data_args.pad_to_max_length:
        padding = "max_length"
    else:
        # We will pad later, dynamically at batch creation, to the max sequence length in each batch
        padding = False

    if data_args.max_seq_length > tokenizer.model_max_length:
        logger.warning(
            f"The max_seq_length passed ({data_args.max_seq_length}) is larger than the maximum length for the "
            f"model ({tokenizer.model_max_length}). Using max_seq_length={tokenizer.model_max_length}."
        )
    max_seq_length = min(data_args.max_seq_length, tokenizer.model_max_length)

    def preprocess_function(examples):
        # Tokenize the texts
        texts = (
            (examples[sentence1_key],) if sentence2_key is None else (examples[sentence1_key], examples[sentence2_key])
        )
        return tokenizer(*texts, padding=padding, max_length=max_seq_length, truncation=True)

    def prepare(split: str, max_samples: int | None) -> datasets.Dataset:
        dataset = raw_datasets[split]
        # Truncate before tokenizing, so that a quick run on a sample does not tokenize the whole split.
        if max_samples is not None:
            dataset = dataset.select(range(min(len(dataset), max_samples)))
        with training_args.main_process_first(desc=f"{split} dataset map pre-processing"):
            return dataset.map(preprocess_function, batched=True, desc=f"Running tokenizer on the {split} dataset")

    # MNLI has two dev sets; the matched one is the task's headline score, the mismatched one gets the `_mm` suffix.
    eval_splits = [split for split in task.split_files if split != "train"]
    train_dataset = prepare("train", data_args.max_train_samples) if training_args.do_train else None
    eval_datasets = (
        {split: prepare(split, data_args.max_eval_samples) for split in eval_splits} if training_args.do_eval else {}
    )

    # Log a few random samples from the training set:
    if training_args.do_train:
        for index in random.sample(range(len(train_dataset)), min(3, len(train_dataset))):
            logger.info(f"Sample {index} of the training set: {train_dataset[index]}.")

    # `compute_glue_metrics` takes the logits (or STS-B's `(n, 1)` scores) as they come out of the model.
    def compute_metrics(p: EvalPrediction) -> dict[str, float]:
        preds = p.predictions[0] if isinstance(p.predictions, tuple) else p.predictions
        result = compute_glue_metrics(task.name, preds, p.label_ids)
        if len(result) > 1:
            result["combined_score"] = np.mean(list(result.values())).item()
        return result

    # Data collator will default to DataCollatorWithPadding when the tokenizer is passed to Trainer, so we change it if
    # we already did the padding.
    if data_args.pad_to_max_length:
        data_collator = default_data_collator
    elif training_args.fp16:
        data_collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)
    else:
        data_collator = None

    # Initialize our Trainer. Evaluation during training (`--eval_strategy`) uses the first dev set.
    trainer = LightMobileBertTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_datasets[eval_splits[0]] if training_args.do_eval else None,
        compute_metrics=compute_metrics,
        processing_class=tokenizer,
        data_collator=data_collator,
    )

    # Training
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        metrics = train_result.metrics
        metrics["train_samples"] = len(train_dataset)

        trainer.save_model()  # Saves the tokenizer too for easy upload

        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()

    # Evaluation
    eval_metrics = {}
    if training_args.do_eval:
        logger.info("*** Evaluate ***")
        for split, eval_dataset in eval_datasets.items():
            metrics = trainer.evaluate(eval_dataset=eval_dataset)
            metrics["eval_samples"] = len(eval_dataset)
            if split == "validation_mismatched":
                metrics = {f"{key}_mm": value for key, value in metrics.items()}
            trainer.log_metrics("eval", metrics)
            eval_metrics.update(metrics)
        trainer.save_metrics("eval", eval_metrics)

    kwargs = {
        "finetuned_from": model_args.model_name_or_path,
        "tasks": "text-classification",
        "language": "en",
        "dataset_tags": "glue",
        "dataset_args": task.name,
        "dataset": f"GLUE {task.name.upper()}",
    }
    # The card lists the evaluation results the Trainer logged, so it is written after the final evaluation.
    if training_args.push_to_hub:
        trainer.push_to_hub(**kwargs)
    else:
        trainer.create_model_card(**kwargs)

    return eval_metrics


if __name__ == "__main__":
    main()
