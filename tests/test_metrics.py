"""CTR metrics: agreement with sklearn, gAUC by hand, and offline loading through `evaluate`."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from flip_hf.metrics import METRIC_PATH, compute_ctr_metrics

# Four users; hand-computed per-user AUC: a -> 1.0 (3 rows), b -> 2/4 pairs = 0.5 (4 rows),
# c -> one tied pair = 0.5 (2 rows), d has a single class and is skipped.
GROUPED = {
    "predictions": [0.9, 0.2, 0.6, 0.3, 0.7, 0.5, 0.1, 0.4, 0.4, 0.8],
    "references": [1, 0, 0, 1, 0, 1, 0, 1, 0, 1],
    "groups": ["a", "a", "a", "b", "b", "b", "b", "c", "c", "d"],
}
GROUPED_GAUC = (3 * 1.0 + 4 * 0.5 + 2 * 0.5) / 9


@pytest.fixture
def random_ctr_data():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    # Rounded so that many scores tie; kept away from 0/1 where the clipping eps would matter.
    probabilities = np.clip(np.round(rng.beta(2, 5, 2000) + 0.3 * labels, 2), 0.01, 0.99)
    return probabilities, labels


def test_matches_sklearn(random_ctr_data):
    probabilities, labels = random_ctr_data
    results = compute_ctr_metrics(probabilities, labels)
    assert results.keys() == {"auc", "logloss"}
    assert results["auc"] == pytest.approx(roc_auc_score(labels, probabilities), abs=1e-12)
    assert results["logloss"] == pytest.approx(log_loss(labels, probabilities), abs=1e-12)


def test_logits_mode(random_ctr_data):
    probabilities, labels = random_ctr_data
    logits = np.log(probabilities / (1 - probabilities))
    from_logits = compute_ctr_metrics(logits, labels, from_logits=True)
    from_probabilities = compute_ctr_metrics(probabilities, labels)
    assert from_logits == pytest.approx(from_probabilities, abs=1e-9)


def test_large_logits_keep_their_ranking():
    # sigmoid(40) == sigmoid(50) == 1.0 in float64; ranking the logits keeps them apart.
    results = compute_ctr_metrics([40.0, 50.0, -3.0], [0, 1, 0], from_logits=True)
    assert results["auc"] == 1.0
    assert np.isfinite(results["logloss"])


def test_gauc_by_hand():
    results = compute_ctr_metrics(**GROUPED)
    assert results["gauc"] == pytest.approx(GROUPED_GAUC)
    assert results["gauc_groups"] == 3
    assert results["auc"] == pytest.approx(roc_auc_score(GROUPED["references"], GROUPED["predictions"]))


def test_gauc_matches_per_group_sklearn(random_ctr_data):
    probabilities, labels = random_ctr_data
    groups = np.random.default_rng(1).integers(0, 50, len(labels))
    expected, weights = [], []
    for group in np.unique(groups):
        mask = groups == group
        if len(set(labels[mask])) == 2:
            expected.append(roc_auc_score(labels[mask], probabilities[mask]))
            weights.append(mask.sum())
    results = compute_ctr_metrics(probabilities, labels, groups=groups)
    assert results["gauc"] == pytest.approx(np.average(expected, weights=weights), abs=1e-12)
    assert results["gauc_groups"] == len(expected)
    # Any hashable works as a group id in the numpy entry point.
    mixed = [("user", int(g)) for g in groups]
    assert compute_ctr_metrics(probabilities, labels, groups=mixed)["gauc"] == pytest.approx(results["gauc"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"predictions": [0.1, 0.9], "references": [0, 2]}, "0/1"),
        ({"predictions": [0.1, 0.9, 0.5], "references": [0, 1]}, "3 predictions but 2 references"),
        ({"predictions": [0.1, 0.9], "references": [1, 1]}, "AUC is undefined"),
        ({"predictions": [0.1, 1.5], "references": [0, 1]}, "from_logits"),
        ({"predictions": [0.1, 0.9], "references": [0, 1], "groups": ["a"]}, "1 groups but 2"),
        ({"predictions": [0.1, 0.9], "references": [0, 1], "groups": ["a", "b"]}, "gAUC is undefined"),
    ],
)
def test_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        compute_ctr_metrics(**kwargs)


_EVALUATE_SCRIPT = """
import json, sys
import evaluate
predictions, references, groups = json.loads(sys.argv[2])
metric = evaluate.load(sys.argv[1])
plain = metric.compute(predictions=predictions, references=references)
with_groups = metric.compute(predictions=predictions, references=references, groups=groups)
grouped = evaluate.load(sys.argv[1], "grouped")
for start in range(0, len(references), 4):
    stop = start + 4
    grouped.add_batch(predictions=predictions[start:stop], references=references[start:stop],
                      groups=groups[start:stop])
print(json.dumps([plain, with_groups, grouped.compute()]))
"""


def test_evaluate_load_by_path_offline(tmp_path):
    """A fresh process with an empty HF home, offline flags and a dead proxy: no network possible."""
    env = dict(
        os.environ,
        HF_HOME=str(tmp_path / "hf_home"),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_EVALUATE_OFFLINE="1",
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
    )
    env.pop("HF_ENDPOINT", None)
    data = json.dumps([GROUPED["predictions"], GROUPED["references"], GROUPED["groups"]])
    completed = subprocess.run(
        [sys.executable, "-c", _EVALUATE_SCRIPT, METRIC_PATH, data],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    plain, with_groups, grouped = json.loads(completed.stdout.strip().splitlines()[-1])
    expected = compute_ctr_metrics(**GROUPED)
    assert plain == pytest.approx({"auc": expected["auc"], "logloss": expected["logloss"]})
    assert with_groups == pytest.approx(expected)
    assert grouped == pytest.approx(expected)
