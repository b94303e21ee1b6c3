"""FlipConfig: everything needed to rebuild a FLIP model, including the nested PLM config."""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# Reserved ids at the start of every field's vocabulary (FlipProcessor assigns them, the models read them).
PAD_ID = 0
UNKNOWN_ID = 1
MASK_ID = 2
NUM_RESERVED_IDS = 3
# Label value that MLM and MTM skip (torch's cross-entropy default).
IGNORE_INDEX = -100
# token_field_ids of a token that belongs to no field's value (special tokens, template words, padding).
NO_FIELD = -1

CTR_MODES = ("id", "text", "joint")
MASKING_MODES = ("field", "token")
TEXT_POOLINGS = ("cls", "mean")
# PLMs whose body is embeddings followed by `encoder.layer`, layers that read (hidden states, attention mask):
# they can be run in two parts, a frozen bottom and `text_trainable_layers` on top.
SPLITTABLE_PLMS = ("bert", "roberta", "xlm-roberta", "camembert")
PROJECTION_HEADS = ("linear", "mlp")
NUMERIC_ENCODINGS = ("bucket", "piecewise_linear")
# What shapes the ID side of a CTR model (and nothing of its text side).
ID_SIDE_OPTIONS = ("backbone", "backbone_options", "embedding_size", "id_first_order", "numeric_encoding", "embedding_l2")


class FlipConfig(PreTrainedConfig):
    r"""Configuration of FLIP models ([`FlipForPretraining`], [`FlipForCTR`]).

    Args:
        fields (`list[dict]`): per field, in order: `name`, `kind`, `vocab_size` (reserved ids
            included) and `num_slots` (1, or the padded length of a multi-valued field). Take it from
            `FlipProcessor.field_infos()`.
        embedding_size (`int`): size d of each field embedding (reference: 32).
        numeric_encoding (`str`): how a numeric field's value becomes its embedding. "bucket": the embedding of
            its quantile bucket, the same for every value in the bucket. "piecewise_linear": (1 - t) E[bucket] +
            t E[next bucket], t the value's position in its bucket (`numeric_positions` from FlipProcessor), so
            the logit can rise or fall inside a bucket; the last bucket has no next and stays flat. Without
            `numeric_positions` (t = 0) both encodings give the same embeddings. "bucket" stays the default:
            on the tiny test data, whose numeric field carries no signal, the extra freedom did not help.
        id_first_order (`bool`): add a first-order term to the ID logit, a learned scalar per feature value
            (logistic regression next to the backbone, as the reference's FuxiCTR models have).
        embedding_l2 (`float`): CTR training adds `embedding_l2 / 2 * ||E||^2` of the whole ID embedding
            table to the loss (FuxiCTR's `embedding_regularizer`): rare ids shrink towards zero.
        backbone (`str`) / backbone_options (`dict`): the ID-based CTR network and its options.
        text_config (`dict` or `PreTrainedConfig`): the PLM's own config, rebuilt by `model_type`.
        text_model_name_or_path (`str`): where the PLM came from (model cards cite it as base model).
        text_num_layers (`int`, *optional*): keep only the first k PLM layers (a cost knob).
        freeze_word_embeddings (`bool`): do not train the PLM's word embeddings (a cost knob).
        text_pooling (`str`): how the token states become the text vector `h_text`: "cls" (the first
            token, the reference) or "mean" (over real tokens). `from_text_pretrained` follows the
            checkpoint's own pooling where it declares one (sentence-transformers' `1_Pooling`).
        align_layer_norm (`bool`): LayerNorm on `h_id` where it meets the text in MLM, MTM and ICL, so
            the two sides meet at comparable scale (ID embeddings start at std `embedding_init_std`).
        projection_size (`int`): ICL projection size (reference: 128).
        projection_head (`str`): ICL projections, "linear" or "mlp" (Linear-ReLU-Linear, the reference's).
        temperature (`float`) / learnable_temperature (`bool`): ICL temperature (reference: 0.7, fixed).
        text_mask_ratio / id_mask_ratio (`float`): share of fields masked per sample (at least one).
        masking (`str`): "field" (FLIP) or "token" (the ablation).
        mlm_weight / mtm_weight / icl_weight (`float`): loss weights; 0 skips that objective entirely.
        mtm_full_softmax_max_vocab (`int`): fields up to this vocabulary size get a full softmax in MTM,
            larger ones a sampled softmax with `mtm_num_negatives` negatives from the same field.
        mlm_head_dropout (`float`): dropout inside the MLM head.
        ctr_mode (`str`): "id" (FLIP_ID), "text" (FLIP_PLM) or "joint" (FLIP).
        fusion_init (`float`): initial alpha of the joint fusion (reference: 0).
        freeze_text_encoder (`bool`): CTR modes do not train the PLM. Its text vectors can then be
            computed once per row (`flip_hf.text_cache.cache_text_embeddings`) and passed as
            `text_embeds`, so text and joint modes train on every row at the cost of the ID model.
        text_trainable_layers (`int`): with `freeze_text_encoder`, the PLM's top k layers train all the same.
            The frozen part below them (embeddings and the other layers) gives each row the same token states in
            every epoch, so those can be cached (`flip_hf.text_cache.cache_text_states`) and passed as
            `text_states`: each step then runs only the k layers. For BERT-style PLMs (`SPLITTABLE_PLMS`).
        text_head_hidden_size (`int`): 0 gives a linear text logit head; > 0 an MLP with one hidden
            layer of this size (worth it on a frozen PLM, where a linear head is logistic regression).
        text_head_batch_norm (`bool`): standardise each coordinate of `h_text` over the batch (BatchNorm) before
            the text head. A sentence PLM's mean-pooled vectors share a large common offset and vary little
            around it, which a plain head learns slowly: on ML-100K, PLM-only with 2 frozen MiniLM layers
            rises from 0.64 to 0.68 test AUC with it (benchmarks/FINDINGS.md).
        pad_token_id / mask_token_id (`int`): taken from the tokenizer, never hard-coded.
        vocabulary_fingerprint (`str`): `FlipProcessor.vocabulary_fingerprint()` of the processor the model
            was built for; pipelines and `FlipTrainer` refuse a processor that assigns other ids.
    """

    model_type = "flip"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert", optional=True)}

    fields: list[dict[str, Any]] | None = None
    embedding_size: int = 32
    numeric_encoding: str = "bucket"
    embedding_l2: float = 0.0
    id_first_order: bool = False
    backbone: str = "dcnv2"
    backbone_options: dict[str, Any] | None = None
    text_config: dict | PreTrainedConfig | None = None
    text_model_name_or_path: str | None = None
    text_num_layers: int | None = None
    freeze_word_embeddings: bool = False
    text_pooling: str = "cls"
    align_layer_norm: bool = True
    projection_size: int = 128
    projection_head: str = "linear"
    temperature: float = 0.7
    learnable_temperature: bool = False
    text_mask_ratio: float = 0.15
    id_mask_ratio: float = 0.15
    masking: str = "field"
    mlm_weight: float = 1.0
    mtm_weight: float = 1.0
    icl_weight: float = 1.0
    mtm_full_softmax_max_vocab: int = 10000
    mtm_num_negatives: int = 256
    mlm_head_dropout: float = 0.1
    ctr_mode: str = "joint"
    fusion_init: float = 0.0
    freeze_text_encoder: bool = False
    text_trainable_layers: int = 0
    text_head_hidden_size: int = 0
    text_head_batch_norm: bool = True
    initializer_range: float = 0.02
    embedding_init_std: float = 1e-4
    pad_token_id: int | None = None
    mask_token_id: int | None = None
    tie_word_embeddings: bool = True
    vocabulary_fingerprint: str | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.fields = [dict(f) for f in (self.fields or [])]
        self.backbone_options = dict(self.backbone_options or {})
        self.check_options()
        for spec in self.fields:
            spec.setdefault("kind", "categorical")
            spec.setdefault("num_slots", 1)
        if self.text_config is not None and self.text_num_layers is not None:
            if not 1 <= self.text_num_layers <= self.text_config.num_hidden_layers:
                raise ValueError(
                    f"text_num_layers={self.text_num_layers} must be between 1 and the PLM's "
                    f"{self.text_config.num_hidden_layers} layers."
                )
            self.text_config.num_hidden_layers = self.text_num_layers
        self.check_trainable_layers()

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        """As `PreTrainedConfig.from_dict`, which sets keyword overrides after construction: check them too,
        so that `from_pretrained(path, ctr_mode=...)` and every other load path validate like `FlipConfig(...)`."""
        loaded = super().from_dict(config_dict, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        config.check_options()
        config.check_trainable_layers()
        return loaded

    def check_options(self) -> None:
        """Raise a ValueError naming the option, its value and the valid choices."""
        if self.ctr_mode not in CTR_MODES:
            raise ValueError(f"Unknown ctr_mode {self.ctr_mode!r}; valid modes: {', '.join(CTR_MODES)}.")
        for name, choices in (("masking", MASKING_MODES), ("text_pooling", TEXT_POOLINGS), ("projection_head", PROJECTION_HEADS),
                              ("numeric_encoding", NUMERIC_ENCODINGS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"Unknown {name} {getattr(self, name)!r}; valid choices: {', '.join(choices)}.")
        if self.text_head_hidden_size < 0:
            raise ValueError(f"text_head_hidden_size must be >= 0, got {self.text_head_hidden_size}.")
        for name in ("mlm_weight", "mtm_weight", "icl_weight", "embedding_l2"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.mlm_weight == self.mtm_weight == self.icl_weight == 0:
            raise ValueError("mlm_weight, mtm_weight and icl_weight are all 0: pretraining would learn nothing.")
        for name in ("text_mask_ratio", "id_mask_ratio"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}.")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        for spec in self.fields:
            missing = {"name", "vocab_size"} - set(spec)
            if missing:
                raise ValueError(
                    f"Field entry {spec} lacks {sorted(missing)}; build fields with FlipProcessor.field_infos()."
                )

    def check_trainable_layers(self) -> None:
        """`text_trainable_layers` against the PLM it splits (after `text_num_layers` has cut it)."""
        k = self.text_trainable_layers
        if not k:
            return
        if k < 0:
            raise ValueError(f"text_trainable_layers must be >= 0, got {k}.")
        if not self.freeze_text_encoder:
            raise ValueError(f"text_trainable_layers={k} trains the PLM's top layers over a frozen rest: set "
                             "freeze_text_encoder=True too (without it the whole PLM trains).")
        if self.text_config is None:
            return  # an ID-only model: there is no PLM to split
        if self.text_config.model_type not in SPLITTABLE_PLMS:
            raise ValueError(f"text_trainable_layers={k} needs a BERT-style PLM ({', '.join(SPLITTABLE_PLMS)}); this one is "
                             f"{self.text_config.model_type!r}. Use text_trainable_layers=0 (all frozen) or unfreeze it.")
        if not 0 < k <= self.text_config.num_hidden_layers:
            raise ValueError(f"text_trainable_layers={k} must be between 0 and the PLM's "
                             f"{self.text_config.num_hidden_layers} layers.")

    @property
    def field_names(self) -> list[str]:
        return [f["name"] for f in self.fields]

    @property
    def uses_text(self) -> bool:
        """Whether a CTR model in this mode has a PLM (pretraining always does)."""
        return self.ctr_mode != "id"

    @property
    def uses_ids(self) -> bool:
        return self.ctr_mode != "text"

    @property
    def uses_numeric_positions(self) -> bool:
        """Whether the ID side reads `numeric_positions`: piecewise-linear encoding of at least one numeric field."""
        return self.numeric_encoding == "piecewise_linear" and any(f["kind"] == "numeric" for f in self.fields)


__all__ = ["FlipConfig", "CTR_MODES", "TEXT_POOLINGS", "NUMERIC_ENCODINGS", "SPLITTABLE_PLMS"]
