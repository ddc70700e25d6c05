"""The LightMobileBERT configuration and models: the code every checkpoint ships for ``trust_remote_code``."""

from .configuration_light_mobilebert import LightMobileBertConfig
from .modeling_light_mobilebert import (
    LightMobileBertForSequenceClassification,
    LightMobileBertModel,
    LightMobileBertPreTrainedModel,
)


__all__ = [
    "LightMobileBertConfig",
    "LightMobileBertForSequenceClassification",
    "LightMobileBertModel",
    "LightMobileBertPreTrainedModel",
]
