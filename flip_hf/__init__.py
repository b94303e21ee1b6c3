"""flip_hf: FLIP (RecSys 2024) CTR models for the Hugging Face stack.

Importing the package registers FLIP with the Auto classes and the "ctr-prediction" pipeline; every
saved checkpoint also carries FLIP's code, so it loads without flip_hf (`trust_remote_code=True`).
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    AutoProcessor,
)

from .collator import DataCollatorForFlipCTR, DataCollatorForFlipPretraining
from .configuration_flip import FlipConfig
from .modeling_flip import (
    FlipForCTR,
    FlipForCTROutput,
    FlipForPretraining,
    FlipForPretrainingOutput,
    FlipModel,
    FlipModelOutput,
    FlipPreTrainedModel,
)
from .hub import push_to_hub, save_pretrained
from .model_card import FlipModelCardCallback, FlipModelCardData
from .pipeline import CTRPredictionPipeline, register_pipeline
from .processing_flip import FlipProcessor
from .schema import FieldSpec, TabularSchema
from .side_stopping import TextSideEarlyStoppingCallback
from .streaming import FlipStreamingDataset
from .tensor_dataset import FlipTensorDataset
from .text_cache import cache_text_embeddings, cache_text_states

__version__ = "0.1.0"

AutoConfig.register("flip", FlipConfig, exist_ok=True)
AutoModel.register(FlipConfig, FlipForCTR, exist_ok=True)
AutoModelForSequenceClassification.register(FlipConfig, FlipForCTR, exist_ok=True)
AutoModelForPreTraining.register(FlipConfig, FlipForPretraining, exist_ok=True)
AutoProcessor.register(FlipConfig, FlipProcessor, exist_ok=True)

# the models' code is saved by FlipPreTrainedModel.save_pretrained (remote_code.py), which bundles the backbone zoo
FlipConfig.register_for_auto_class()
FlipProcessor.register_for_auto_class()
register_pipeline()

__all__ = [
    "CTRPredictionPipeline",
    "FlipModelCardCallback",
    "FlipModelCardData",
    "DataCollatorForFlipCTR",
    "DataCollatorForFlipPretraining",
    "FieldSpec",
    "FlipConfig",
    "FlipForCTR",
    "FlipForCTROutput",
    "FlipForPretraining",
    "FlipForPretrainingOutput",
    "FlipModel",
    "FlipModelOutput",
    "FlipPreTrainedModel",
    "FlipProcessor",
    "FlipStreamingDataset",
    "FlipTensorDataset",
    "TabularSchema",
    "TextSideEarlyStoppingCallback",
    "cache_text_embeddings",
    "cache_text_states",
    "push_to_hub",
    "save_pretrained",
]
