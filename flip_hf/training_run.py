"""One FLIP training run, as scripts/train.py drives it: data, processor, stages, results.

Stages: `pretrain`, `finetune` (one mode), `all` (ID-only baseline, pretraining, then FLIP_ID, FLIP_PLM and
FLIP, with one results table). Each finished model is a Hub folder (weights, processor, card) under
`output_dir`; Trainer checkpoints go to `output_dir/checkpoints/<stage>`. Arguments come from
scripts/train.py (FLIP's own flags) and `transformers.TrainingArguments` (what every stage shares).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import datasets
import pyarrow as pa
import torch
from accelerate import PartialState
from transformers import EarlyStoppingCallback, TrainingArguments, set_seed

from .collator import DataCollatorForFlipCTR, DataCollatorForFlipPretraining
from .configuration_flip import FlipConfig
from .data import load_dataset_recipe, load_tabular
from .metrics import cold_and_warm_metrics
from .model_card import FlipModelCardData, refresh_model_card
from .modeling_flip import FlipForCTR, FlipForPretraining
from .processing_flip import FlipProcessor
from .schema import TabularSchema
from .side_stopping import TextSideEarlyStoppingCallback
from .streaming import FlipStreamingDataset
from .tensor_dataset import FlipTensorDataset
from .text_cache import cache_text_embeddings, cache_text_states
from .text_models import resolve_text_model
from .trainer import FlipTrainer

logger = logging.getLogger(__name__)

MODE_DIRS = {"id": "flip_id", "text": "flip_plm", "joint": "flip"}
MODE_NAMES = {"id": "FLIP_ID", "text": "FLIP_PLM", "joint": "FLIP"}
MODE_OF_DIR = {directory: mode for mode, directory in MODE_DIRS.items()}
# --stage all also trains these networks without FLIP pretraining, next to the FLIP models.
BASELINE_DIRS = {"id": "baseline_id", "text": "baseline_plm"}
BASELINE_NAMES = {"id": "ID-only", "text": "PLM-only"}
# every finetuned model folder -> (its key in model cards' results, its name in the results table)
RESULT_OF_DIR = {
    **{directory: (f"baseline_{mode}", BASELINE_NAMES[mode]) for mode, directory in BASELINE_DIRS.items()},
    **{directory: (mode, MODE_NAMES[mode]) for mode, directory in MODE_DIRS.items()},
}
SPLIT_DESCRIPTIONS = {
    "time": "time-ordered 8:1:1: the oldest 80% of interactions train, the next 10% validate, the newest 10% test",
    "user_time": "per user, the newest 10% of interactions test and the 10% before validate",
    "random": "seeded random 8:1:1",
}
# ModelArguments that are not FlipConfig entries.
NOT_CONFIG_ARGUMENTS = ("text_model", "pretrained_model")
# The recipe's ID network where --backbone_options is not given: FuxiCTR's DCNv2 (3 full-rank cross layers, MLP
# 256-128; with 16-dim embeddings it trains 1.66-1.8x as fast as FuxiCTR here, at a higher AUC). `{}` gives the
# backbone's own defaults, for dcnv2 the FLIP reference's (see benchmarks/FINDINGS.md).
RECIPE_BACKBONE_OPTIONS = {"dcnv2": {"low_rank": None, "num_cross_layers": 3, "hidden_sizes": [256, 128]}}
RUN_FILE = "run_args.json"
RESULTS_FILE = "results.json"
# --finetune_lr_scheduler: cosine decay, or FuxiCTR's x0.1 at each validation without a better AUC.
FINETUNE_SCHEDULERS = {
    "cosine": dict(lr_scheduler_type="cosine"),
    "reduce_lr_on_plateau": dict(lr_scheduler_type="reduce_lr_on_plateau", lr_scheduler_kwargs=dict(
        mode="max", factor=0.1, patience=0, threshold=1e-6, threshold_mode="abs", min_lr=1e-6)),
}
# Where FLIP (joint) starts: the pretraining checkpoint, or this run's finetuned FLIP_ID and FLIP_PLM.
JOINT_INITS = ("pretrained", "finetuned")
# Flags that may change between an interrupted run and its resumption.
RESUME_FLAGS = ("resume_from_checkpoint", "overwrite_output_dir", "preset", "config")



class FlipRun:
    """One run: data, processor, stages and their results; `run()` does it all and returns the results."""

    def __init__(self, data_args, model_args, run_args, training_args: TrainingArguments, training_flags: dict | None = None):
        """`data_args`, `model_args`, `run_args`: scripts/train.py's FLIP arguments; `training_args`: everything the
        stages share (seed, output_dir, logging, precision...); `training_flags`: the TrainingArguments values this run
        set, recorded so that a rerun with other values is caught."""
        self.data_args, self.model_args, self.run_args = data_args, model_args, run_args
        self.training_args, self.training_flags = training_args, dict(training_flags or {})
        self.output_dir = Path(training_args.output_dir)
        # on CPU the process group (gloo) must exist before the first main-process-only step
        self.state = PartialState(cpu=training_args.use_cpu or not torch.cuda.is_available())
        self.results: dict = {"stages": {}}

    # ------------------------------------------------------------------ set-up
    def check_output_dir(self) -> None:
        """Refuse to mix two different runs in one directory; an overwrite leaves nothing of the old run."""
        run = self.run_args
        if run.overwrite_output_dir and self.training_args.resume_from_checkpoint:
            raise SystemExit("--overwrite_output_dir replaces the run in --output_dir while --resume_from_checkpoint "
                             "continues it: pass one of the two.")
        record = {k: v for args in (self.data_args, self.model_args, self.run_args) for k, v in asdict(args).items()}
        record.update(self.training_flags)
        # where the run lives is not what it is: a copied run directory resumes like the original
        comparable = {k: v for k, v in record.items() if k not in RESUME_FLAGS and k != "output_dir"}
        path = self.output_dir / RUN_FILE
        if path.exists() and not self.run_args.overwrite_output_dir:
            previous = {k: v for k, v in json.loads(path.read_text()).items() if k not in RESUME_FLAGS}
            changed = sorted(k for k in comparable if previous.get(k) != comparable[k])
            if changed:
                raise SystemExit(
                    f"{self.output_dir} already holds a different run (differs in {changed}). Choose another "
                    "--output_dir, or pass --overwrite_output_dir to replace it."
                )
        if self.state.is_main_process:
            if run.overwrite_output_dir:
                self.remove_previous_run()
            self.output_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=2, sort_keys=True))
            results = self.output_dir / RESULTS_FILE
            if results.exists() and self.training_args.resume_from_checkpoint and not self.run_args.overwrite_output_dir:
                self.results = json.loads(results.read_text())
        self.state.wait_for_everyone()

    def remove_previous_run(self) -> None:
        """Delete what a run writes (its model folders, checkpoints and records), and nothing else of the folder."""
        for name in ("pretrain", "checkpoints", *RESULT_OF_DIR):
            shutil.rmtree(self.output_dir / name, ignore_errors=True)
        for name in (RUN_FILE, RESULTS_FILE):
            (self.output_dir / name).unlink(missing_ok=True)

    def load_data(self) -> None:
        """The splits (a recipe, or files split in advance) and the processor fitted on train.

        With --streaming the training files are read as a stream: the fit is one pass, training another per epoch, and
        the table is never held. Validation and test are read into memory (their first --max_eval_samples rows), to
        be scored, sliced and sampled as in any run.
        """
        data = self.data_args
        if data.train_files:
            files = {"train": data.train_files, "validation": data.validation_files, "test": data.test_files}
            self.raw, self.schema = load_tabular(files, TabularSchema.from_json_file(data.schema), streaming=data.streaming)
        else:
            kwargs = json.loads(data.dataset_options) if data.dataset_options else {}
            if data.split:
                kwargs["split"] = data.split
            if data.data_dir:
                kwargs["data_dir"] = data.data_dir
            with self.state.main_process_first():  # one process downloads, the others read the cache
                self.raw, self.schema = load_dataset_recipe(data.dataset, **kwargs)
        self.text_model_path = resolve_text_model(self.model_args.text_model)
        self.processor = FlipProcessor.from_text_pretrained(
            self.text_model_path, self.schema, prompt_style=data.prompt_style, max_length=data.max_length,
            min_frequency=data.min_frequency, max_vocab_size=data.max_vocab_size,
        ).fit(self.raw["train"])
        if data.streaming:
            for split in ("validation", "test"):
                self.raw[split] = self.held_out(split)
        logger.info("Example prompt: %s", self.processor.render_text(self.example_row()))
        self._encoded: dict = {}

    def held_out(self, split: str) -> datasets.Dataset:
        """A streamed held-out split in memory: its first --max_eval_samples rows, or all."""
        rows = self.raw[split]
        if self.data_args.max_eval_samples is not None:
            rows = rows.take(self.data_args.max_eval_samples)
        tables = list(rows.with_format("arrow").iter(batch_size=10_000))
        if not tables:
            raise SystemExit(f"The {split} files hold no rows; every split needs rows.")
        return datasets.Dataset(pa.concat_tables(tables))

    def example_row(self) -> dict:
        """The first training row, as the example of prompts and model cards (streamed or not)."""
        return next(iter(self.raw["train"]))

    def encoded(self, split: str, with_text: bool, limit: int | None = None, shuffle: bool = False):
        """A split encoded by the processor (cached per text/no-text), optionally a seeded subset. A streamed split
        is encoded as it trains, batch by batch, shuffled through --shuffle_buffer_size rows (anew each epoch)."""
        if isinstance(self.raw[split], datasets.IterableDataset):
            rows = self.raw[split].shuffle(seed=self.training_args.seed, buffer_size=self.data_args.shuffle_buffer_size)
            return FlipStreamingDataset(rows, self.processor, num_rows=self.processor.num_fit_rows)
        key = (split, with_text)
        if key not in self._encoded:
            raw = self.raw[split]
            keep = [self.schema.group_column] if self.schema.group_column else []
            remove = [c for c in raw.column_names if c not in keep]
            self._encoded[key] = raw.map(
                self.processor, batched=True, batch_size=2000, fn_kwargs={"text": with_text},
                remove_columns=remove, desc=f"Encoding {split}{'' if with_text else ' (ids only)'}",
            )
            if with_text and self.groups_by_length:  # the length sampler reads this column
                self._encoded[key] = self._encoded[key].map(
                    lambda batch: {"length": [len(ids) for ids in batch["input_ids"]]}, batched=True, desc="Lengths"
                )
        dataset = self._encoded[key]
        if limit is not None and limit < len(dataset):
            dataset = dataset.shuffle(seed=self.training_args.seed).select(range(limit)) if shuffle else dataset.select(range(limit))
        return dataset

    def checkpoint_dir(self, stage_dir: Path) -> Path:
        """Trainer checkpoints live apart from the final model, which stays a clean Hub folder."""
        return self.output_dir / "checkpoints" / stage_dir.name

    @property
    def groups_by_length(self) -> bool:
        return self.training_args.train_sampling_strategy == "group_by_length"

    def training_arguments(self, stage_dir: Path, with_text: bool, **overrides) -> TrainingArguments:
        """The run's TrainingArguments for one stage: its checkpoint folder, plus what the stage sets (rate, epochs, batch)."""
        options = dict(
            output_dir=str(self.checkpoint_dir(stage_dir)),
            data_seed=self.training_args.seed,
            remove_unused_columns=False,
            # prompts of similar length batch well; fixed-width rows have no length
            train_sampling_strategy="group_by_length" if with_text and self.groups_by_length else "random",
        )
        return dataclasses.replace(self.training_args, **{**options, **overrides})

    def resume_point(self, stage_dir: Path):
        resume = self.training_args.resume_from_checkpoint
        if not resume:
            return None
        if resume == "last":
            return self.last_complete_checkpoint(self.checkpoint_dir(stage_dir))
        return resume

    @staticmethod
    def last_complete_checkpoint(folder: Path) -> str | None:
        """The newest checkpoint whose save finished (Trainer writes trainer_state.json last); an interrupted
        save leaves a folder without it, which is skipped with a warning rather than crashing the resume."""
        def step(path: Path) -> int:
            suffix = path.name.rsplit("-", 1)[-1]
            return int(suffix) if suffix.isdigit() else -1

        for checkpoint in sorted(folder.glob("checkpoint-*"), key=step, reverse=True):
            if (checkpoint / "trainer_state.json").exists():
                return str(checkpoint)
            logger.warning("Skipping %s: its save did not finish (no trainer_state.json).", checkpoint)
        return None

    # ------------------------------------------------------------------ stages
    def pretrain(self) -> Path:
        """FLIP pretraining (MLM, MTM, ICL) into `output_dir/pretrain`; a finished one is reused."""
        stage_dir = self.output_dir / "pretrain"
        if "pretrain" in self.results["stages"] and (stage_dir / "config.json").exists():
            logger.info("Pretraining already finished in %s; skipping.", stage_dir)
            return stage_dir
        model_args, run = self.model_args, self.run_args
        set_seed(self.training_args.seed)  # the new ID side and heads start from --seed
        model = FlipForPretraining.from_text_pretrained(self.text_model_path, self.processor, **self.flip_config(), text_model_name_or_path=model_args.text_model)
        collator = DataCollatorForFlipPretraining.from_config(self.processor, model.config, seed=self.training_args.seed)
        train = self.encoded("train", True, self.data_args.max_pretrain_samples, shuffle=True)
        args = self.training_arguments(
            stage_dir, True, num_train_epochs=run.pretrain_epochs, learning_rate=run.pretrain_learning_rate,
            per_device_train_batch_size=run.pretrain_batch_size, eval_strategy="no",
            save_strategy="steps" if "save_steps" in self.training_flags else "epoch",
        )
        trainer = FlipTrainer(model=model, args=args, train_dataset=train, data_collator=collator, processing_class=self.processor,
                              plm_learning_rate=run.pretrain_plm_learning_rate)
        self.results["stages"]["pretrain"] = self.train_and_time(trainer, stage_dir, len(train))
        self.save(trainer, stage_dir)
        return stage_dir

    def finetune(self, mode: str, pretrained: Path | None, stage: str | None = None) -> dict:
        """Finetune one mode into `output_dir/stage` (default: the mode's FLIP folder)."""
        stage = stage or MODE_DIRS[mode]
        stage_dir = self.output_dir / stage
        if stage in self.results["stages"] and (stage_dir / "config.json").exists():
            logger.info("%s already finished in %s; skipping.", RESULT_OF_DIR[stage][1], stage_dir)
            return self.results["stages"][stage]

        set_seed(self.training_args.seed)  # new heads (and the ID side of baselines) start from --seed
        model = self.ctr_model(mode, pretrained)
        model.model_card_data = FlipModelCardData(
            dataset_name=self.schema.name or self.data_args.dataset,
            split_description=self.split_description(),
        )
        model.model_card_data.set_processor(self.processor, self.example_row())  # a real row as the example
        pretraining = FlipModelCardData.load(pretrained) if pretrained and "pretrain" not in self.results["stages"] else None
        if pretraining is not None and pretraining.training_seconds:  # a checkpoint pretrained by an earlier run
            model.model_card_data.add_training_time("pretrain", pretraining.training_seconds)
        run, with_text = self.run_args, mode != "id"
        # a frozen PLM's vectors are computed once per row: the mode then costs about what the ID model does
        cached_text = with_text and model.config.freeze_text_encoder
        limit = self.data_args.max_finetune_samples if with_text or self.data_args.subset_id_finetuning else None
        splits = [self.encoded("train", with_text, limit, shuffle=True),
                  self.held_out_encoded("validation", with_text), self.held_out_encoded("test", with_text)]
        (train, validation, test), text_vectors_seconds = self.model_inputs(model, splits)
        batch_size = run.text_batch_size if with_text and not cached_text else run.id_batch_size
        steps_per_epoch = max(1, -(-len(train) // (batch_size * self.state.num_processes)))
        eval_steps = max(1, steps_per_epoch // max(1, run.evals_per_epoch))
        tokens_vary = with_text and (not cached_text or model.config.text_trainable_layers > 0)  # cached states vary too
        args = self.training_arguments(
            stage_dir, tokens_vary,
            num_train_epochs=run.finetune_epochs,
            learning_rate=run.finetune_learning_rate,
            per_device_train_batch_size=batch_size,
            eval_strategy="steps", eval_steps=eval_steps,
            save_strategy="steps", save_steps=self.training_args.save_steps if "save_steps" in self.training_flags else eval_steps,
            load_best_model_at_end=True, metric_for_best_model="auc", greater_is_better=True,
            **FINETUNE_SCHEDULERS[run.finetune_lr_scheduler],
        )
        if run.finetune_lr_scheduler == "reduce_lr_on_plateau" and self.training_args.warmup_steps:
            logger.warning("--warmup_steps %s applies to pretraining only: the plateau scheduler of finetuning has no "
                           "warm-up. Pass --finetune_lr_scheduler cosine to warm up finetuning too.",
                           self.training_args.warmup_steps)
        trainer = FlipTrainer(
            model=model, args=args, train_dataset=train, eval_dataset=validation,
            data_collator=DataCollatorForFlipCTR(self.processor, text=with_text),
            processing_class=self.processor,
            plm_learning_rate=run.plm_learning_rate if with_text else None,
            group_column=self.schema.group_column,
            callbacks=[EarlyStoppingCallback(early_stopping_patience=run.early_stopping_patience)],
        )
        if mode == "joint" and run.text_side_patience:
            trainer.add_callback(TextSideEarlyStoppingCallback(run.text_side_patience))
        if self.joins_finetuned_halves(mode):
            record = self.fit_fusion(trainer, validation)
        else:
            record = self.train_and_time(trainer, stage_dir, len(train))
        if text_vectors_seconds is not None:
            record["text_vectors_seconds"] = text_vectors_seconds
        trainer.remove_callback(EarlyStoppingCallback)  # it only understands validation metrics
        started = time.perf_counter()
        record["validation"] = _strip(trainer.evaluate(validation, metric_key_prefix="eval"), "eval")
        record["test"] = _strip(trainer.evaluate(test, metric_key_prefix="test"), "test")
        record["test_slices"] = self.cold_and_warm_metrics(trainer, test)
        record["eval_samples_per_second"] = round(len(test) / max(record["test"].get("runtime", 0.0), 1e-9), 1)
        record["eval_seconds"] = round(time.perf_counter() - started, 1)
        self.results["stages"][stage] = record
        self.add_run_results(model.model_card_data)  # the modes of this run so far, this one included
        self.save(trainer, stage_dir)
        return record

    def split_description(self) -> str | None:
        split = self.data_args.split
        if self.data_args.train_files:
            return "split in advance into the training, validation and test files"
        return SPLIT_DESCRIPTIONS.get(split, split)

    def cold_and_warm_metrics(self, trainer, dataset) -> dict:
        """Test AUC / LogLoss on rows whose user never appears in training (cold) and on the others (warm)."""
        column = self.schema.group_column
        if not column or column not in dataset.column_names:
            return {}
        train = self.raw["train"].select_columns([column])
        seen = {value for batch in train.iter(batch_size=10_000) for value in batch[column]}  # in batches: it may stream
        prediction = trainer.predict(dataset, metric_key_prefix="slice")
        return cold_and_warm_metrics(prediction.predictions, prediction.label_ids, dataset[column], seen, from_logits=True)

    def held_out_encoded(self, split: str, with_text: bool):
        """Validation or test, encoded: its first --max_eval_samples rows, or all."""
        return self.encoded(split, with_text, self.data_args.max_eval_samples)

    def model_inputs(self, model, splits: list) -> tuple[list, float | None]:
        """Encoded splits as `model` reads them, and the seconds spent computing text vectors (None: none were).

        A frozen PLM's vectors are computed once per row and cached, so the mode then costs about what the ID model
        does (with `text_trainable_layers`, the frozen part's token states, and each step runs the top layers);
        rows of fixed width (no text, or cached vectors) become whole tensors, batched by index slicing.
        """
        seconds = None
        if model.config.uses_text and model.config.freeze_text_encoder:
            started = time.perf_counter()
            splits = [self.with_text_vectors(model, dataset) for dataset in splits]
            seconds = round(time.perf_counter() - started, 1)
        fixed_width = not model.config.uses_text or (seconds is not None and not model.config.text_trainable_layers)
        if fixed_width:  # a stream batches itself
            splits = [FlipTensorDataset.from_dataset(d) if isinstance(d, datasets.Dataset) else d for d in splits]
        return splits, seconds

    def with_text_vectors(self, model, dataset):
        """The split plus its rows' frozen-PLM vectors (or token states, under trainable top layers), computed once
        (by the main process) and cached."""
        cache = cache_text_states if model.config.text_trainable_layers else cache_text_embeddings
        with self.state.main_process_first():
            return cache(dataset, model, batch_size=self.training_args.per_device_eval_batch_size,
                         bf16=self.run_args.text_vectors_bf16 or self.training_args.bf16)

    def joins_finetuned_halves(self, mode: str) -> bool:
        return mode == "joint" and self.run_args.joint_init == "finetuned"

    @staticmethod
    def side_logits(trainer, dataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A joint model's ID-side and text-side logits of every row of `dataset`, and the rows' labels."""
        model, sides = trainer.model.eval(), {"id_logits": [], "text_logits": [], "labels": []}
        with torch.inference_mode():
            for batch in trainer.get_eval_dataloader(dataset):
                output = model(**{k: v for k, v in batch.items() if k != "labels"})
                for name, value in (("id_logits", output.id_logits), ("text_logits", output.text_logits), ("labels", batch["labels"])):
                    sides[name].append(trainer.accelerator.gather_for_metrics(value))
        return tuple(torch.cat(sides[name]) for name in ("id_logits", "text_logits", "labels"))

    def fit_fusion(self, trainer, validation) -> dict:
        """FLIP from this run's FLIP_ID and FLIP_PLM: no training, alpha and b fitted on the validation logits."""
        started = time.perf_counter()
        fitted = trainer.model.fit_fusion(*self.side_logits(trainer, validation))
        logger.info("FLIP from FLIP_ID and FLIP_PLM: fusion fitted on validation, alpha %.3f, b %.3f.",
                    fitted["fusion_alpha"], fitted["fusion_bias"])
        seconds = round(time.perf_counter() - started, 1)
        return {"train_seconds": seconds, "train_samples": 0, "train_samples_per_second": 0.0, "global_step": 0, "fusion": fitted}

    def ctr_model(self, mode: str, pretrained: Path | None):
        if self.joins_finetuned_halves(mode):
            halves = [self.output_dir / MODE_DIRS[half] for half in ("id", "text")]
            if not all((folder / "config.json").exists() for folder in halves):
                raise SystemExit(
                    f"--joint_init finetuned builds FLIP from this run's FLIP_ID and FLIP_PLM ({halves[0]}, {halves[1]}), "
                    "which are not there: run --stage all with --all_modes id,text,joint, or --joint_init pretrained."
                )
            return FlipForCTR.from_finetuned(*halves)
        if pretrained is None:  # the baselines: an ID model from scratch, or the PLM without FLIP pretraining
            logger.info("No pretraining checkpoint: %s starts from scratch (ID side) and the plain PLM.", MODE_NAMES[mode])
            return FlipForCTR.from_text_pretrained(self.text_model_path, self.processor, ctr_mode=mode, **self.flip_config(), text_model_name_or_path=self.model_args.text_model)
        config = FlipConfig.from_pretrained(pretrained)
        is_pretraining = "FlipForPretraining" in (config.architectures or [])
        lacks = [side for side, needed, present in (("PLM", mode != "id", config.uses_text), ("ID encoder", mode != "text", config.uses_ids))
                 if needed and not (is_pretraining or present)]
        if lacks:
            raise SystemExit(
                f"{pretrained} is a ctr_mode={config.ctr_mode!r} model without a {' or '.join(lacks)}, which "
                f"ctr_mode={mode!r} needs; it would start from random weights. Pass a FLIP pretraining checkpoint "
                "(its pretrain/ folder), or leave out --pretrained_model to train from the plain PLM."
            )
        self.check_fields(config, f"The checkpoint {pretrained} was pretrained",
                          "Finetune on the data it was pretrained on (same dataset, split and min_frequency), or pretrain anew.")
        model_args = self.model_args
        return FlipForCTR.from_pretrained(pretrained, ctr_mode=mode, fusion_init=model_args.fusion_init,
                                          freeze_text_encoder=model_args.freeze_text_encoder,
                                          text_trainable_layers=model_args.text_trainable_layers,
                                          text_head_hidden_size=model_args.text_head_hidden_size,
                                          text_head_batch_norm=model_args.text_head_batch_norm)

    def check_fields(self, config: FlipConfig, trained: str, fix: str) -> None:
        """Refuse a model whose fields or vocabularies are not the ones this run's processor gives the data."""
        expected = [(f["name"], f["vocab_size"], f["num_slots"]) for f in self.processor.field_infos()]
        found = [(f["name"], f["vocab_size"], f.get("num_slots", 1)) for f in config.fields]
        if expected != found:
            raise SystemExit(f"{trained} on other fields or vocabularies than this data.\n"
                             f"  checkpoint: {found}\n  data:       {expected}\n{fix}")

    def flip_config(self) -> dict:
        options = {k: v for k, v in asdict(self.model_args).items() if k not in NOT_CONFIG_ARGUMENTS}
        given = options["backbone_options"]
        options["backbone_options"] = RECIPE_BACKBONE_OPTIONS.get(options["backbone"], {}) if given is None else json.loads(given)
        return options

    def train_and_time(self, trainer, stage_dir: Path, num_samples: int) -> dict:
        started = time.perf_counter()
        output = trainer.train(resume_from_checkpoint=self.resume_point(stage_dir))
        seconds = time.perf_counter() - started
        return {
            "train_seconds": round(seconds, 1),
            "train_samples": num_samples,
            "train_samples_per_second": round(output.metrics.get("train_samples_per_second", 0.0), 2),
            "train_loss": round(output.training_loss, 4),
            "global_step": output.global_step,
        }

    def save(self, trainer, stage_dir: Path) -> None:
        """The final model, its processor and card (through Trainer.save_model, which gathers sharded weights
        on every process), then the trainer state and the run's results (main process only)."""
        trainer.save_model(str(stage_dir))
        if self.state.is_main_process:
            trainer.state.save_to_json(str(stage_dir / "trainer_state.json"))
            (self.output_dir / RESULTS_FILE).write_text(json.dumps(self.results, indent=2, sort_keys=True))
        self.state.wait_for_everyone()  # later stages load what was just written

    def add_run_results(self, card_data) -> None:
        """The metrics and training times of the models this run trained, so each card compares itself."""
        for directory, record in self.results["stages"].items():
            if directory == "pretrain":
                card_data.add_training_time("pretrain", record["train_seconds"])
            if directory in RESULT_OF_DIR and "test" in record:
                for split in ("validation", "test"):
                    card_data.add_results(RESULT_OF_DIR[directory][0], split, record[split])
                # a frozen PLM's text vectors are part of what the mode costs (a rerun reads them from the cache)
                seconds = record["train_seconds"] + record.get("text_vectors_seconds", 0.0)
                card_data.add_training_time(RESULT_OF_DIR[directory][0], seconds)

    def share_results(self) -> None:
        """Each finetuned model's card also reports the other modes trained in this run."""
        if not self.state.is_main_process:
            return
        for directory in RESULT_OF_DIR:
            card_data = FlipModelCardData.load(self.output_dir / directory)
            if card_data is None:
                continue
            self.add_run_results(card_data)
            card_data.save(self.output_dir / directory)
            refresh_model_card(self.output_dir / directory)

    # ------------------------------------------------------------------ main
    def run(self) -> dict:
        self.check_output_dir()
        started = time.perf_counter()
        self.load_data()
        run = self.run_args
        if run.stage == "pretrain":
            self.pretrain()
        elif run.stage == "finetune":
            pretrained = Path(self.model_args.pretrained_model) if self.model_args.pretrained_model else None
            self.finetune(run.ctr_mode, pretrained)
        else:
            for mode in filter(None, run.baselines.split(",")):
                self.finetune(mode, None, stage=BASELINE_DIRS[mode])
            pretrained = self.pretrain()
            for mode in run.all_modes.split(","):
                self.finetune(mode, pretrained)
            self.share_results()
        self.results["total_seconds"] = round(time.perf_counter() - started, 1)
        self.results["dataset"] = self.data_args.dataset
        self.results["text_model"] = self.model_args.text_model
        self.results["backbone"] = self.model_args.backbone
        if self.state.is_main_process:
            (self.output_dir / RESULTS_FILE).write_text(json.dumps(self.results, indent=2, sort_keys=True))
            print(results_table(self.results))
        return self.results


def _strip(metrics: dict, prefix: str) -> dict:
    return {k[len(prefix) + 1 :]: v for k, v in metrics.items() if k.startswith(prefix + "_")}


def results_table(results: dict) -> str:
    """A markdown table of validation and test AUC / LogLoss per finetuned model."""
    lines = [
        "| model | val AUC | val LogLoss | test AUC | test LogLoss | test gAUC | test AUC, cold users | train s | train samples/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for stage, (_, name) in RESULT_OF_DIR.items():
        record = results["stages"].get(stage)
        if not record:
            continue
        val, test = record["validation"], record["test"]
        lines.append(
            f"| {name} | {val['auc']:.4f} | {val['logloss']:.4f} | {test['auc']:.4f} | "
            f"{test['logloss']:.4f} | {test.get('gauc', float('nan')):.4f} | "
            f"{record.get('test_slices', {}).get('cold', {}).get('auc', float('nan')):.4f} | {record['train_seconds']} | "
            f"{record['train_samples_per_second']} |"
        )
    if "pretrain" in results["stages"]:
        record = results["stages"]["pretrain"]
        lines.append(f"\nPretraining: {record['train_seconds']} s, {record['train_samples_per_second']} samples/s, "
                     f"final loss {record['train_loss']}.")
    return "\n".join(lines)
