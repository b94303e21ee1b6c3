#!/usr/bin/env python
"""Train FLIP end to end: pretrain the aligned encoders, finetune them for CTR, report AUC/LogLoss.

Examples:
    python scripts/train.py --preset quickstart --output_dir runs/quickstart
    python scripts/train.py --preset cpu-small --output_dir runs/cpu-small
    python scripts/train.py --stage finetune --ctr_mode id --pretrained_model runs/cpu-small/pretrain
    python scripts/train.py --stage finetune --ctr_mode id --streaming true --schema data/schema.json \
        --train_files 'data/train-*.parquet' --validation_files 'data/validation-*.parquet' --test_files 'data/test-*.parquet'
    accelerate launch --multi_gpu --num_processes 2 scripts/train.py --preset quickstart

Stages: `pretrain`, `finetune` (one `--ctr_mode`), `all` (pretrain, then finetune the three modes and
print one table). Presets live in scripts/configs/<name>.yaml; `--config FILE.yaml` loads any YAML;
command-line flags override both. Data split in advance into files comes through --train_files,
--validation_files, --test_files and --schema; with --streaming true it is never held in memory (FLIP_ID:
--stage finetune --ctr_mode id). The output directory holds one folder per model (with its
processor and model card), `results.json` and each stage's trainer state.

The flags below are FLIP's own. Every `transformers.TrainingArguments` flag is accepted too (--seed,
--output_dir, --weight_decay, --warmup_steps, --logging_steps, --max_steps, --save_steps, --bf16,
--use_cpu, --per_device_eval_batch_size, --dataloader_num_workers, --train_sampling_strategy
group_by_length, --report_to, ...) and applies to every stage; the stage flags (--pretrain_learning_rate,
--finetune_epochs, --id_batch_size...) set what differs between stages. The recipe itself is
flip_hf.training_run.FlipRun.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers.hf_argparser import HfArgumentParser  # light: no torch import

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
STAGES = ("pretrain", "finetune", "all")

logger = logging.getLogger("flip_hf.train")


@dataclass
class DataArguments:
    dataset: str = field(default="movielens-100k", metadata={"help": "Recipe: movielens-100k, movielens-1m, bookcrossing, goodreads, adult; or a folder written by flip_hf.data.save_dataset."})
    data_dir: str | None = field(default=None, metadata={"help": "Folder with the dataset's official files (else download)."})
    split: str | None = field(default=None, metadata={"help": "time (8:1:1 by timestamp), user_time or random; default: the recipe's own (time for MovieLens and Goodreads, random for Book-Crossing and Adult, which have no timestamps)."})
    dataset_options: str | None = field(default=None, metadata={"help": """JSON object of the recipe's own options, e.g. '{"history_length": 5}' (MovieLens: each rating gets the user's last 5 liked titles before it, as the field recent_likes)."""})
    prompt_style: str = field(default="natural", metadata={"help": "natural (the paper's) or compact (fewer tokens)."})
    max_length: int = field(default=128, metadata={"help": "Token budget of a prompt; long values are cut inside their span."})
    min_frequency: int = field(default=1, metadata={"help": "Rarer values map to the unknown id."})
    max_pretrain_samples: int | None = field(default=None, metadata={"help": "Pretrain on a seeded random subset of train."})
    max_finetune_samples: int | None = field(default=None, metadata={"help": "Finetune text/joint modes on a subset of train."})
    subset_id_finetuning: bool = field(default=False, metadata={"help": "FLIP_ID too on that subset (equal data for every mode)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N rows of validation and test."})
    max_vocab_size: int | None = field(default=None, metadata={"help": "Keep at most this many values per field, the most frequent."})
    train_files: str | None = field(default=None, metadata={"help": "Data split in advance, instead of --dataset: the training CSV / parquet file or glob ('data/train-*.parquet'), with --validation_files, --test_files and --schema."})
    validation_files: str | None = field(default=None, metadata={"help": "The validation file or glob (see --train_files)."})
    test_files: str | None = field(default=None, metadata={"help": "The test file or glob (see --train_files)."})
    schema: str | None = field(default=None, metadata={"help": "JSON file of the files' TabularSchema (TabularSchema.to_json_file; a save_dataset folder holds one, flip_schema.json)."})
    streaming: bool = field(default=False, metadata={"help": "Stream --train_files: one pass fits the vocabularies and training never holds the table. FLIP_ID only (--stage finetune --ctr_mode id); validation and test are read into memory (the first --max_eval_samples rows)."})
    shuffle_buffer_size: int = field(default=100_000, metadata={"help": "With --streaming: rows mixed at a time (the files' order is shuffled each epoch too)."})


@dataclass
class ModelArguments:
    text_model: str = field(default="sentence-transformers/all-MiniLM-L6-v2", metadata={"help": "PLM: Hub id or path (default works offline)."})
    text_num_layers: int | None = field(default=None, metadata={"help": "Keep only the first k PLM layers."})
    freeze_word_embeddings: bool = field(default=False, metadata={"help": "Do not train the PLM's word embeddings."})
    backbone: str = field(default="dcnv2", metadata={"help": "ID backbone: dnn, lr, fm, deepfm, widedeep, dcn, dcnv2, autoint, xdeepfm."})
    backbone_options: str | None = field(default=None, metadata={"help": "JSON options of the backbone. Default: for dcnv2, FuxiCTR's network (3 full-rank cross layers, MLP 256-128); '{}' for the backbone's own defaults (dcnv2: the FLIP reference's)."})
    embedding_size: int = field(default=16, metadata={"help": "Size of each ID embedding (FuxiCTR's 16; the FLIP reference's 32)."})
    numeric_encoding: str = field(default="piecewise_linear", metadata={"help": "Numeric fields: piecewise_linear (the bucket embeddings interpolated by the value's place inside its bucket; UCI Adult +0.0014 test AUC) or bucket."})
    id_first_order: bool = field(default=False, metadata={"help": "Add a first-order (LR) term to the ID logit."})
    embedding_l2: float = field(default=0.01, metadata={"help": "L2 on the ID embedding tables in CTR training (FuxiCTR's regulariser; 0 for none)."})
    mlm_weight: float = 1.0
    mtm_weight: float = 1.0
    icl_weight: float = 1.0
    masking: str = field(default="field", metadata={"help": "field (FLIP) or token (ablation)."})
    text_mask_ratio: float = 0.15
    id_mask_ratio: float = 0.15
    temperature: float = 0.7
    learnable_temperature: bool = False
    text_pooling: str | None = field(default=None, metadata={"help": "cls or mean; default: the PLM's declared pooling, else cls."})
    align_layer_norm: bool = field(default=True, metadata={"help": "LayerNorm on h_id where it meets the text in pretraining."})
    projection_head: str = field(default="linear", metadata={"help": "ICL projections: linear or mlp (the reference's)."})
    fusion_init: float = 0.0
    freeze_text_encoder: bool = field(default=False, metadata={"help": "Finetune text/joint modes on a frozen PLM whose vectors are cached per row."})
    text_trainable_layers: int = field(default=0, metadata={"help": "With --freeze_text_encoder: the PLM's top k layers train all the same, over the frozen part's token states cached per row."})
    text_head_hidden_size: int = field(default=0, metadata={"help": "0: linear text logit head; > 0: an MLP of this width."})
    text_head_batch_norm: bool = field(default=True, metadata={"help": "Standardise the text vector over the batch before the text head."})
    pretrained_model: str | None = field(default=None, metadata={"help": "FLIP pretraining checkpoint for --stage finetune."})


@dataclass
class RunArguments:
    stage: str = field(default="all", metadata={"help": "pretrain, finetune or all."})
    ctr_mode: str = field(default="joint", metadata={"help": "Mode of --stage finetune: id, text or joint."})
    all_modes: str = field(default="id,text,joint", metadata={"help": "Modes that --stage all finetunes."})
    joint_init: str = field(default="pretrained", metadata={"help": "FLIP (joint) starts from the pretraining checkpoint and trains both sides together (pretrained, the paper's), or joins this run's finetuned FLIP_ID and FLIP_PLM with the fusion fitted on validation (finetuned)."})
    baselines: str = field(default="id", metadata={"help": "Modes that --stage all also trains without pretraining (id, text; '' for none)."})
    preset: str | None = field(default=None, metadata={"help": "A YAML file in scripts/configs: quickstart, cpu-small, cpu-long, full."})
    config: str | None = field(default=None, metadata={"help": "A YAML file of arguments."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace the run in --output_dir (what it wrote, nothing else)."})
    pretrain_epochs: float = 1.0
    pretrain_learning_rate: float = 1e-4
    pretrain_plm_learning_rate: float | None = field(default=None, metadata={"help": "Pretraining rate of the PLM (default: --pretrain_learning_rate); lower keeps the PLM's sentence vectors and aligns the ID side to them."})
    pretrain_batch_size: int = 64
    finetune_epochs: float = field(default=20.0, metadata={"help": "At most; early stopping on validation AUC ends most runs sooner."})
    finetune_learning_rate: float = field(default=1e-3, metadata={"help": "Finetuning rate of everything but the PLM."})
    finetune_lr_scheduler: str = field(default="reduce_lr_on_plateau", metadata={"help": "reduce_lr_on_plateau (x0.1 at each validation without a better AUC, FuxiCTR's) or cosine."})
    plm_learning_rate: float = field(default=5e-5, metadata={"help": "Finetuning rate of the PLM."})
    id_batch_size: int = 1024
    text_batch_size: int = 64
    early_stopping_patience: int = 2
    text_side_patience: int | None = field(default=None, metadata={"help": "FLIP (joint): freeze the text side at its best validation AUC after this many validations without a better one, while the ID side trains on (default: never)."})
    evals_per_epoch: int = field(default=1, metadata={"help": "Validation runs per finetuning epoch."})
    text_vectors_bf16: bool = field(default=False, metadata={"help": "Compute the cached frozen-PLM vectors under bfloat16 autocast (on with --bf16): twice as fast on a CPU with AVX512-BF16 or AMX, cosine to the float32 vectors above 0.9999."})


ARGUMENT_CLASSES = (DataArguments, ModelArguments, RunArguments)
EPILOG = (
    "Every transformers.TrainingArguments flag is accepted too and applies to every stage: --output_dir "
    "(default runs/flip), --seed (42), --weight_decay (1e-3), --warmup_steps, --logging_steps (20), --max_steps, "
    "--save_steps, --bf16, --use_cpu, --per_device_eval_batch_size (256), --dataloader_num_workers, "
    "--train_sampling_strategy group_by_length (prompt batches of similar length), --report_to, --resume_from_checkpoint "
    "('last' or a checkpoint folder)..."
)
# FLIP's defaults for TrainingArguments fields; any of them can be overridden by its flag.
TRAINING_DEFAULTS = dict(
    output_dir="runs/flip", seed=42, weight_decay=1e-3, lr_scheduler_type="cosine", logging_steps=20,
    logging_first_step=True, per_device_eval_batch_size=256, save_total_limit=2, report_to="none", disable_tqdm=False,
)
# TrainingArguments fields that each stage sets from FLIP's stage flags: a flag for them would be ignored, so it is refused.
STAGE_FLAGS = {
    "learning_rate": "--pretrain_learning_rate / --pretrain_plm_learning_rate / --finetune_learning_rate / --plm_learning_rate",
    "num_train_epochs": "--pretrain_epochs / --finetune_epochs",
    "per_device_train_batch_size": "--pretrain_batch_size / --id_batch_size / --text_batch_size",
    "eval_strategy": "--evals_per_epoch", "eval_steps": "--evals_per_epoch",
    "load_best_model_at_end": "nothing: finetuning always keeps the best validation AUC",
    "metric_for_best_model": "nothing: finetuning always keeps the best validation AUC",
}


def yaml_to_argv(path: Path) -> list[str]:
    import yaml

    with open(path, encoding="utf-8") as f:
        values = yaml.safe_load(f) or {}
    argv = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        argv += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return argv


def parse_arguments(argv: list[str]) -> tuple[DataArguments, ModelArguments, RunArguments, dict]:
    """FLIP's arguments, and the TrainingArguments flags of the run (FLIP's defaults, then the preset, the
    --config file and the command line, each overriding the one before)."""
    parser = HfArgumentParser(ARGUMENT_CLASSES, description=__doc__.split("\n")[0], epilog=EPILOG, allow_abbrev=False)
    *_, run_args, _ = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    files = []
    if run_args.preset:
        preset = CONFIG_DIR / f"{run_args.preset}.yaml"
        if not preset.exists():
            names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
            raise SystemExit(f"Unknown preset {run_args.preset!r}; valid presets: {', '.join(names)}.")
        files.append(preset)
    if run_args.config:
        files.append(Path(run_args.config))
    defaults = [arg for file in files for arg in yaml_to_argv(file)]
    data_args, model_args, run_args, training_argv = parser.parse_args_into_dataclasses(
        args=defaults + argv, return_remaining_strings=True
    )
    check_flip_arguments(data_args, model_args, run_args)
    return data_args, model_args, run_args, training_flags(training_argv)


def training_flags(argv: list[str]) -> dict:
    """The TrainingArguments values a run sets: FLIP's defaults plus the flags given, checked by transformers' parser."""
    from transformers import TrainingArguments

    given = [arg.split("=", 1)[0][2:] for arg in argv if arg.startswith("--")]
    owned = [name for name in given if name in STAGE_FLAGS]
    if owned:
        raise SystemExit(f"--{owned[0]} is set per stage; use {STAGE_FLAGS[owned[0]]}.")
    defaults = [arg for key, value in TRAINING_DEFAULTS.items() for arg in (f"--{key}", str(value))]
    parser = HfArgumentParser(TrainingArguments, allow_abbrev=False, exit_on_error=False)
    try:
        parsed, unknown = parser.parse_known_args(defaults + argv)
    except argparse.ArgumentError as error:
        unknown, parsed = [str(error)], None
    if unknown:
        raise SystemExit(f"Unknown or malformed arguments: {' '.join(unknown)}. FLIP's flags are listed by --help; any "
                         "transformers.TrainingArguments flag works too.")
    return {name: getattr(parsed, name) for name in [*TRAINING_DEFAULTS, *given]}


def check_flip_arguments(data_args: DataArguments, model_args: ModelArguments, run_args: RunArguments) -> None:
    """Before anything is written: values that would otherwise fail mid-run, or leave a poisoned run folder."""
    from flip_hf.training_run import FINETUNE_SCHEDULERS, JOINT_INITS, MODE_DIRS

    if run_args.stage not in STAGES:
        raise SystemExit(f"Unknown stage {run_args.stage!r}; valid stages: {', '.join(STAGES)}.")
    for mode in [run_args.ctr_mode, *run_args.all_modes.split(","), *filter(None, run_args.baselines.split(","))]:
        if mode not in MODE_DIRS:
            raise SystemExit(f"Unknown ctr_mode {mode!r}; valid modes: {', '.join(MODE_DIRS)}.")
    if run_args.joint_init not in JOINT_INITS:
        raise SystemExit(f"Unknown joint_init {run_args.joint_init!r}; valid: {', '.join(JOINT_INITS)}.")
    modes = run_args.all_modes.split(",")
    if run_args.joint_init == "finetuned" and not (
        run_args.stage == "all" and "joint" in modes and {"id", "text"} <= set(modes[: modes.index("joint")])
    ):
        raise SystemExit("--joint_init finetuned joins the FLIP_ID and FLIP_PLM of the same run: use --stage all with "
                         "--all_modes id,text,joint (or FlipForCTR.from_finetuned in Python).")
    if run_args.finetune_lr_scheduler not in FINETUNE_SCHEDULERS:
        raise SystemExit(f"Unknown finetune_lr_scheduler {run_args.finetune_lr_scheduler!r}; valid: {', '.join(FINETUNE_SCHEDULERS)}.")
    for name in ("max_pretrain_samples", "max_finetune_samples", "max_eval_samples", "max_vocab_size"):
        value = getattr(data_args, name)
        if value is not None and value < 1:
            raise SystemExit(f"--{name} must be at least 1, got {value}; leave it out to use every row.")
    check_files(data_args, run_args)
    check_split(data_args)
    check_dataset_options(data_args)
    check_backbone(model_args)
    if model_args.pretrained_model:
        from flip_hf.loading import WEIGHTS_FILES, check_source

        try:
            check_source(model_args.pretrained_model, WEIGHTS_FILES, "FLIP checkpoint",
                         "Pass the pretrain/ folder of a FLIP run (or a Hub repo id).")
        except FileNotFoundError as error:
            raise SystemExit(f"--pretrained_model: {error}") from None


def check_files(data_args: DataArguments, run_args: RunArguments) -> None:
    """Data from files comes whole (three splits and their schema), and streams only where training can stream."""
    files = {"--train_files": data_args.train_files, "--validation_files": data_args.validation_files,
             "--test_files": data_args.test_files, "--schema": data_args.schema}
    if any(files.values()) and not all(files.values()):
        missing = [flag for flag, value in files.items() if not value]
        raise SystemExit(f"Data from files needs {', '.join(files)} together; {', '.join(missing)} missing.")
    if data_args.schema:
        from flip_hf.schema import TabularSchema

        try:
            TabularSchema.from_json_file(data_args.schema)
        except (OSError, ValueError, TypeError) as error:
            raise SystemExit(f"--schema {data_args.schema}: {error}") from None
    if not data_args.streaming:
        return
    if not data_args.train_files:
        raise SystemExit("--streaming reads --train_files, --validation_files and --test_files (with --schema); the "
                         "recipes of --dataset load into memory.")
    if (run_args.stage, run_args.ctr_mode) != ("finetune", "id") or data_args.subset_id_finetuning:
        raise SystemExit("--streaming trains FLIP_ID only: pass --stage finetune --ctr_mode id (without "
                         "--subset_id_finetuning). Pretraining and the text modes tokenize every prompt, which is not "
                         "streamed yet.")
    if data_args.shuffle_buffer_size < 1:
        raise SystemExit(f"--shuffle_buffer_size must be at least 1, got {data_args.shuffle_buffer_size}.")


def check_split(data_args: DataArguments) -> None:
    """--split applies to a recipe; left out, it becomes the recipe's own, so the run records what it used."""
    from flip_hf.data import recipe_split

    already_split = "--train_files" if data_args.train_files else None
    if not already_split and recipe_split(data_args.dataset) is None and os.path.isdir(data_args.dataset):
        already_split = f"the saved dataset {data_args.dataset}"
    if already_split and data_args.split:
        raise SystemExit(f"--split {data_args.split} applies to the dataset recipes; {already_split} is split "
                         "already: leave --split out.")
    if not already_split and not data_args.split:
        data_args.split = recipe_split(data_args.dataset)


def check_backbone(model_args: ModelArguments) -> None:
    """Before anything is written: an unknown backbone or unreadable options would otherwise fail mid-run."""
    from flip_hf.backbones import available_backbones

    if model_args.backbone not in available_backbones():
        raise SystemExit(f"Unknown backbone {model_args.backbone!r}; valid backbones: {', '.join(available_backbones())}.")
    json_object_flag("backbone_options", model_args.backbone_options, """'{"hidden_sizes": [256, 128]}'""")


def check_dataset_options(data_args: DataArguments) -> None:
    """The recipe's options exist: a typo would otherwise load the data without them, or fail mid-run."""
    from flip_hf.data import RECIPES, check_recipe_options

    options = json_object_flag("dataset_options", data_args.dataset_options, """'{"history_length": 5}'""")
    saved = data_args.dataset not in RECIPES and os.path.isdir(data_args.dataset)
    if options and (data_args.train_files or saved):
        source = "--train_files" if data_args.train_files else f"the saved dataset {data_args.dataset}"
        raise SystemExit(f"--dataset_options applies to the dataset recipes; {source} is built already: leave it out.")
    try:
        check_recipe_options(data_args.dataset, options)
    except ValueError as error:
        raise SystemExit(f"--dataset_options: {error}") from None


def json_object_flag(name: str, text: str | None, example: str) -> dict:
    """A flag holding a JSON object, parsed; anything else stops the run with an example."""
    try:
        options = json.loads(text) if text is not None else {}
    except json.JSONDecodeError as error:
        options = error
    if not isinstance(options, dict):
        raise SystemExit(f"--{name} must be a JSON object, got {text!r} ({options}). Example: --{name} {example}.")
    return options


def build_run(argv: list[str]):
    """The `flip_hf.training_run.FlipRun` these command-line arguments describe."""
    data_args, model_args, run_args, flags = parse_arguments(argv)  # first: --help exits before the heavy imports
    from transformers import TrainingArguments

    from flip_hf.training_run import FlipRun

    return FlipRun(data_args, model_args, run_args, TrainingArguments(**flags), flags)


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    run = build_run(sys.argv[1:] if argv is None else argv)
    import transformers

    transformers.logging.set_verbosity_warning()
    return run.run()


if __name__ == "__main__":
    main()
