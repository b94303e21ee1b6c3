"""FLIP models: the two encoders, the three pretraining objectives and the CTR heads.

Layout follows transformers' modeling files: outputs, building blocks, the pretrained base class,
then the models. Shapes: B batch, T tokens, F fields, S feature slots (F plus extra slots of
multi-valued fields), d field embedding size, H PLM hidden size.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.masking_utils import create_bidirectional_mask
from transformers.utils import ModelOutput
from transformers.utils import logging as transformers_logging

from .backbones import Backbone, build_backbone
from .configuration_flip import ID_SIDE_OPTIONS, IGNORE_INDEX, NUM_RESERVED_IDS, PAD_ID, FlipConfig
from .loading import WEIGHTS_FILES, check_source, unreadable_weights
from .remote_code import save_remote_code

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- outputs
@dataclass
class FlipModelOutput(ModelOutput):
    """id_embedding: (B, backbone output) `h_id`; text_embedding: (B, H) `h_text`, the token states
    pooled as `config.text_pooling` says; text_hidden_states: (B, T, H) all token states `H`."""

    id_embedding: torch.FloatTensor | None = None
    text_embedding: torch.FloatTensor | None = None
    text_hidden_states: torch.FloatTensor | None = None


@dataclass
class FlipForPretrainingOutput(ModelOutput):
    """loss: the weighted sum; mlm_loss / mtm_loss / icl_loss: each part (None when its weight is 0)."""

    loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    mtm_loss: torch.FloatTensor | None = None
    icl_loss: torch.FloatTensor | None = None


@dataclass
class FlipForCTROutput(ModelOutput):
    """logits: (B,) the click logit of the model's mode; probabilities: sigmoid(logits);
    id_logits / text_logits: the single-modality logits of joint mode."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    probabilities: torch.FloatTensor | None = None
    id_logits: torch.FloatTensor | None = None
    text_logits: torch.FloatTensor | None = None


# ------------------------------------------------------------------------------- building blocks
class FlipFieldEmbeddings(nn.Module):
    """Per-field vocabularies in one table (each field at its own offset); multi-valued fields mean-pooled.

    Input `feature_ids` (B, S) holds per-field ids (0 pad, 1 unknown, 2 mask, 3+ values).
    Output (B, F, d).

    With `piecewise_linear`, a numeric field's value id (its bucket) is embedded as (1 - t) E[id] + t E[id + 1],
    t from `numeric_positions` (B, number of numeric fields), so values inside one bucket differ and the logit
    can be monotone in the number. The last bucket interpolates towards itself; reserved ids (null, mask) and
    `numeric_positions=None` take t = 0, the plain bucket embedding.
    """

    def __init__(self, fields: list[dict], embedding_size: int, piecewise_linear: bool = False):
        super().__init__()
        vocab_sizes = [f["vocab_size"] for f in fields]
        slots = [f.get("num_slots", 1) for f in fields]
        self.slot_field = [field for field, count in enumerate(slots) for _ in range(count)]
        self.field_offsets = [sum(vocab_sizes[:field]) for field in range(len(fields))]
        self.num_fields = len(fields)
        self.pooled = len(self.slot_field) > len(fields)
        numeric = [f for f, spec in enumerate(fields) if spec.get("kind") == "numeric"] if piecewise_linear else []
        self.numeric_slot_list = [self.slot_field.index(f) for f in numeric]
        self.numeric_last_row_list = [self.field_offsets[f] + vocab_sizes[f] - 1 for f in numeric]
        # buffers derived from the config: not saved, rebuilt by reset_buffers (also after meta-device loading)
        self.register_buffer("slot_offsets", torch.zeros(len(self.slot_field), dtype=torch.long), persistent=False)
        if self.pooled:
            self.register_buffer("slot_to_field", torch.zeros(len(fields), len(self.slot_field)), persistent=False)
        if numeric:
            self.register_buffer("numeric_slots", torch.zeros(len(numeric), dtype=torch.long), persistent=False)
            self.register_buffer("numeric_last_rows", torch.zeros(len(numeric), dtype=torch.long), persistent=False)
        self.embedding = nn.Embedding(sum(vocab_sizes), embedding_size)
        self.reset_buffers()

    def reset_buffers(self) -> None:
        if self.slot_offsets.is_meta:
            return
        init.copy_(self.slot_offsets, torch.tensor([self.field_offsets[f] for f in self.slot_field]))
        if self.pooled:
            init.copy_(self.slot_to_field, F.one_hot(torch.tensor(self.slot_field), self.num_fields).T.float())
        if self.numeric_slot_list:
            init.copy_(self.numeric_slots, torch.tensor(self.numeric_slot_list))
            init.copy_(self.numeric_last_rows, torch.tensor(self.numeric_last_row_list))

    def forward(self, feature_ids: torch.LongTensor, numeric_positions: torch.Tensor | None = None) -> torch.Tensor:
        rows = feature_ids + self.slot_offsets
        embeddings = self.embedding(rows)
        if self.numeric_slot_list and numeric_positions is not None:
            embeddings = self._interpolate(embeddings, feature_ids, rows, numeric_positions)
        if not self.pooled:
            return embeddings
        present = (feature_ids != PAD_ID).float()
        summed = torch.einsum("fs,bsd->bfd", self.slot_to_field, embeddings * present.unsqueeze(-1))
        counts = (present @ self.slot_to_field.T).clamp(min=1.0)
        return summed / counts.unsqueeze(-1)

    def _interpolate(self, embeddings, feature_ids, rows, numeric_positions) -> torch.Tensor:
        """Add t (E[id + 1] - E[id]) on the numeric slots; value ids only, the last bucket's next row is itself."""
        ids = feature_ids.index_select(1, self.numeric_slots)
        t = numeric_positions.to(embeddings.dtype) * (ids >= NUM_RESERVED_IDS)
        start = rows.index_select(1, self.numeric_slots)
        step = self.embedding(torch.minimum(start + 1, self.numeric_last_rows)) - self.embedding(start)
        return embeddings.index_add(1, self.numeric_slots, t.unsqueeze(-1) * step)


class FlipIdEncoder(nn.Module):
    """Field embeddings + an ID backbone -> `h_id`."""

    def __init__(self, config: FlipConfig):
        super().__init__()
        self.embeddings = FlipFieldEmbeddings(config.fields, config.embedding_size, config.uses_numeric_positions)
        self.backbone = build_backbone(config.backbone, len(config.fields), config.embedding_size, config.backbone_options)
        self.output_size = self.backbone.output_size

    def forward(self, feature_ids: torch.LongTensor, numeric_positions: torch.Tensor | None = None) -> torch.Tensor:
        return self.backbone(self.embeddings(feature_ids, numeric_positions))


def _load_plm(name_or_path: str, text_config) -> PreTrainedModel:
    """The PLM's pretrained body; layers beyond `text_num_layers` and its pooler are left out on purpose."""
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # the dropped layers would be reported as unexpected keys
    try:
        try:
            plm = AutoModel.from_pretrained(name_or_path, config=text_config, add_pooling_layer=False)
        except TypeError:
            plm = AutoModel.from_pretrained(name_or_path, config=text_config)
    finally:
        transformers_logging.set_verbosity(verbosity)
    logger.info("Loaded the PLM %s with %d layers.", name_or_path, text_config.num_hidden_layers)
    return plm


def _declared_pooling(name_or_path: str) -> str | None:
    """The pooling a sentence-transformers checkpoint was trained with (its `1_Pooling/config.json`), if any."""
    from transformers.utils.hub import cached_file

    try:
        path = cached_file(str(name_or_path), "1_Pooling/config.json", _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    except OSError:
        return None
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        pooling = json.load(f)
    if pooling.get("pooling_mode_mean_tokens"):
        return "mean"
    if pooling.get("pooling_mode_cls_token"):
        return "cls"
    return None


def _build_text_encoder(text_config) -> PreTrainedModel:
    """The PLM body without a pooler: FLIP pools the token states itself (`text_pooling`) and reads them all."""
    try:
        return AutoModel.from_config(text_config, add_pooling_layer=False)
    except TypeError:  # encoders without a pooler option
        return AutoModel.from_config(text_config)


class FlipMLMHead(nn.Module):
    """Predicts a masked token from [its masked-text state ; the clean `h_id`] (MLM with tabular help).

    The decoder weight is tied to the PLM's word embeddings.
    """

    def __init__(self, config: FlipConfig, id_size: int):
        super().__init__()
        hidden = config.text_config.hidden_size
        self.dense = nn.Linear(hidden + id_size, hidden)
        self.dropout = nn.Dropout(config.mlm_head_dropout)
        self.decoder = nn.Linear(hidden, config.text_config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.text_config.vocab_size))

    def forward(self, token_states: torch.Tensor, id_embedding: torch.Tensor) -> torch.Tensor:
        hidden = self.dropout(torch.tanh(self.dense(torch.cat([token_states, id_embedding], dim=-1))))
        return self.decoder(hidden) + self.bias


class FlipMTMHead(nn.Module):
    """Recovers masked field values from the masked `h_id` attending over the clean text (MTM with text help).

    Query `W_q h_id_masked` attends over the clean token states with the padding mask and
    1/sqrt(H) scaling; `Linear([h_id_masked ; c_text])` gives one d-dim slot per field, scored
    against that field's own output embeddings.
    """

    def __init__(self, config: FlipConfig, id_size: int):
        super().__init__()
        hidden = config.text_config.hidden_size
        self.query = nn.Linear(id_size, hidden)
        self.slots = nn.Linear(id_size + hidden, len(config.fields) * config.embedding_size)
        self.output_embeddings = FlipFieldEmbeddings(config.fields, config.embedding_size)
        self.embedding_size = config.embedding_size
        vocab_sizes = [f["vocab_size"] for f in config.fields]
        self.vocab_sizes = vocab_sizes
        self.field_offsets = [sum(vocab_sizes[:i]) for i in range(len(vocab_sizes))]
        slots = [f.get("num_slots", 1) for f in config.fields]
        self.slot_ranges = [(sum(slots[:i]), sum(slots[: i + 1])) for i in range(len(slots))]
        self.full_softmax_max_vocab = config.mtm_full_softmax_max_vocab
        self.num_negatives = config.mtm_num_negatives

    def forward(self, masked_id_embedding, text_states, attention_mask, mtm_labels) -> torch.Tensor:
        query = self.query(masked_id_embedding)  # (B, H)
        scores = torch.einsum("bh,bth->bt", query, text_states) / math.sqrt(text_states.size(-1))
        scores = scores.masked_fill(attention_mask == 0, torch.finfo(scores.dtype).min)
        context = torch.einsum("bt,bth->bh", scores.softmax(dim=-1), text_states)
        field_slots = self.slots(torch.cat([masked_id_embedding, context], dim=-1))
        field_slots = field_slots.view(len(field_slots), -1, self.embedding_size)  # (B, F, d)

        total, count = field_slots.new_zeros(()), 0
        table = self.output_embeddings.embedding.weight
        for field, (start, end) in enumerate(self.slot_ranges):
            labels = mtm_labels[:, start:end]
            rows, cols = (labels != IGNORE_INDEX).nonzero(as_tuple=True)
            if len(rows) == 0:
                continue
            targets = labels[rows, cols]
            # a multi-valued field spreads one unit of loss over its values
            num_values = (labels != IGNORE_INDEX).sum(dim=1)
            weights = 1.0 / num_values[rows].float()
            slot = field_slots[rows, field]  # (n, d)
            offset, vocab = self.field_offsets[field], self.vocab_sizes[field]
            if vocab <= self.full_softmax_max_vocab:
                logits = slot @ table[offset : offset + vocab].T
                losses = F.cross_entropy(logits, targets, reduction="none")
            else:
                losses = self._sampled_softmax(slot, targets, table[offset : offset + vocab])
            total = total + (losses * weights).sum()
            count += int((num_values > 0).sum())
        return total / max(count, 1)

    def _sampled_softmax(self, slot, targets, field_table) -> torch.Tensor:
        """Softmax over the target and `num_negatives` values drawn uniformly from the same field."""
        negatives = torch.randint(NUM_RESERVED_IDS, len(field_table), (self.num_negatives,), device=slot.device)
        positive_logits = (slot * field_table[targets]).sum(-1, keepdim=True)
        negative_logits = slot @ field_table[negatives].T
        negative_logits = negative_logits.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))
        logits = torch.cat([positive_logits, negative_logits], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(targets), reduction="none")


def _gather_with_local_grad(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All-gather across processes; gradients flow through this process's slice only.

    Returns the gathered tensor and the offset of the local slice. Batches may differ in size.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return tensor, 0
    world = torch.distributed.get_world_size()
    if world == 1:
        return tensor, 0
    size = torch.tensor([len(tensor)], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    torch.distributed.all_gather(sizes, size)
    sizes = [int(s) for s in sizes]
    padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
    padded[: len(tensor)] = tensor.detach()
    gathered = [torch.zeros_like(padded) for _ in range(world)]
    torch.distributed.all_gather(gathered, padded)
    rank = torch.distributed.get_rank()
    gathered[rank] = tensor
    return torch.cat([g[:n] for g, n in zip(gathered, sizes)]), sum(sizes[:rank])


def _projection(input_size: int, output_size: int, kind: str) -> nn.Module:
    if kind == "linear":
        return nn.Linear(input_size, output_size)
    return nn.Sequential(nn.Linear(input_size, input_size), nn.ReLU(), nn.Linear(input_size, output_size))


class FlipContrastiveHead(nn.Module):
    """Instance-level contrastive learning: symmetric InfoNCE between projected `h_id` and `h_text`."""

    def __init__(self, config: FlipConfig, id_size: int):
        super().__init__()
        self.id_projection = _projection(id_size, config.projection_size, config.projection_head)
        self.text_projection = _projection(config.text_config.hidden_size, config.projection_size, config.projection_head)
        log_scale = torch.tensor(math.log(1.0 / config.temperature))
        if config.learnable_temperature:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale, persistent=False)

    def forward(self, id_embedding: torch.Tensor, text_embedding: torch.Tensor) -> torch.Tensor:
        z_id = F.normalize(self.id_projection(id_embedding), dim=-1)
        z_text = F.normalize(self.text_projection(text_embedding), dim=-1)
        all_id, offset = _gather_with_local_grad(z_id)
        all_text, _ = _gather_with_local_grad(z_text)
        scale = self.log_scale.exp().clamp(max=100.0)
        targets = torch.arange(len(z_id), device=z_id.device) + offset
        id_to_text = F.cross_entropy(scale * z_id @ all_text.T, targets)
        text_to_id = F.cross_entropy(scale * z_text @ all_id.T, targets)
        return (id_to_text + text_to_id) / 2


# --------------------------------------------------------------------------------- base classes
class FlipPreTrainedModel(PreTrainedModel):
    config_class = FlipConfig
    config: FlipConfig
    base_model_prefix = "flip"
    main_input_name = "feature_ids"
    supports_gradient_checkpointing = False
    accepts_loss_kwargs = False  # FLIP averages its own losses; do not rescale them across processes
    _tied_weights_keys: dict[str, str] = {}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Load as usual, with errors that name a missing or broken file (`flip_hf.loading`).

        An encoder the model needs but the checkpoint lacks entirely (a joint model from an id-only
        checkpoint) starts from random weights: that is warned about loudly, not left to the load report.
        """
        if pretrained_model_name_or_path is not None:
            check_source(pretrained_model_name_or_path, WEIGHTS_FILES, "FLIP model weights",
                         "Save a model there with model.save_pretrained(folder), or pass the folder of a training stage.")
        wants_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs)
        except SafetensorError as error:
            broken = unreadable_weights(pretrained_model_name_or_path) or ["its safetensors weights"]
            raise OSError(
                f"Cannot read the weights of {str(pretrained_model_name_or_path)!r}: {', '.join(broken)} is truncated "
                f"or corrupted ({error}). Save or download the checkpoint again (from the Hub: force_download=True)."
            ) from error
        for encoder, what in (("flip.text_encoder.", "language model"), ("flip.id_encoder.", "ID encoder")):
            expected = [name for name in model.state_dict() if name.startswith(encoder)]
            if expected and all(name in info["missing_keys"] for name in expected):
                logger.warning(
                    "%s holds no weights for the %s that ctr_mode=%r uses: it starts from random weights. Load a "
                    "checkpoint that has it (a FLIP pretraining checkpoint), or start the PLM with "
                    "FlipForCTR.from_text_pretrained(<plm>, processor, ...).",
                    pretrained_model_name_or_path, what, model.config.ctr_mode,
                )
        return (model, info) if wants_info else model

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save as usual, plus FLIP's code (see remote_code.py), so the checkpoint loads without flip_hf.

        The model card is written by `flip_hf.hub.save_pretrained` and `FlipTrainer.save_model`."""
        if kwargs.get("is_main_process", True):
            save_remote_code(save_directory, self.config, Backbone.__module__)
        super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def from_text_pretrained(cls, plm_name_or_path: str, processor, **config_overrides):
        """Start a FLIP model from any HF encoder (Hub id or local path) and a fitted FlipProcessor.

        The PLM weights are loaded (the first `text_num_layers` layers if set); the ID side and the
        heads are new; an MLM decoder is tied to the word embeddings. `text_pooling` defaults to the
        pooling the checkpoint declares (sentence-transformers' `1_Pooling`), else "cls". Special token ids come from
        the processor's tokenizer. `FlipForCTR.from_text_pretrained(..., ctr_mode="text")` is the
        PLM-only baseline (no FLIP pretraining).
        """
        tokenizer = processor.tokenizer
        text_config = AutoConfig.from_pretrained(plm_name_or_path)
        if tokenizer.mask_token_id is None and config_overrides.get("mlm_weight", 1.0) > 0 and cls is FlipForPretraining:
            raise ValueError(f"The tokenizer of {plm_name_or_path!r} has no mask token, which MLM needs.")
        if len(tokenizer) > text_config.vocab_size:
            raise ValueError(
                f"The tokenizer has {len(tokenizer)} tokens but the PLM {plm_name_or_path!r} only "
                f"{text_config.vocab_size} embeddings; use the PLM's own tokenizer."
            )
        config_overrides.setdefault("text_model_name_or_path", str(plm_name_or_path))
        if config_overrides.get("text_pooling") is None:
            config_overrides["text_pooling"] = _declared_pooling(plm_name_or_path) or "cls"
        config = FlipConfig(
            fields=processor.field_infos(),
            vocabulary_fingerprint=processor.vocabulary_fingerprint(),
            text_config=text_config,
            pad_token_id=tokenizer.pad_token_id,
            mask_token_id=tokenizer.mask_token_id,
            **config_overrides,
        )
        model = cls(config)
        text_encoder = model.flip.text_encoder
        if text_encoder is not None:
            text_encoder.load_state_dict(_load_plm(plm_name_or_path, config.text_config).state_dict())
            model.tie_weights()
        return model

    def _backbone_layer_ids(self) -> set[int]:
        if "_backbone_layers" not in self.__dict__:
            self.__dict__["_backbone_layers"] = {id(m) for b in self.modules() if isinstance(b, Backbone) for m in b.modules()}
        return self.__dict__["_backbone_layers"]

    def _init_weights(self, module: nn.Module) -> None:
        """Weights a checkpoint does not hold are created empty and set here. Backbone layers that define
        `reset_parameters` (cross layers, CIN) use it; every Linear, inside a backbone or not, is
        normal(initializer_range) with zero bias."""
        std = self.config.initializer_range
        if id(module) in self._backbone_layer_ids() and not isinstance(module, (nn.Linear, Backbone)):
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        elif isinstance(module, FlipFieldEmbeddings):
            init.normal_(module.embedding.weight, std=self.config.embedding_init_std)
            module.reset_buffers()
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=std)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if getattr(module, "running_mean", None) is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, FlipMLMHead):
            init.zeros_(module.bias)
        elif isinstance(module, FlipContrastiveHead):
            init.constant_(module.log_scale, math.log(1.0 / self.config.temperature))
        elif isinstance(module, FlipForCTR) and module.config.ctr_mode == "joint":
            init.constant_(module.fusion_alpha, module.config.fusion_init)
            init.zeros_(module.fusion_bias)


class FlipModel(FlipPreTrainedModel):
    """The two encoders. `with_text` / `with_ids` let a CTR model build only what its mode uses."""

    def __init__(self, config: FlipConfig, with_ids: bool = True, with_text: bool = True):
        super().__init__(config)
        self.id_encoder = FlipIdEncoder(config) if with_ids else None
        self.text_encoder = None
        if with_text:
            if config.text_config is None:
                raise ValueError("This FLIP model needs a text_config (the PLM's config); got None.")
            self.text_encoder = _build_text_encoder(config.text_config)
            if config.freeze_word_embeddings:
                self.text_encoder.get_input_embeddings().weight.requires_grad_(False)
        self.post_init()

    def get_input_embeddings(self):
        return self.text_encoder.get_input_embeddings() if self.text_encoder is not None else None

    def set_input_embeddings(self, value):
        self.text_encoder.set_input_embeddings(value)

    def encode_ids(self, feature_ids: torch.LongTensor, numeric_positions: torch.Tensor | None = None) -> torch.Tensor:
        return self.id_encoder(feature_ids, numeric_positions)

    def encode_text(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def top_text_layers(self) -> nn.ModuleList:
        """The PLM's top `text_trainable_layers` layers (none when it is 0)."""
        k = self.config.text_trainable_layers
        return self.text_encoder.encoder.layer[-k:] if k else nn.ModuleList()

    def frozen_text_states(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token states (B, T, H) below the top `text_trainable_layers` layers: the part of the PLM that a CTR
        model with those layers keeps frozen, and so the part whose output can be cached per row."""
        layers = self.text_encoder.encoder.layer
        states = self.text_encoder.embeddings(input_ids=input_ids)
        return self._run_text_layers(states, attention_mask, layers[: len(layers) - self.config.text_trainable_layers])

    def top_text_states(self, text_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The last token states from `frozen_text_states`' output, through the top layers."""
        return self._run_text_layers(text_states, attention_mask, self.top_text_layers())

    def _run_text_layers(self, states: torch.Tensor, attention_mask: torch.Tensor, layers: nn.ModuleList) -> torch.Tensor:
        """`layers` of a BERT-style PLM (`SPLITTABLE_PLMS`) over `states`, masked as the PLM's own forward masks."""
        mask = create_bidirectional_mask(config=self.text_encoder.config, inputs_embeds=states, attention_mask=attention_mask)
        for layer in layers:
            states = layer(states, mask)
        return states

    def pool_text(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`h_text` from the token states. A sentence-embedding PLM trained with mean pooling leaves
        its first token nearly constant across inputs, so its pooling must be the one it was trained with."""
        if self.config.text_pooling == "cls":
            return states[:, 0]
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    def forward(self, feature_ids=None, input_ids=None, attention_mask=None, numeric_positions=None, **kwargs) -> FlipModelOutput:
        id_embedding = None
        if self.id_encoder is not None and feature_ids is not None:
            id_embedding = self.encode_ids(feature_ids, numeric_positions)
        states = None
        if self.text_encoder is not None and input_ids is not None:
            states = self.encode_text(input_ids, attention_mask)
        return FlipModelOutput(
            id_embedding=id_embedding,
            text_embedding=self.pool_text(states, attention_mask) if states is not None else None,
            text_hidden_states=states,
        )


def _embedding_parameter_name(model: FlipModel) -> str:
    """The dotted name of the PLM's word-embedding weight inside `model` (differs between encoders)."""
    embeddings = model.text_encoder.get_input_embeddings()
    for name, module in model.text_encoder.named_modules():
        if module is embeddings:
            return f"text_encoder.{name}.weight"
    raise ValueError(f"Cannot locate the word embeddings of {type(model.text_encoder).__name__}.")


class FlipForPretraining(FlipPreTrainedModel):
    """FLIP pretraining: MLM with tabular help + MTM with text help + ICL, in two PLM passes.

    Inputs come from `DataCollatorForFlipPretraining`: the clean `input_ids` / `feature_ids`
    and their masked versions with `mlm_labels` / `mtm_labels`.
    """

    def __init__(self, config: FlipConfig):
        super().__init__(config)
        self.flip = FlipModel(config)
        id_size = self.flip.id_encoder.output_size
        # h_id starts tiny (embedding_init_std 1e-4: per-coordinate variance 1e-8 or less) while token states have
        # norms near 10: normalise it where the two meet, with an eps far below that variance
        self.align_norm = nn.LayerNorm(id_size, eps=1e-20) if config.align_layer_norm else nn.Identity()
        self.mlm_head = FlipMLMHead(config, id_size) if config.mlm_weight > 0 else None
        self.mtm_head = FlipMTMHead(config, id_size) if config.mtm_weight > 0 else None
        self.icl_head = FlipContrastiveHead(config, id_size) if config.icl_weight > 0 else None
        if self.mlm_head is not None and config.tie_word_embeddings:
            self._tied_weights_keys = {"mlm_head.decoder.weight": f"flip.{_embedding_parameter_name(self.flip)}"}
        self.post_init()

    def get_output_embeddings(self):
        return self.mlm_head.decoder if self.mlm_head is not None else None

    def set_output_embeddings(self, value):
        self.mlm_head.decoder = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        feature_ids: torch.LongTensor | None = None,
        masked_input_ids: torch.LongTensor | None = None,
        mlm_labels: torch.LongTensor | None = None,
        masked_feature_ids: torch.LongTensor | None = None,
        mtm_labels: torch.LongTensor | None = None,
        token_field_ids: torch.LongTensor | None = None,
        numeric_positions: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> FlipForPretrainingOutput:
        flip = self.flip
        clean_ids = None
        if self.mlm_head or self.icl_head:
            clean_ids = self.align_norm(flip.encode_ids(feature_ids, numeric_positions))
        clean_text = flip.encode_text(input_ids, attention_mask) if (self.mtm_head or self.icl_head) else None

        mlm_loss = mtm_loss = icl_loss = None
        if self.mlm_head is not None:
            _require(masked_input_ids=masked_input_ids, mlm_labels=mlm_labels)
            masked_states = flip.encode_text(masked_input_ids, attention_mask)
            rows, cols = (mlm_labels != IGNORE_INDEX).nonzero(as_tuple=True)
            # project only the masked positions onto the vocabulary
            logits = self.mlm_head(masked_states[rows, cols], clean_ids[rows])
            mlm_loss = F.cross_entropy(logits, mlm_labels[rows, cols]) if len(rows) else logits.sum() * 0.0
        if self.mtm_head is not None:
            _require(masked_feature_ids=masked_feature_ids, mtm_labels=mtm_labels)
            # a masked numeric field has the mask id, which ignores its position: nothing of its value leaks
            masked_ids = self.align_norm(flip.encode_ids(masked_feature_ids, numeric_positions))
            mtm_loss = self.mtm_head(masked_ids, clean_text, attention_mask, mtm_labels)
        if self.icl_head is not None:
            icl_loss = self.icl_head(clean_ids, flip.pool_text(clean_text, attention_mask))

        config = self.config
        parts = [(config.mlm_weight, mlm_loss), (config.mtm_weight, mtm_loss), (config.icl_weight, icl_loss)]
        loss = sum(weight * part for weight, part in parts if part is not None)
        return FlipForPretrainingOutput(loss=loss, mlm_loss=mlm_loss, mtm_loss=mtm_loss, icl_loss=icl_loss)


class _BatchStandardize(nn.BatchNorm1d):
    """BatchNorm1d that also takes a training batch of one row (a dataset's last), which it standardises
    with the running statistics instead of failing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps)
        return super().forward(x)


def _text_head(config: FlipConfig) -> nn.Module:
    hidden, size = config.text_config.hidden_size, config.text_head_hidden_size
    if size == 0:
        return nn.Linear(hidden, 1)
    return nn.Sequential(nn.Linear(hidden, size), nn.ReLU(), nn.Dropout(0.1), nn.Linear(size, 1))


def _require(**inputs) -> None:
    missing = [name for name, value in inputs.items() if value is None]
    if missing:
        raise ValueError(
            f"FlipForPretraining needs {missing} for its enabled objectives; build batches with "
            "DataCollatorForFlipPretraining, or set the objective's weight to 0."
        )


class FlipForCTR(FlipPreTrainedModel):
    """Click prediction in three modes.

    * "id" (FLIP_ID): ID encoder + linear head; no PLM weights exist at all.
    * "text" (FLIP_PLM): PLM + logit head on the pooled text vector `h_text`.
    * "joint" (FLIP): p = sigmoid(alpha * z_id + (1 - alpha) * z_text + b), alpha learnable, trained with
      BCE(p) + BCE(sigmoid(z_id)) + BCE(sigmoid(z_text)).

    With `config.id_first_order` the ID logit also sums a learned scalar per feature value. In training,
    modes with an ID side add `config.embedding_l2 / 2 * ||E||^2` of the ID embedding tables.

    `numeric_positions` (B, numeric fields), from `FlipProcessor`, place each number inside its bucket when
    `config.numeric_encoding="piecewise_linear"`; None means t = 0, the plain bucket embeddings, which is how
    rows encoded before positions existed behave.

    `FlipForCTR.from_pretrained(<pretraining checkpoint>, ctr_mode=...)` reuses the aligned encoders;
    the load report lists the new heads (pretraining heads are dropped without noise).

    With `config.freeze_text_encoder` the PLM stays in eval mode and is never trained; `forward` then
    also takes `text_embeds` (B, H), the pooled text vectors computed beforehand by `embed_text`
    (see `flip_hf.text_cache`), and skips the PLM entirely. With `config.text_trainable_layers` = k as well,
    the PLM's top k layers train over the frozen rest; `forward` then takes `text_states` (B, T, H) with
    `attention_mask`, the frozen part's token states (`FlipModel.frozen_text_states`, cached per row by
    `cache_text_states`), and runs only the k layers. `text_embeds` then serve inference only: in training they
    would bypass the layers that learn.
    """

    _keys_to_ignore_on_load_unexpected = [r"^(mlm|mtm|icl)_head\.", r"^align_norm\."]

    def __init__(self, config: FlipConfig):
        super().__init__(config)
        self.flip = FlipModel(config, with_ids=config.uses_ids, with_text=config.uses_text)
        self.id_head = nn.Linear(self.flip.id_encoder.output_size, 1) if config.uses_ids else None
        self.id_first_order = None
        if config.uses_ids and config.id_first_order:
            self.id_first_order = FlipFieldEmbeddings(config.fields, 1, config.uses_numeric_positions)
        self.text_head = _text_head(config) if config.uses_text else None
        # apart from text_head, so that a checkpoint saved before it existed loads unchanged: its statistics start
        # as the identity
        self.text_norm = None
        if config.uses_text and config.text_head_batch_norm:
            self.text_norm = _BatchStandardize(config.text_config.hidden_size)
        if config.uses_text and config.freeze_text_encoder:
            self.flip.text_encoder.requires_grad_(False)
            self.flip.top_text_layers().requires_grad_(True)
        self._text_side_frozen = False
        # the encoder this mode leaves out is dropped on purpose when loading a pretraining checkpoint
        unused = {"id": r"^flip\.text_encoder\.", "text": r"^flip\.id_encoder\."}.get(config.ctr_mode)
        if unused:
            self._keys_to_ignore_on_load_unexpected = [*self._keys_to_ignore_on_load_unexpected, unused]
        if config.ctr_mode == "joint":
            self.fusion_alpha = nn.Parameter(torch.tensor(float(config.fusion_init)))
            self.fusion_bias = nn.Parameter(torch.zeros(()))
        self.post_init()

    @classmethod
    def from_finetuned(cls, id_model, text_model) -> "FlipForCTR":
        """FLIP (joint) whose ID side is a finetuned FLIP_ID and whose text side a finetuned FLIP_PLM.

        Trained jointly from the pretraining checkpoint, the ID side of FLIP sees the text head's errors
        from the first step and ends below FLIP_ID trained alone. Started from the two finetuned halves,
        FLIP begins where each side is at its best; only the fusion is new (alpha = `fusion_init`, b = 0).
        Fit it on held-out logits with `fit_fusion`. Both halves must share fields and vocabularies (the
        same pretraining checkpoint); each half's options are kept (e.g. the ID backbone's, the text head's).

        Args:
            id_model, text_model: `FlipForCTR` models (or their folders) in ctr_mode "id" and "text".
        """
        id_model, text_model = (m if isinstance(m, cls) else cls.from_pretrained(m) for m in (id_model, text_model))
        for side, model, mode in (("id_model", id_model, "id"), ("text_model", text_model, "text")):
            if model.config.ctr_mode != mode:
                raise ValueError(f"{side} is a ctr_mode={model.config.ctr_mode!r} model; pass a ctr_mode={mode!r} one.")
        if id_model.config.fields != text_model.config.fields:
            raise ValueError(
                "id_model and text_model were trained on other fields or vocabularies: finetune both from the "
                "same pretraining checkpoint and processor."
            )
        config = text_model.config.to_dict()
        config.update({name: getattr(id_model.config, name) for name in ID_SIDE_OPTIONS}, ctr_mode="joint")
        config.pop("architectures", None)
        model = cls(FlipConfig.from_dict(config))
        state = {**id_model.state_dict(), **text_model.state_dict()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if set(missing) != {"fusion_alpha", "fusion_bias"} or unexpected:
            raise ValueError(f"The halves do not make a joint model: missing {missing}, unexpected {unexpected}.")
        return model.to(next(id_model.parameters()).device)

    @torch.no_grad()
    def fit_fusion(self, id_logits, text_logits, labels) -> dict[str, float]:
        """Set alpha and b to minimise the log loss of `alpha * z_id + (1 - alpha) * z_text + b` on held-out
        rows (the validation split's; never the test's), and return them.

        Two parameters on thousands of rows cannot overfit, and unlike a few hundred steps of gradient descent on
        alpha (which barely moves it) this finds the weight each side deserves; alpha = 1 is FLIP_ID's own score.
        """
        if self.config.ctr_mode != "joint":
            raise ValueError(f"fit_fusion needs a ctr_mode='joint' model, not {self.config.ctr_mode!r}.")
        z_id, z_text, y = (torch.as_tensor(v, dtype=torch.float64).reshape(-1).cpu() for v in (id_logits, text_logits, labels))
        if not len(y) == len(z_id) == len(z_text) or len(set(y.tolist())) != 2:
            raise ValueError(f"fit_fusion needs as many logits of each side as labels ({len(z_id)}, {len(z_text)}, "
                             f"{len(y)}), and labels of both classes.")
        weights = torch.tensor([float(self.fusion_alpha), float(self.fusion_bias)], dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([weights], max_iter=100, line_search_fn="strong_wolfe")

        def log_loss():  # LBFGS calls it with gradients enabled
            optimizer.zero_grad()
            loss = F.binary_cross_entropy_with_logits(weights[0] * z_id + (1 - weights[0]) * z_text + weights[1], y)
            loss.backward()
            return loss

        optimizer.step(log_loss)
        self.fusion_alpha.fill_(float(weights[0]))
        self.fusion_bias.fill_(float(weights[1]))
        return {"fusion_alpha": float(weights[0]), "fusion_bias": float(weights[1])}

    def text_side(self) -> list[nn.Module]:
        """The modules behind `z_text` that finetuning trains: the PLM (unless frozen; its top
        `text_trainable_layers` if those train), the text standardisation and the text head."""
        if not self.config.uses_text:
            return []
        plm = self.flip.text_encoder
        if self.config.freeze_text_encoder:
            plm = self.flip.top_text_layers() if self.config.text_trainable_layers else None
        return [module for module in (plm, self.text_norm, self.text_head) if module is not None]

    def freeze_text_side(self) -> None:
        """Stop training the text side (joint mode: the ID side and the fusion train on).

        Where the text side reaches its best validation AUC before the ID side, early stopping on the fused AUC
        would end both near the text side's peak (see `TextSideEarlyStoppingCallback`). Frozen, the text side
        also leaves training mode for good (no dropout, no batch statistics), so its logits are the ones it had
        on validation.
        """
        for module in self.text_side():
            module.requires_grad_(False)
        self._text_side_frozen = True
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.uses_text and self.config.freeze_text_encoder:
            self.flip.text_encoder.eval()  # a frozen PLM gives the same vectors as its cache: no dropout
            self.flip.top_text_layers().train(mode)
        if self._text_side_frozen:
            for module in self.text_side():
                module.eval()
        return self

    def embed_text(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The pooled text vectors `h_text` (B, H); gradients reach only the PLM's layers that train."""
        if self.config.text_trainable_layers:
            with torch.no_grad():
                text_states = self.flip.frozen_text_states(input_ids, attention_mask)
            return self.embed_text_states(text_states, attention_mask)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_text_encoder):
            states = self.flip.encode_text(input_ids, attention_mask)
            return self.flip.pool_text(states, attention_mask)

    def embed_text_states(self, text_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`h_text` (B, H) from the frozen part's token states, through the top `text_trainable_layers` layers."""
        return self.flip.pool_text(self.flip.top_text_states(text_states, attention_mask), attention_mask)

    def forward(
        self,
        feature_ids: torch.LongTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        token_field_ids: torch.LongTensor | None = None,
        text_embeds: torch.FloatTensor | None = None,
        numeric_positions: torch.Tensor | None = None,
        text_states: torch.FloatTensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> FlipForCTROutput:
        mode = self.config.ctr_mode
        if self.config.uses_ids and feature_ids is None:
            raise ValueError(f"ctr_mode={mode!r} needs feature_ids; encode the rows with FlipProcessor.")
        if text_embeds is not None and not self.config.freeze_text_encoder:
            raise ValueError(
                "text_embeds (precomputed text vectors) bypass the PLM, so they need a frozen PLM: "
                "load the model with freeze_text_encoder=True, or pass input_ids instead."
            )
        if text_states is not None and not self.config.text_trainable_layers:
            raise ValueError(
                "text_states (token states of the PLM's frozen bottom) need a model with text_trainable_layers > 0; "
                "this one has none: pass text_embeds (cache_text_embeddings) or input_ids instead."
            )
        if text_embeds is not None and self.training and self.config.text_trainable_layers:
            raise ValueError(
                f"text_embeds skip the PLM's top {self.config.text_trainable_layers} layers, which train: pass text_states "
                "(cache_text_states) or input_ids in training; text_embeds serve inference only."
            )
        if self.config.uses_text and input_ids is None and text_embeds is None and text_states is None:
            raise ValueError(f"ctr_mode={mode!r} needs input_ids (FlipProcessor(text=True)), text_embeds or text_states.")
        id_logits = text_logits = None
        if self.id_head is not None:
            id_logits = self.id_head(self.flip.encode_ids(feature_ids, numeric_positions)).squeeze(-1)
            if self.id_first_order is not None:
                id_logits = id_logits + self.id_first_order(feature_ids, numeric_positions).sum(dim=(1, 2))
        if self.text_head is not None:
            if text_embeds is None and text_states is not None:
                text_embeds = self.embed_text_states(text_states, attention_mask)
            elif text_embeds is None:
                text_embeds = self.embed_text(input_ids, attention_mask)
            if self.text_norm is not None:
                text_embeds = self.text_norm(text_embeds)
            text_logits = self.text_head(text_embeds).squeeze(-1)
        if mode == "id":
            logits = id_logits
        elif mode == "text":
            logits = text_logits
        else:
            alpha = self.fusion_alpha
            logits = alpha * id_logits + (1 - alpha) * text_logits + self.fusion_bias

        loss = None
        if labels is not None:
            labels = labels.to(logits.dtype)
            loss = F.binary_cross_entropy_with_logits(logits, labels)
            if mode == "joint":
                loss = loss + F.binary_cross_entropy_with_logits(id_logits, labels)
                loss = loss + F.binary_cross_entropy_with_logits(text_logits, labels)
            if self.training and self.config.embedding_l2 and self.id_head is not None:
                tables = [self.flip.id_encoder.embeddings] + ([self.id_first_order] if self.id_first_order is not None else [])
                loss = loss + self.config.embedding_l2 / 2 * sum(t.embedding.weight.pow(2).sum() for t in tables)
        return FlipForCTROutput(
            loss=loss,
            logits=logits,
            probabilities=torch.sigmoid(logits),
            id_logits=id_logits if mode == "joint" else None,
            text_logits=text_logits if mode == "joint" else None,
        )


__all__ = [
    "FlipPreTrainedModel",
    "FlipModel",
    "FlipForPretraining",
    "FlipForCTR",
    "FlipModelOutput",
    "FlipForPretrainingOutput",
    "FlipForCTROutput",
]
