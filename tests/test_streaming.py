"""Streaming: splits read as they are iterated (`load_tabular(..., streaming=True)`), a processor fitted in one pass
over them, FLIP_ID trained on a stream (`FlipStreamingDataset` + `FlipTrainer`), and scripts/train.py --streaming.
Everything here equals its in-memory counterpart on the same rows; the stream only never holds them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from scripts_loader import load_script
from tiny import tiny_argv, tiny_bert_config, tiny_bert_tokenizer, tiny_rows, tiny_schema
from transformers import TrainingArguments

from flip_hf import (
    DataCollatorForFlipCTR,
    FieldSpec,
    FlipConfig,
    FlipForCTR,
    FlipProcessor,
    FlipStreamingDataset,
    TabularSchema,
    processing_flip,
)
from flip_hf.data import load_tabular, tabular
from flip_hf.tensor_dataset import FlipTensorDataset
from flip_hf.trainer import FlipTrainer

SPLITS = (("train", 96), ("validation", 32), ("test", 32))
REPO = Path(__file__).resolve().parents[1]


def write_splits(folder, kind="parquet") -> dict[str, str]:
    """Tiny rows as two files per split, with nulls and (in CSV) genres as "a|b" text; each split's glob."""
    folder.mkdir(exist_ok=True)
    for seed, (split, size) in enumerate(SPLITS):
        frame = pd.DataFrame(tiny_rows(size, seed=seed)).astype({"age": "float64"})
        frame.loc[3, ["gender", "age"]] = None
        frame.at[4, "genres"] = []
        if kind == "csv":
            frame["genres"] = frame["genres"].map("|".join)
        for shard, part in enumerate((frame.iloc[: size // 2], frame.iloc[size // 2 :])):
            path = folder / f"{split}-{shard}.{kind}"
            part.to_parquet(path) if kind == "parquet" else part.to_csv(path, index=False)
    return {split: str(folder / f"{split}-*.{kind}") for split, _ in SPLITS}


def fitted(rows, **options) -> FlipProcessor:
    return FlipProcessor(tiny_bert_tokenizer(), tiny_schema(), **options).fit(rows)


def fitted_state(processor: FlipProcessor) -> tuple:
    return (processor.vocabularies, processor.bucket_boundaries, processor.numeric_ranges, processor.max_values,
            processor.num_fit_rows)


# ------------------------------------------------------------------------------------------------ loading
@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_a_stream_holds_the_rows_of_the_in_memory_load_and_fits_the_same_processor(tmp_path, kind):
    files = write_splits(tmp_path, kind)
    in_memory, schema = load_tabular(files, tiny_schema())
    stream, _ = load_tabular(files, tiny_schema(), streaming=True)
    assert isinstance(stream, datasets.IterableDatasetDict) and list(stream) == ["train", "validation", "test"]
    for split in stream:
        expected = [{k: v for k, v in row.items() if k != schema.time_column} for row in in_memory[split]]
        assert list(stream[split]) == expected  # 49 == 49.0: numbers stream as floats, the time column stays behind
    assert stream["train"].features["age"] == datasets.Value("float64")
    assert fitted_state(fitted(stream["train"])) == fitted_state(fitted(in_memory["train"]))
    assert fitted(stream["train"]).num_fit_rows == 96


def test_numeric_boundaries_are_exact_up_to_the_sample_size_then_from_a_seeded_sample(monkeypatch):
    schema = TabularSchema([FieldSpec("x", kind="numeric", num_buckets=4)])
    numbers = np.random.default_rng(0).normal(size=30_000)
    split = datasets.Dataset.from_dict({"x": numbers})  # fit reads it in batches, as a stream
    quartiles = np.quantile(numbers, [0.25, 0.5, 0.75])
    exact = FlipProcessor(tiny_bert_tokenizer(), schema).fit(split)
    assert exact.bucket_boundaries == [quartiles.tolist()]

    monkeypatch.setattr(processing_flip, "QUANTILE_SAMPLE_SIZE", 5_000)
    sampled = FlipProcessor(tiny_bert_tokenizer(), schema).fit(split)
    assert sampled.bucket_boundaries != exact.bucket_boundaries
    assert np.allclose(sampled.bucket_boundaries[0], quartiles, atol=0.05)
    assert sampled.numeric_ranges == exact.numeric_ranges == [[numbers.min(), numbers.max()]]  # always exact
    assert FlipProcessor(tiny_bert_tokenizer(), schema).fit(split).bucket_boundaries == sampled.bucket_boundaries


def test_max_vocab_size_keeps_the_most_frequent_values(bert_tokenizer, tmp_path):
    schema = TabularSchema([FieldSpec("item"), FieldSpec("tags", kind="multi_categorical")])
    rows = {"item": list("aaaaabbbbcccd"), "tags": [["x", "y"]] * 6 + [["y"]] * 4 + [["z"]] * 3}
    capped = FlipProcessor(bert_tokenizer, schema, max_vocab_size=2).fit(rows)
    assert capped.vocabularies == [["a", "b"], ["y", "x"]]
    assert [row[0] for row in capped.encode_ids({"item": ["a", "c", "d"], "tags": [["z"]] * 3})] == [3, 1, 1]
    assert FlipProcessor(bert_tokenizer, schema, max_vocab_size=2, min_frequency=5).fit(rows).vocabularies == [["a"], ["y", "x"]]

    capped.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "processor_config.json").read_text())["max_vocab_size"] == 2
    assert FlipProcessor.from_pretrained(tmp_path).max_vocab_size == 2
    # ids alone make the fingerprint: a cap that cuts nothing leaves it as it was
    assert FlipProcessor(bert_tokenizer, schema, max_vocab_size=4).fit(rows).vocabulary_fingerprint() == (
        FlipProcessor(bert_tokenizer, schema).fit(rows).vocabulary_fingerprint())
    with pytest.raises(ValueError, match="max_vocab_size must be at least 1"):
        FlipProcessor(bert_tokenizer, schema, max_vocab_size=0)


def test_a_source_that_is_not_split_is_refused(tmp_path):
    frame = pd.DataFrame(tiny_rows(20))
    frame.to_parquet(tmp_path / "all.parquet")
    for source in (frame, str(tmp_path / "all.parquet"), datasets.Dataset.from_pandas(frame)):
        with pytest.raises(ValueError, match=r"needs data that is already split; got a \w+\. A time or random split has to hold every row"):
            load_tabular(source, tiny_schema(), streaming=True)
    files = write_splits(tmp_path)
    with pytest.raises(ValueError, match=r"no split for test \(looked for 'test'\) in the split files"):
        load_tabular({"train": files["train"], "validation": files["validation"]}, tiny_schema(), streaming=True)


def test_a_bad_value_in_a_stream_names_its_field_value_and_row(tmp_path, monkeypatch):
    monkeypatch.setattr(tabular, "STREAM_BATCH_SIZE", 4)  # the bad row sits in a later batch
    frame = pd.DataFrame(tiny_rows(10))
    frame.loc[6, "label"] = 2
    splits = datasets.DatasetDict({split: datasets.Dataset.from_pandas(frame) for split, _ in SPLITS})
    stream, _ = load_tabular(splits, tiny_schema(), streaming=True)
    with pytest.raises(ValueError, match=r"label column 'label' must hold 0 or 1, but row index 6 of the train split has 2"):
        list(stream["train"])


# ----------------------------------------------------------------------------------------------- training
def stream_and_processor(size=480):
    splits = datasets.DatasetDict({split: datasets.Dataset.from_dict(tiny_rows(size, seed=seed))
                                   for seed, (split, _) in enumerate(SPLITS)})
    stream, _ = load_tabular(splits, tiny_schema(), streaming=True)
    in_memory, _ = load_tabular(splits, tiny_schema())
    return stream["train"], in_memory["train"], fitted(stream["train"])


def test_a_stream_gives_the_processors_encoding_a_batch_or_a_row_at_a_time():
    stream, in_memory, processor = stream_and_processor(50)
    dataset = FlipStreamingDataset(stream, processor, num_rows=processor.num_fit_rows)
    batches = list(dataset.batches(16))
    assert [len(batch["labels"]) for batch in batches] == [16, 16, 16, 2]
    expected = processor(in_memory[:], text=False, return_tensors="pt")
    for name, tensor in expected.items():
        assert torch.equal(torch.cat([batch[name] for batch in batches]), tensor), name
    rows = list(torch.utils.data.DataLoader(dataset, batch_size=10, collate_fn=DataCollatorForFlipCTR(processor, text=False)))
    assert torch.equal(torch.cat([batch["feature_ids"] for batch in rows]), expected["feature_ids"])  # a plain DataLoader
    assert len(dataset) == 50 and len(dataset.batched(16)) == 4
    with pytest.raises(TypeError, match="pass num_rows="):
        len(FlipStreamingDataset(stream, processor))


def test_flip_id_trains_on_a_stream_exactly_as_on_the_same_rows_in_memory(tmp_path, one_thread):
    stream, in_memory, processor = stream_and_processor()
    encoded = in_memory.map(processor, batched=True, fn_kwargs={"text": False}, remove_columns=in_memory.column_names)
    train_sets = {"stream": FlipStreamingDataset(stream, processor, num_rows=processor.num_fit_rows),
                  "memory": FlipTensorDataset.from_dataset(encoded)}
    tokenizer = processor.tokenizer
    config = FlipConfig(fields=processor.field_infos(), ctr_mode="id", text_config=tiny_bert_config(len(tokenizer)),
                        backbone="dnn", embedding_size=8, pad_token_id=tokenizer.pad_token_id)
    trained = {}
    for name, train in train_sets.items():
        args = TrainingArguments(str(tmp_path / name), per_device_train_batch_size=32, num_train_epochs=3, learning_rate=1e-2,
                                 train_sampling_strategy="sequential", logging_steps=5, report_to="none",
                                 save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0)
        torch.manual_seed(0)
        trainer = FlipTrainer(model=FlipForCTR(config), args=args, train_dataset=train,
                              data_collator=DataCollatorForFlipCTR(processor, text=False))
        output = trainer.train()
        losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
        trained[name] = (trainer.model.state_dict(), output, losses)
    (stream_weights, stream_output, losses), (memory_weights, memory_output, _) = trained["stream"], trained["memory"]
    assert stream_output.global_step == memory_output.global_step == 3 * 15  # epochs counted from num_rows
    assert stream_output.metrics["train_samples_per_second"] == pytest.approx(  # rows, not batches, per second
        3 * 480 / stream_output.metrics["train_runtime"], rel=0.01)
    assert all(torch.equal(stream_weights[key], memory_weights[key]) for key in memory_weights)
    assert losses[-1] < 0.9 * losses[0]  # it learns the gender x genre rule


# ------------------------------------------------------------------------------------------------ train.py
@pytest.fixture(scope="module")
def train():
    return load_script("train.py")


def stream_argv(files, schema_file, text_model_dir, output_dir):
    return tiny_argv("unused", text_model_dir)[2:] + [
        "--stage", "finetune", "--ctr_mode", "id", "--streaming", "true", "--train_files", files["train"],
        "--validation_files", files["validation"], "--test_files", files["test"], "--schema", str(schema_file),
        "--output_dir", str(output_dir), "--shuffle_buffer_size", "40", "--max_vocab_size", "8",
    ]


def test_train_script_streams_flip_id_end_to_end(train, tmp_path, tiny_text_model_dir):
    files = write_splits(tmp_path / "data")
    tiny_schema().to_json_file(tmp_path / "schema.json")
    results = train.main(stream_argv(files, tmp_path / "schema.json", tiny_text_model_dir, tmp_path / "run"))
    record = results["stages"]["flip_id"]
    assert record["global_step"] == 4 and record["train_samples"] == 96
    assert {"auc", "logloss", "gauc"} <= set(record["test"]) and record["test"]["gauc_groups"] > 0
    saved = FlipProcessor.from_pretrained(tmp_path / "run" / "flip_id")
    in_memory, _ = load_tabular(files, tiny_schema())
    assert saved.max_vocab_size == 8 and saved.vocabularies == fitted(in_memory["train"], max_vocab_size=8).vocabularies
    assert FlipForCTR.from_pretrained(tmp_path / "run" / "flip_id").config.ctr_mode == "id"
    card = (tmp_path / "run" / "flip_id" / "README.md").read_text()
    assert "Split: split in advance into the training, validation and test files." in card


@pytest.mark.parametrize("change, message", [
    (["--stage", "all"], "--streaming trains FLIP_ID only"),
    (["--ctr_mode", "joint"], "--streaming trains FLIP_ID only"),
    (["--schema", ""], "--schema missing"),
    (["--train_files", "", "--validation_files", "", "--test_files", "", "--schema", ""], "--streaming reads --train_files"),
])
def test_train_script_refuses_what_it_cannot_stream(train, tmp_path, tiny_text_model_dir, change, message):
    files = {split: str(tmp_path / f"{split}.parquet") for split, _ in SPLITS}
    tiny_schema().to_json_file(tmp_path / "schema.json")
    with pytest.raises(SystemExit, match=message):
        train.main(stream_argv(files, tmp_path / "schema.json", tiny_text_model_dir, tmp_path / "run") + change)


@pytest.mark.slow
def test_two_processes_train_from_one_stream_what_one_process_trains(tmp_path, tiny_text_model_dir):
    """accelerate dispatches a stream's batches: the main process reads two batches of 8 rows per step and each process
    trains on one, so the weights are those of one process reading 16 rows a step (fm has no dropout)."""
    files = write_splits(tmp_path / "data")
    tiny_schema().to_json_file(tmp_path / "schema.json")
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "scripts" / "accelerate" / "cpu-2proc.yaml")]
    for name, command, batch_size in (("two", launch, "8"), ("one", [sys.executable], "16")):
        argv = stream_argv(files, tmp_path / "schema.json", tiny_text_model_dir, tmp_path / name)
        run = subprocess.run([*command, str(REPO / "scripts" / "train.py"), *argv, "--backbone", "fm", "--id_batch_size", batch_size],
                             capture_output=True, text=True, timeout=400, env=env, cwd=REPO)
        assert run.returncode == 0, run.stderr[-5000:]
    one, two = (load_file(str(tmp_path / name / "flip_id" / "model.safetensors")) for name in ("one", "two"))
    for key, value in one.items():
        torch.testing.assert_close(two[key], value, rtol=1e-4, atol=1e-6, msg=key)

