"""The benchmark tools. scripts/benchmark_quality.py: which variants it trains, how it summarizes seeds, how it
judges the paper's claims against the seeds' noise, that it runs every variant through scripts/train.py as a
process of its own and that --resume reuses finished runs. scripts/benchmark_speed.py: its report's table, the
ONNX Runtime comparison and the streaming measure (its numbers are never asserted). flip_hf.benchmark_report: the
files both write."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
import torch
from scripts_loader import load_script
from tiny import tiny_argv


@pytest.fixture(scope="module")
def quality():
    return load_script("benchmark_quality.py")


@pytest.fixture(scope="module")
def speed():
    return load_script("benchmark_speed.py")


def runs(*aucs: float) -> list[dict]:
    """One run per seed with these test AUCs (LogLoss mirrors them, so it is checked too)."""
    return [{"seed": seed, "test": {"auc": auc, "logloss": 1 - auc}} for seed, auc in enumerate(aucs)]


PRESET = {"backbones": ("dcnv2",)}


def test_variants_put_flip_first_and_the_ablations_last(quality):
    names = [name for name, _ in quality.quality_variants(quality.QUALITY_PRESETS["cpu-small"])]
    assert names == ["FLIP dcnv2", "ID-only dcnv2", "ID-only deepfm", "ID-only autoint", "PLM-only", "LightGBM",
                     "FLIP dcnv2 w/o MLM", "FLIP dcnv2 w/o MTM", "FLIP dcnv2 w/o ICL", "FLIP dcnv2 token-level masking"]
    overrides = dict(quality.quality_variants(quality.QUALITY_PRESETS["cpu-small"]))
    assert overrides["FLIP dcnv2 w/o MTM"]["mtm_weight"] == 0.0
    assert overrides["FLIP dcnv2 token-level masking"]["masking"] == "token"
    assert overrides["PLM-only"] == {"stage": "finetune", "ctr_mode": "text"}


def test_gpu_short_has_no_ablations_and_full_pretrains_every_backbone(quality):
    short = [name for name, _ in quality.quality_variants(quality.QUALITY_PRESETS["gpu-short"])]
    assert short == ["FLIP dcnv2", "ID-only dcnv2", "PLM-only", "LightGBM"]
    full = [name for name, _ in quality.quality_variants(quality.QUALITY_PRESETS["full"])]
    assert full[:3] == ["FLIP dcnv2", "FLIP deepfm", "FLIP autoint"]
    assert len(full) == 3 + 3 + 2 + 4


def test_summary_gives_mean_std_seeds_and_improvement_over_the_best_baseline(quality):
    summary = quality.summarize({"ID-only dcnv2": runs(0.70, 0.72), "PLM-only": runs(0.60, 0.60),
                               "FLIP dcnv2 / FLIP": runs(0.77, 0.75)})
    flip = summary["FLIP dcnv2 / FLIP"]
    assert flip["auc"]["mean"] == pytest.approx(0.76)
    assert flip["auc"]["std"] == pytest.approx(0.0141421, rel=1e-4)
    assert flip["logloss"]["mean"] == pytest.approx(0.24)
    assert flip["seeds"] == 2
    assert flip["auc_improvement_over_best_baseline"] == pytest.approx(0.05 / 0.71)  # over ID-only, not PLM-only
    assert summary["ID-only dcnv2"]["auc_improvement_over_best_baseline"] == 0.0


def sliced(label_runs: list[dict], validation: float, cold: list[float]) -> list[dict]:
    """The runs with a validation AUC and a cold-user AUC per seed (warm mirrors cold)."""
    return [{**run, "validation": {"auc": validation}, "cold": {"auc": c}, "warm": {"auc": 1 - c}}
            for run, c in zip(label_runs, cold)]


def test_summary_and_table_report_validation_and_the_cold_and_warm_users(quality):
    variants = {"ID-only dcnv2": sliced(runs(0.70, 0.72), 0.69, [0.68, 0.70]), "LightGBM": runs(0.69, 0.69),
                "FLIP dcnv2 / FLIP": sliced(runs(0.71, 0.73), 0.70, [0.70, 0.71])}
    summary = quality.summarize(variants)
    assert summary["FLIP dcnv2 / FLIP"]["validation_auc"] == 0.70
    assert summary["FLIP dcnv2 / FLIP"]["cold_auc"] == pytest.approx(0.705)
    assert summary["FLIP dcnv2 / FLIP"]["warm_auc"] == pytest.approx(0.295)
    assert "cold_auc" not in summary["LightGBM"]  # a run without slices has no column to average
    claims = quality.check_claims(variants, PRESET)
    table = quality.quality_table({"seeds": 2, "summary": summary, "claims": claims})
    assert "| FLIP dcnv2 / FLIP | 0.7000 | 0.7200 ± 0.0141 | 0.2800 ± 0.0141 | 0.7050 | 0.2950 |" in table
    assert "| LightGBM | - | 0.6900 ± 0.0000 | 0.3100 ± 0.0000 | - | - |" in table
    (cold,) = [c for c in claims if c["claim"].endswith("on users unseen in training")]
    # paired by seed on the cold users' AUC, against the strongest rival there (LightGBM has no slices)
    assert cold["values"] == {"FLIP dcnv2 / FLIP": pytest.approx(0.705), "ID-only dcnv2": pytest.approx(0.69)}
    assert cold["gap"] == pytest.approx(0.015) and cold["held"] is True
    assert "HELD: FLIP beats FLIP_ID, FLIP_PLM and every baseline on users unseen in training" in table


def test_one_seed_has_no_noise_estimate(quality):
    variants = {"ID-only dcnv2": runs(0.70), "FLIP dcnv2 / FLIP_ID": runs(0.71)}
    (claim,) = quality.check_claims(variants, PRESET)
    assert claim["held"] is True and claim["noise"] is None and claim["beyond_noise"] is None
    assert "One seed only" in quality.quality_table({"seeds": 1, "summary": quality.summarize(variants), "claims": [claim]})


def test_gaps_are_paired_by_seed(quality):
    # seeds move both models alike (std 0.02), the gap is steady (+0.01 +-0.001): evidence
    steady = {"ID-only dcnv2": runs(0.70, 0.74, 0.72), "FLIP dcnv2 / FLIP_ID": runs(0.709, 0.751, 0.730)}
    (claim,) = quality.check_claims(steady, PRESET)
    assert claim["held"] is True and claim["gap"] == pytest.approx(0.01)
    assert claim["noise"] == pytest.approx(2 * 0.001 / 3**0.5)
    assert claim["beyond_noise"] is True
    # the same means, but the gap changes sign between seeds: no evidence
    unsteady = {"ID-only dcnv2": runs(0.70, 0.74, 0.72), "FLIP dcnv2 / FLIP_ID": runs(0.74, 0.72, 0.73)}
    (claim,) = quality.check_claims(unsteady, PRESET)
    assert claim["held"] is True and claim["gap"] == pytest.approx(0.01)
    assert claim["beyond_noise"] is False
    table = quality.quality_table({"seeds": 3, "summary": quality.summarize(unsteady), "claims": [claim]})
    assert "- UNDECIDED: FLIP_ID (dcnv2) beats dcnv2" in table and "within the seeds' noise" in table
    assert "HELD" not in table  # a gap within the noise is evidence neither way


def test_flip_must_beat_its_strongest_rival(quality):
    variants = {
        "FLIP dcnv2 / FLIP": runs(0.710, 0.712, 0.711), "FLIP dcnv2 / FLIP_ID": runs(0.700, 0.701, 0.702),
        "FLIP dcnv2 / FLIP_PLM": runs(0.60, 0.61, 0.62), "ID-only deepfm": runs(0.730, 0.731, 0.733),
        "PLM-only": runs(0.55, 0.56, 0.57),
    }
    (claim,) = [c for c in quality.check_claims(variants, PRESET) if c["claim"].startswith("FLIP beats")]
    assert claim["held"] is False
    assert claim["gap"] == pytest.approx(0.711 - (0.730 + 0.731 + 0.733) / 3)  # against ID-only deepfm, the strongest
    assert claim["beyond_noise"] is True
    assert set(claim["values"]) == {"FLIP", "FLIP dcnv2 / FLIP_ID", "FLIP dcnv2 / FLIP_PLM", "ID-only deepfm", "PLM-only"}
    table = quality.quality_table({"seeds": 3, "summary": quality.summarize(variants), "claims": [claim]})
    assert "- NOT HELD: FLIP beats" in table


def test_every_ablation_is_compared_with_full_flip(quality):
    variants = {"FLIP dcnv2 / FLIP": runs(0.70, 0.71), "FLIP dcnv2 w/o MLM / FLIP": runs(0.60, 0.61),
                "FLIP dcnv2 w/o ICL / FLIP": runs(0.72, 0.73), "FLIP dcnv2 token-level masking / FLIP": runs(0.69, 0.70)}
    claims = {c["claim"]: c["held"] for c in quality.check_claims(variants, PRESET) if c["claim"].startswith("full FLIP")}
    assert claims == {"full FLIP beats FLIP dcnv2 w/o MLM / FLIP": True, "full FLIP beats FLIP dcnv2 w/o ICL / FLIP": False,
                      "full FLIP beats FLIP dcnv2 token-level masking / FLIP": True}


@pytest.fixture
def launches(quality, monkeypatch):
    """Every scripts/train.py process the quality tool starts (its run folder), and every LightGBM fit."""
    started = {"train.py": [], "lightgbm": 0}
    run_train, lightgbm_run = quality.run_train, quality.lightgbm_run

    def counted_train(argv, run_dir):
        started["train.py"].append(run_dir)
        return run_train(argv, run_dir)

    def counted_lightgbm(settings, seed):
        started["lightgbm"] += 1
        return lightgbm_run(settings, seed)

    monkeypatch.setattr(quality, "run_train", counted_train)
    monkeypatch.setattr(quality, "lightgbm_run", counted_lightgbm)
    # the train.py processes: offline, on one CPU thread
    for name, value in (("HF_HUB_OFFLINE", "1"), ("CUDA_VISIBLE_DEVICES", ""), ("OMP_NUM_THREADS", "1")):
        monkeypatch.setenv(name, value)
    return started


def test_quality_runs_every_variant_through_train_py_and_resume_reuses_them(
    quality, launches, tiny_dataset_dir, tiny_text_model_dir, tmp_path, monkeypatch
):
    argv = tiny_argv(tiny_dataset_dir, tiny_text_model_dir)
    options = {key.removeprefix("--"): value for key, value in zip(argv[0::2], argv[1::2]) if key != "--seed"}
    preset = dict(config="quickstart", overrides=dict(max_steps=2), backbones=("dnn",), id_baselines=("dnn",), ablations=False)
    monkeypatch.setitem(quality.QUALITY_PRESETS, "tiny", preset)
    reports = []
    results = quality.run_quality("tiny", 1, tmp_path, options, resume=False, report=lambda partial: reports.append(json.dumps(partial)))

    assert set(results["variants"]) == {"FLIP dnn / FLIP_ID", "FLIP dnn / FLIP_PLM", "FLIP dnn / FLIP", "ID-only dnn", "PLM-only",
                                        "LightGBM"}
    assert all({"auc", "logloss"} <= set(seeds[0]["test"]) for seeds in results["variants"].values())
    # one train.py process per run, launched as a user launches it, its output kept in the run's folder
    run_dirs = [tmp_path / name / "seed0" for name in ("FLIP_dnn", "ID-only_dnn", "PLM-only")]
    assert launches == {"train.py": run_dirs, "lightgbm": 1}
    for run_dir in run_dirs:
        log = (run_dir / "train.log").read_text()
        assert log.splitlines()[0].startswith(f"$ {sys.executable} ") and "scripts/train.py --preset quickstart" in log
        assert "| model | val AUC |" in log  # train.py's own results table
        recorded = json.loads((run_dir / "benchmark_argv.json").read_text())
        assert recorded["argv"] == shlex.split(log.splitlines()[0][2:])[2:]  # what ran
        assert recorded["config"] == (quality.CONFIG_DIR / "quickstart.yaml").read_text()  # and its preset
    # the variants carry train.py's own numbers, and one seed's summary is that seed's value
    flip_run = json.loads((tmp_path / "FLIP_dnn" / "seed0" / "results.json").read_text())
    for stage, label in (("flip_id", "FLIP dnn / FLIP_ID"), ("flip_plm", "FLIP dnn / FLIP_PLM"), ("flip", "FLIP dnn / FLIP")):
        assert results["variants"][label][0]["test"] == flip_run["stages"][stage]["test"], label
    for label, seeds in results["variants"].items():
        assert results["summary"][label]["auc"]["mean"] == seeds[0]["test"]["auc"], label
    assert len(reports) == 4  # one after every run, so a benchmark cut short keeps what it measured
    assert [c["claim"] for c in results["claims"]] == ["FLIP_ID (dnn) beats dnn trained without FLIP pretraining",
                                                       "FLIP beats FLIP_ID, FLIP_PLM and every baseline"]
    written = {path: path.stat().st_mtime_ns for path in tmp_path.glob("*/seed0/*") if path.is_file()}
    assert {path.name for path in written} == {"results.json", "benchmark_argv.json", "train.log", "run_args.json"}
    assert len([path for path in written if path.name == "benchmark_argv.json"]) == 4  # LightGBM's run too

    launches["train.py"].clear()
    again = quality.run_quality("tiny", 1, tmp_path, options, resume=True, report=lambda partial: None)
    assert again["summary"] == results["summary"]
    assert launches == {"train.py": [], "lightgbm": 1}  # nothing trained again
    assert {path: path.stat().st_mtime_ns for path in written} == written

    # reuse needs the very same arguments and config file, and a run that finished
    run_dir = tmp_path / "ID-only_dnn" / "seed0"
    id_only = dict(stage="finetune", ctr_mode="id", backbone="dnn")
    same = quality.run_identity(preset, quality.train_argv(preset, id_only, 0, run_dir, options))
    assert json.loads((run_dir / "benchmark_argv.json").read_text()) == same
    assert quality.finished_run(run_dir, same) == json.loads((run_dir / "results.json").read_text())
    changed = quality.run_identity(preset, quality.train_argv(preset, id_only, 0, run_dir, {**options, "embedding_size": "4"}))
    assert quality.finished_run(run_dir, changed) is None  # another run: train it again
    configs, edited = quality.CONFIG_DIR, tmp_path / "configs"
    edited.mkdir()
    (edited / "quickstart.yaml").write_text(same["config"] + "max_length: 48\n")
    monkeypatch.setattr(quality, "CONFIG_DIR", edited)
    assert quality.finished_run(run_dir, quality.run_identity(preset, same["argv"])) is None  # the preset was edited
    monkeypatch.setattr(quality, "CONFIG_DIR", configs)
    record = json.loads((run_dir / "results.json").read_text())
    del record["total_seconds"]
    (run_dir / "results.json").write_text(json.dumps(record))
    assert quality.finished_run(run_dir, same) is None  # cut short
    third = quality.run_quality("tiny", 1, tmp_path, options, resume=True, report=lambda partial: None)
    assert launches == {"train.py": [run_dir], "lightgbm": 1}  # only the cut-short run trains again
    assert "total_seconds" in json.loads((run_dir / "results.json").read_text())
    assert set(third["variants"]) == set(results["variants"])

    launches["train.py"].clear()
    monkeypatch.chdir(tmp_path.parent)  # the same folder, named relative to the working directory
    quality.run_quality("tiny", 1, Path(tmp_path.name), options, resume=True, report=lambda partial: None)
    assert launches["train.py"] == []  # the same runs: reused, not overwritten


def test_a_failed_train_run_stops_the_benchmark_naming_its_log(quality, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="train.log") as failure:
        quality.run_train(["--backbone", "no-such-backbone", "--output_dir", str(run_dir)], run_dir)
    assert str(run_dir / "train.log") in str(failure.value)
    assert "Unknown backbone 'no-such-backbone'" in str(failure.value)  # the log's last lines
    assert not (run_dir / "results.json").exists()


def test_lightgbm_reads_what_train_py_would_read(quality):
    variant = dict(stage="finetune", ctr_mode="id")
    user = dict(text_model="sentence-transformers/all-MiniLM-L6-v2", data_dir=None, bf16=None)
    defaults = {"dataset": "movielens-100k", "data_dir": None, "split": "time", "dataset_options": None}
    # the preset's cut over its config file (cpu-small.yaml sets no eval cut, quickstart.yaml 1000 rows)
    assert quality.lightgbm_settings(quality.QUALITY_PRESETS["cpu-small"], variant, user) == {**defaults, "max_eval_samples": 5000}
    assert quality.lightgbm_settings(quality.QUALITY_PRESETS["smoke"], variant, user) == {**defaults, "max_eval_samples": 512}
    assert quality.lightgbm_settings(dict(config="quickstart", overrides={}), variant, user) == {**defaults, "max_eval_samples": 1000}
    assert quality.lightgbm_settings(quality.QUALITY_PRESETS["gpu-short"], variant, user) == {**defaults, "max_eval_samples": None}
    # the user's options over the preset's, the variant's over both
    given = dict(user, data_dir="/data/ml-100k", dataset="/data/saved", split="random", max_eval_samples="7",
                 dataset_options='{"history_length": 5}')
    assert quality.lightgbm_settings(quality.QUALITY_PRESETS["cpu-small"], {**variant, "split": "user_time"}, given) == {
        "dataset": "/data/saved", "data_dir": "/data/ml-100k", "split": "user_time", "max_eval_samples": 7,
        "dataset_options": '{"history_length": 5}'}


@pytest.mark.parametrize("dataset_options", ['{"history_length": 5}', {"history_length": 5}])
def test_lightgbm_loads_the_recipe_with_the_runs_dataset_options(quality, monkeypatch, dataset_options):
    import flip_hf.data

    asked = {}

    def recipe(name, **options):
        asked.update(options, name=name)
        raise KeyboardInterrupt  # stop before training: only the recipe call matters here

    monkeypatch.setattr(flip_hf.data, "load_dataset_recipe", recipe)
    settings = {"dataset": "movielens-100k", "data_dir": "/data", "split": "time", "max_eval_samples": None,
                "dataset_options": dataset_options}  # JSON from a flag, a mapping from a config file
    with pytest.raises(KeyboardInterrupt):
        quality.lightgbm_run(settings, seed=0)
    assert asked == {"name": "movielens-100k", "history_length": 5, "split": "time", "data_dir": "/data"}


def test_lightgbm_slices_its_test_rows_into_unseen_and_seen_users(quality, tmp_path):
    from datasets import Dataset, DatasetDict
    from tiny import tiny_rows, tiny_schema

    from flip_hf.data import save_dataset

    test = tiny_rows(48, seed=2)
    test["user_id"] = [f"new{u}" if i < 16 else u for i, u in enumerate(test["user_id"])]  # the first 16 rows: unseen users
    splits = DatasetDict({"train": Dataset.from_dict(tiny_rows(96, seed=0)), "validation": Dataset.from_dict(tiny_rows(32, seed=1)),
                          "test": Dataset.from_dict(test)})
    save_dataset(splits, tiny_schema(), tmp_path / "data")
    settings = {"dataset": str(tmp_path / "data"), "data_dir": None, "split": None, "max_eval_samples": 40, "dataset_options": None}
    slices = quality.lightgbm_run(settings, seed=0)["stages"]["lightgbm"]["test_slices"]
    assert slices["cold_share"] == 0.4  # 16 of the 40 test rows LightGBM scores (all 48: a third)
    assert {"auc", "logloss"} <= set(slices["cold"]) and {"auc", "logloss"} <= set(slices["warm"])


def test_each_tool_takes_only_its_own_options(quality, speed, capsys):
    for tool, own, other in ((speed, "--threads", "--seeds"), (quality, "--seeds", "--threads")):
        with pytest.raises(SystemExit) as done:
            tool.main(["--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert own in text and other not in text
        with pytest.raises(SystemExit) as done:
            tool.main(["--preset", "no-such-preset"])
        assert done.value.code == 2
        assert "no-such-preset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        speed.main(["--seeds", "3"])  # a quality option
    assert "--seeds" in capsys.readouterr().err


def test_reports_name_the_command_and_the_hardware(tmp_path):
    from flip_hf.benchmark_report import write_report
    from flip_hf.model_card import get_hardware

    command = "python scripts/benchmark_quality.py --preset tiny"
    path = write_report("quality", "tiny", {"seeds": 1}, "| model | test AUC |", command, results_dir=tmp_path / "results")
    assert path == tmp_path / "results" / "quality-tiny.md"
    payload = json.loads((tmp_path / "results" / "quality-tiny.json").read_text())
    assert payload["seeds"] == 1 and payload["command"] == command and payload["hardware"] == get_hardware(num_processes=1)
    markdown = path.read_text()
    assert markdown.startswith("# quality benchmark, preset `tiny`")
    assert f"- command: `{command}`" in markdown and f"- hardware: {payload['hardware']}" in markdown
    assert "| model | test AUC |" in markdown
    # a named report leaves the preset's own in place
    named = write_report("quality", "tiny", {"seeds": 3}, "| model |", command, results_dir=tmp_path / "results", name="quality-tiny-ablations")
    assert named == tmp_path / "results" / "quality-tiny-ablations.md" and named.read_text().startswith("# quality benchmark, preset `tiny`")
    assert json.loads((tmp_path / "results" / "quality-tiny-ablations.json").read_text())["seeds"] == 3
    assert json.loads((tmp_path / "results" / "quality-tiny.json").read_text())["seeds"] == 1


def test_speed_compares_onnx_runtime_with_pytorch_on_the_same_batches(speed, make_tiny_flip, tmp_path):
    model = make_tiny_flip("id", embedding_size=8)
    generator = torch.Generator().manual_seed(0)
    columns = [torch.randint(0, field["vocab_size"], (40, 1), generator=generator)
               for field in model.config.fields for _ in range(field["num_slots"])]
    batches = list(torch.cat(columns, dim=1).split(16))  # 16, 16 and 8 rows
    measured = speed.onnx_inference(model, batches, tmp_path, rounds=1)
    assert (tmp_path / "flip_id.onnx").is_file()  # the scratch folder it was given
    assert measured["onnx_max_probability_difference"] <= 1e-5  # the same model
    assert measured["onnx_rows_per_second"] > 0 and measured["onnx_pytorch_rows_per_second"] > 0
    assert measured["onnx_to_pytorch_ratio"] == pytest.approx(measured["onnx_rows_per_second"] / measured["onnx_pytorch_rows_per_second"])
    table = speed.speed_table({**SPEED_REPORT, **measured})
    assert "| inference: FLIP_ID in ONNX Runtime (CPU, same batches) |" in table
    assert "| inference: FLIP_ID in PyTorch (CPU, float32)" in table


def test_speed_without_onnxruntime_says_so(speed, monkeypatch, tmp_path):
    monkeypatch.setattr(speed, "ONNX_PACKAGES", ("torch", "no_such_onnx_package"))
    skipped = speed.onnx_inference(None, [], tmp_path)
    assert skipped["onnx_rows_per_second"] is None
    assert "no_such_onnx_package not installed" in skipped["onnx_note"] and "flip_hf[onnx]" in skipped["onnx_note"]
    assert list(tmp_path.iterdir()) == []
    table = speed.speed_table({**SPEED_REPORT, **skipped})
    assert "| inference: FLIP_ID in ONNX Runtime" in table and "no_such_onnx_package not installed" in table


def test_speed_scratch_is_a_temporary_folder(speed, monkeypatch):
    seen = []

    def measure(*args):
        scratch = args[-1]
        (scratch / "checkpoint").mkdir()
        (scratch / "flip_id.onnx").write_text("")
        seen.append(scratch)
        return {"preset": args[0]}

    monkeypatch.setattr(speed, "measure_speed", measure)
    assert speed.run_speed("cpu-small", 1, "cpu", False, "plm", None) == {"preset": "cpu-small"}
    (scratch,) = seen
    assert not scratch.exists()  # removed after the run
    assert speed.ROOT not in scratch.parents  # never in the source tree


def test_speed_streams_the_click_log_it_writes_through_fit_and_one_epoch(speed, tmp_path, tiny_text_model_dir):
    files = speed.write_click_log(tmp_path, 3000)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["test-00000.parquet", "train-00000.parquet",
                                                               "validation-00000.parquet"]
    measured = speed.measure_streaming(files, 1, "cpu", str(tiny_text_model_dir), str(tmp_path))
    assert measured["rows"] == 3000 and set(measured["vocabulary_sizes"]) == {name for name, *_ in speed.STREAMING_FIELDS}
    assert all(measured[key] > 0 for key in ("rows_per_second", "fit_rows_per_second", "peak_rss_mb"))
    table = speed.speed_table({**SPEED_REPORT, "streaming": measured})
    assert "| streaming: fit on 3,000 rows, one pass" in table and "| streaming: peak RSS (fit and training)" in table


# a speed report's measures, for its table
SPEED_REPORT = {
    "preprocess_rows_per_second": 1000.0, "bare_tokenizer_rows_per_second": 2000.0, "preprocess_to_bare_tokenizer_ratio": 0.5,
    "preprocess_id_rows_per_second": 4e5, "preprocess_id_map_rows_per_second": 1.5e5, "mean_tokens": 40.0, "pretrain_to_mlm_step_ratio": 0.5, "pretrain_step_seconds": 0.5,
    "mlm_step_seconds": 1.0, "train_samples_per_second": {"pretrain": 50.0}, "inference_rows_per_second": {"id": 1e5},
    "bare_backbone_rows_per_second": 1e5, "flip_id_to_bare_backbone_ratio": 1.0, "pipeline_rows_per_second": {"id": 5e4},
    "pipeline_id_to_model_ratio": 0.5, "text_vectors_rows_per_second": 300.0, "precision": "float32", "device": "cpu", "threads": 2,
    "matmul_gflops": 100.0, "plm_train_gflop_per_sample": 1.0, "plm_finetune_fraction_of_limit": 0.5,
    "plm_finetune_grouped_fraction_of_limit": 0.5, "pretrain_fraction_of_limit": 0.5, "plain_mlm_fraction_of_limit": 0.2,
}


def test_lightgbm_sees_the_same_rows_with_train_vocabularies(quality):
    from datasets import Dataset, DatasetDict

    from flip_hf.schema import FieldSpec, TabularSchema

    schema = TabularSchema(fields=[FieldSpec("user"), FieldSpec("age", kind="numeric"), FieldSpec("genres", kind="multi_categorical"),
                                   FieldSpec("review", kind="text")])
    split = lambda users, ages, genres, reviews: Dataset.from_dict(  # noqa: E731
        {"user": users, "age": ages, "genres": genres, "review": reviews, "label": [1, 0][: len(users)] * (len(users) // 2) + [1] * (len(users) % 2)})
    raw = DatasetDict({
        "train": split(["a", "b"], [20, 30], [["x"], ["x", "y"]], ["great film", "dull plot"]),
        "validation": split(["a", "c"], [25, None], [[], ["z"]], ["great", None]),
        "test": split(["c", "b", "a"], [40, 50, 60], [["y"], None, ["x"]], ["dull", "great", "plot"]),
    })
    frames = quality.lightgbm_frames(raw, schema, eval_rows=2)
    features, labels = frames["validation"]
    assert len(features) == 2 and len(frames["test"][0]) == 2 and len(frames["train"][0]) == 2  # eval_rows: first rows only
    assert list(features["user"].cat.categories) == ["a", "b"] and features["user"].isna().tolist() == [False, True]  # "c": unseen
    assert features["age"].isna().tolist() == [False, True]
    assert [c for c in features if c.startswith("genres=")] == ["genres=x", "genres=y"]  # "z" was never in training
    assert features["review:great"].tolist()[0] > 0 and features["review:great"].tolist()[1] == 0
    assert labels == [1, 0]


# ---------------------------------------------------------------------------------------- benchmark.py
@pytest.mark.parametrize("task, script", [("speed", "benchmark_speed.py"), ("quality", "benchmark_quality.py")])
def test_benchmark_entry_point_runs_the_task_with_its_arguments(task, script, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # the entry point hands the task its own argv
    with pytest.raises(SystemExit) as exited:
        load_script("benchmark.py").main(["--task", task, "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {script}")


def test_benchmark_entry_point_needs_a_task(capsys):
    with pytest.raises(SystemExit) as exited:
        load_script("benchmark.py").main(["--preset", "cpu-small"])
    assert exited.value.code == 2
    assert "--task is required: speed or quality" in capsys.readouterr().err
