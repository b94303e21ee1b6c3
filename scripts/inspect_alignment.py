#!/usr/bin/env python
"""Does FLIP pretraining move the ID side, and does finetuning keep what it moved?

Reads one `scripts/train.py --stage all` output directory and prints:
* each pretraining objective's loss at the first and last logging step (ICL next to ln(batch),
  its value when the two sides are unaligned);
* for the ID table and the backbone: the initial norm, how far pretraining moved them (relative to
  that norm), how far each finetuned model moved them again (relative to the pretrained norm),
  and the cosine between pretraining's move and the whole move (1: finetuning kept pretraining's
  direction; near 0: it overwrote it).

The initial weights are rebuilt from the run's seed, the way train.py builds them.

    python scripts/inspect_alignment.py runs/cpu-small [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

GROUPS = {"ID table": "flip.id_encoder.embeddings.", "backbone": "flip.id_encoder.backbone."}
FINETUNED = ("flip_id", "flip")


def loss_curves(pretrain_dir: Path) -> dict:
    history = json.loads((pretrain_dir / "trainer_state.json").read_text())["log_history"]
    logged = [entry for entry in history if "mlm_loss" in entry or "mtm_loss" in entry or "icl_loss" in entry]
    curves = {}
    for name in ("mlm_loss", "mtm_loss", "icl_loss"):
        values = [entry[name] for entry in logged if name in entry]
        if values:
            curves[name] = {"first": values[0], "last": values[-1]}
    return curves


def group_vectors(state: dict, prefix: str):
    import torch

    tensors = [state[name].flatten().float() for name in sorted(state) if name.startswith(prefix)]
    return torch.cat(tensors) if tensors else None


def initial_state(pretrain_dir: Path, seed: int) -> dict:
    from transformers import set_seed

    from flip_hf import FlipConfig, FlipForPretraining

    set_seed(seed)  # train.py seeds right before building the model
    return FlipForPretraining(FlipConfig.from_pretrained(pretrain_dir)).state_dict()


def load_state(directory: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def weight_moves(run_dir: Path, seed: int) -> dict:
    import torch

    init, pretrained = initial_state(run_dir / "pretrain", seed), load_state(run_dir / "pretrain")
    report = {}
    for group, prefix in GROUPS.items():
        w0, wp = group_vectors(init, prefix), group_vectors(pretrained, prefix)
        entry = {"initial_norm": float(w0.norm()), "pretraining_move": float((wp - w0).norm() / w0.norm())}
        for model in FINETUNED:
            if not (run_dir / model / "model.safetensors").exists():
                continue
            wf = group_vectors(load_state(run_dir / model), prefix)
            entry[f"{model}_move"] = float((wf - wp).norm() / wp.norm())
            entry[f"{model}_keeps_direction"] = float(torch.nn.functional.cosine_similarity(wp - w0, wf - w0, dim=0))
        report[group] = entry
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a scripts/train.py --stage all output directory")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    run_args = json.loads((args.run_dir / "run_args.json").read_text())
    report = {"losses": loss_curves(args.run_dir / "pretrain"), "icl_chance": math.log(run_args["pretrain_batch_size"]),
              "weights": weight_moves(args.run_dir, run_args["seed"])}
    print("| objective | first | last |\n|---|---|---|")
    for name, curve in report["losses"].items():
        print(f"| {name} | {curve['first']:.3f} | {curve['last']:.3f} |")
    print(f"\nICL at chance (unaligned sides): ln(batch {run_args['pretrain_batch_size']}) = {report['icl_chance']:.3f}\n")
    columns = ["initial_norm", "pretraining_move", *[f"{m}_{k}" for m in FINETUNED for k in ("move", "keeps_direction")]]
    print("| weights | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for group, entry in report["weights"].items():
        print(f"| {group} | " + " | ".join(f"{entry[c]:.4g}" if c in entry else "-" for c in columns) + " |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True))
    return report


if __name__ == "__main__":
    main()
