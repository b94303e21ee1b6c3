"""scripts/train.py end to end on tiny data: stages, outputs, resumption, two processes, bad configs,
--help and presets. The script is loaded with importlib and `main(argv)` called in-process (it returns
the results dict), except where a real process is the point (--help, torchrun)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file
from scripts_loader import load_script
from tiny import tiny_argv

from flip_hf.model_card import FlipModelCardData
from flip_hf.training_run import MODE_DIRS

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "train.py"
CONFIGS = REPO / "scripts" / "configs"
MODEL_DIRS = ("baseline_id", "pretrain", "flip_id", "flip_plm", "flip")
TEXT_PREFIX = "flip.text_encoder."


@pytest.fixture(scope="module")
def train():
    return load_script("train.py")


@pytest.fixture
def base_argv(tiny_dataset_dir, tiny_text_model_dir):
    return tiny_argv(tiny_dataset_dir, tiny_text_model_dir)


def weights(directory) -> dict[str, torch.Tensor]:
    return load_file(str(Path(directory) / "model.safetensors"))


def checkpoint(stage_dir, step: int) -> Path:
    """Trainer's checkpoint-`step` of a stage: in <output_dir>/checkpoints/<stage>/ (or the stage folder)."""
    stage_dir = Path(stage_dir)
    for folder in (stage_dir.parent / "checkpoints" / stage_dir.name, stage_dir):
        if (folder / f"checkpoint-{step}").is_dir():
            return folder / f"checkpoint-{step}"
    raise AssertionError(f"no checkpoint-{step} for {stage_dir}")


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert set(wa) == set(wb)
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)}/{len(wa)} tensors differ, e.g. {different[:5]}"


# ------------------------------------------------------------------------------------ stage all
@pytest.fixture(scope="module")
def stage_all(tmp_path_factory, tiny_dataset_dir, tiny_text_model_dir):
    """One `--stage all` run, shared by the tests that read its outputs. Returns (output_dir, results)."""
    output_dir = tmp_path_factory.mktemp("stage_all") / "run"
    torch.manual_seed(0)
    results = load_script("train.py").main(tiny_argv(tiny_dataset_dir, tiny_text_model_dir) + ["--stage", "all", "--output_dir", str(output_dir)])
    return output_dir, results


def test_stage_all_writes_every_model_and_the_results(stage_all):
    output_dir, results = stage_all
    for name in MODEL_DIRS:
        folder = output_dir / name
        for file in ("config.json", "model.safetensors", "processor_config.json", "README.md", "trainer_state.json"):
            assert (folder / file).is_file(), f"{name}/{file} missing"
        assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == 4
    assert json.loads((output_dir / "results.json").read_text()) == results

    stages = results["stages"]
    assert set(stages) == set(MODEL_DIRS)
    for name in MODEL_DIRS:
        # timings are recorded, never asserted
        assert all(math.isfinite(stages[name][key]) for key in ("train_seconds", "train_samples_per_second")), name
        assert stages[name]["global_step"] == 4
    assert math.isfinite(results["total_seconds"]) and results["backbone"] == "dnn"


def test_stage_all_metrics_are_those_of_the_saved_models(stage_all, tiny_dataset_dir):
    """Each finetuned stage's validation / test metrics are flip_hf.metrics on its saved model's predictions."""
    from flip_hf import FlipForCTR, FlipProcessor
    from flip_hf.data import load_saved_dataset
    from flip_hf.metrics import compute_ctr_metrics

    output_dir, results = stage_all
    raw, schema = load_saved_dataset(tiny_dataset_dir)
    for name in ("flip_id", "flip_plm", "flip"):
        model = FlipForCTR.from_pretrained(output_dir / name).eval()
        processor = FlipProcessor.from_pretrained(output_dir / name)
        for split in ("validation", "test"):
            rows = raw[split].to_dict()
            with torch.no_grad():
                batch = processor(rows, text=model.config.ctr_mode != "id", return_tensors="pt")
                logits = model(**batch).logits.reshape(-1).numpy()
            expected = compute_ctr_metrics(logits, rows[schema.label_column], groups=rows[schema.group_column], from_logits=True)
            metrics = results["stages"][name][split]
            for key in ("auc", "logloss", "gauc"):  # gAUC: the tiny schema groups by user_id
                assert metrics[key] == pytest.approx(expected[key], abs=1e-6), (name, split, key)


def test_stage_all_model_contents(stage_all):
    output_dir, _ = stage_all
    configs = {name: json.loads((output_dir / name / "config.json").read_text()) for name in MODEL_DIRS}
    assert configs["pretrain"]["architectures"] == ["FlipForPretraining"]
    assert [configs[m]["ctr_mode"] for m in ("flip_id", "flip_plm", "flip")] == ["id", "text", "joint"]

    id_weights, text_weights, joint_weights = (weights(output_dir / m) for m in ("flip_id", "flip_plm", "flip"))
    assert id_weights and not any(k.startswith(TEXT_PREFIX) for k in id_weights)  # FLIP_ID has no PLM
    assert any(k.startswith(TEXT_PREFIX) for k in text_weights)
    assert any(k.startswith(TEXT_PREFIX) for k in joint_weights) and any(k.startswith("flip.id_encoder.") for k in joint_weights)


def test_flip_card_model_index_holds_the_results(stage_all):
    from huggingface_hub import ModelCard

    output_dir, results = stage_all
    for name, metric_name in (("flip", "flip"), ("flip_id", "flip_id"), ("flip_plm", "flip_plm")):
        data = ModelCard.load(output_dir / name / "README.md").data
        found = {(r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
        expected = {
            (split, hub_type): results["stages"][metric_name][split][key]
            for split in ("validation", "test")
            for key, hub_type in (("auc", "roc_auc"), ("logloss", "log_loss"), ("gauc", "gauc"))
        }
        assert found == pytest.approx(expected), name
    # the FLIP card's body also reports the other modes of the run
    text = (output_dir / "flip" / "README.md").read_text()
    assert "FLIP_ID" in text and "FLIP_PLM" in text


@pytest.mark.parametrize("mode", ["id", "text", "joint"])
def test_finetune_each_mode_from_a_pretrained_checkpoint(train, stage_all, base_argv, tmp_path, mode):
    pretrain_dir = stage_all[0] / "pretrain"
    results = train.main(base_argv + [
        "--stage", "finetune", "--ctr_mode", mode, "--pretrained_model", str(pretrain_dir),
        "--output_dir", str(tmp_path / "out"), "--max_steps", "2",
    ])
    folder = tmp_path / "out" / MODE_DIRS[mode]
    assert set(results["stages"]) == {MODE_DIRS[mode]}
    record = results["stages"][MODE_DIRS[mode]]
    assert record["global_step"] == 2 and {"auc", "logloss"} <= set(record["test"])
    assert json.loads((folder / "config.json").read_text())["ctr_mode"] == mode
    # the encoders start from the pretraining checkpoint: 2 steps at lr <= 1e-3 move no weight by more
    # than ~2e-3, while a fresh initialisation would differ by far more
    pretrained, finetuned = weights(pretrain_dir), weights(folder)
    shared = [k for k in finetuned if k.startswith("flip.") and k in pretrained]
    assert any(k.startswith("flip.id_encoder.") for k in shared) == (mode != "text")
    assert any(k.startswith(TEXT_PREFIX) for k in shared) == (mode != "id")
    for key in shared:
        assert (finetuned[key] - pretrained[key]).abs().max() < 2e-2, key
    assert any(not torch.equal(finetuned[k], pretrained[k]) for k in shared)  # and it trained
    # its card keeps what the checkpoint's pretraining cost, though another run did it
    pretraining = FlipModelCardData.load(pretrain_dir).training_seconds
    assert pretraining and {"model": "pretrain", "seconds": pretraining} in FlipModelCardData.load(folder).training_times


# -------------------------------------------------------------------------------------- resume
class Interrupted(Exception):
    pass


def interrupt_after_checkpoint(monkeypatch, step: int):
    """Make the next trainer raise right after it wrote checkpoint-`step` (a kill after the save):
    the LR schedule (max_steps) and everything else stays as in the uninterrupted run."""
    from transformers import TrainerCallback

    from flip_hf.trainer import FlipTrainer

    class Interrupt(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise Interrupted(step)

    original = FlipTrainer.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.add_callback(Interrupt())

    monkeypatch.setattr(FlipTrainer, "__init__", init)


def run_interrupted_then_resumed(train, argv, output_dir, monkeypatch, step=3):
    with monkeypatch.context() as patch:
        interrupt_after_checkpoint(patch, step)
        torch.manual_seed(0)  # the same global RNG state as the uninterrupted run: see test_seed_alone_...
        with pytest.raises(Interrupted):
            train.main(argv + ["--output_dir", str(output_dir)])
    assert not (Path(output_dir) / "results.json").exists()  # nothing finished
    return train.main(argv + ["--output_dir", str(output_dir), "--resume_from_checkpoint", "last"])


@pytest.fixture(scope="module")
def pretrain_resumed(tmp_path_factory, tiny_dataset_dir, tiny_text_model_dir):
    """`--stage pretrain` for 6 steps (checkpoints every 3) straight, and interrupted after checkpoint-3
    then resumed with `--resume_from_checkpoint last`. 64 rows at batch 16: step 3 is mid-epoch and
    step 6 in the second epoch. Returns (straight dir, resumed dir, straight results, resumed results)."""
    train = load_script("train.py")
    root = tmp_path_factory.mktemp("pretrain_resume")
    argv = tiny_argv(tiny_dataset_dir, tiny_text_model_dir) + [
        "--stage", "pretrain", "--max_steps", "6", "--save_steps", "3", "--max_pretrain_samples", "64",
    ]
    torch.manual_seed(0)
    straight = train.main(argv + ["--output_dir", str(root / "straight")])
    with pytest.MonkeyPatch.context() as monkeypatch:
        resumed = run_interrupted_then_resumed(train, argv, root / "resumed", monkeypatch)
    return root / "straight" / "pretrain", root / "resumed" / "pretrain", straight, resumed


def test_pretrain_plm_learning_rate_zero_keeps_the_plm_and_trains_the_id_side(train, base_argv, tiny_text_model_dir, tmp_path):
    train.main(base_argv + ["--stage", "pretrain", "--max_pretrain_samples", "64", "--save_steps", "2",
                            "--pretrain_plm_learning_rate", "0", "--output_dir", str(tmp_path / "out")])
    original = weights(tiny_text_model_dir)
    at_step_2, at_step_4 = weights(checkpoint(tmp_path / "out" / "pretrain", 2)), weights(tmp_path / "out" / "pretrain")
    plm = [k for k in at_step_4 if k.startswith(TEXT_PREFIX)]
    assert plm and all(torch.equal(at_step_4[k], original[k[len(TEXT_PREFIX):]]) for k in plm)
    # the ID side keeps --pretrain_learning_rate
    id_side = [k for k in at_step_4 if k.startswith("flip.") and not k.startswith(TEXT_PREFIX)]
    assert id_side and any(not torch.equal(at_step_2[k], at_step_4[k]) for k in id_side)


def logged_losses(stage_dir):
    history = json.loads((Path(stage_dir) / "trainer_state.json").read_text())["log_history"]
    return [(log["step"], log["loss"], log.get("mlm_loss")) for log in history if "loss" in log]


def test_resumed_pretraining_continues_from_its_checkpoint(pretrain_resumed):
    straight_dir, resumed_dir, straight, resumed = pretrain_resumed
    assert resumed["stages"]["pretrain"]["global_step"] == straight["stages"]["pretrain"]["global_step"] == 6
    assert json.loads((resumed_dir / "trainer_state.json").read_text())["global_step"] == 6
    assert_same_weights(checkpoint(straight_dir, 3), checkpoint(resumed_dir, 3))  # same run up to the interruption
    assert [loss[0] for loss in logged_losses(resumed_dir)] == list(range(1, 7))  # history kept, steps 4-6 added
    assert logged_losses(resumed_dir)[:3] == logged_losses(straight_dir)[:3]


def test_resumed_pretraining_matches_an_uninterrupted_one(pretrain_resumed):
    straight_dir, resumed_dir, _, _ = pretrain_resumed
    assert logged_losses(resumed_dir) == logged_losses(straight_dir)
    assert_same_weights(straight_dir, resumed_dir)


def test_resumed_finetuning_matches_an_uninterrupted_one(train, base_argv, stage_all, tmp_path, monkeypatch):
    """Joint mode (PLM dropout, two parameter groups), an evaluation and checkpoint every 3 steps,
    best-model loading at the end."""
    argv = base_argv + [
        "--stage", "finetune", "--ctr_mode", "joint", "--pretrained_model", str(stage_all[0] / "pretrain"),
        "--max_steps", "6", "--save_steps", "3", "--evals_per_epoch", "2",
    ]
    torch.manual_seed(0)
    straight = train.main(argv + ["--output_dir", str(tmp_path / "straight")])
    resumed = run_interrupted_then_resumed(train, argv, tmp_path / "resumed", monkeypatch)
    assert_same_weights(tmp_path / "straight" / "flip", tmp_path / "resumed" / "flip")
    for split in ("validation", "test"):
        for metric in ("auc", "logloss", "gauc"):
            assert resumed["stages"]["flip"][split][metric] == straight["stages"]["flip"][split][metric]


def test_resume_skips_a_checkpoint_whose_save_was_interrupted(train, base_argv, tmp_path, monkeypatch, caplog):
    argv = base_argv + ["--stage", "finetune", "--ctr_mode", "id", "--max_steps", "6", "--save_steps", "3", "--evals_per_epoch", "2"]
    torch.manual_seed(0)
    straight = train.main(argv + ["--output_dir", str(tmp_path / "straight")])
    with monkeypatch.context() as patch:
        interrupt_after_checkpoint(patch, 3)
        torch.manual_seed(0)
        with pytest.raises(Interrupted):
            train.main(argv + ["--output_dir", str(tmp_path / "resumed")])
    # a later save cut short: the folder exists, its trainer_state.json does not
    half_written = tmp_path / "resumed" / "checkpoints" / "flip_id" / "checkpoint-6"
    half_written.mkdir()
    (half_written / "model.safetensors").write_bytes(b"\0" * 10)
    resumed = train.main(argv + ["--output_dir", str(tmp_path / "resumed"), "--resume_from_checkpoint", "last"])
    assert "checkpoint-6: its save did not finish" in caplog.text
    assert_same_weights(tmp_path / "straight" / "flip_id", tmp_path / "resumed" / "flip_id")
    assert resumed["stages"]["flip_id"]["test"]["auc"] == straight["stages"]["flip_id"]["test"]["auc"]


def test_stage_all_trains_the_id_baseline_without_pretraining(stage_all):
    output_dir, results = stage_all
    config = json.loads((output_dir / "baseline_id" / "config.json").read_text())
    assert config["ctr_mode"] == "id"
    # the baseline starts from scratch: FLIP_ID's weights differ from it, although the seed is the same
    baseline, flip_id = weights(output_dir / "baseline_id"), weights(output_dir / "flip_id")
    table_key = "flip.id_encoder.embeddings.embedding.weight"
    assert not torch.allclose(baseline[table_key], flip_id[table_key])
    # and every card of the run lists it next to the FLIP models
    card = (output_dir / "flip" / "README.md").read_text()
    assert "ID-only (no pretraining)" in card
    assert "What it costs:" in card and "of FLIP pretraining" in card
    assert "Split:" not in card  # a saved dataset is split already: no recipe's split is claimed


def test_test_metrics_are_sliced_into_cold_and_warm_users(train, tiny_text_model_dir, tmp_path):
    from datasets import Dataset, DatasetDict
    from tiny import tiny_rows, tiny_schema

    from flip_hf.data import save_dataset
    from flip_hf.metrics import compute_ctr_metrics

    test = tiny_rows(48, seed=2)
    test["user_id"] = [f"new{u}" if i % 2 else u for i, u in enumerate(test["user_id"])]  # every other row: an unseen user
    splits = DatasetDict({"train": Dataset.from_dict(tiny_rows(96, seed=0)), "validation": Dataset.from_dict(tiny_rows(32, seed=1)),
                          "test": Dataset.from_dict(test)})
    save_dataset(splits, tiny_schema(), tmp_path / "data")
    argv = tiny_argv(tmp_path / "data", tiny_text_model_dir) + ["--stage", "finetune", "--ctr_mode", "id", "--output_dir", str(tmp_path / "out")]
    slices = train.main(argv)["stages"]["flip_id"]["test_slices"]
    assert slices["cold_share"] == 0.5

    from flip_hf import FlipForCTR, FlipProcessor

    model, processor = FlipForCTR.from_pretrained(tmp_path / "out" / "flip_id"), FlipProcessor.from_pretrained(tmp_path / "out" / "flip_id")
    with torch.no_grad():
        logits = model(**processor(test, text=False, return_tensors="pt")).logits.numpy()
    for name, rows in (("cold", slice(1, None, 2)), ("warm", slice(0, None, 2))):
        expected = compute_ctr_metrics(logits[rows], test["label"][rows], from_logits=True)
        assert slices[name]["auc"] == pytest.approx(expected["auc"]) and slices[name]["logloss"] == pytest.approx(expected["logloss"])


def test_frozen_plm_finetunes_on_cached_text_vectors(train, stage_all, base_argv, tmp_path):
    pretrain_dir = stage_all[0] / "pretrain"
    argv = base_argv + ["--stage", "finetune", "--ctr_mode", "joint", "--pretrained_model", str(pretrain_dir),
                        "--freeze_text_encoder", "true", "--text_head_hidden_size", "8", "--max_steps", "2",
                        "--text_batch_size", "8"]
    results = train.main(argv + ["--output_dir", str(tmp_path / "out")])
    record = results["stages"]["flip"]
    assert record["global_step"] == 2 and {"auc", "logloss"} <= set(record["test"])
    # the PLM is exactly the pretrained one: frozen, never trained
    pretrained, finetuned = weights(pretrain_dir), weights(tmp_path / "out" / "flip")
    plm = [k for k in finetuned if k.startswith(TEXT_PREFIX)]
    assert plm and all(torch.equal(finetuned[k], pretrained[k]) for k in plm)
    config = json.loads((tmp_path / "out" / "flip" / "config.json").read_text())
    assert config["freeze_text_encoder"] and config["text_head_hidden_size"] == 8
    # FLIP finetunes at the ID model's batch size, not the PLM's
    state = json.loads((tmp_path / "out" / "flip" / "trainer_state.json").read_text())
    assert state["train_batch_size"] == 16  # --id_batch_size of the tiny runs
    # what the text vectors took counts in the mode's cost on its card
    assert record["text_vectors_seconds"] >= 0  # recorded (tiny data: may round to 0.0)
    card_data = FlipModelCardData.load(tmp_path / "out" / "flip")
    expected = record["train_seconds"] + record["text_vectors_seconds"]
    assert {"model": "joint", "seconds": pytest.approx(expected)} in card_data.training_times


def test_top_plm_layer_finetunes_over_cached_frozen_states(train, stage_all, base_argv, tmp_path):
    pretrain_dir = stage_all[0] / "pretrain"
    argv = base_argv + ["--stage", "finetune", "--ctr_mode", "text", "--pretrained_model", str(pretrain_dir),
                        "--freeze_text_encoder", "true", "--text_trainable_layers", "1", "--max_steps", "2"]
    results = train.main(argv + ["--output_dir", str(tmp_path / "out")])
    assert results["stages"]["flip_plm"]["global_step"] == 2
    pretrained, finetuned = weights(pretrain_dir), weights(tmp_path / "out" / "flip_plm")
    top = f"{TEXT_PREFIX}encoder.layer.1."  # the tiny PLM's last layer
    plm = [k for k in finetuned if k.startswith(TEXT_PREFIX)]
    assert any(not torch.equal(finetuned[k], pretrained[k]) for k in plm if k.startswith(top))
    assert all(torch.equal(finetuned[k], pretrained[k]) for k in plm if not k.startswith(top))
    config = json.loads((tmp_path / "out" / "flip_plm" / "config.json").read_text())
    assert config["text_trainable_layers"] == 1


def test_seed_alone_fixes_the_initial_weights(train, base_argv, tmp_path):
    argv = base_argv + ["--stage", "finetune", "--ctr_mode", "id", "--max_steps", "1"]
    torch.manual_seed(0)
    train.main(argv + ["--output_dir", str(tmp_path / "a")])
    torch.manual_seed(1)
    train.main(argv + ["--output_dir", str(tmp_path / "b")])
    assert_same_weights(tmp_path / "a" / "flip_id", tmp_path / "b" / "flip_id")


def test_subset_id_finetuning_gives_flip_id_the_rows_of_the_text_modes(train, base_argv, tmp_path):
    argv = base_argv + ["--stage", "finetune", "--ctr_mode", "id", "--max_steps", "1", "--max_finetune_samples", "20"]
    whole = train.main(argv + ["--output_dir", str(tmp_path / "whole")])
    subset = train.main(argv + ["--subset_id_finetuning", "true", "--output_dir", str(tmp_path / "subset")])
    assert whole["stages"]["flip_id"]["train_samples"] > 20
    assert subset["stages"]["flip_id"]["train_samples"] == 20


def test_group_by_length_batches_prompts_of_similar_length(train, base_argv, tmp_path):
    """Text stages draw length-grouped batches, so they pad less than random batches; the ID stage stays random."""
    from flip_hf import DataCollatorForFlipCTR
    from flip_hf.trainer import FlipTrainer

    run = train.build_run(base_argv + ["--train_sampling_strategy", "group_by_length", "--output_dir", str(tmp_path)])
    run.check_output_dir()
    run.load_data()
    encoded = run.encoded("train", True)
    assert encoded["length"] == [len(ids) for ids in encoded["input_ids"]]
    assert len(set(encoded["length"])) > 1, "the fixture needs prompts of different lengths"
    assert run.training_arguments(tmp_path / "text", True).train_sampling_strategy == "group_by_length"
    assert run.training_arguments(tmp_path / "ids", False).train_sampling_strategy == "random"

    def padding(sampling: str) -> int:
        args = run.training_arguments(tmp_path / "text", True, train_sampling_strategy=sampling)
        trainer = FlipTrainer(model=run.ctr_model("text", None), args=args, train_dataset=encoded,
                              data_collator=DataCollatorForFlipCTR(run.processor))
        return sum(int((batch["attention_mask"] == 0).sum()) for batch in trainer.get_train_dataloader())

    assert padding("group_by_length") < padding("random")


@pytest.mark.parametrize("flag, mixed_precision, bf16", [(False, False, False), (True, False, True), (False, True, True)])
def test_text_vectors_are_computed_in_bf16_when_asked_or_under_bf16(monkeypatch, flag, mixed_precision, bf16):
    from accelerate import PartialState

    from flip_hf import training_run

    asked = []
    for cache in ("cache_text_embeddings", "cache_text_states"):
        monkeypatch.setattr(training_run, cache, lambda dataset, model, cache=cache, **options: asked.append((cache, options["bf16"])))
    run = SimpleNamespace(state=PartialState(cpu=True), run_args=SimpleNamespace(text_vectors_bf16=flag),
                          training_args=SimpleNamespace(per_device_eval_batch_size=8, bf16=mixed_precision))
    for layers in (0, 1):  # pooled vectors of a frozen PLM; token states below trainable top layers
        model = SimpleNamespace(config=SimpleNamespace(text_trainable_layers=layers))
        training_run.FlipRun.with_text_vectors(run, model=model, dataset=None)
    assert asked == [("cache_text_embeddings", bf16), ("cache_text_states", bf16)]


# ------------------------------------------------------------------------------- bad configs
def test_unknown_preset_lists_the_valid_ones(train):
    with pytest.raises(SystemExit, match=r"Unknown preset 'nope'.*cpu-long, cpu-small, full, quickstart"):
        train.parse_arguments(["--preset", "nope"])


@pytest.mark.parametrize("flag, valid", [("--stage", "pretrain, finetune, all"), ("--ctr_mode", "id, text, joint")])
def test_unknown_stage_or_mode(train, flag, valid):
    with pytest.raises(SystemExit, match=rf"Unknown {flag[2:]} 'nope'.*{valid}"):
        train.parse_arguments([flag, "nope"])


def test_unknown_backbone_lists_the_valid_ones(train, base_argv, tmp_path):
    argv = base_argv + ["--stage", "finetune", "--ctr_mode", "id", "--backbone", "nope", "--output_dir", str(tmp_path / "out")]
    with pytest.raises((SystemExit, ValueError)) as error:
        train.main(argv)
    message = str(error.value)
    assert "nope" in message
    assert all(name in message for name in ("dnn", "dcnv2", "deepfm", "autoint"))
    assert not (tmp_path / "out").exists()  # refused before anything was written: no poisoned run_args.json


@pytest.mark.parametrize("flags, message", [
    (["--backbone_options", "{hidden_sizes: [8]}"], r"--backbone_options must be a JSON object, got '\{hidden_sizes"),
    (["--backbone_options", "[8]"], "must be a JSON object"),
    (["--max_eval_samples", "0"], "--max_eval_samples must be at least 1, got 0"),
    (["--max_pretrain_samples", "-5"], "--max_pretrain_samples must be at least 1"),
    (["--stage", "finetune", "--pretrained_model", "/nonexistent/run/pretrain"], r"--pretrained_model: No such folder: '/nonexistent/run/pretrain'"),
    (["--split", "random"], "--split random applies to the dataset recipes; the saved dataset .* is split already: leave --split out"),
    (["--dataset_options", "[5]"], r"--dataset_options must be a JSON object, got '\[5\]'"),
    (["--dataset_options", '{"history_length": 2}'], "--dataset_options applies to the dataset recipes; the saved dataset .* is built already"),
    (["--dataset", "movielens-100k", "--dataset_options", '{"histroy_length": 5}'],
     "--dataset_options: The movielens-100k recipe has no option 'histroy_length'; its options are .*history_length"),
])
def test_bad_arguments_are_refused_before_the_run_starts(train, base_argv, tmp_path, flags, message):
    with pytest.raises(SystemExit, match=message):
        train.main(base_argv + flags + ["--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_dataset_options_reach_the_recipe(train, base_argv, tmp_path):
    from fixtures_data import write_ml100k

    write_ml100k(tmp_path / "data")
    argv = base_argv + ["--dataset", "movielens-100k", "--data_dir", str(tmp_path / "data"), "--dataset_options",
                        '{"history_length": 2}', "--output_dir", str(tmp_path / "out")]
    run = train.build_run(argv)
    run.load_data()
    assert run.schema.field_names[-1] == "recent_likes"
    assert run.raw["test"]["recent_likes"] == [["unknown", "Toy Story"], ["unknown", "Toy Story"]]
    assert "recently liked movies are unknown, Toy Story." in run.processor.render_text(run.raw["test"][0])


def test_finetuning_a_mode_from_a_checkpoint_that_lacks_its_side_is_refused(train, stage_all, base_argv, tmp_path):
    id_only = stage_all[0] / "flip_id"
    with pytest.raises(SystemExit, match=r"ctr_mode='id' model without a PLM, which ctr_mode='joint' needs"):
        train.main(base_argv + ["--stage", "finetune", "--ctr_mode", "joint", "--pretrained_model", str(id_only),
                                "--output_dir", str(tmp_path / "out")])
    # the side it has is fine
    results = train.main(base_argv + ["--stage", "finetune", "--ctr_mode", "id", "--pretrained_model", str(id_only),
                                      "--output_dir", str(tmp_path / "ok"), "--max_steps", "1"])
    assert results["stages"]["flip_id"]["global_step"] == 1


def test_checkpoint_pretrained_on_other_fields_is_refused(train, stage_all, base_argv, save_tiny_dataset, tmp_path):
    other = save_tiny_dataset(tmp_path / "other_data", sizes=(12, 8, 8))  # fewer users, titles: other vocabularies
    argv = base_argv + [
        "--dataset", str(other), "--stage", "finetune", "--ctr_mode", "id",
        "--pretrained_model", str(stage_all[0] / "pretrain"), "--output_dir", str(tmp_path / "out"),
    ]
    with pytest.raises(SystemExit, match="pretrained on other fields or vocabularies") as error:
        train.main(argv)
    assert "user_id" in str(error.value)


def test_output_dir_of_another_run_is_refused_unless_overwritten(train, base_argv, tmp_path):
    argv = base_argv + ["--stage", "finetune", "--ctr_mode", "id", "--max_steps", "1", "--output_dir", str(tmp_path / "out")]
    train.main(argv)
    with pytest.raises(SystemExit, match=r"already holds a different run.*embedding_size.*--overwrite_output_dir"):
        train.main(argv + ["--embedding_size", "4"])
    results = train.main(argv + ["--embedding_size", "4", "--overwrite_output_dir", "true"])
    assert results["stages"]["flip_id"]["global_step"] == 1
    assert json.loads((tmp_path / "out" / "flip_id" / "config.json").read_text())["embedding_size"] == 4
    # the same run again (e.g. to resume) is accepted
    train.main(argv + ["--embedding_size", "4", "--resume_from_checkpoint", "last"])


def test_overwrite_leaves_nothing_of_the_old_run(train, base_argv, tmp_path):
    out = tmp_path / "out"
    train.main(base_argv + ["--stage", "finetune", "--ctr_mode", "id", "--max_steps", "1", "--output_dir", str(out)])
    (out / "notes.txt").write_text("mine")
    results = train.main(base_argv + ["--stage", "finetune", "--ctr_mode", "text", "--max_steps", "1",
                                      "--output_dir", str(out), "--overwrite_output_dir", "true"])
    assert set(results["stages"]) == {"flip_plm"}
    assert not (out / "flip_id").exists() and not (out / "checkpoints" / "flip_id").exists()  # a later resume cannot find them
    assert (out / "notes.txt").read_text() == "mine"  # what the run did not write stays
    with pytest.raises(SystemExit, match="pass one of the two"):
        train.main(base_argv + ["--output_dir", str(out), "--overwrite_output_dir", "true", "--resume_from_checkpoint", "last"])


def test_a_copied_run_directory_resumes_like_the_original(train, base_argv, tmp_path):
    import shutil

    argv = base_argv + ["--stage", "finetune", "--ctr_mode", "id", "--max_steps", "1"]
    first = train.main(argv + ["--output_dir", str(tmp_path / "a")])
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    again = train.main(argv + ["--output_dir", str(tmp_path / "b"), "--resume_from_checkpoint", "last"])
    assert again["stages"]["flip_id"] == first["stages"]["flip_id"]  # finished there: reused, not refused


# --------------------------------------------------------------------------------- --help, presets
def test_help_imports_no_torch_and_lists_preset():
    done = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--preset" in done.stdout and "--stage" in done.stdout
    # --help stays fast because it never imports torch (seconds to import); checked, not timed
    probe = (f"import runpy, sys\nsys.argv = [{str(SCRIPT)!r}, '--help']\ntry:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
             "except SystemExit:\n    pass\nprint('torch' in sys.modules, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stderr.strip().splitlines()[-1] == "False", done.stderr


@pytest.mark.parametrize("preset", ["quickstart", "cpu-small", "cpu-long", "full"])
def test_presets_set_their_yaml_values(train, preset):
    values = yaml.safe_load((CONFIGS / f"{preset}.yaml").read_text())
    *flip_args, flags = train.parse_arguments(["--preset", preset])
    parsed = {**{k: v for args in flip_args for k, v in vars(args).items()}, **flags}
    assert values
    for key, value in values.items():
        assert (json.loads(parsed[key]) if key == "backbone_options" else parsed[key]) == value, key
    # command-line flags override the preset
    overridden = train.parse_arguments(["--preset", preset, "--max_length", "17"])[0]
    assert overridden.max_length == 17


def test_config_file_overrides_the_preset(train, tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("max_pretrain_samples: 5\nbackbone_options:\n  num_layers: 1\nfreeze_word_embeddings: false\n")
    data_args, model_args, run_args, _ = train.parse_arguments(["--preset", "quickstart", "--config", str(config)])
    assert data_args.max_pretrain_samples == 5
    assert json.loads(model_args.backbone_options) == {"num_layers": 1}
    assert model_args.freeze_word_embeddings is False
    assert data_args.prompt_style == "compact"  # still from the preset


# ------------------------------------------------------------------------------ two processes
def _gather_worker(rank, world, init_file, results):
    from flip_hf.modeling_flip import _gather_with_local_grad

    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        local = torch.full((rank + 2, 3), float(rank + 1), requires_grad=True)  # sizes differ: 2 and 3 rows
        gathered, offset = _gather_with_local_grad(local)
        weights = torch.arange(1, gathered.numel() + 1, dtype=torch.float).reshape(gathered.shape)
        (gathered * weights).sum().backward()
        results[rank] = (gathered.detach().clone(), offset, local.grad.clone(), weights[offset : offset + len(local)].clone())
    finally:
        torch.distributed.destroy_process_group()


def test_gather_with_local_grad_two_processes(tmp_path):
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_gather_worker, args=(2, str(tmp_path / "init"), results), nprocs=2, join=True)
        results = dict(results)
    expected = torch.cat([torch.full((2, 3), 1.0), torch.full((3, 3), 2.0)])
    for rank, (gathered, offset, grad, local_weights) in results.items():
        assert torch.equal(gathered, expected), rank
        assert offset == (0 if rank == 0 else 2)
        # d/d(local) of sum(gathered * w) is w on this process's rows: the slice is the local tensor
        assert torch.equal(grad, local_weights), rank
    # the other process's rows are constants: each process's gradient only covers its own rows
    assert results[0][2].shape == (2, 3) and results[1][2].shape == (3, 3)


def test_gather_without_process_group_is_identity():
    from flip_hf.modeling_flip import _gather_with_local_grad

    tensor = torch.randn(3, 2)
    gathered, offset = _gather_with_local_grad(tensor)
    assert gathered is tensor and offset == 0


WRAPPER = """
import os, pathlib, runpy, sys
log = pathlib.Path(os.environ["WRITE_LOG_DIR"]) / f"rank{os.environ.get('RANK', '0')}.log"
original = pathlib.Path.write_text
def write_text(self, *args, **kwargs):
    with open(log, "a") as f:
        f.write(self.name + "\\n")
    return original(self, *args, **kwargs)
pathlib.Path.write_text = write_text
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, tiny_dataset_dir, tiny_text_model_dir):
    """torchrun, 2 CPU processes (gloo), `--stage all`, through a wrapper that logs which process
    writes which file (Path.write_text). Returns (completed process, output_dir, {rank: [file names]})."""
    root = tmp_path_factory.mktemp("two_processes")
    wrapper = root / "wrapper.py"
    wrapper.write_text(WRAPPER)
    logs = root / "write_logs"
    logs.mkdir()
    output_dir = root / "out"
    env = dict(os.environ, WRITE_LOG_DIR=str(logs), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
        str(wrapper), str(SCRIPT), *tiny_argv(tiny_dataset_dir, tiny_text_model_dir),
        "--stage", "all", "--output_dir", str(output_dir),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=400, env=env, cwd=REPO)
    writes = {
        rank: (logs / f"rank{rank}.log").read_text().split() if (logs / f"rank{rank}.log").exists() else []
        for rank in (0, 1)
    }
    return done, output_dir, writes


@pytest.mark.slow
def test_two_processes_stage_all(two_process_run):
    """Every stage trains under 2 processes; only the main process writes results.json and prints the table."""
    done, output_dir, writes = two_process_run
    assert done.returncode == 0, done.stderr[-5000:]

    results = json.loads((output_dir / "results.json").read_text())
    assert set(results["stages"]) == set(MODEL_DIRS)
    for name in MODEL_DIRS:
        assert (output_dir / name / "model.safetensors").is_file()
        assert results["stages"][name]["global_step"] == 4
    for name in ("flip_id", "flip_plm", "flip"):
        assert {"auc", "logloss"} <= set(results["stages"][name]["test"])
    assert "2 processes" in (output_dir / "flip" / "README.md").read_text()  # the card's hardware line

    assert "results.json" in writes[0]
    assert "results.json" not in writes[1]
    assert done.stdout.count("| FLIP_ID |") == 1  # the table is printed once


@pytest.mark.slow
def test_two_processes_set_up_runs_on_the_main_process_only(two_process_run):
    done, _, writes = two_process_run
    assert done.returncode == 0
    assert writes[1] == [], writes[1]


@pytest.mark.slow
def test_accelerate_launch_two_processes(tmp_path, tiny_dataset_dir, tiny_text_model_dir):
    """`accelerate launch --multi_gpu --num_processes 2` on CPU (gloo): both processes train, one writes."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", "29519", str(SCRIPT), *tiny_argv(tiny_dataset_dir, tiny_text_model_dir),
        "--stage", "finetune", "--ctr_mode", "joint", "--output_dir", str(tmp_path / "out"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=400, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-5000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {"auc", "logloss"} <= set(results["stages"]["flip"]["test"])
    assert "2 processes" in (tmp_path / "out" / "flip" / "README.md").read_text()
    assert done.stdout.count("| FLIP |") == 1


def test_a_warm_up_the_plateau_scheduler_ignores_is_reported(train, base_argv, tmp_path, caplog):
    argv = base_argv + ["--stage", "finetune", "--ctr_mode", "id", "--max_steps", "2", "--warmup_steps", "1"]
    with caplog.at_level("WARNING", logger="flip_hf.training_run"):
        train.main(argv + ["--output_dir", str(tmp_path / "plateau")])
    assert "--warmup_steps 1.0 applies to pretraining only" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="flip_hf.training_run"):
        train.main(argv + ["--finetune_lr_scheduler", "cosine", "--output_dir", str(tmp_path / "cosine")])
    assert "applies to pretraining only" not in caplog.text


def test_two_processes_train_the_model_one_process_trains(tmp_path, tiny_dataset_dir, tiny_text_model_dir):
    """scripts/accelerate/cpu-2proc.yaml: 2 processes x 8 rows per step give the weights of 1 process x 16 rows (the
    same rows per step, gradients averaged across processes), up to float summation order. fm has no dropout."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    argv = [*tiny_argv(tiny_dataset_dir, tiny_text_model_dir), "--stage", "finetune", "--ctr_mode", "id", "--backbone", "fm"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "scripts" / "accelerate" / "cpu-2proc.yaml")]
    two = subprocess.run([*launch, str(SCRIPT), *argv, "--id_batch_size", "8", "--output_dir", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=400, env=env, cwd=REPO)
    assert two.returncode == 0, two.stderr[-5000:]
    one = subprocess.run([sys.executable, str(SCRIPT), *argv, "--id_batch_size", "16", "--output_dir", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=400, env=env, cwd=REPO)
    assert one.returncode == 0, one.stderr[-5000:]
    weights = {name: load_file(str(tmp_path / name / "flip_id" / "model.safetensors")) for name in ("one", "two")}
    assert weights["one"].keys() == weights["two"].keys()
    for key, value in weights["one"].items():
        torch.testing.assert_close(weights["two"][key], value, rtol=1e-4, atol=1e-6, msg=key)
    results = {name: json.loads((tmp_path / name / "results.json").read_text())["stages"]["flip_id"] for name in ("one", "two")}
    assert results["two"]["global_step"] == results["one"]["global_step"] == 4
    assert results["two"]["test"]["auc"] == pytest.approx(results["one"]["test"]["auc"], abs=1e-4)


def test_inspect_alignment_rebuilds_the_initial_weights_and_reports_the_moves(stage_all, tmp_path):
    output_dir, _ = stage_all
    report = load_script("inspect_alignment.py").main([str(output_dir), "--json", str(tmp_path / "report.json")])
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert set(report["losses"]) == {"mlm_loss", "mtm_loss", "icl_loss"}
    assert report["icl_chance"] == pytest.approx(math.log(16))  # the tiny runs' pretraining batch
    backbone, table = report["weights"]["backbone"], report["weights"]["ID table"]
    # 4 pretraining steps at lr 1e-4 barely move the backbone: only a correctly rebuilt initialisation shows that
    # (another seed's weights would differ by about their own norm)
    assert 0 < backbone["pretraining_move"] < 0.05
    assert table["pretraining_move"] > 0 and table["flip_id_move"] > 0 and "flip_keeps_direction" in table


def test_inspect_fusion_sweeps_the_weight_of_each_side_on_validation_and_test(stage_all, tmp_path):
    output_dir, results = stage_all
    report = load_script("inspect_fusion.py").main([str(output_dir), "--json", str(tmp_path / "fusion.json")])
    assert json.loads((tmp_path / "fusion.json").read_text()) == report
    alphas = report["alphas"]
    assert alphas[0] == pytest.approx(report["model_alpha"]) and alphas[1:3] == [1.0, 0.95] and alphas[-1] == 0.0
    for split in ("validation", "test"):  # the model's own weight, the ID side alone and the text side alone
        recorded, swept = results["stages"]["flip"][split], dict(zip(alphas[1:], report["auc"][split][1:]))
        assert report["auc"][split][0] == pytest.approx(recorded["auc"], abs=1e-6), split
        assert swept[1.0] == pytest.approx(recorded["id_auc"], abs=1e-6), split
        assert swept[0.0] == pytest.approx(recorded["text_auc"], abs=1e-6), split


def test_inspect_fusion_needs_a_joint_model(stage_all):
    with pytest.raises(SystemExit, match="ctr_mode='id' model; the sweep needs FLIP"):
        load_script("inspect_fusion.py").main([str(stage_all[0]), "--model", "flip_id"])


# ------------------------------------------------------------------- FLIP from its finetuned halves
def test_joint_init_finetuned_joins_this_runs_halves_with_a_fitted_fusion(train, base_argv, tmp_path):
    """FLIP's two sides are exactly the run's FLIP_ID and FLIP_PLM, and only alpha and b come from validation."""
    output_dir = tmp_path / "run"
    results = train.main(base_argv + ["--stage", "all", "--baselines", "", "--joint_init", "finetuned", "--output_dir", str(output_dir)])
    joint, id_half, text_half = (weights(output_dir / name) for name in ("flip", "flip_id", "flip_plm"))
    for half in (id_half, text_half):
        for name, tensor in half.items():
            torch.testing.assert_close(joint[name], tensor, msg=name)
    fusion = results["stages"]["flip"]["fusion"]
    assert float(joint["fusion_alpha"]) == pytest.approx(fusion["fusion_alpha"])
    assert (fusion["fusion_alpha"], fusion["fusion_bias"]) != (0.5, 0.0)  # moved from its start by the fit
    assert results["stages"]["flip"]["global_step"] == 0


@pytest.mark.parametrize("patience", [None, 1])
def test_text_side_patience_watches_the_text_side_of_flip(train, base_argv, tmp_path, patience):
    """FLIP's validations score each side; --text_side_patience adds the callback, whose state checkpoints keep."""
    flag = [] if patience is None else ["--text_side_patience", str(patience)]
    train.main(base_argv + ["--stage", "finetune", "--ctr_mode", "joint", "--evals_per_epoch", "4",
                            "--output_dir", str(tmp_path / "run"), *flag])
    last = max((tmp_path / "run" / "checkpoints" / "flip").glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    state = json.loads((last / "trainer_state.json").read_text())
    evaluations = [log for log in state["log_history"] if "eval_auc" in log]
    assert evaluations and all({"eval_id_auc", "eval_text_auc"} <= set(log) for log in evaluations)
    watched = state["stateful_callbacks"].get("TextSideEarlyStoppingCallback")
    if patience is None:
        assert watched is None
    else:
        assert watched["args"] == {"patience": patience}
        assert watched["attributes"]["best_auc"] in [log["eval_text_auc"] for log in evaluations]


@pytest.mark.parametrize("extra", [["--stage", "finetune"], ["--all_modes", "joint,id,text"], ["--joint_init", "halves"]])
def test_joint_init_finetuned_needs_both_halves_first(train, base_argv, tmp_path, extra):
    with pytest.raises(SystemExit, match="joint_init"):
        train.main(base_argv + ["--joint_init", "finetuned", "--output_dir", str(tmp_path / "run"), *extra])
    assert not (tmp_path / "run").exists()


def test_the_recipe_id_network_unless_backbone_options_are_given(train):
    """dcnv2 gets FuxiCTR's network by default; '{}' is the backbone's own (the FLIP reference's); other
    backbones get their own defaults."""
    from flip_hf.training_run import RECIPE_BACKBONE_OPTIONS

    def config_options(*argv):
        return train.build_run(["--output_dir", "unused", *argv]).flip_config()["backbone_options"]

    assert config_options() == RECIPE_BACKBONE_OPTIONS["dcnv2"] == {"low_rank": None, "num_cross_layers": 3, "hidden_sizes": [256, 128]}
    assert config_options("--backbone_options", "{}") == {}
    assert config_options("--backbone", "deepfm") == {}
    assert config_options("--backbone_options", '{"num_cross_layers": 1}') == {"num_cross_layers": 1}
