"""Text vectors of a frozen PLM, computed once per row and cached on disk.

With `FlipConfig.freeze_text_encoder` the PLM of a CTR model never changes during finetuning, so
each row's pooled text vector `h_text` can be computed once and read back as the `text_embeds`
column. Text and joint modes then train on every row at about the cost of the ID model.

With `FlipConfig.text_trainable_layers` the PLM's top layers train, so what stays the same per row is the
token states below them: `cache_text_states` caches those, and each step runs only the top layers.

The cache is a `datasets.map` whose fingerprint combines the dataset's fingerprint with a digest
of the PLM's weights and pooling: a rerun with the same data and PLM reads the Arrow file back,
and any change to either computes the vectors anew.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

TEXT_EMBEDS = "text_embeds"
TEXT_STATES = "text_states"
FLOAT16_MAX = float(np.finfo(np.float16).max)


def text_encoder_digest(model, frozen_part_only: bool = False) -> str:
    """A digest of everything that determines a row's text vector: the PLM's weights and the pooling.

    `frozen_part_only`: of what determines the frozen part's token states (`cache_text_states`): the weights below
    the top `text_trainable_layers` layers, which train and so must not key the cache.
    """
    encoder = model.flip.text_encoder
    skipped = ()
    if frozen_part_only:
        top = list(model.flip.top_text_layers())
        skipped = tuple(f"{name}." for name, module in encoder.named_modules() if any(module is layer for layer in top))
        digest = hashlib.sha256(f"{TEXT_STATES}:{model.config.text_trainable_layers}".encode())
    else:
        digest = hashlib.sha256(model.config.text_pooling.encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        if name.startswith(skipped):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _default_cache_dir() -> Path:
    import datasets

    return Path(datasets.config.HF_DATASETS_CACHE) / "flip_hf_text_embeds"


def cache_text_embeddings(dataset, model, batch_size: int = 256, cache_dir: str | Path | None = None,
                          desc: str = "Text vectors", bf16: bool = False):
    """`dataset` (encoded by `FlipProcessor` with text) plus a `text_embeds` column from `model`'s frozen PLM.

    Rows are sorted by length inside each map batch so that little of each forward pass is padding.
    Datasets held in memory are cached under `cache_dir` (default: the `datasets` cache). `bf16` runs the PLM
    under bfloat16 autocast: twice as fast on a CPU with AVX512-BF16 or AMX, for vectors whose cosine to the
    float32 ones stays above 0.9999 (all-MiniLM-L6-v2); they are cached apart from the float32 ones.
    """
    if not model.config.freeze_text_encoder:
        raise ValueError("Cached text vectors need a frozen PLM: load the model with freeze_text_encoder=True.")
    return _cache_text_column(dataset, model, TEXT_EMBEDS, text_encoder_digest(model), model.embed_text,
                              batch_size, cache_dir, desc, bf16)


def cache_text_states(dataset, model, batch_size: int = 256, cache_dir: str | Path | None = None,
                      desc: str = "Frozen text states", bf16: bool = False):
    """`dataset` plus a `text_states` column: each row's token states (tokens, H) below the PLM's top
    `text_trainable_layers` layers, which are all a model with trainable top layers needs of its PLM's frozen part.

    They are stored in float16 (half the disk of float32; the PLM's states lie well inside its range) and read back
    as numpy arrays, so a batch never becomes Python lists. Cached as `cache_text_embeddings` caches vectors: a rerun
    with the same data and frozen weights reads them back, whatever the top layers have learnt meanwhile.
    """
    from datasets import Array2D

    if not model.config.text_trainable_layers:
        raise ValueError("Cached text states feed a model whose top PLM layers train: load it with freeze_text_encoder=True "
                         "and text_trainable_layers > 0, or cache pooled vectors with cache_text_embeddings.")
    states = Array2D(shape=(None, model.config.text_config.hidden_size), dtype="float16")
    cached = _cache_text_column(dataset, model, TEXT_STATES, text_encoder_digest(model, frozen_part_only=True),
                                model.flip.frozen_text_states, batch_size, cache_dir, desc, bf16, states)
    return cached.with_format("numpy", columns=[TEXT_STATES], output_all_columns=True)


def _cache_text_column(dataset, model, column, digest, encode, batch_size, cache_dir, desc, bf16, feature=None):
    """`dataset.map` adding `column`: per row, `encode(input_ids, attention_mask)` (one vector, or one state per
    token when `feature` says so), keyed by the dataset's fingerprint and `digest`."""
    from datasets.fingerprint import Hasher

    for name in ("input_ids", "attention_mask"):
        if name not in dataset.column_names:
            raise ValueError(f"The dataset has no {name!r} column; encode it with FlipProcessor(text=True) first.")
    if column in dataset.column_names:
        dataset = dataset.remove_columns(column)
    fingerprint = Hasher.hash([dataset._fingerprint, digest, column] + (["bf16"] if bf16 else []))
    cache_file_name = None
    if not dataset.cache_files:  # in memory: datasets would not write a cache by itself
        folder = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        cache_file_name = str(folder / f"{fingerprint}.arrow")
    features = None
    if feature is not None:
        features = dataset.features.copy()
        features[column] = feature
    pad_id = model.config.pad_token_id or 0
    device = next(model.parameters()).device

    def embed(batch: dict[str, list]) -> dict[str, list | np.ndarray]:
        lengths = [len(ids) for ids in batch["input_ids"]]
        order = np.argsort(lengths, kind="stable")
        rows_out: list = [None] * len(lengths)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = max(lengths[i] for i in rows)
            input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
            for j, i in enumerate(rows):
                input_ids[j, : lengths[i]] = torch.tensor(batch["input_ids"][i])
                attention_mask[j, : lengths[i]] = torch.tensor(batch["attention_mask"][i])
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                output = encode(input_ids.to(device), attention_mask.to(device))
            output = output.float().cpu().numpy()
            if feature is not None and not np.abs(output).max() <= FLOAT16_MAX:
                raise ValueError(f"The PLM's frozen states reach {np.abs(output).max():.3g}, beyond float16's range "
                                 f"({FLOAT16_MAX:.0f}) in which cache_text_states stores them: train on input_ids (the frozen "
                                 "part then runs each step), or freeze the whole PLM and cache_text_embeddings.")
            for j, i in enumerate(rows):
                rows_out[i] = output[j, : lengths[i]].astype(np.float16) if feature is not None else output[j]
        return {column: rows_out if feature is not None else np.stack(rows_out)}

    was_training = model.training
    model.eval()
    try:
        return dataset.map(embed, batched=True, batch_size=4 * batch_size, new_fingerprint=fingerprint,
                           cache_file_name=cache_file_name, features=features, desc=desc)
    finally:
        model.train(was_training)


__all__ = ["cache_text_embeddings", "cache_text_states", "text_encoder_digest", "TEXT_EMBEDS", "TEXT_STATES"]
