#!/usr/bin/env python
"""Measure FLIP: speed against the machine's limit (--task speed), and the paper's claims (--task quality).

Examples:
    python scripts/benchmark.py --task speed --preset cpu-small
    python scripts/benchmark.py --task quality --preset cpu-small --seeds 3 --resume
    python scripts/benchmark.py --task speed --preset full --bf16                        # on a GPU
    python scripts/benchmark.py --task quality --preset gpu-short --seeds 1 --bf16      # on a GPU

Each run prints a table and writes JSON plus a markdown report under benchmarks/results/, naming
the preset, the hardware and the command. Nothing here is asserted: the numbers are reported as
they come out.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIGHTGBM = "LightGBM"
# the variants that FLIP has to beat
BASELINE_PREFIXES = ("ID-only", "PLM-only", LIGHTGBM)
RESULTS_DIR = ROOT / "benchmarks" / "results"

SPEED_PRESETS = {
    # 2 of MiniLM's 6 layers, frozen word embeddings, compact prompt: what cpu-small trains with
    "cpu-small": dict(text_num_layers=2, freeze_word_embeddings=True, prompt_style="compact", batch_size=32,
                      steps=8, warmup=2, eval_rows=2048, id_batch=4096, preprocess_rows=None),
    # the whole PLM and the paper's prompt
    "full": dict(text_num_layers=None, freeze_word_embeddings=False, prompt_style="natural", batch_size=64,
                 steps=20, warmup=3, eval_rows=8192, id_batch=4096, preprocess_rows=None),
}

QUALITY_PRESETS = {
    # scripts/configs/cpu-small.yaml with fewer rows (6,000 pretraining rows, the first 5,000 validation and
    # test rows; every training row for finetuning on the frozen PLM's cached vectors)
    "cpu-small": dict(config="cpu-small", overrides=dict(max_pretrain_samples=6000, max_eval_samples=5000),
                      backbones=("dcnv2",), id_baselines=("dcnv2", "deepfm", "autoint")),
    # the paper's settings, for a GPU machine
    "full": dict(config="full", overrides={}, backbones=("dcnv2", "deepfm", "autoint"),
                 id_baselines=("dcnv2", "deepfm", "autoint")),
    # the paper's data, prompt and whole PLM, cut to fit about 7 minutes of one H100 under --bf16:
    # 2 pretraining epochs instead of 30, 2 finetuning epochs, one backbone, no ablations
    "gpu-short": dict(config="full", overrides=dict(pretrain_epochs=2, finetune_epochs=2, evals_per_epoch=2),
                      backbones=("dcnv2",), id_baselines=("dcnv2",), ablations=False),
    # a few minutes: checks that the benchmark itself runs end to end
    "smoke": dict(config="quickstart", overrides=dict(max_pretrain_samples=256, max_finetune_samples=256,
                                                      max_eval_samples=512, max_steps=4),
                  backbones=("dcnv2",), id_baselines=("dcnv2",)),
}


# ------------------------------------------------------------------------------------------ speed
def matmul_gflops(device, dtype, repeats: int = 20) -> float:
    """Dense matmul throughput in the training's precision: the practical compute limit for the PLM."""
    import torch

    size = 8192 if device.type == "cuda" else 1024
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    seconds = time_steps(lambda: a @ b, repeats, warmup=3, device=device)
    return 2 * size**3 / seconds / 1e9


def plm_train_flops_per_sample(text_config, tokens: float) -> float:
    """Forward + backward FLOPs of the encoder for one sample: 3 x (2 x weights x tokens + attention)."""
    h, layers, inter = text_config.hidden_size, text_config.num_hidden_layers, text_config.intermediate_size
    weights_per_layer = 4 * h * h + 2 * h * inter
    attention_per_layer = 2 * 2 * tokens * tokens * h
    return 3 * layers * (2 * weights_per_layer * tokens + attention_per_layer)


def synchronize(device) -> None:
    """GPU work is asynchronous: wait for it before reading the clock."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def time_steps(step, steps: int, warmup: int, device) -> float:
    """Median seconds of `step()` after `warmup` calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        synchronize(device)
        started = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def best_rate(run, rows: int, device, rounds: int = 3) -> float:
    """Rows per second of the fastest of `rounds` runs (after one warm-up): the least disturbed one."""
    run()
    return rows / min(time_steps(run, 1, warmup=0, device=device) for _ in range(rounds))


def training_step(model, optimizer, batch, autocast):
    def step():
        with autocast():
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def to_device(batch, device) -> dict:
    return {key: value.to(device) if hasattr(value, "to") else value for key, value in batch.items()}


def run_speed(preset_name: str, threads: int, device_name: str, bf16: bool, text_model: str, data_dir: str | None) -> dict:
    import contextlib
    import functools

    import torch
    from transformers import AutoConfig, AutoModelForMaskedLM

    from flip_hf import (
        DataCollatorForFlipCTR,
        DataCollatorForFlipPretraining,
        FlipForCTR,
        FlipForPretraining,
        FlipProcessor,
        cache_text_embeddings,
    )
    from flip_hf.data import load_movielens
    from flip_hf.modeling_flip import FlipFieldEmbeddings
    from flip_hf.backbones import build_backbone
    from flip_hf.text_models import resolve_text_model
    from transformers import pipeline

    preset = SPEED_PRESETS[preset_name]
    device = torch.device(device_name)
    autocast = functools.partial(torch.autocast, device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    report: dict = {"preset": preset_name, "threads": threads, "device": device_name,
                    "precision": "bf16 autocast" if bf16 else "float32", "settings": preset}
    plm_path = resolve_text_model(text_model)
    dataset, schema = load_movielens("100k", data_dir=data_dir)
    processor = FlipProcessor.from_text_pretrained(plm_path, schema, prompt_style=preset["prompt_style"]).fit(dataset["train"])

    # preprocessing: the train split through Dataset.map with the offline MiniLM tokenizer
    train = dataset["train"]
    started = time.perf_counter()
    encoded = train.map(processor, batched=True, batch_size=2000, remove_columns=train.column_names, desc="Encoding train")
    report["preprocess_rows_per_second"] = len(train) / (time.perf_counter() - started)
    tokens = statistics.mean(len(ids) for ids in encoded.select(range(2000))["input_ids"])
    report["mean_tokens"] = tokens

    model_options = dict(text_num_layers=preset["text_num_layers"], freeze_word_embeddings=preset["freeze_word_embeddings"])
    batch_size = preset["batch_size"]
    rows = [encoded[i] for i in range(batch_size)]

    # pretraining step vs a plain masked-LM step of the same PLM on the same masked batch
    def timed_training(model, batch) -> float:
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        return time_steps(training_step(model, optimizer, batch, autocast), preset["steps"], preset["warmup"], device)

    pretrain_model = FlipForPretraining.from_text_pretrained(plm_path, processor, **model_options).to(device).train()
    collator = DataCollatorForFlipPretraining(processor, seed=0)
    batch = to_device(collator(rows), device)
    flip_seconds = timed_training(pretrain_model, batch)

    text_config = pretrain_model.config.text_config
    mlm_config = AutoConfig.from_pretrained(plm_path, num_hidden_layers=text_config.num_hidden_layers)
    mlm = AutoModelForMaskedLM.from_pretrained(plm_path, config=mlm_config).to(device).train()
    if preset["freeze_word_embeddings"]:
        mlm.get_input_embeddings().weight.requires_grad_(False)
    mlm_batch = {"input_ids": batch["masked_input_ids"], "attention_mask": batch["attention_mask"], "labels": batch["mlm_labels"]}
    mlm_seconds = timed_training(mlm, mlm_batch)
    report["pretrain_step_seconds"] = flip_seconds
    report["mlm_step_seconds"] = mlm_seconds
    report["pretrain_to_mlm_step_ratio"] = flip_seconds / mlm_seconds
    report["train_samples_per_second"] = {"pretrain": batch_size / flip_seconds, "plain_mlm": batch_size / mlm_seconds}

    # finetuning steps and inference, per mode
    scratch = Path(tempfile.mkdtemp(prefix="flip-speed-"))  # checkpoints and caches of this run only
    checkpoint = scratch / "checkpoint"
    pretrain_model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    inference = {}
    eval_rows = [encoded[i] for i in range(min(preset["eval_rows"], len(encoded)))]
    for mode in ("id", "text", "joint"):
        model = FlipForCTR.from_pretrained(checkpoint, ctr_mode=mode).to(device).train()
        ctr_collator = DataCollatorForFlipCTR(processor, text=mode != "id")
        size = 1024 if mode == "id" else batch_size
        seconds = timed_training(model, to_device(ctr_collator([encoded[i] for i in range(size)]), device))
        report["train_samples_per_second"][f"finetune_{mode}"] = size / seconds
        if mode == "text":  # a typical batch as --group_by_length draws them: neighbours around the median length
            by_length = sorted(eval_rows, key=lambda row: len(row["input_ids"]))
            grouped = by_length[len(by_length) // 2 - size // 2 :][:size]
            seconds = timed_training(model, to_device(ctr_collator(grouped), device))
            report["train_samples_per_second"]["finetune_text_grouped"] = size / seconds
            report["grouped_batch_mean_tokens"] = statistics.mean(len(row["input_ids"]) for row in grouped)
        model.eval()
        inference_batch = preset["id_batch"] if mode == "id" else 256
        batches = [to_device(ctr_collator(eval_rows[i : i + inference_batch]), device) for i in range(0, len(eval_rows), inference_batch)]
        for b in batches:
            b.pop("labels", None)
        with torch.inference_mode(), autocast():
            inference[mode] = best_rate(lambda: [model(**b) for b in batches], len(eval_rows), device)
        if mode == "id":
            flip_id = model
    report["inference_rows_per_second"] = inference

    # a frozen PLM: each row's text vector computed once (and cached), then joint steps at the ID model's batch
    frozen = FlipForCTR.from_pretrained(checkpoint, ctr_mode="joint", freeze_text_encoder=True, text_head_hidden_size=256).to(device)
    vector_rows = encoded.select(range(min(preset["eval_rows"], len(encoded))))
    started = time.perf_counter()
    vectors = cache_text_embeddings(vector_rows, frozen, batch_size=256, cache_dir=scratch / "text-cache")
    report["text_vectors_rows_per_second"] = len(vector_rows) / (time.perf_counter() - started)
    cached = to_device(DataCollatorForFlipCTR(processor)([vectors[i] for i in range(min(1024, len(vectors)))]), device)
    seconds = timed_training(frozen.train(), cached)
    report["train_samples_per_second"]["finetune_joint_cached"] = len(cached["labels"]) / seconds

    # FLIP_ID against the bare backbone: embeddings + backbone + linear head, nothing else
    config = flip_id.config
    embeddings = FlipFieldEmbeddings(config.fields, config.embedding_size)
    backbone = build_backbone(config.backbone, len(config.fields), config.embedding_size, config.backbone_options)
    bare = torch.nn.Sequential(embeddings, backbone, torch.nn.Linear(backbone.output_size, 1)).to(device).eval()
    feature_batches = [torch.tensor([r["feature_ids"] for r in eval_rows[i : i + preset["id_batch"]]], device=device)
                       for i in range(0, len(eval_rows), preset["id_batch"])]
    id_batches = [{"feature_ids": b} for b in feature_batches]
    with torch.inference_mode(), autocast():  # interleaved rounds, so both see the same machine load
        rates = [(best_rate(lambda: [flip_id(**b) for b in id_batches], len(eval_rows), device),
                  best_rate(lambda: [bare(b) for b in feature_batches], len(eval_rows), device)) for _ in range(3)]
    report["inference_rows_per_second"]["id"] = max(r[0] for r in rates)
    report["bare_backbone_rows_per_second"] = max(r[1] for r in rates)
    report["flip_id_to_bare_backbone_ratio"] = report["inference_rows_per_second"]["id"] / report["bare_backbone_rows_per_second"]

    # the ctr-prediction pipeline from raw rows, batch 256
    raw_rows = [dataset["validation"][i] for i in range(min(2048, len(dataset["validation"])))]
    pipeline_speed = {}
    for mode in ("id", "joint"):
        directory = scratch / mode
        FlipForCTR.from_pretrained(checkpoint, ctr_mode=mode).save_pretrained(directory)
        processor.save_pretrained(directory)
        predictor = pipeline("ctr-prediction", model=str(directory), device=device)
        pipeline_speed[mode] = best_rate(lambda: predictor(raw_rows, batch_size=256), len(raw_rows), device, rounds=2)
    report["pipeline_rows_per_second"] = pipeline_speed
    report["pipeline_id_to_model_ratio"] = pipeline_speed["id"] / report["inference_rows_per_second"]["id"]
    shutil.rmtree(scratch, ignore_errors=True)

    # training throughput as a fraction of the device's matmul limit in the same precision
    report["matmul_gflops"] = matmul_gflops(device, torch.bfloat16 if bf16 else torch.float32)
    report["plm_train_gflop_per_sample"] = plm_train_flops_per_sample(text_config, tokens) / 1e9
    plain = report["train_samples_per_second"]["plain_mlm"]
    text = report["train_samples_per_second"]["finetune_text"]
    report["plm_finetune_fraction_of_limit"] = text * report["plm_train_gflop_per_sample"] / report["matmul_gflops"]
    grouped_flops = plm_train_flops_per_sample(text_config, report["grouped_batch_mean_tokens"]) / 1e9
    report["plm_finetune_grouped_fraction_of_limit"] = report["train_samples_per_second"]["finetune_text_grouped"] * grouped_flops / report["matmul_gflops"]
    report["pretrain_fraction_of_limit"] = 2 * report["train_samples_per_second"]["pretrain"] * report["plm_train_gflop_per_sample"] / report["matmul_gflops"]
    report["plain_mlm_fraction_of_limit"] = plain * report["plm_train_gflop_per_sample"] / report["matmul_gflops"]
    return report


def speed_table(report: dict) -> str:
    rows = [
        ("preprocessing (Dataset.map, train split)", f"{report['preprocess_rows_per_second']:,.0f} rows/s"),
        ("mean prompt length", f"{report['mean_tokens']:.1f} tokens"),
        ("pretraining step / plain MLM step", f"{report['pretrain_to_mlm_step_ratio']:.2f} "
         f"({report['pretrain_step_seconds']:.3f} s / {report['mlm_step_seconds']:.3f} s)"),
    ]
    for name, value in report["train_samples_per_second"].items():
        rows.append((f"training: {name}", f"{value:,.1f} samples/s"))
    for name, value in report["inference_rows_per_second"].items():
        rows.append((f"inference: {name} mode", f"{value:,.0f} rows/s"))
    rows += [
        ("inference: bare backbone (FLIP_ID's network alone)", f"{report['bare_backbone_rows_per_second']:,.0f} rows/s"),
        ("FLIP_ID / bare backbone", f"{report['flip_id_to_bare_backbone_ratio']:.3f}"),
    ]
    for name, value in report["pipeline_rows_per_second"].items():
        rows.append((f"pipeline (batch 256): {name} mode", f"{value:,.0f} rows/s"))
    rows += [
        ("pipeline / model inference, id mode", f"{report['pipeline_id_to_model_ratio']:.2f}"),
        ("text vectors of a frozen PLM (computed once, cached)", f"{report['text_vectors_rows_per_second']:,.0f} rows/s"),
    ]
    rows += [
        (f"{report['precision']} matmul limit, {report['device']}" + (f", {report['threads']} threads" if report["device"] == "cpu" else ""),
         f"{report['matmul_gflops']:,.1f} GFLOP/s"),
        ("PLM training FLOPs per sample", f"{report['plm_train_gflop_per_sample']:.3f} GFLOP"),
        ("PLM finetuning (text mode) / compute limit", f"{100 * report['plm_finetune_fraction_of_limit']:.1f}%"),
        ("same, length-grouped batch (--group_by_length)", f"{100 * report['plm_finetune_grouped_fraction_of_limit']:.1f}%"),
        ("pretraining (2 PLM passes) / compute limit", f"{100 * report['pretrain_fraction_of_limit']:.1f}%"),
        ("plain MLM / compute limit", f"{100 * report['plain_mlm_fraction_of_limit']:.1f}%"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join([f"| {'measure'.ljust(width)} | value |", f"|{'-' * (width + 2)}|---|"] + [f"| {name.ljust(width)} | {value} |" for name, value in rows])


# ---------------------------------------------------------------------------------------- quality
def quality_variants(preset: dict) -> list[tuple[str, dict]]:
    """(name, train.py overrides) for every variant the paper's claims need, FLIP itself first.

    FLIP first, so that a run cut short still has the main result.
    """
    # the ID-only and PLM-only baselines are variants of their own (several backbones), not part of FLIP's run
    variants = [(f"FLIP {backbone}", dict(stage="all", backbone=backbone, baselines="")) for backbone in preset["backbones"]]
    variants += [(f"ID-only {b}", dict(stage="finetune", ctr_mode="id", backbone=b)) for b in preset["id_baselines"]]
    variants.append(("PLM-only", dict(stage="finetune", ctr_mode="text")))
    if importlib.util.find_spec("lightgbm") is not None:  # the `bench` extra
        variants.append((LIGHTGBM, dict(stage="finetune", ctr_mode="id")))
    if not preset.get("ablations", True):
        return variants
    ablations = {"w/o MLM": dict(mlm_weight=0.0), "w/o MTM": dict(mtm_weight=0.0), "w/o ICL": dict(icl_weight=0.0),
                 "token-level masking": dict(masking="token")}
    for name, overrides in ablations.items():
        variants.append((f"FLIP {preset['backbones'][0]} {name}",
                         dict(stage="all", all_modes="joint", backbone=preset["backbones"][0], baselines="", **overrides)))
    return variants


def run_quality(preset_name: str, seeds: int, output_dir: Path, train_options: dict, resume: bool, report,
                ablations: bool = True) -> dict:
    """Every variant for every seed through scripts/train.py; `report(results)` after each run."""
    train_script = _load_train_script()
    preset = {**QUALITY_PRESETS[preset_name], **({} if ablations else {"ablations": False})}
    results: dict = {"preset": preset_name, "seeds": seeds, "variants": {}}
    for name, overrides in quality_variants(preset):
        for seed in range(seeds):
            run_dir = output_dir / name.replace(" ", "_").replace("/", "") / f"seed{seed}"
            argv = train_argv(preset, overrides, seed, run_dir, train_options)
            record = finished_run(train_script, run_dir, argv) if resume and name != LIGHTGBM else None
            print(f"== {name}, seed {seed}{' (finished earlier, reused)' if record else ''}", flush=True)
            record = record or (lightgbm_run(train_script, argv) if name == LIGHTGBM else train_script.main(argv))
            for stage, stage_record in record["stages"].items():
                if "test" not in stage_record:
                    continue
                label = name if overrides["stage"] == "finetune" else f"{name} / {train_script.RESULT_OF_DIR[stage][1]}"
                results["variants"].setdefault(label, []).append(
                    {"seed": seed, "validation": stage_record["validation"], "test": stage_record["test"]}
                )
            results["summary"] = summarize(results["variants"])
            results["claims"] = check_claims(results["variants"], preset)
            report(results)
    return results


def train_argv(preset: dict, overrides: dict, seed: int, run_dir: Path, train_options: dict) -> list[str]:
    """scripts/train.py's arguments for one run: the preset's config, its cuts, the user's options, the variant."""
    argv = ["--preset", preset["config"], "--output_dir", str(run_dir), "--seed", str(seed), "--overwrite_output_dir", "true"]
    for key, value in {**preset["overrides"], **train_options, **overrides}.items():
        if value is not None:
            argv += [f"--{key}", str(value)]
    return argv


def finished_run(train_script, run_dir: Path, argv: list[str]) -> dict | None:
    """The results of an earlier run in `run_dir` with the same arguments, if it finished.

    Arguments added to train.py since that run count as equal when the new run leaves them at their default.
    """
    from dataclasses import fields

    args_file, results_file = run_dir / train_script.RUN_FILE, run_dir / train_script.RESULTS_FILE
    if not (args_file.exists() and results_file.exists()):
        return None
    previous = json.loads(args_file.read_text())
    for args in train_script.parse_arguments(argv):
        for f in fields(args):
            ignored = f.name in train_script.RESUME_FLAGS or f.name == "output_dir"  # found there, however it was spelled
            if not ignored and previous.get(f.name, f.default) != getattr(args, f.name):
                return None
    record = json.loads(results_file.read_text())
    return record if "total_seconds" in record else None  # written per stage; the total only at the end


def lightgbm_frames(raw, schema, eval_rows: int | None) -> dict:
    """LightGBM's view of the same rows: categorical fields as pandas categories of the training values,
    numeric fields as numbers, multi-valued fields multi-hot, free-text fields as TF-IDF of their words."""
    import pandas as pd
    from sklearn.feature_extraction.text import TfidfVectorizer

    splits = {name: raw[name] if eval_rows is None or name == "train" else raw[name].select(range(min(eval_rows, len(raw[name]))))
              for name in ("train", "validation", "test")}
    frames = {name: {} for name in splits}
    for spec in schema.fields:
        columns = {name: list(split[spec.name]) for name, split in splits.items()}
        if spec.kind == "numeric":
            for name, column in columns.items():
                frames[name][spec.name] = pd.to_numeric(pd.Series(column, dtype=object), errors="coerce")
        elif spec.kind == "multi_categorical":
            values = sorted({str(v) for vs in columns["train"] if vs for v in vs})
            for name, column in columns.items():
                present = [{str(v) for v in vs} if vs else set() for vs in column]
                for value in values:
                    frames[name][f"{spec.name}={value}"] = [int(value in p) for p in present]
        elif spec.kind == "text":
            tfidf = TfidfVectorizer(max_features=500).fit(["" if t is None else str(t) for t in columns["train"]])
            for name, column in columns.items():
                weights = tfidf.transform(["" if t is None else str(t) for t in column]).toarray()
                for index, word in enumerate(tfidf.get_feature_names_out()):
                    frames[name][f"{spec.name}:{word}"] = weights[:, index]
        else:
            known = sorted({str(v) for v in columns["train"] if v is not None})
            categories, seen = pd.CategoricalDtype(known), set(known)
            for name, column in columns.items():  # values unseen in training are missing, like the unknown id
                values = [str(v) if v is not None and str(v) in seen else None for v in column]
                frames[name][spec.name] = pd.Series(values, dtype=object).astype(categories)
    labels = {name: list(split[schema.label_column]) for name, split in splits.items()}
    return {name: (pd.DataFrame(frame), labels[name]) for name, frame in frames.items()}


def lightgbm_run(train_script, argv: list[str]) -> dict:
    """LightGBM, the tabular baseline a practitioner tries first, on a train.py run's data, split and seed.

    Early stopping on validation AUC; the same settings as the peer anchor in shared/anchors/lgbm_ml100k.py.
    """
    import lightgbm

    from flip_hf.data import load_dataset_recipe
    from flip_hf.metrics import compute_ctr_metrics

    data_args, _, run_args = train_script.parse_arguments(argv)
    options = {"split": data_args.split, **({"data_dir": data_args.data_dir} if data_args.data_dir else {})}
    raw, schema = load_dataset_recipe(data_args.dataset, **options)
    frames = lightgbm_frames(raw, schema, data_args.max_eval_samples)
    started = time.perf_counter()
    model = lightgbm.LGBMClassifier(n_estimators=2000, learning_rate=0.03, num_leaves=63, min_child_samples=20,
                                    subsample=0.8, subsample_freq=1, colsample_bytree=0.8, cat_smooth=10,
                                    random_state=run_args.seed, n_jobs=2, verbose=-1)
    model.fit(*frames["train"], eval_set=[frames["validation"]], eval_metric="auc",
              callbacks=[lightgbm.early_stopping(50, verbose=False)])
    record = {"train_seconds": round(time.perf_counter() - started, 1), "trees": model.best_iteration_}
    for split in ("validation", "test"):
        features, labels = frames[split]
        record[split] = compute_ctr_metrics(model.predict_proba(features)[:, 1], labels)
    return {"stages": {"lightgbm": record}}


def summarize(variants: dict) -> dict:
    summary = {}
    for label, runs in variants.items():
        entry = {}
        for metric in ("auc", "logloss"):
            values = [run["test"][metric] for run in runs]
            entry[metric] = {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
        entry["seeds"] = len(runs)
        summary[label] = entry
    baselines = [label for label in summary if label.startswith(BASELINE_PREFIXES)]
    best = max(baselines, key=lambda label: summary[label]["auc"]["mean"]) if baselines else None
    for label, entry in summary.items():
        if best:
            entry["auc_improvement_over_best_baseline"] = (entry["auc"]["mean"] - summary[best]["auc"]["mean"]) / summary[best]["auc"]["mean"]
    return summary


def compare(variants: dict, label: str, rival: str) -> dict:
    """`label` against `rival` on test AUC, paired by seed, with the seeds' noise on the gap.

    Runs of one seed share their data subset and initialization, so the per-seed differences cancel what
    the seed moves in both. The noise is two standard errors of their mean; a claim held or lost by less
    than that is not evidence either way. With fewer than two common seeds there is no noise (None).
    """
    a = {run["seed"]: run["test"]["auc"] for run in variants[label]}
    b = {run["seed"]: run["test"]["auc"] for run in variants[rival]}
    gaps = [a[seed] - b[seed] for seed in sorted(a.keys() & b.keys())]
    gap = statistics.mean(gaps)
    noise = 2 * statistics.stdev(gaps) / math.sqrt(len(gaps)) if len(gaps) > 1 else None
    return {"held": gap > 0, "gap": gap, "noise": noise, "beyond_noise": None if noise is None else abs(gap) > noise}


def check_claims(variants: dict, preset: dict) -> list[dict]:
    """The paper's claims that `variants` can test, each held or not on mean test AUC."""
    def auc(label):
        return statistics.mean(run["test"]["auc"] for run in variants[label])

    claims = []
    main = preset["backbones"][0]
    for backbone in preset["backbones"]:
        flip_id, scratch = f"FLIP {backbone} / FLIP_ID", f"ID-only {backbone}"
        if flip_id in variants and scratch in variants:
            claims.append({"claim": f"FLIP_ID ({backbone}) beats {backbone} trained without FLIP pretraining",
                           "values": [auc(flip_id), auc(scratch)], **compare(variants, flip_id, scratch)})
    flip = f"FLIP {main} / FLIP"
    if flip not in variants:
        return claims
    others = [label for label in variants
              if label in (f"FLIP {main} / FLIP_ID", f"FLIP {main} / FLIP_PLM") or label.startswith(BASELINE_PREFIXES)]
    if others:
        strongest = max(others, key=auc)  # beating every rival means beating the strongest one
        claims.append({"claim": "FLIP beats FLIP_ID, FLIP_PLM and every baseline",
                       "values": {"FLIP": auc(flip), **{label: auc(label) for label in others}},
                       **compare(variants, flip, strongest)})
    for label in variants:
        if (label.startswith(f"FLIP {main} w") or "token-level" in label) and label.endswith("/ FLIP"):
            claims.append({"claim": f"full FLIP beats {label}", "values": [auc(flip), auc(label)], **compare(variants, flip, label)})
    return claims


def quality_table(results: dict) -> str:
    lines = ["| model | test AUC | test LogLoss | AUC vs best baseline |", "|---|---|---|---|"]
    for label, entry in results["summary"].items():
        improvement = entry.get("auc_improvement_over_best_baseline")
        lines.append(f"| {label} | {entry['auc']['mean']:.4f} ± {entry['auc']['std']:.4f} | "
                     f"{entry['logloss']['mean']:.4f} ± {entry['logloss']['std']:.4f} | "
                     f"{'' if improvement is None else f'{100 * improvement:+.2f}%'} |")
    lines.append("")
    if results["seeds"] == 1:
        lines.append("One seed only: no std, so AUC differences below about 0.005 are within run-to-run noise "
                     "and a claim that holds or fails by less says nothing.\n")
    else:
        lines.append(f"Mean ± std over {results['seeds']} seeds. Each claim compares mean test AUC; its gap, paired by seed "
                     "(a seed fixes the rows and the initialization), counts as evidence only beyond the seeds' noise: "
                     "two standard errors of the per-seed gaps.\n")
    for claim in results["claims"]:
        values = claim["values"]
        shown = ", ".join(f"{k}: {v:.4f}" for k, v in values.items()) if isinstance(values, dict) else " vs ".join(f"{v:.4f}" for v in values)
        if claim["noise"] is None:
            verdict = ""
        else:
            verdict = (f"; gap {claim['gap']:+.4f}, {'beyond' if claim['beyond_noise'] else 'within'} "
                       f"the seeds' noise (±{claim['noise']:.4f})")
        lines.append(f"- {'HELD' if claim['held'] else 'NOT HELD'}: {claim['claim']} ({shown}){verdict}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ glue
def _load_train_script():
    spec = importlib.util.spec_from_file_location("flip_train_script", Path(__file__).with_name("train.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def hardware() -> str:
    import os

    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"


def write_report(kind: str, preset: str, payload: dict, table: str, command: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = f"{kind}-{preset}"
    payload = {**payload, "command": command, "hardware": hardware(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    (RESULTS_DIR / f"{stem}.json").write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    markdown = f"# {kind} benchmark, preset `{preset}`\n\n- command: `{command}`\n- hardware: {payload['hardware']}\n- date: {payload['date']}\n\n{table}\n"
    (RESULTS_DIR / f"{stem}.md").write_text(markdown)
    return RESULTS_DIR / f"{stem}.md"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=("speed", "quality"), default="speed")
    parser.add_argument("--preset", default="cpu-small", help="speed: cpu-small, full; quality: smoke, cpu-small, gpu-short, full.")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the speed task.")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant for the quality task.")
    parser.add_argument("--output_dir", default="runs/benchmark", help="where the quality task's runs go.")
    parser.add_argument("--resume", action="store_true", help="quality: reuse runs that finished earlier with the same arguments.")
    parser.add_argument("--device", default=None, help="speed: cpu or cuda (default: cuda when available).")
    parser.add_argument("--bf16", action="store_true", help="train and infer under bf16 autocast (GPU).")
    parser.add_argument("--text_model", default="sentence-transformers/all-MiniLM-L6-v2", help="PLM: Hub id or path.")
    parser.add_argument("--data_dir", default=None, help="folder with MovieLens-100K's official files (else the cache or a download).")
    parser.add_argument("--dataloader_num_workers", type=int, default=0, help="quality: data loader workers per run.")
    parser.add_argument("--skip_ablations", action="store_true", help="quality: FLIP and the baselines only.")
    args = parser.parse_args(argv)
    command = "python scripts/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.task == "speed":
        if args.preset not in SPEED_PRESETS:
            raise SystemExit(f"Unknown speed preset {args.preset!r}; valid: {', '.join(SPEED_PRESETS)}.")
        import torch

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        report = run_speed(args.preset, args.threads, device, args.bf16, args.text_model, args.data_dir)
        table = speed_table(report)
    else:
        if args.preset not in QUALITY_PRESETS:
            raise SystemExit(f"Unknown quality preset {args.preset!r}; valid: {', '.join(QUALITY_PRESETS)}.")
        train_options = dict(text_model=args.text_model, data_dir=args.data_dir, bf16="true" if args.bf16 else None,
                             dataloader_num_workers=args.dataloader_num_workers or None)
        report = run_quality(args.preset, args.seeds, Path(args.output_dir) / args.preset, train_options, args.resume,
                             report=lambda partial: write_report(args.task, args.preset, partial, quality_table(partial), command),
                             ablations=not args.skip_ablations)
        table = quality_table(report)
    print(table)
    print(f"\nReport: {write_report(args.task, args.preset, report, table, command)}")


if __name__ == "__main__":
    main()
