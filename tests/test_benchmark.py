"""scripts/benchmark.py's quality task: which variants it trains, how it summarizes seeds, how it judges
the paper's claims against the seeds' noise, and that --resume reuses finished runs. Speed is measured
by the script itself and never asserted here."""

from __future__ import annotations

import json

import pytest
from scripts_loader import load_script
from tiny import tiny_argv


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmark.py")


def runs(*aucs: float) -> list[dict]:
    """One run per seed with these test AUCs (LogLoss mirrors them, so it is checked too)."""
    return [{"seed": seed, "test": {"auc": auc, "logloss": 1 - auc}} for seed, auc in enumerate(aucs)]


PRESET = {"backbones": ("dcnv2",)}


def test_variants_put_flip_first_and_the_ablations_last(bench):
    names = [name for name, _ in bench.quality_variants(bench.QUALITY_PRESETS["cpu-small"])]
    assert names == ["FLIP dcnv2", "ID-only dcnv2", "ID-only deepfm", "ID-only autoint", "PLM-only", "LightGBM",
                     "FLIP dcnv2 w/o MLM", "FLIP dcnv2 w/o MTM", "FLIP dcnv2 w/o ICL", "FLIP dcnv2 token-level masking"]
    overrides = dict(bench.quality_variants(bench.QUALITY_PRESETS["cpu-small"]))
    assert overrides["FLIP dcnv2 w/o MTM"]["mtm_weight"] == 0.0
    assert overrides["FLIP dcnv2 token-level masking"]["masking"] == "token"
    assert overrides["PLM-only"] == {"stage": "finetune", "ctr_mode": "text"}


def test_gpu_short_has_no_ablations_and_full_pretrains_every_backbone(bench):
    short = [name for name, _ in bench.quality_variants(bench.QUALITY_PRESETS["gpu-short"])]
    assert short == ["FLIP dcnv2", "ID-only dcnv2", "PLM-only", "LightGBM"]
    full = [name for name, _ in bench.quality_variants(bench.QUALITY_PRESETS["full"])]
    assert full[:3] == ["FLIP dcnv2", "FLIP deepfm", "FLIP autoint"]
    assert len(full) == 3 + 3 + 2 + 4


def test_summary_gives_mean_std_seeds_and_improvement_over_the_best_baseline(bench):
    summary = bench.summarize({"ID-only dcnv2": runs(0.70, 0.72), "PLM-only": runs(0.60, 0.60),
                               "FLIP dcnv2 / FLIP": runs(0.77, 0.75)})
    flip = summary["FLIP dcnv2 / FLIP"]
    assert flip["auc"]["mean"] == pytest.approx(0.76)
    assert flip["auc"]["std"] == pytest.approx(0.0141421, rel=1e-4)
    assert flip["logloss"]["mean"] == pytest.approx(0.24)
    assert flip["seeds"] == 2
    assert flip["auc_improvement_over_best_baseline"] == pytest.approx(0.05 / 0.71)  # over ID-only, not PLM-only
    assert summary["ID-only dcnv2"]["auc_improvement_over_best_baseline"] == 0.0


def test_one_seed_has_no_noise_estimate(bench):
    variants = {"ID-only dcnv2": runs(0.70), "FLIP dcnv2 / FLIP_ID": runs(0.71)}
    (claim,) = bench.check_claims(variants, PRESET)
    assert claim["held"] is True and claim["noise"] is None and claim["beyond_noise"] is None
    assert "One seed only" in bench.quality_table({"seeds": 1, "summary": bench.summarize(variants), "claims": [claim]})


def test_gaps_are_paired_by_seed(bench):
    # seeds move both models alike (std 0.02), the gap is steady (+0.01 +-0.001): evidence
    steady = {"ID-only dcnv2": runs(0.70, 0.74, 0.72), "FLIP dcnv2 / FLIP_ID": runs(0.709, 0.751, 0.730)}
    (claim,) = bench.check_claims(steady, PRESET)
    assert claim["held"] is True and claim["gap"] == pytest.approx(0.01)
    assert claim["noise"] == pytest.approx(2 * 0.001 / 3**0.5)
    assert claim["beyond_noise"] is True
    # the same means, but the gap changes sign between seeds: no evidence
    unsteady = {"ID-only dcnv2": runs(0.70, 0.74, 0.72), "FLIP dcnv2 / FLIP_ID": runs(0.74, 0.72, 0.73)}
    (claim,) = bench.check_claims(unsteady, PRESET)
    assert claim["held"] is True and claim["gap"] == pytest.approx(0.01)
    assert claim["beyond_noise"] is False
    table = bench.quality_table({"seeds": 3, "summary": bench.summarize(unsteady), "claims": [claim]})
    assert "- HELD: FLIP_ID (dcnv2) beats dcnv2" in table and "within the seeds' noise" in table


def test_flip_must_beat_its_strongest_rival(bench):
    variants = {
        "FLIP dcnv2 / FLIP": runs(0.710, 0.712, 0.711), "FLIP dcnv2 / FLIP_ID": runs(0.700, 0.701, 0.702),
        "FLIP dcnv2 / FLIP_PLM": runs(0.60, 0.61, 0.62), "ID-only deepfm": runs(0.730, 0.731, 0.733),
        "PLM-only": runs(0.55, 0.56, 0.57),
    }
    (claim,) = [c for c in bench.check_claims(variants, PRESET) if c["claim"].startswith("FLIP beats")]
    assert claim["held"] is False
    assert claim["gap"] == pytest.approx(0.711 - (0.730 + 0.731 + 0.733) / 3)  # against ID-only deepfm, the strongest
    assert claim["beyond_noise"] is True
    assert set(claim["values"]) == {"FLIP", "FLIP dcnv2 / FLIP_ID", "FLIP dcnv2 / FLIP_PLM", "ID-only deepfm", "PLM-only"}
    table = bench.quality_table({"seeds": 3, "summary": bench.summarize(variants), "claims": [claim]})
    assert "- NOT HELD: FLIP beats" in table


def test_every_ablation_is_compared_with_full_flip(bench):
    variants = {"FLIP dcnv2 / FLIP": runs(0.70, 0.71), "FLIP dcnv2 w/o MLM / FLIP": runs(0.60, 0.61),
                "FLIP dcnv2 w/o ICL / FLIP": runs(0.72, 0.73), "FLIP dcnv2 token-level masking / FLIP": runs(0.69, 0.70)}
    claims = {c["claim"]: c["held"] for c in bench.check_claims(variants, PRESET) if c["claim"].startswith("full FLIP")}
    assert claims == {"full FLIP beats FLIP dcnv2 w/o MLM / FLIP": True, "full FLIP beats FLIP dcnv2 w/o ICL / FLIP": False,
                      "full FLIP beats FLIP dcnv2 token-level masking / FLIP": True}


def test_quality_runs_every_variant_through_train_py_and_resume_reuses_them(
    bench, tiny_dataset_dir, tiny_text_model_dir, tmp_path, monkeypatch
):
    argv = tiny_argv(tiny_dataset_dir, tiny_text_model_dir)
    options = {key.removeprefix("--"): value for key, value in zip(argv[0::2], argv[1::2]) if key != "--seed"}
    preset = dict(config="quickstart", overrides=dict(max_steps=2), backbones=("dnn",), id_baselines=("dnn",), ablations=False)
    monkeypatch.setitem(bench.QUALITY_PRESETS, "tiny", preset)
    reports = []
    results = bench.run_quality("tiny", 1, tmp_path, options, resume=False, report=lambda partial: reports.append(json.dumps(partial)))

    assert set(results["variants"]) == {"FLIP dnn / FLIP_ID", "FLIP dnn / FLIP_PLM", "FLIP dnn / FLIP", "ID-only dnn", "PLM-only",
                                        "LightGBM"}
    assert all({"auc", "logloss"} <= set(seeds[0]["test"]) for seeds in results["variants"].values())
    # the variants carry train.py's own numbers, and one seed's summary is that seed's value
    flip_run = json.loads((tmp_path / "FLIP_dnn" / "seed0" / "results.json").read_text())
    for stage, label in (("flip_id", "FLIP dnn / FLIP_ID"), ("flip_plm", "FLIP dnn / FLIP_PLM"), ("flip", "FLIP dnn / FLIP")):
        assert results["variants"][label][0]["test"] == flip_run["stages"][stage]["test"], label
    for label, seeds in results["variants"].items():
        assert results["summary"][label]["auc"]["mean"] == seeds[0]["test"]["auc"], label
    assert len(reports) == 4  # one after every run, so a benchmark cut short keeps what it measured
    assert [c["claim"] for c in results["claims"]] == ["FLIP_ID (dnn) beats dnn trained without FLIP pretraining",
                                                       "FLIP beats FLIP_ID, FLIP_PLM and every baseline"]
    results_files = sorted(tmp_path.glob("*/seed0/results.json"))
    written = {path: path.stat().st_mtime_ns for path in results_files}
    assert len(written) == 3

    again = bench.run_quality("tiny", 1, tmp_path, options, resume=True, report=lambda partial: None)
    assert again["summary"] == results["summary"]
    assert {path: path.stat().st_mtime_ns for path in results_files} == written  # nothing retrained

    train_script, run_dir = bench._load_train_script(), tmp_path / "ID-only_dnn" / "seed0"
    id_only = dict(stage="finetune", ctr_mode="id", backbone="dnn")
    assert bench.finished_run(train_script, run_dir, bench.train_argv(preset, id_only, 0, run_dir, options)) is not None
    changed = bench.train_argv(preset, id_only, 0, run_dir, {**options, "embedding_size": "4"})
    assert bench.finished_run(train_script, run_dir, changed) is None  # another run: train it again
    record = json.loads((run_dir / "results.json").read_text())
    del record["total_seconds"]
    (run_dir / "results.json").write_text(json.dumps(record))
    assert bench.finished_run(train_script, run_dir, bench.train_argv(preset, id_only, 0, run_dir, options)) is None  # cut short


def test_lightgbm_sees_the_same_rows_with_train_vocabularies(bench):
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
    frames = bench.lightgbm_frames(raw, schema, eval_rows=2)
    features, labels = frames["validation"]
    assert len(features) == 2 and len(frames["test"][0]) == 2 and len(frames["train"][0]) == 2  # eval_rows: first rows only
    assert list(features["user"].cat.categories) == ["a", "b"] and features["user"].isna().tolist() == [False, True]  # "c": unseen
    assert features["age"].isna().tolist() == [False, True]
    assert [c for c in features if c.startswith("genres=")] == ["genres=x", "genres=y"]  # "z" was never in training
    assert features["review:great"].tolist()[0] > 0 and features["review:great"].tolist()[1] == 0
    assert labels == [1, 0]
