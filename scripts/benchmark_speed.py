#!/usr/bin/env python
"""Measure FLIP's speed against the machine's limit: preprocessing, training steps, inference, the pipeline.

Examples:
    python scripts/benchmark_speed.py --preset cpu-small                 # ~3 min on 2 CPU cores
    python scripts/benchmark_speed.py --preset cpu-small --threads 4
    python scripts/benchmark_speed.py --preset full --bf16               # on a GPU

Presets: `cpu-small` (MiniLM with 2 of its 6 layers, frozen word embeddings, the compact prompt: what
scripts/configs/cpu-small.yaml trains) and `full` (the whole PLM and the paper's prompt). On MovieLens-100K
(--data_dir, else the cache or a download). Where onnxruntime is installed (`pip install "flip_hf[onnx]"`)
FLIP_ID is also exported to ONNX and timed in ONNX Runtime next to PyTorch on the same batches.

Streaming: a synthetic click log of --streaming_rows training rows (10M by default; 0 skips it) is written as
parquet shards, then a fresh process fits the processor on it in one streaming pass and trains FLIP_ID (a small
DCNv2, batch 4096) for one epoch over every row, never holding the table: rows/s of both, and the process's
peak RSS.

Prints a table and writes benchmarks/results/speed-<preset>.json and .md, naming the preset, the hardware
and the command. Checkpoints and the ONNX file go to a temporary folder, deleted at the end. Nothing here
is asserted: the numbers are reported as they come out.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
# The synthetic click log of the streaming measure: (field, kind, distinct values), and its genres.
STREAMING_FIELDS = [("user_id", "categorical", 1_000_000), ("item_id", "categorical", 100_000),
                    ("gender", "categorical", 2), ("age_group", "categorical", 7), ("device", "categorical", 4),
                    ("hour", "categorical", 24), ("price", "numeric", None), ("genres", "multi_categorical", 18)]
STREAMING_SHARD_ROWS = 1_000_000
STREAMING_BATCH_SIZE = 4096
# A small DCNv2: the measure is of the data path, which a large network would hide.
STREAMING_MODEL = dict(backbone="dcnv2", embedding_size=16, backbone_options={"hidden_sizes": [128, 64], "low_rank": None})

# raw rows the pipeline predicts per measured call (id mode; joint mode takes the first 2,048)
PIPELINE_ROWS = 8192
SPEED_PRESETS = {
    # 2 of MiniLM's 6 layers, frozen word embeddings, compact prompt: what cpu-small trains with
    "cpu-small": dict(text_num_layers=2, freeze_word_embeddings=True, prompt_style="compact", batch_size=32,
                      steps=8, warmup=2, eval_rows=2048, id_batch=4096, preprocess_rows=None),
    # the whole PLM and the paper's prompt
    "full": dict(text_num_layers=None, freeze_word_embeddings=False, prompt_style="natural", batch_size=64,
                 steps=20, warmup=3, eval_rows=8192, id_batch=4096, preprocess_rows=None),
}


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


def onnx_inference(model, feature_batches: list, scratch: Path, rounds: int = 3) -> dict:
    """FLIP_ID exported to ONNX and run in ONNX Runtime, against the same model in PyTorch on the same batches.

    Both run on the CPU in float32 with torch's thread count, in interleaved rounds (each the best of a few
    runs) so that both see the same machine load. The ONNX file goes to `scratch`. Without onnxruntime (or
    the exporter's onnx and onnxscript): a note, and `onnx_rows_per_second` None.
    """
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        return {"onnx_rows_per_second": None,
                "onnx_note": f"skipped: {', '.join(missing)} not installed (pip install \"flip_hf[onnx]\")"}
    import copy

    import numpy as np
    import onnxruntime
    import torch

    from flip_hf.onnx_export import OnnxCTRModel, export_onnx

    cpu = torch.device("cpu")
    model = (model if model.device.type == "cpu" else copy.deepcopy(model).to(cpu)).eval()
    feature_batches = [batch.to(cpu) for batch in feature_batches]
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    onnx_model = OnnxCTRModel(export_onnx(model, scratch / "flip_id.onnx"), sess_options=options)
    numpy_batches = [batch.numpy() for batch in feature_batches]
    rows = sum(len(batch) for batch in feature_batches)
    with torch.inference_mode():
        difference = max(float(np.abs(onnx_model(array) - model(feature_ids=batch).probabilities.float().numpy()).max())
                         for array, batch in zip(numpy_batches, feature_batches))
        rates = [(best_rate(lambda: [onnx_model(array) for array in numpy_batches], rows, cpu),
                  best_rate(lambda: [model(feature_ids=batch) for batch in feature_batches], rows, cpu)) for _ in range(rounds)]
    onnx, pytorch = max(rate[0] for rate in rates), max(rate[1] for rate in rates)
    return {"onnx_rows_per_second": onnx, "onnx_pytorch_rows_per_second": pytorch, "onnx_to_pytorch_ratio": onnx / pytorch,
            "onnx_max_probability_difference": difference}


def run_speed(preset_name: str, threads: int, device_name: str, bf16: bool, text_model: str, data_dir: str | None) -> dict:
    """Every measure of the preset; checkpoints, caches and the ONNX file live in a temporary folder meanwhile."""
    with tempfile.TemporaryDirectory(prefix="flip-speed-") as scratch:
        return measure_speed(preset_name, threads, device_name, bf16, text_model, data_dir, Path(scratch))


def measure_speed(preset_name: str, threads: int, device_name: str, bf16: bool, text_model: str, data_dir: str | None,
                  scratch: Path) -> dict:
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
    # the text part's ceiling: the bare fast tokenizer on the same prompts, already rendered
    prompts = [processor.render_text(row) for row in train.select(range(min(20000, len(train))))]
    started = time.perf_counter()
    processor.tokenizer(prompts, return_offsets_mapping=True)
    report["bare_tokenizer_rows_per_second"] = len(prompts) / (time.perf_counter() - started)
    report["preprocess_to_bare_tokenizer_ratio"] = report["preprocess_rows_per_second"] / report["bare_tokenizer_rows_per_second"]
    # ID encoding alone (FLIP_ID's training and serving), on the columns and through Dataset.map
    columns = train[:]
    report["preprocess_id_rows_per_second"] = best_rate(lambda: processor.encode_ids(columns), len(train), torch.device("cpu"))
    started = time.perf_counter()
    train.map(processor, batched=True, batch_size=2000, fn_kwargs={"text": False}, remove_columns=train.column_names,
              load_from_cache_file=False, desc="Encoding train, ids only")
    report["preprocess_id_map_rows_per_second"] = len(train) / (time.perf_counter() - started)

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
        if mode == "text":  # a typical batch as group_by_length sampling draws them: neighbours around the median length
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

    # the same FLIP_ID in ONNX Runtime, against PyTorch on the same batches (CPU, float32)
    report.update(onnx_inference(flip_id, feature_batches, scratch))

    # the ctr-prediction pipeline from raw rows: id mode at the batch of the model's own inference above, joint at 256
    raw_rows = [dataset["validation"][i] for i in range(min(PIPELINE_ROWS, len(dataset["validation"])))]
    pipeline_speed = {}
    for mode in ("id", "joint"):
        directory = scratch / mode
        FlipForCTR.from_pretrained(checkpoint, ctr_mode=mode).save_pretrained(directory)
        processor.save_pretrained(directory)
        predictor = pipeline("ctr-prediction", model=str(directory), device=device)
        rows = raw_rows if mode == "id" else raw_rows[:2048]
        batch_size = preset["id_batch"] if mode == "id" else 256
        pipeline_speed[mode] = best_rate(lambda: predictor(rows, batch_size=batch_size), len(rows), device, rounds=3)
    report["pipeline_batch_size"] = {"id": preset["id_batch"], "joint": 256}
    report["pipeline_rows_per_second"] = pipeline_speed
    report["pipeline_id_to_model_ratio"] = pipeline_speed["id"] / report["inference_rows_per_second"]["id"]

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


def write_click_log(folder: Path, rows: int, seed: int = 0) -> dict[str, str]:
    """A synthetic click log as parquet shards of up to `STREAMING_SHARD_ROWS` rows: `rows` for training and 1% more
    each for validation and test. Ids are Zipf-distributed (a few users and items make most rows, as in real logs);
    the click depends on the user, the item, a genre and the price. Returns each split's file glob."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    user_effect, item_effect = rng.normal(0, 0.7, STREAMING_FIELDS[0][2]), rng.normal(0, 0.7, STREAMING_FIELDS[1][2])
    genres = np.array([f"genre {i}" for i in range(STREAMING_FIELDS[-1][2])])
    for split, split_rows in (("train", rows), ("validation", rows // 100), ("test", rows // 100)):
        for shard, start in enumerate(range(0, split_rows, STREAMING_SHARD_ROWS)):
            n = min(STREAMING_SHARD_ROWS, split_rows - start)
            columns = {name: (rng.zipf(1.1, n) - 1) % size if size > 1000 else rng.integers(0, size, n)
                       for name, kind, size in STREAMING_FIELDS if kind == "categorical"}
            price = rng.lognormal(3, 1, n)
            counts = rng.integers(1, 4, n)
            genre = rng.integers(0, len(genres), counts.sum())
            logit = (-1.0 + user_effect[columns["user_id"]] + item_effect[columns["item_id"]] - 0.3 * np.log(price / 20)
                     + 0.8 * (genre[np.cumsum(counts) - counts] < 3))
            table = pa.table({
                **{name: pa.array(values).cast(pa.string()) for name, values in columns.items()},
                "price": price,
                "genres": pa.ListArray.from_arrays(np.concatenate([[0], np.cumsum(counts)]), pa.array(genres[genre])),
                "label": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64),
            })
            pq.write_table(table, folder / f"{split}-{shard:05d}.parquet", row_group_size=100_000)
    return {split: str(folder / f"{split}-*.parquet") for split in ("train", "validation", "test")}


def run_streaming(rows: int, threads: int, device_name: str, text_model: str) -> dict:
    """Write the click log to a temporary folder, then measure streaming on it in a fresh process, whose peak RSS
    is then its own (the parent holds the other measures' models)."""
    import concurrent.futures
    import multiprocessing

    with tempfile.TemporaryDirectory(prefix="flip-streaming-") as scratch:
        files = write_click_log(Path(scratch), rows)
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            return pool.submit(measure_streaming, files, threads, device_name, text_model, scratch).result()


def measure_streaming(files: dict[str, str], threads: int, device_name: str, text_model: str, scratch: str) -> dict:
    """Fit the processor in one streaming pass over the training files, then train FLIP_ID for one epoch over every
    row, shuffled through a 100k-row buffer: rows/s of each, and this process's peak RSS."""
    import resource

    import torch
    from transformers import TrainingArguments

    from flip_hf import DataCollatorForFlipCTR, FieldSpec, FlipForCTR, FlipProcessor, FlipStreamingDataset, TabularSchema
    from flip_hf.data import load_tabular
    from flip_hf.text_models import resolve_text_model
    from flip_hf.trainer import FlipTrainer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    schema = TabularSchema([FieldSpec(name, kind) for name, kind, _ in STREAMING_FIELDS], name="synthetic click log")
    raw, schema = load_tabular(files, schema, streaming=True)
    plm_path = resolve_text_model(text_model)
    started = time.perf_counter()
    processor = FlipProcessor.from_text_pretrained(plm_path, schema).fit(raw["train"])
    fit_seconds = time.perf_counter() - started
    model = FlipForCTR.from_text_pretrained(plm_path, processor, ctr_mode="id", **STREAMING_MODEL)
    train = FlipStreamingDataset(raw["train"].shuffle(seed=0, buffer_size=100_000), processor, num_rows=processor.num_fit_rows)
    args = TrainingArguments(output_dir=str(Path(scratch) / "checkpoints"), per_device_train_batch_size=STREAMING_BATCH_SIZE,
                             num_train_epochs=1, learning_rate=1e-3, save_strategy="no", report_to="none",
                             logging_strategy="no", disable_tqdm=True, use_cpu=device_name == "cpu", seed=0)
    trainer = FlipTrainer(model=model, args=args, train_dataset=train, data_collator=DataCollatorForFlipCTR(processor, text=False))
    output = trainer.train()
    return {"rows": processor.num_fit_rows, "fit_rows_per_second": processor.num_fit_rows / fit_seconds,
            "rows_per_second": output.metrics["train_samples_per_second"], "train_loss": output.training_loss,
            "batch_size": STREAMING_BATCH_SIZE, "vocabulary_sizes": {f["name"]: f["vocab_size"] for f in processor.field_infos()},
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def speed_table(report: dict) -> str:
    rows = [
        ("preprocessing (Dataset.map, train split)", f"{report['preprocess_rows_per_second']:,.0f} rows/s"),
        ("  same / bare tokenizer on the rendered prompts", f"{report['preprocess_to_bare_tokenizer_ratio']:.2f} "
         f"(tokenizer {report['bare_tokenizer_rows_per_second']:,.0f} rows/s)"),
        ("ID encoding (processor.encode_ids, train split)", f"{report['preprocess_id_rows_per_second']:,.0f} rows/s"),
        ("ID encoding through Dataset.map", f"{report['preprocess_id_map_rows_per_second']:,.0f} rows/s"),
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
    if report.get("onnx_rows_per_second") is None:
        rows.append(("inference: FLIP_ID in ONNX Runtime", report.get("onnx_note", "skipped")))
    else:
        rows += [
            ("inference: FLIP_ID in PyTorch (CPU, float32)", f"{report['onnx_pytorch_rows_per_second']:,.0f} rows/s"),
            ("inference: FLIP_ID in ONNX Runtime (CPU, same batches)", f"{report['onnx_rows_per_second']:,.0f} rows/s"),
            ("ONNX Runtime / PyTorch, FLIP_ID", f"{report['onnx_to_pytorch_ratio']:.2f} "
             f"(probabilities differ by at most {report['onnx_max_probability_difference']:.1e})"),
        ]
    batch_sizes = report.get("pipeline_batch_size", {})
    for name, value in report["pipeline_rows_per_second"].items():
        rows.append((f"pipeline (batch {batch_sizes.get(name, 256)}): {name} mode", f"{value:,.0f} rows/s"))
    rows += [
        ("pipeline / model inference, id mode", f"{report['pipeline_id_to_model_ratio']:.2f}"),
        ("text vectors of a frozen PLM (computed once, cached)", f"{report['text_vectors_rows_per_second']:,.0f} rows/s"),
    ]
    rows += [
        (f"{report['precision']} matmul limit, {report['device']}" + (f", {report['threads']} threads" if report["device"] == "cpu" else ""),
         f"{report['matmul_gflops']:,.1f} GFLOP/s"),
        ("PLM training FLOPs per sample", f"{report['plm_train_gflop_per_sample']:.3f} GFLOP"),
        ("PLM finetuning (text mode) / compute limit", f"{100 * report['plm_finetune_fraction_of_limit']:.1f}%"),
        ("same, length-grouped batch (group_by_length sampling)", f"{100 * report['plm_finetune_grouped_fraction_of_limit']:.1f}%"),
        ("pretraining (2 PLM passes) / compute limit", f"{100 * report['pretrain_fraction_of_limit']:.1f}%"),
        ("plain MLM / compute limit", f"{100 * report['plain_mlm_fraction_of_limit']:.1f}%"),
    ]
    if "streaming" in report:
        streaming = report["streaming"]
        rows += [
            (f"streaming: fit on {streaming['rows']:,} rows, one pass", f"{streaming['fit_rows_per_second']:,.0f} rows/s"),
            ("streaming: FLIP_ID training, one epoch", f"{streaming['rows_per_second']:,.0f} rows/s"),
            ("streaming: peak RSS (fit and training)", f"{streaming['peak_rss_mb']:,.0f} MB"),
        ]
    width = max(len(name) for name, _ in rows)
    return "\n".join([f"| {'measure'.ljust(width)} | value |", f"|{'-' * (width + 2)}|---|"] + [f"| {name.ljust(width)} | {value} |" for name, value in rows])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu-small", choices=list(SPEED_PRESETS), help="cpu-small (default) or full.")
    parser.add_argument("--threads", type=int, default=2, help="torch (and ONNX Runtime) threads.")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available).")
    parser.add_argument("--bf16", action="store_true", help="train and infer under bf16 autocast (GPU).")
    parser.add_argument("--text_model", default="sentence-transformers/all-MiniLM-L6-v2", help="PLM: Hub id or path.")
    parser.add_argument("--data_dir", default=None, help="folder with MovieLens-100K's official files (else the cache or a download).")
    parser.add_argument("--streaming_rows", type=int, default=10_000_000,
                        help="training rows of the synthetic click log that the streaming measure writes (0 skips it).")
    args = parser.parse_args(argv)
    command = "python scripts/benchmark_speed.py " + " ".join(sys.argv[1:] if argv is None else argv)
    import logging

    import torch

    from flip_hf.benchmark_report import write_report

    logging.basicConfig(level=logging.WARNING)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    report = run_speed(args.preset, args.threads, device, args.bf16, args.text_model, args.data_dir)
    if args.streaming_rows > 0:
        report["streaming"] = run_streaming(args.streaming_rows, args.threads, device, args.text_model)
    table = speed_table(report)
    print(table)
    print(f"\nReport: {write_report('speed', args.preset, report, table, command, results_dir=RESULTS_DIR)}")
    return report


if __name__ == "__main__":
    main()
