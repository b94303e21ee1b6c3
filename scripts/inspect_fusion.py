#!/usr/bin/env python
"""How much does FLIP's text side add to the ranking of its ID side, on validation and on test?

Reads one `scripts/train.py` output directory that holds a FLIP (joint) model, scores the validation and test
rows with each side's logit, and prints the AUC of `alpha * z_id + (1 - alpha) * z_text` for a sweep of alpha
(1: the ID side alone, 0: the text side alone), with the model's own alpha first. The data, split and processor
are the run's own (`run_args.json`; the processor is fitted again, as the run fitted it, so a frozen PLM's text
vectors come from the run's cache).

A diagnostic: the test column says whether any weight of the text side would rank the test rows better. Never
choose alpha from it; `FlipForCTR.fit_fusion` fits it on validation.

    python scripts/inspect_fusion.py runs/cpu-small [--model flip] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ALPHAS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5, 0.0)
SPLITS = ("validation", "test")


def rebuild_run(run_dir: Path):
    """The run's `FlipRun`, from its recorded arguments, with its data loaded; it writes nothing."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import train
    from transformers import TrainingArguments

    from flip_hf.training_run import RUN_FILE, FlipRun

    record = json.loads((run_dir / RUN_FILE).read_text())
    flip_args = [cls(**{f.name: record[f.name] for f in dataclasses.fields(cls) if f.name in record})
                 for cls in train.ARGUMENT_CLASSES]
    training_args = TrainingArguments(output_dir=str(run_dir), report_to="none", seed=record.get("seed", 42),
                                      use_cpu=record.get("use_cpu", False),
                                      per_device_eval_batch_size=record.get("per_device_eval_batch_size", 8))
    run = FlipRun(*flip_args, training_args)
    run.load_data()
    return run


def fusion_sweep(run_dir: Path, model_name: str = "flip") -> dict:
    from flip_hf import DataCollatorForFlipCTR, FlipForCTR
    from flip_hf.metrics import compute_ctr_metrics
    from flip_hf.trainer import FlipTrainer

    model_dir = run_dir / model_name
    model = FlipForCTR.from_pretrained(model_dir)
    if model.config.ctr_mode != "joint":
        raise SystemExit(f"{model_dir} is a ctr_mode={model.config.ctr_mode!r} model; the sweep needs FLIP (joint), "
                         "whose two sides it weighs.")
    run = rebuild_run(run_dir)
    run.check_fields(model.config, f"{model_dir} was trained", "Was the run's data changed since it trained?")
    splits, _ = run.model_inputs(model, [run.held_out_encoded(split, with_text=True) for split in SPLITS])
    trainer = FlipTrainer(model=model, args=run.training_args, data_collator=DataCollatorForFlipCTR(run.processor),
                          processing_class=run.processor)
    own_alpha = model.fusion_alpha.item()
    report = {"model_alpha": own_alpha, "alphas": [own_alpha, *ALPHAS], "auc": {}}
    for split, dataset in zip(SPLITS, splits):
        id_logits, text_logits, labels = (t.double() for t in run.side_logits(trainer, dataset))
        labels = labels.long().numpy()
        report["auc"][split] = [
            compute_ctr_metrics((alpha * id_logits + (1 - alpha) * text_logits).numpy(), labels, from_logits=True)["auc"]
            for alpha in report["alphas"]
        ]
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a scripts/train.py output directory with a FLIP (joint) model")
    parser.add_argument("--model", default="flip", help="the joint model's folder in run_dir")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    report = fusion_sweep(args.run_dir, args.model)
    labels = [f"{alpha:.2f} (the model's)" if i == 0 else f"{alpha:.2f}" for i, alpha in enumerate(report["alphas"])]
    print("| alpha | " + " | ".join(labels) + " |\n|---|" + "---|" * len(labels))
    for split in SPLITS:
        print(f"| {split} AUC | " + " | ".join(f"{auc:.4f}" for auc in report["auc"][split]) + " |")
    print("\nalpha 1 is the ID side alone, 0 the text side alone. The test row is a diagnostic: never choose alpha "
          "from it (fit_fusion fits it on validation).")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True))
    return report


if __name__ == "__main__":
    main()
