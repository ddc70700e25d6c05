"""light-mobilebert: LightMobileBERT for transformers.

Importing the package registers LightMobileBERT with `AutoConfig`, `AutoModel` and
`AutoModelForSequenceClassification`, and marks the classes so that `save_pretrained` writes `auto_map` and copies
the modeling files into the checkpoint (which then loads with `trust_remote_code=True` without this package).
"""

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from .losses import joint_loss, paper_supervised_contrastive_loss, supervised_contrastive_loss
from .modeling import (
    LightMobileBertConfig,
    LightMobileBertForSequenceClassification,
    LightMobileBertModel,
    LightMobileBertPreTrainedModel,
)
from .optimization import BertAdam, LMBertAdam, get_paper_schedule
from .trainer import LightMobileBertTrainer, LightMobileBertTrainingArguments


__version__ = "0.1.0"

AutoConfig.register(LightMobileBertConfig.model_type, LightMobileBertConfig, exist_ok=True)
AutoModel.register(LightMobileBertConfig, LightMobileBertModel, exist_ok=True)
AutoModelForSequenceClassification.register(
    LightMobileBertConfig, LightMobileBertForSequenceClassification, exist_ok=True
)
LightMobileBertConfig.register_for_auto_class()
LightMobileBertModel.register_for_auto_class("AutoModel")
LightMobileBertForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "BertAdam",
    "LMBertAdam",
    "LightMobileBertConfig",
    "LightMobileBertForSequenceClassification",
    "LightMobileBertModel",
    "LightMobileBertPreTrainedModel",
    "LightMobileBertTrainer",
    "LightMobileBertTrainingArguments",
    "get_paper_schedule",
    "joint_loss",
    "paper_supervised_contrastive_loss",
    "supervised_contrastive_loss",
]
