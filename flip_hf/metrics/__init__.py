"""CTR metrics: the `evaluate` module (by path, offline) and a direct numpy entry point.

The math lives only in `ctr_metrics.py`, the file `evaluate` loads; `compute_ctr_metrics`
imports that same file with importlib so both paths give identical numbers.
"""

import functools
import importlib.util
import os

import numpy as np

METRIC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ctr_metrics.py")
# A joint model's evaluation also scores each side on its own logit: "eval_id_auc", "eval_text_auc".
SIDES = ("id", "text")


def parse_metric_key(key: str, names) -> tuple[str, str] | None:
    """("eval", "auc") for "eval_auc" and ("", "auc") for "auc", where the name is one of `names`; None for any
    other key, a side's metric ("eval_id_auc") included: it is not the model's own."""
    head, _, name = key.rpartition("_")
    if name not in names or head.rpartition("_")[2] in SIDES:
        return None
    return head, name


@functools.cache
def _metric_module():
    spec = importlib.util.spec_from_file_location("flip_hf.metrics.ctr_metrics", METRIC_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_ctr_metric(config_name=None, **kwargs):
    """`evaluate.load` of the package's metric module; config "grouped" accumulates `groups`."""
    import evaluate  # slow to import: only when the evaluate module is really wanted

    return evaluate.load(METRIC_PATH, config_name, **kwargs)


def compute_ctr_metrics(predictions, references, groups=None, from_logits=False):
    """AUC, LogLoss and (with `groups`) gAUC / gauc_groups, without `evaluate`'s Arrow round trip.

    The first call imports the metric file (and thereby `evaluate`); later calls are pure numpy.
    """
    return _metric_module().ctr_metrics(predictions, references, groups=groups, from_logits=from_logits)


def cold_and_warm_metrics(predictions, references, groups, seen_groups, from_logits=False) -> dict:
    """AUC / LogLoss on the rows whose group (e.g. user) never appears in training ("cold") and on the others
    ("warm"), with the cold rows' share; a slice without both classes has no entry."""
    predictions, references = np.asarray(predictions).reshape(-1), np.asarray(references).reshape(-1).astype(np.int64)
    cold = np.array([group not in seen_groups for group in groups], dtype=bool)
    slices = {"cold_share": round(float(cold.mean()), 4) if len(cold) else 0.0}
    for name, rows in (("cold", cold), ("warm", ~cold)):
        if len(set(references[rows].tolist())) == 2:
            slices[name] = compute_ctr_metrics(predictions[rows], references[rows], from_logits=from_logits)
    return slices
