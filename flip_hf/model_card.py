"""Model cards for FLIP checkpoints: Hub metadata with eval results (`model-index`) and a full README.

The card is generated from three sources, so that every way of publishing writes the same README:
* the model's config (variant, backbone, fields, PLM), read whenever the card is rendered;
* the processor (prompt template and one rendered example), captured once and kept as text;
* the training run (hyperparameters, eval results per mode and split, time, hardware, versions),
  collected by `FlipModelCardCallback`.
All of it lives in `FlipModelCardData`, which is persisted as `flip_card_data.json` next to the
weights: a checkpoint reloaded with `from_pretrained` and pushed later renders the same card.
Rendering never touches the network.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import os
import platform
import re
from dataclasses import dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

from huggingface_hub import CardData, EvalResult, ModelCard, ModelCardData
from transformers import TrainerCallback

from .metrics import parse_metric_key

logger = logging.getLogger(__name__)

CARD_DATA_NAME = "flip_card_data.json"
TEMPLATE_PATH = Path(__file__).with_name("model_card_template.md")

# The Hub has no CTR task: "tabular-classification" is the closest tag it renders and filters on.
PIPELINE_TAG = "tabular-classification"
# Checkpoints are plain transformers checkpoints (Auto classes, remote code), so the Hub's
# "Use this model" snippet for transformers applies.
LIBRARY_NAME = "transformers"
DEFAULT_TAGS = ["flip", "flip_hf", "ctr-prediction", "recommendation", "tabular-classification"]

VARIANTS = {"id": "FLIP_ID", "text": "FLIP_PLM", "joint": "FLIP"}
VARIANT_DESCRIPTIONS = {
    "id": "the ID-based CTR model alone with a logit head. It serves at the cost of a plain CTR model "
    "(no language model is loaded) and carries the language model's knowledge through FLIP pretraining.",
    "text": "the pretrained language model alone with a logit head on the pooled text vector of the prompt.",
    "joint": "both encoders, fused as `sigmoid(alpha * z_id + (1 - alpha) * z_text + b)` with a learnable "
    "`alpha`, trained with the fused loss plus one loss per modality.",
}
# Results a run may record beside its FLIP variants: the same networks trained without FLIP pretraining.
BASELINES = {"baseline_id": "ID-only (no pretraining)", "baseline_text": "PLM-only (no pretraining)"}
RESULT_NAMES = {**VARIANTS, **BASELINES}
# metric name in flip_hf's metric module -> (Hub metric type, display name)
METRICS = {"auc": ("roc_auc", "AUC"), "logloss": ("log_loss", "LogLoss"), "gauc": ("gauc", "gAUC")}
# Trainer's metric_key_prefix "eval" is the validation split; any other prefix names its split.
SPLIT_OF_PREFIX = {"eval": "validation"}
SPLIT_ORDER = ("train", "validation", "test")

# TrainingArguments that describe bookkeeping, not the training itself.
IGNORED_TRAINING_ARGS = {
    "output_dir", "logging_dir", "run_name", "report_to", "overwrite_output_dir", "do_train", "do_eval",
    "do_predict", "disable_tqdm", "push_to_hub", "hub_token", "hub_model_id", "hub_strategy", "hub_private_repo",
    "hub_always_push", "hub_revision", "push_to_hub_token", "save_strategy", "save_steps", "save_total_limit",
    "save_only_model", "save_on_each_node", "logging_strategy", "logging_steps", "logging_first_step",
    "log_level", "log_level_replica", "log_on_each_node", "resume_from_checkpoint", "local_rank",
    "accelerator_config",
}
# FlipConfig entries that the card shows elsewhere or that are structure rather than choices.
IGNORED_CONFIG_KEYS = {
    "fields", "text_config", "text_model_name_or_path", "ctr_mode", "backbone", "pad_token_id", "mask_token_id",
    "vocabulary_fingerprint",
}

CITATION = """@inproceedings{wang2024flip,
  title     = {{FLIP}: Fine-grained Alignment between {ID}-based Models and Pretrained Language Models for {CTR} Prediction},
  author    = {Wang, Hangyu and Lin, Jianghao and Li, Xiangyang and Chen, Bo and Zhu, Chenxu and Tang, Ruiming and Zhang, Weinan and Yu, Yong},
  booktitle = {Proceedings of the 18th ACM Conference on Recommender Systems (RecSys '24)},
  year      = {2024},
  eprint    = {2310.19453},
  archivePrefix = {arXiv},
}"""


def get_versions() -> dict[str, str]:
    """Versions of the libraries a checkpoint was trained with (read from metadata: no imports)."""
    versions = {"python": platform.python_version()}
    for name, distribution in [
        ("flip_hf", "flip-hf"), ("transformers", "transformers"), ("torch", "torch"), ("datasets", "datasets"),
        ("accelerate", "accelerate"), ("huggingface_hub", "huggingface-hub"), ("tokenizers", "tokenizers"),
    ]:
        try:
            versions[name] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return versions


def get_hardware(num_processes: int = 1) -> str:
    """"2 x NVIDIA H100 80GB HBM3" or "CPU: <model> (16 cores)": what the training time was measured on."""
    import torch

    if torch.cuda.is_available():
        return f"{max(num_processes, 1)} x {torch.cuda.get_device_name(0)}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), cpu)
    except OSError:
        pass
    processes = f", {num_processes} processes" if num_processes > 1 else ""
    return f"CPU: {cpu} ({os.cpu_count()} cores{processes})"


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} seconds"
    if seconds < 3600:
        return f"{seconds / 60:.1f} minutes"
    return f"{seconds / 3600:.1f} hours"


def _plain(value: Any) -> Any:
    """JSON- and YAML-safe Python values (numpy scalars, tuples and enums come out of Trainer and datasets)."""
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    return str(value)


def _hub_model_id(name_or_path: str | None) -> str | None:
    """`base_model` must be a Hub id, or the Hub rejects the metadata: drop local paths."""
    if name_or_path and re.fullmatch(r"[\w.-]+/[\w.-]+", name_or_path) and not os.path.exists(name_or_path):
        return name_or_path
    return None


def _split_and_metrics(metrics: dict[str, float]) -> tuple[str | None, dict[str, float]]:
    """("validation", {"auc": ...}) from Trainer metrics such as {"eval_auc": ..., "eval_loss": ...}."""
    prefix, found = None, {}
    for key, value in metrics.items():
        head, name = parse_metric_key(key, METRICS) or ("", None)
        if head:
            prefix, found[name] = head, float(value)
    return (SPLIT_OF_PREFIX.get(prefix, prefix) if prefix else None), found


@dataclass
class FlipModelCardData(CardData):
    """What a FLIP model card says, as plain Python values (saved as `flip_card_data.json`).

    Args:
        model_id: the Hub repo id ("org/flip-movielens"); used in the usage snippet.
        model_name: a pretty name; defaults to "<variant> on <dataset>".
        dataset_name: the dataset's pretty name ("MovieLens-1M"); defaults to the schema's name.
        dataset_id: the dataset's Hub id, if it has one (links the card to it).
        split_description: how train / validation / test were made ("time-ordered 8:1:1").
        license, language, tags: Hub metadata.

    The rest is filled in by `set_model`, `set_processor`, `FlipModelCardCallback` and `add_results`.
    """

    model_id: str | None = None
    model_name: str | None = None
    dataset_name: str | None = None
    dataset_id: str | None = None
    split_description: str | None = None
    license: str = "apache-2.0"
    language: list[str] = field(default_factory=lambda: ["en"])
    tags: list[str] = field(default_factory=lambda: list(DEFAULT_TAGS))
    # from the model (refreshed whenever a card is rendered)
    architecture: str | None = None
    ctr_mode: str | None = None
    backbone: str | None = None
    base_model: str | None = None
    fields: list[dict[str, Any]] = field(default_factory=list)
    model_hyperparameters: dict[str, Any] = field(default_factory=dict)
    # from the processor
    prompt_template: str | None = None
    prompt_example: str | None = None
    example_row: dict[str, Any] | None = None
    # from training
    results: list[dict[str, Any]] = field(default_factory=list)
    training_hyperparameters: dict[str, Any] = field(default_factory=dict)
    training_seconds: float | None = None
    # [{"model": "pretrain" or a result's ctr_mode, "seconds": ...}]: what each model of the run cost to train
    training_times: list[dict[str, Any]] = field(default_factory=list)
    hardware: str | None = None
    versions: dict[str, str] = field(default_factory=get_versions)

    # ------------------------------------------------------------------------------------- filling
    def set_model(self, model) -> None:
        self.set_config(model.config, type(model).__name__)

    def set_config(self, config, architecture: str | None = None) -> None:
        """Read the variant, backbone, fields, PLM and non-default options from a FlipConfig."""
        self.architecture = architecture or (config.architectures or [None])[0]
        self.ctr_mode = config.ctr_mode
        self.backbone = config.backbone
        self.base_model = config.text_model_name_or_path
        self.fields = [{"name": f["name"], "kind": f["kind"], "vocab_size": f["vocab_size"]} for f in config.fields]
        defaults = type(config)().to_dict()
        self.model_hyperparameters = {
            key: _plain(value)
            for key, value in config.to_dict().items()
            if key in type(config).__annotations__ and key not in IGNORED_CONFIG_KEYS and value != defaults.get(key)
        }

    def set_processor(self, processor, example_row: dict[str, Any] | None = None) -> None:
        """Keep the prompt template and one rendered example (and the row, for the usage snippet)."""
        names = [spec.name for spec in processor.fields]
        if self.dataset_name is None:
            self.dataset_name = processor.schema.name
        self.prompt_template = processor.template_text()
        if example_row is None or any(name not in example_row for name in names):
            example_row = self.example_row or _typical_row(processor)
        self.example_row = {name: _plain(example_row[name]) for name in names}
        self.prompt_example = processor.render_text(self.example_row)

    def add_results(self, ctr_mode: str, split: str, metrics: dict[str, float]) -> None:
        """Record AUC / LogLoss / gAUC of one mode on one split; keys may carry a prefix ("test_auc")."""
        values = {}
        for key, value in metrics.items():
            parsed = parse_metric_key(key, METRICS)
            if parsed:
                values[parsed[1]] = float(value)
        if not values:
            return
        for entry in self.results:
            if entry["ctr_mode"] == ctr_mode and entry["split"] == split:
                entry["metrics"].update(values)
                return
        self.results.append({"ctr_mode": ctr_mode, "split": split, "metrics": values})

    def add_training_time(self, model: str, seconds: float) -> None:
        """Record how long one model of the run (or "pretrain", FLIP pretraining) trained."""
        self.training_times = [entry for entry in self.training_times if entry["model"] != model]
        self.training_times.append({"model": model, "seconds": float(seconds)})

    def add_tags(self, tags: str | list[str]) -> None:
        for tag in [tags] if isinstance(tags, str) else tags:
            if tag not in self.tags:
                self.tags.append(tag)

    # --------------------------------------------------------------------------------- persistence
    def save(self, save_directory: str | os.PathLike) -> None:
        payload = {f.name: _plain(getattr(self, f.name)) for f in fields(self)}
        path = Path(save_directory) / CARD_DATA_NAME
        path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> FlipModelCardData | None:
        """Card data from a checkpoint directory (or the JSON file itself); None if it has none."""
        path = Path(path)
        if path.is_dir():
            path = path / CARD_DATA_NAME
        if not path.is_file():
            return None
        payload = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in payload.items() if key in known})

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> FlipModelCardData | None:
        """Card data of a local checkpoint, a Hub repo or the Hub cache; None if the checkpoint has none.

        Takes `from_pretrained`'s keyword arguments and uses the Hub ones (revision, token, cache_dir,
        local_files_only...), so it follows offline mode like the model loading it accompanies.
        """
        from transformers.utils import cached_file

        hub_keys = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only", "subfolder")
        resolved = cached_file(
            pretrained_model_name_or_path,
            CARD_DATA_NAME,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **{key: kwargs[key] for key in hub_keys if kwargs.get(key) is not None},
        )
        return cls.load(resolved) if resolved else None

    # ----------------------------------------------------------------------------------- rendering
    @property
    def variant(self) -> str:
        if self.architecture == "FlipForPretraining":
            return "FLIP pretraining"
        return VARIANTS.get(self.ctr_mode, "FLIP")

    def display_name(self) -> str:
        if self.model_name:
            return self.model_name
        return f"{self.variant} ({self.backbone}) on {self.dataset_name}" if self.dataset_name else self.variant

    def eval_results(self) -> list[EvalResult]:
        """The checkpoint's own mode, every split and metric: what the Hub shows as its results."""
        if not self.dataset_name:
            return []
        dataset_type = self.dataset_id or re.sub(r"[^a-z0-9]+", "-", self.dataset_name.lower()).strip("-")
        return [
            EvalResult(
                task_type=PIPELINE_TAG,
                task_name="CTR prediction",
                dataset_type=dataset_type,
                dataset_name=self.dataset_name,
                dataset_split=entry["split"],
                metric_type=METRICS[name][0],
                metric_name=f"{METRICS[name][1]} ({entry['split']})",
                metric_value=value,
            )
            for entry in self._sorted_results()
            if entry["ctr_mode"] == self.ctr_mode
            for name, value in entry["metrics"].items()
        ]

    def _sorted_results(self) -> list[dict[str, Any]]:
        modes = list(RESULT_NAMES)
        rank = {split: i for i, split in enumerate(SPLIT_ORDER)}
        return sorted(
            self.results,
            key=lambda e: (modes.index(e["ctr_mode"]) if e["ctr_mode"] in modes else 9, rank.get(e["split"], 9)),
        )

    def to_dict(self) -> dict[str, Any]:
        """The YAML metadata block (what `ModelCard` writes between the `---` lines)."""
        eval_results = self.eval_results()
        return ModelCardData(
            language=self.language,
            license=self.license,
            library_name=LIBRARY_NAME,
            pipeline_tag=PIPELINE_TAG,
            tags=self.tags,
            datasets=[self.dataset_id] if self.dataset_id else None,
            base_model=_hub_model_id(self.base_model),
            model_name=(self.model_id or self.display_name()) if eval_results else None,
            eval_results=eval_results or None,
        ).to_dict()

    def baseline_comparison(self) -> dict[str, Any] | None:
        """This model's test AUC against the ID-only baseline of the same run, when both were recorded."""
        test_auc = {e["ctr_mode"]: e["metrics"].get("auc") for e in self.results if e["split"] == "test"}
        mine, baseline = test_auc.get(self.ctr_mode), test_auc.get("baseline_id")
        if mine is None or baseline is None:
            return None
        seconds = {entry["model"]: entry["seconds"] for entry in self.training_times}
        times = {"pretraining_time": seconds.get("pretrain"), "training_time": seconds.get(self.ctr_mode, self.training_seconds),
                 "baseline_time": seconds.get("baseline_id")}
        return {"this": f"{mine:.4f}", "baseline": f"{baseline:.4f}", "gap": f"{mine - baseline:+.4f}",
                **{name: format_duration(value) if value else None for name, value in times.items()}}

    def template_variables(self) -> dict[str, Any]:
        """What the Markdown body needs beyond the metadata."""
        modes = [m for m in RESULT_NAMES if m in {e["ctr_mode"] for e in self.results}]
        return {
            "comparison": self.baseline_comparison(),
            "frozen_text": bool(self.model_hyperparameters.get("freeze_text_encoder")),
            "text_trainable_layers": self.model_hyperparameters.get("text_trainable_layers", 0),
            "title": self.display_name(),
            "variant": self.variant,
            "variant_description": VARIANT_DESCRIPTIONS.get(self.ctr_mode, ""),
            "is_pretraining": self.architecture == "FlipForPretraining",
            "ctr_mode": self.ctr_mode,
            "backbone": self.backbone,
            "plm": self.base_model,
            "dataset_name": self.dataset_name,
            "dataset_id": self.dataset_id,
            "split_description": self.split_description,
            "fields": self.fields,
            "prompt_template": self.prompt_template,
            "prompt_example": self.prompt_example,
            "results_table": [
                {
                    "variant": RESULT_NAMES.get(entry["ctr_mode"], entry["ctr_mode"]),
                    "ctr_mode": entry["ctr_mode"],
                    "split": entry["split"],
                    "this_model": entry["ctr_mode"] == self.ctr_mode,
                    **{name: f"{entry['metrics'][name]:.4f}" if name in entry["metrics"] else "-" for name in METRICS},
                }
                for entry in self._sorted_results()
            ],
            "other_modes": [RESULT_NAMES[m] for m in modes if m != self.ctr_mode],
            "hyperparameters": {
                "training": self.training_hyperparameters,
                "model": self.model_hyperparameters,
            },
            "training_time": format_duration(self.training_seconds) if self.training_seconds else None,
            "hardware": self.hardware,
            "versions": self.versions,
            "usage_snippet": self.usage_snippet(),
            "citation": CITATION,
        }

    def usage_snippet(self) -> str:
        model_id = self.model_id or "path/to/this/checkpoint"
        if self.architecture == "FlipForPretraining":
            return (
                "import flip_hf  # registers FLIP with the Auto classes\n"
                "from flip_hf import FlipForCTR\n\n"
                "# reuse the aligned encoders for CTR finetuning: ctr_mode \"id\" (FLIP_ID), \"text\" (FLIP_PLM) or \"joint\"\n"
                f"model = FlipForCTR.from_pretrained({_python(model_id)}, ctr_mode=\"joint\")"
            )
        row = "".join(f"\n    {_python(key)}: {_python(value)}," for key, value in (self.example_row or {}).items())
        row = f"{{{row}\n}}"
        text = "False" if self.ctr_mode == "id" else "True"
        return (
            "import flip_hf  # registers FLIP with the Auto classes and the \"ctr-prediction\" pipeline\n"
            "from transformers import AutoModel, AutoProcessor, pipeline\n\n"
            f"row = {row}\n\n"
            f"ctr = pipeline(\"ctr-prediction\", model={_python(model_id)})\n"
            "print(ctr(row))  # {'probability': ...}; also takes a list of rows or a datasets.Dataset\n\n"
            "# or step by step\n"
            f"model = AutoModel.from_pretrained({_python(model_id)})\n"
            f"processor = AutoProcessor.from_pretrained({_python(model_id)})\n"
            f"inputs = processor(row, text={text}, return_tensors=\"pt\")\n"
            "print(model(**inputs).probabilities)"
        )


def _python(value: Any) -> str:
    """A Python literal in the style of the snippets around it (double-quoted strings)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_python(v) for v in value) + "]"
    return repr(value)


def _typical_row(processor) -> dict[str, Any]:
    """A row of each field's most frequent value: an example that needs no data, only the vocabularies."""
    row = {}
    for spec, vocabulary, boundaries in zip(processor.fields, processor.vocabularies, processor.bucket_boundaries):
        if spec.kind == "numeric":
            row[spec.name] = round(boundaries[len(boundaries) // 2], 2) if boundaries else 0
        elif spec.is_multi_valued:
            row[spec.name] = vocabulary[:1]
        else:
            row[spec.name] = vocabulary[0] if vocabulary else None
    return row


def _card_data_of(model, card_data: FlipModelCardData | None) -> FlipModelCardData:
    return card_data or getattr(model, "model_card_data", None) or FlipModelCardData()


def _render(card_data: FlipModelCardData) -> ModelCard:
    return ModelCard.from_template(card_data, template_path=str(TEMPLATE_PATH), **card_data.template_variables())


def generate_model_card(model, processor=None, card_data: FlipModelCardData | None = None) -> ModelCard:
    """The model card of a FLIP model (its `model_card_data` unless `card_data` is given); no network."""
    card_data = _card_data_of(model, card_data)
    card_data.set_model(model)
    if processor is not None:
        card_data.set_processor(processor)
    return _render(card_data)


def save_model_card(save_directory, model, processor=None, card_data: FlipModelCardData | None = None) -> None:
    """Write README.md and flip_card_data.json; a failure is logged, never raised (the weights matter more)."""
    try:
        card_data = _card_data_of(model, card_data)
        card = generate_model_card(model, processor, card_data)
        Path(save_directory).mkdir(parents=True, exist_ok=True)
        card.save(Path(save_directory) / "README.md")
        card_data.save(save_directory)
    except Exception:
        logger.warning("Could not write the model card to %s; the checkpoint is saved without it.", save_directory, exc_info=True)


def refresh_model_card(checkpoint_dir, model_id: str | None = None) -> None:
    """Re-render the card of a saved checkpoint from its files (config, processor, card data).

    Used before uploading, so that the card names the repo it is pushed to. A checkpoint without
    `flip_card_data.json` keeps its README untouched (it may be hand-written).
    """
    checkpoint_dir = Path(checkpoint_dir)
    card_data = FlipModelCardData.load(checkpoint_dir)
    if card_data is None:
        return
    try:
        from .configuration_flip import FlipConfig
        from .processing_flip import FlipProcessor

        card_data.set_config(FlipConfig.from_pretrained(checkpoint_dir))
        if (checkpoint_dir / "processor_config.json").is_file():
            card_data.set_processor(FlipProcessor.from_pretrained(checkpoint_dir), card_data.example_row)
        if model_id:
            card_data.model_id = model_id
        _render(card_data).save(checkpoint_dir / "README.md")
        card_data.save(checkpoint_dir)
    except Exception:
        logger.warning("Could not refresh the model card in %s; uploading it as it is.", checkpoint_dir, exc_info=True)


class FlipModelCardCallback(TrainerCallback):
    """Fills `model.model_card_data` during training, so that every save writes a complete card.

    Records the non-default TrainingArguments, the prompt (from the Trainer's processing class),
    the hardware, the train runtime and every evaluation's AUC / LogLoss / gAUC under the model's
    `ctr_mode` and the split named by the metric prefix ("eval" -> validation, "test" -> test).
    The last evaluation of a split wins, so evaluate the best model at the end.

    Args:
        card_data: start from this card data (dataset name, split description, license...).
    """

    def __init__(self, card_data: FlipModelCardData | None = None):
        self.card_data = card_data

    def _card_data(self, model) -> FlipModelCardData:
        if self.card_data is not None:
            model.model_card_data = self.card_data
        elif getattr(model, "model_card_data", None) is None:
            model.model_card_data = FlipModelCardData()
        return model.model_card_data

    def on_train_begin(self, args, state, control, model=None, processing_class=None, train_dataloader=None, **kwargs):
        card_data = self._card_data(model)
        card_data.add_tags("generated_from_trainer")
        card_data.set_model(model)
        card_data.training_hyperparameters = _changed_training_args(args)
        card_data.hardware = get_hardware(args.world_size)
        card_data.versions = get_versions()
        if args.hub_model_id and not card_data.model_id:
            card_data.model_id = args.hub_model_id
        if hasattr(processing_class, "render_text"):
            card_data.set_processor(processing_class, _first_row(train_dataloader))

    def on_log(self, args, state, control, model=None, logs=None, **kwargs):
        if logs and "train_runtime" in logs:
            self._card_data(model).training_seconds = float(logs["train_runtime"])

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):
        split, values = _split_and_metrics(metrics or {})
        if split is not None:
            self._card_data(model).add_results(model.config.ctr_mode, split, values)


def _changed_training_args(args) -> dict[str, Any]:
    """TrainingArguments that differ from their declared defaults.

    The defaults come from the dataclass fields: building a default TrainingArguments would
    reset the accelerator state of the run in progress. A default of None or "" that
    __post_init__ resolves to an empty or false value counts as unchanged.
    """
    changed = {}
    for spec in dataclasses.fields(args):
        if not spec.init or spec.name in IGNORED_TRAINING_ARGS or spec.name.startswith("_"):
            continue
        default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default
        value, default = _plain(getattr(args, spec.name)), _plain(default)
        if value != default and not (default in (None, "") and value in (None, False, "", [], {})):
            changed[spec.name] = value
    return changed


def _first_row(dataloader) -> dict[str, Any] | None:
    """A real training row for the prompt example, when the dataset still holds raw field values."""
    try:
        row = dataloader.dataset[0]
    except Exception:  # iterable or already encoded datasets have no such row
        return None
    return row if isinstance(row, dict) else None


__all__ = [
    "FlipModelCardCallback",
    "FlipModelCardData",
    "generate_model_card",
    "refresh_model_card",
    "save_model_card",
]
