"""CTR metrics (AUC, LogLoss, gAUC) as an `evaluate` module, loadable offline by path.

This file is also the single home of the math: `flip_hf.metrics.compute_ctr_metrics` loads it
with importlib. `evaluate` copies this file into its modules cache and parses its imports, so
it only imports third-party modules, one per line, and nothing relative.
"""

import datasets
import evaluate
import numpy as np

LOGLOSS_EPS = 1e-7

_DESCRIPTION = (
    "Click-through-rate metrics: ROC AUC, log loss (predictions clipped to [1e-7, 1 - 1e-7]) "
    "and, when `groups` (e.g. user ids) are given, gAUC: the impression-weighted mean of the "
    "per-group AUC over the groups that contain both classes."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): click probabilities in [0, 1], or logits with `from_logits=True`.
    references (`list` of `int`): labels, 0 or 1.
    groups (`list` of `str`, *optional*): group (user) id of each example, for gAUC. With the
        default config it is a compute-time argument; with the "grouped" config it is an input
        feature, so it can also be accumulated with `add_batch`.
    from_logits (`bool`, defaults to `False`): whether `predictions` are logits.
Returns:
    auc (`float`), logloss (`float`), and with groups: gauc (`float`), gauc_groups (`int`, the
    number of groups used).
Examples:
    >>> metric = evaluate.load("path/to/flip_hf/metrics/ctr_metrics.py")
    >>> metric.compute(predictions=[0.1, 0.8, 0.3], references=[0, 1, 1])["auc"]
    1.0
"""


def sigmoid(x):
    """Numerically stable logistic function (no overflow warnings for large |x|)."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def group_codes(groups):
    """Dense integer codes for group ids of any hashable type."""
    array = np.asarray(groups)
    if array.ndim == 1 and array.dtype != object:
        return np.unique(array, return_inverse=True)[1].reshape(-1)
    index = {}
    return np.fromiter((index.setdefault(g, len(index)) for g in groups), dtype=np.int64, count=len(groups))


def grouped_auc(scores, labels, codes):
    """Per-group ROC AUC via the Mann-Whitney rank sum, ties sharing their average rank.

    Vectorised (one sort for all groups) and exactly the trapezoidal AUC of sklearn.
    Returns (auc per group, NaN where a group has a single class; size of each group).
    """
    order = np.lexsort((scores, codes))
    scores, labels, codes = scores[order], labels[order], codes[order]
    n = len(scores)
    sizes = np.bincount(codes)
    group_start = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    rank_in_group = np.arange(1, n + 1) - group_start[codes]
    # A tie block is a run of equal scores within one group; its members share the mean rank.
    new_block = np.ones(n, dtype=bool)
    new_block[1:] = (codes[1:] != codes[:-1]) | (scores[1:] != scores[:-1])
    block = np.cumsum(new_block) - 1
    mean_rank = np.bincount(block, weights=rank_in_group) / np.bincount(block)
    positives = np.bincount(codes, weights=labels, minlength=len(sizes))
    negatives = sizes - positives
    positive_rank_sum = np.bincount(codes, weights=labels * mean_rank[block], minlength=len(sizes))
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (positive_rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    return auc, sizes


def ctr_metrics(predictions, references, groups=None, from_logits=False):
    """AUC, LogLoss and (with groups) gAUC; raises ValueError on unusable inputs."""
    scores = np.asarray(predictions, dtype=np.float64).reshape(-1)
    labels = np.asarray(references).reshape(-1)
    if len(scores) != len(labels):
        raise ValueError(f"Got {len(scores)} predictions but {len(labels)} references.")
    if len(labels) == 0:
        raise ValueError("Cannot compute CTR metrics on an empty set of predictions.")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"References must be 0/1 click labels, got values {np.unique(labels)[:10]}.")
    if not np.isfinite(scores).all():
        raise ValueError("Predictions contain NaN or infinite values.")
    if not from_logits and ((scores < 0) | (scores > 1)).any():
        raise ValueError("Predictions must be probabilities in [0, 1]; pass from_logits=True for logits.")
    labels = labels.astype(np.float64)
    if labels.min() == labels.max():
        raise ValueError(
            f"AUC is undefined: all {len(labels)} references belong to one class ({int(labels[0])})."
        )

    # AUC is rank-based, so logits are ranked directly (sigmoid would create ties by saturating).
    auc, _ = grouped_auc(scores, labels, np.zeros(len(scores), dtype=np.int64))
    probabilities = np.clip(sigmoid(scores) if from_logits else scores, LOGLOSS_EPS, 1 - LOGLOSS_EPS)
    logloss = -np.mean(labels * np.log(probabilities) + (1 - labels) * np.log1p(-probabilities))
    results = {"auc": float(auc[0]), "logloss": float(logloss)}

    if groups is not None:
        if len(groups) != len(labels):
            raise ValueError(f"Got {len(groups)} groups but {len(labels)} references.")
        group_auc, sizes = grouped_auc(scores, labels, group_codes(groups))
        used = ~np.isnan(group_auc)
        if not used.any():
            raise ValueError("gAUC is undefined: no group contains both clicked and unclicked examples.")
        results["gauc"] = float(np.average(group_auc[used], weights=sizes[used]))
        results["gauc_groups"] = int(used.sum())
    return results


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CtrMetrics(evaluate.Metric):
    """AUC / LogLoss / gAUC; config "grouped" makes `groups` an accumulable input feature."""

    def _info(self):
        features = {"predictions": datasets.Value("float64"), "references": datasets.Value("int64")}
        if self.config_name == "grouped":
            features["groups"] = datasets.Value("string")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(features),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.roc_auc_score.html"],
        )

    def _compute(self, predictions, references, groups=None, from_logits=False):
        return ctr_metrics(predictions, references, groups=groups, from_logits=from_logits)
