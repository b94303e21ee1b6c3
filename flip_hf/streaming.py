"""Training on a split that is never held in memory: a stream of rows, encoded for the ID side a batch at a time.

`load_tabular(..., streaming=True)` gives each split as a `datasets.IterableDataset`; `FlipProcessor.fit` reads the
training stream once. `FlipStreamingDataset` then feeds that stream to training: every batch read from the stream
is encoded by the processor at once (`text=False`: FLIP_ID's inputs) into tensors. `FlipTrainer` takes it a whole
batch at a time, as it does `FlipTensorDataset`, so no step pays for per-row Python work.
"""

from __future__ import annotations

from collections.abc import Iterator

import datasets
import torch
from datasets.distributed import split_dataset_by_node
from torch.utils.data import IterableDataset, get_worker_info

from .processing_flip import FlipProcessor


class FlipStreamingDataset(IterableDataset):
    """A streamed split as encoded FLIP_ID rows: `feature_ids`, `numeric_positions` (with numeric fields), `labels`.

    Example:
        >>> raw, schema = load_tabular({"train": "train-*.parquet", ...}, schema, streaming=True)
        >>> processor.fit(raw["train"])
        >>> train = FlipStreamingDataset(raw["train"].shuffle(seed=42, buffer_size=100_000), processor,
        ...                              num_rows=processor.num_fit_rows)
        >>> FlipTrainer(model, args, train_dataset=train, data_collator=DataCollatorForFlipCTR(processor, text=False))

    Args:
        rows: a streaming `datasets.IterableDataset` in the data contract. Shuffle it with its own
            `shuffle(seed=..., buffer_size=...)` (files in a new order, rows mixed within the buffer): `set_epoch`,
            which `Trainer` calls, reaches it, so every epoch mixes anew, and reproducibly.
        processor: a fitted `FlipProcessor`.
        num_rows: rows per epoch (`processor.num_fit_rows` after fitting on this split): the dataset's length, from
            which `Trainer` counts the steps of an epoch. Without it the length is unknown and `max_steps` is needed.

    Iterating yields encoded rows one at a time (for a plain `DataLoader` or `Trainer`); `batches(n)` yields them
    as tensors of `n` rows, which is what `FlipTrainer` reads. Under DataLoader workers each reads its own share of
    the stream; under several processes, accelerate's batch dispatching (its default for iterable datasets) feeds
    each process from the stream that the main process reads.
    """

    def __init__(self, rows: datasets.IterableDataset, processor: FlipProcessor, num_rows: int | None = None):
        if not processor.is_fitted:
            raise ValueError("FlipStreamingDataset needs a fitted processor: call processor.fit(<the training stream>) first.")
        self.rows, self.processor, self.num_rows = rows, processor, num_rows

    def __len__(self) -> int:
        if self.num_rows is None:
            raise TypeError("This stream's length is unknown: pass num_rows= (processor.num_fit_rows after fitting on "
                            "it), or give the Trainer max_steps.")
        return self.num_rows

    def set_epoch(self, epoch: int) -> None:
        self.rows.set_epoch(epoch)

    def batches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """The stream as tensor batches of `batch_size` rows (the last one shorter), each encoded at once."""
        rows, worker = self.rows, get_worker_info()
        if worker is not None and worker.num_workers > 1:
            rows = split_dataset_by_node(rows, rank=worker.id, world_size=worker.num_workers)
        for batch in rows.iter(batch_size=batch_size):
            yield self.processor(batch, text=False, return_tensors="pt")

    def __iter__(self) -> Iterator[dict[str, list]]:
        for batch in self.batches(1024):
            yield from (dict(zip(batch, row)) for row in zip(*(column.tolist() for column in batch.values())))

    def batched(self, batch_size: int) -> StreamedBatches:
        """This stream as a dataset of whole batches, for a DataLoader with `batch_size=None`."""
        return StreamedBatches(self, batch_size)


class StreamedBatches(IterableDataset):
    """A `FlipStreamingDataset` as ready batches of `batch_size` rows: its length counts batches, `num_rows` rows."""

    def __init__(self, dataset: FlipStreamingDataset, batch_size: int):
        self.dataset, self.batch_size = dataset, batch_size

    @property
    def num_rows(self) -> int:
        return len(self.dataset)

    def __len__(self) -> int:
        return -(-self.num_rows // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self.dataset.batches(self.batch_size)
