#!/usr/bin/env python
"""Test the paper's claims: FLIP against its own modes, the baselines and its ablations, over seeds.

Examples:
    python scripts/benchmark_quality.py --preset smoke --seeds 1                           # minutes: checks it runs
    python scripts/benchmark_quality.py --preset cpu-small --seeds 3 --skip_ablations --resume
    python scripts/benchmark_quality.py --preset cpu-small --seeds 3 --resume \
        --report_name quality-cpu-small-ablations                                          # with the 4 ablations
    python scripts/benchmark_quality.py --preset cpu-long --seeds 3 --skip_ablations --resume  # the whole PLM
    python scripts/benchmark_quality.py --preset gpu-short --seeds 1 --bf16                 # on a GPU
    python scripts/benchmark_quality.py --preset full --seeds 3 --bf16                      # the paper's protocol, a GPU

Every variant and seed is one run of scripts/train.py, launched the way a user launches it
(`python scripts/train.py --preset <config> --output_dir <run folder> --seed <seed> ...`) into
<output_dir>/<preset>/<variant>/seed<N>/, its output in train.log there. LightGBM (the `bench` extra)
runs in this process on the same rows, split and seed. --resume reuses a run that finished with exactly
the same train.py arguments and the same text of the preset's config file (both kept in benchmark_argv.json
beside its results.json): editing scripts/configs/<preset>.yaml trains every run again.

After every run the summary (test AUC and LogLoss, mean and std over seeds; the mean validation AUC, and the
mean test AUC on users unseen in training and on the others) and the paper's claims, judged against the seeds'
noise, are printed and written to benchmarks/results/quality-<preset>.json and .md, naming the preset,
the hardware and the command. Nothing here is asserted: the numbers are reported as they come out.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAIN_SCRIPT = ROOT / "scripts" / "train.py"
CONFIG_DIR = ROOT / "scripts" / "configs"
RESULTS_DIR = ROOT / "benchmarks" / "results"
LIGHTGBM = "LightGBM"
# the variants that FLIP has to beat
BASELINE_PREFIXES = ("ID-only", "PLM-only", LIGHTGBM)
# in each run folder: train.py's output, and the arguments and config file of a finished run (what --resume compares)
TRAIN_LOG = "train.log"
# test AUC is also reported on users unseen in training (cold) and seen (warm)
SLICES = ("cold", "warm")
ARGV_FILE = "benchmark_argv.json"
LOG_TAIL_LINES = 30
# what LightGBM reads of a run, with train.py's defaults for what neither the config file nor a flag sets
LIGHTGBM_DEFAULTS = dict(dataset="movielens-100k", data_dir=None, split="time", dataset_options=None, max_eval_samples=None)

QUALITY_PRESETS = {
    # scripts/configs/cpu-small.yaml with fewer rows (6,000 pretraining rows, the first 5,000 validation and
    # test rows; every training row for finetuning on the frozen PLM's cached vectors)
    "cpu-small": dict(config="cpu-small", overrides=dict(max_pretrain_samples=6000, max_eval_samples=5000),
                      backbones=("dcnv2",), id_baselines=("dcnv2", "deepfm", "autoint")),
    # scripts/configs/cpu-long.yaml (the whole PLM) on cpu-small's rows; its ID models are cpu-small's, so only the
    # two strongest there are trained again, for the paired comparison
    "cpu-long": dict(config="cpu-long", overrides=dict(max_eval_samples=5000),
                     backbones=("dcnv2",), id_baselines=("dcnv2", "deepfm")),
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
    """Every variant for every seed, each a run of scripts/train.py (LightGBM in this process), into
    `output_dir/<variant>/seed<N>`; `report(results)` after each run. With `resume`, a run that finished
    earlier with the same arguments is read back instead of trained again."""
    from flip_hf.training_run import RESULT_OF_DIR, RESULTS_FILE

    preset = {**QUALITY_PRESETS[preset_name], **({} if ablations else {"ablations": False})}
    output_dir = Path(output_dir).resolve()  # a run is known by its arguments: one spelling of each folder
    results: dict = {"preset": preset_name, "seeds": seeds, "variants": {}}
    for name, overrides in quality_variants(preset):
        for seed in range(seeds):
            run_dir = output_dir / name.replace(" ", "_").replace("/", "") / f"seed{seed}"
            argv = train_argv(preset, overrides, seed, run_dir, train_options)
            run = run_identity(preset, argv)
            record = finished_run(run_dir, run) if resume else None
            if record is not None:
                print(f"== {name}, seed {seed} (finished earlier, reused)", flush=True)
            else:
                (run_dir / ARGV_FILE).unlink(missing_ok=True)  # the folder's earlier run, if any, is replaced
                if name == LIGHTGBM:
                    print(f"== {name}, seed {seed}", flush=True)
                    record = lightgbm_run(lightgbm_settings(preset, overrides, train_options), seed)
                    run_dir.mkdir(parents=True, exist_ok=True)
                    (run_dir / RESULTS_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
                else:
                    print(f"== {name}, seed {seed} (train.py's output: {run_dir / TRAIN_LOG})", flush=True)
                    record = run_train(argv, run_dir)
                (run_dir / ARGV_FILE).write_text(json.dumps(run, indent=2))
            for stage, stage_record in record["stages"].items():
                if "test" not in stage_record:
                    continue
                label = name if overrides["stage"] == "finetune" else f"{name} / {RESULT_OF_DIR[stage][1]}"
                results["variants"].setdefault(label, []).append({
                    "seed": seed, "validation": stage_record["validation"], "test": stage_record["test"],
                    **{name: stage_record["test_slices"][name] for name in SLICES if name in stage_record.get("test_slices", {})},
                })
            results["summary"] = summarize(results["variants"])
            results["claims"] = check_claims(results["variants"], preset)
            report(results)
    return results


def run_flags(preset: dict, overrides: dict, train_options: dict) -> dict:
    """One run's train.py flags beyond its config file: the preset's cuts, then the user's options, then the
    variant's own (a later one wins; None leaves the flag out)."""
    return {key: value for key, value in {**preset["overrides"], **train_options, **overrides}.items() if value is not None}


def train_argv(preset: dict, overrides: dict, seed: int, run_dir: Path, train_options: dict) -> list[str]:
    """scripts/train.py's arguments for one run: the preset's config, its cuts, the user's options, the variant."""
    argv = ["--preset", preset["config"], "--output_dir", str(run_dir), "--seed", str(seed), "--overwrite_output_dir", "true"]
    for key, value in run_flags(preset, overrides, train_options).items():
        argv += [f"--{key}", str(value)]
    return argv


def run_train(argv: list[str], run_dir: Path) -> dict:
    """One run of scripts/train.py, launched as a user launches it, in a process of its own, its output in
    `run_dir/train.log`; returns the results.json it wrote. A failed run stops the benchmark, naming its log."""
    from flip_hf.training_run import RESULTS_FILE

    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / TRAIN_LOG
    command = [sys.executable, str(TRAIN_SCRIPT), *argv]
    with open(log, "w", encoding="utf-8") as output:
        output.write(f"$ {shlex.join(command)}\n")
        output.flush()
        returncode = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    if returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:])
        raise RuntimeError(f"scripts/train.py failed (exit status {returncode}); its output is in {log}. "
                           f"The last lines:\n{tail}")
    return json.loads((run_dir / RESULTS_FILE).read_text())


def run_identity(preset: dict, argv: list[str]) -> dict:
    """What makes two runs the same: train.py's arguments, and the text of the config file they name (a preset
    edited since would give another run under the same arguments)."""
    return {"argv": argv, "config": (CONFIG_DIR / f"{preset['config']}.yaml").read_text(encoding="utf-8")}


def finished_run(run_dir: Path, run: dict) -> dict | None:
    """The results of the run in `run_dir` if it finished as `run` (`run_identity`) describes, else None."""
    from flip_hf.training_run import RESULTS_FILE

    argv_file, results_file = run_dir / ARGV_FILE, run_dir / RESULTS_FILE
    if not (argv_file.exists() and results_file.exists()):
        return None
    if json.loads(argv_file.read_text()) != run:
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


def lightgbm_settings(preset: dict, overrides: dict, train_options: dict) -> dict:
    """What LightGBM reads of a run (dataset, data_dir, split, dataset_options, max_eval_samples) as train.py would see it:
    the run's flags (`run_flags`) over its config file, scripts/configs/<config>.yaml, over train.py's defaults."""
    import yaml

    with open(CONFIG_DIR / f"{preset['config']}.yaml", encoding="utf-8") as f:
        config = {key: value for key, value in (yaml.safe_load(f) or {}).items() if value is not None}
    given = {**config, **run_flags(preset, overrides, train_options)}
    settings = {key: given.get(key, default) for key, default in LIGHTGBM_DEFAULTS.items()}
    if settings["max_eval_samples"] is not None:
        settings["max_eval_samples"] = int(settings["max_eval_samples"])
    return settings


def lightgbm_run(settings: dict, seed: int) -> dict:
    """LightGBM, the tabular baseline a practitioner tries first, on a train.py run's data, split and seed
    (`lightgbm_settings`). Early stopping on validation AUC; the same settings as the peer anchor in
    shared/anchors/lgbm_ml100k.py. Returns a record shaped like train.py's results.json."""
    import lightgbm

    from flip_hf.data import load_dataset_recipe
    from flip_hf.metrics import cold_and_warm_metrics, compute_ctr_metrics

    started = time.perf_counter()
    options = settings["dataset_options"] or {}  # JSON from a flag, a mapping from a config file
    options = {**(json.loads(options) if isinstance(options, str) else options), "split": settings["split"],
               **({"data_dir": settings["data_dir"]} if settings["data_dir"] else {})}
    raw, schema = load_dataset_recipe(settings["dataset"], **options)
    frames = lightgbm_frames(raw, schema, settings["max_eval_samples"])
    fitted = time.perf_counter()
    model = lightgbm.LGBMClassifier(n_estimators=2000, learning_rate=0.03, num_leaves=63, min_child_samples=20,
                                    subsample=0.8, subsample_freq=1, colsample_bytree=0.8, cat_smooth=10,
                                    random_state=seed, n_jobs=2, verbose=-1)
    model.fit(*frames["train"], eval_X=frames["validation"][0], eval_y=frames["validation"][1], eval_metric="auc",
              callbacks=[lightgbm.early_stopping(50, verbose=False)])
    record = {"train_seconds": round(time.perf_counter() - fitted, 1), "trees": int(model.best_iteration_)}
    for split in ("validation", "test"):
        features, labels = frames[split]
        record[split] = compute_ctr_metrics(model.predict_proba(features)[:, 1], labels)
    if schema.group_column:  # users unseen in training, as train.py slices them
        features, labels = frames["test"]
        groups = raw["test"][schema.group_column][:len(labels)]
        record["test_slices"] = cold_and_warm_metrics(model.predict_proba(features)[:, 1], labels, groups,
                                                      set(raw["train"][schema.group_column]))
    return {"stages": {"lightgbm": record}, "total_seconds": round(time.perf_counter() - started, 1), "settings": settings}


def summarize(variants: dict) -> dict:
    summary = {}
    for label, runs in variants.items():
        entry = {}
        for metric in ("auc", "logloss"):
            values = [run["test"][metric] for run in runs]
            entry[metric] = {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
        for split in ("validation", *SLICES):  # the mean AUC, where every seed has it
            if all(split in run for run in runs):
                entry[f"{split}_auc"] = statistics.mean(run[split]["auc"] for run in runs)
        entry["seeds"] = len(runs)
        summary[label] = entry
    baselines = [label for label in summary if label.startswith(BASELINE_PREFIXES)]
    best = max(baselines, key=lambda label: summary[label]["auc"]["mean"]) if baselines else None
    for label, entry in summary.items():
        if best:
            entry["auc_improvement_over_best_baseline"] = (entry["auc"]["mean"] - summary[best]["auc"]["mean"]) / summary[best]["auc"]["mean"]
    return summary


def compare(variants: dict, label: str, rival: str, split: str = "test") -> dict:
    """`label` against `rival` on the AUC of `split` ("test", or a slice of it: "cold"), paired by seed, with
    the seeds' noise on the gap.

    Runs of one seed share their data subset and initialization, so the per-seed differences cancel what
    the seed moves in both. The noise is two standard errors of their mean; a claim held or lost by less
    than that is not evidence either way. With fewer than two common seeds there is no noise (None).
    """
    a = {run["seed"]: run[split]["auc"] for run in variants[label] if split in run}
    b = {run["seed"]: run[split]["auc"] for run in variants[rival] if split in run}
    gaps = [a[seed] - b[seed] for seed in sorted(a.keys() & b.keys())]
    gap = statistics.mean(gaps)
    noise = 2 * statistics.stdev(gaps) / math.sqrt(len(gaps)) if len(gaps) > 1 else None
    return {"held": gap > 0, "gap": gap, "noise": noise, "beyond_noise": None if noise is None else abs(gap) > noise}


def check_claims(variants: dict, preset: dict) -> list[dict]:
    """The paper's claims that `variants` can test, each held or not on mean test AUC."""
    def auc(label, split="test"):
        return statistics.mean(run[split]["auc"] for run in variants[label])

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
        cold = [label for label in [flip, *others] if all("cold" in run for run in variants[label])]
        if flip in cold and len(cold) > 1:  # users unseen in training: where the text side should help most
            strongest = max(cold[1:], key=lambda label: auc(label, "cold"))
            claims.append({"claim": "FLIP beats FLIP_ID, FLIP_PLM and every baseline on users unseen in training",
                           "values": {label: auc(label, "cold") for label in cold}, **compare(variants, flip, strongest, "cold")})
    for label in variants:
        if (label.startswith(f"FLIP {main} w") or "token-level" in label) and label.endswith("/ FLIP"):
            claims.append({"claim": f"full FLIP beats {label}", "values": [auc(flip), auc(label)], **compare(variants, flip, label)})
    return claims


def claim_verdict(claim: dict) -> str:
    """HELD or NOT HELD by the sign of the gap; UNDECIDED when the gap is within the seeds' noise, since then it is
    evidence neither way (one seed has no noise estimate, so its sign stands, with the table's warning)."""
    if claim["beyond_noise"] is False:
        return "UNDECIDED"
    return "HELD" if claim["held"] else "NOT HELD"


def quality_table(results: dict) -> str:
    lines = ["| model | validation AUC | test AUC | test LogLoss | test AUC, cold users | test AUC, warm users | AUC vs best baseline |",
             "|---|---|---|---|---|---|---|"]
    for label, entry in results["summary"].items():
        improvement = entry.get("auc_improvement_over_best_baseline")
        means = [f"{entry[key]:.4f}" if key in entry else "-" for key in ("validation_auc", "cold_auc", "warm_auc")]
        lines.append(f"| {label} | {means[0]} | {entry['auc']['mean']:.4f} ± {entry['auc']['std']:.4f} | "
                     f"{entry['logloss']['mean']:.4f} ± {entry['logloss']['std']:.4f} | {means[1]} | {means[2]} | "
                     f"{'' if improvement is None else f'{100 * improvement:+.2f}%'} |")
    lines.append("")
    if results["seeds"] == 1:
        lines.append("One seed only: no std, so AUC differences below about 0.005 are within run-to-run noise "
                     "and a claim that holds or fails by less says nothing.\n")
    else:
        lines.append(f"Mean ± std over {results['seeds']} seeds (the other columns: means). Each claim compares mean test AUC; its gap, paired by seed "
                     "(a seed fixes the rows and the initialization), counts as evidence only beyond the seeds' noise: "
                     "two standard errors of the per-seed gaps; a claim within it is UNDECIDED.\n")
    for claim in results["claims"]:
        values = claim["values"]
        shown = ", ".join(f"{k}: {v:.4f}" for k, v in values.items()) if isinstance(values, dict) else " vs ".join(f"{v:.4f}" for v in values)
        if claim["noise"] is None:
            verdict = ""
        else:
            verdict = (f"; gap {claim['gap']:+.4f}, {'beyond' if claim['beyond_noise'] else 'within'} "
                       f"the seeds' noise (±{claim['noise']:.4f})")
        lines.append(f"- {claim_verdict(claim)}: {claim['claim']} ({shown}){verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu-small", choices=list(QUALITY_PRESETS),
                        help="smoke, cpu-small (default), cpu-long, gpu-short or full.")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant.")
    parser.add_argument("--output_dir", default="runs/benchmark", help="where the runs go, in a folder per preset.")
    parser.add_argument("--resume", action="store_true", help="reuse runs that finished earlier with the same arguments.")
    parser.add_argument("--skip_ablations", action="store_true", help="FLIP and the baselines only.")
    parser.add_argument("--report_name", default=None,
                        help="the report's file name in benchmarks/results, without .md / .json (default: quality-<preset>); "
                             "a run on other seeds or variants can be kept beside the preset's main report.")
    parser.add_argument("--bf16", action="store_true", help="train under bf16 mixed precision (GPU).")
    parser.add_argument("--text_model", default="sentence-transformers/all-MiniLM-L6-v2", help="PLM: Hub id or path.")
    parser.add_argument("--data_dir", default=None, help="folder with MovieLens-100K's official files (else the cache or a download).")
    parser.add_argument("--dataloader_num_workers", type=int, default=0, help="data loader workers per run.")
    args = parser.parse_args(argv)
    command = "python scripts/benchmark_quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
    import logging

    from flip_hf.benchmark_report import write_report

    logging.basicConfig(level=logging.WARNING)

    def write(results: dict) -> Path:
        return write_report("quality", args.preset, results, quality_table(results), command, results_dir=RESULTS_DIR,
                            name=args.report_name)

    train_options = dict(text_model=args.text_model, data_dir=args.data_dir, bf16="true" if args.bf16 else None,
                         dataloader_num_workers=args.dataloader_num_workers or None)
    results = run_quality(args.preset, args.seeds, Path(args.output_dir) / args.preset, train_options, args.resume,
                          report=write, ablations=not args.skip_ablations)
    print(quality_table(results))
    print(f"\nReport: {write(results)}")
    return results


if __name__ == "__main__":
    main()
