"""FlipTensorDataset: whole batches by index slicing, equal to what the padding collator builds row by row."""

import numpy as np
import pytest
import torch
from datasets import Dataset
from tiny import tiny_rows
from transformers import TrainingArguments

from flip_hf import DataCollatorForFlipCTR, FlipConfig, FlipForCTR, FlipTensorDataset
from flip_hf.trainer import FlipTrainer


@pytest.fixture(scope="module")
def encoded(tiny_flip_processor):
    raw = Dataset.from_dict(tiny_rows(96, seed=3))
    return raw.map(tiny_flip_processor, batched=True, fn_kwargs={"text": False},
                   remove_columns=[c for c in raw.column_names if c != "user_id"])


def test_a_batch_equals_the_collated_rows(encoded, tiny_flip_processor):
    tensors = FlipTensorDataset.from_dataset(encoded)
    collator = DataCollatorForFlipCTR(tiny_flip_processor, text=False)
    indices = [5, 0, 77, 31, 5]
    batch = collator(tensors.__getitems__(indices))
    expected = collator([encoded[i] for i in indices])
    assert batch.keys() == expected.keys() == {"feature_ids", "numeric_positions", "labels"}
    for key in batch:
        assert batch[key].dtype == expected[key].dtype
        assert torch.equal(batch[key], expected[key])
    assert collator([tensors[i] for i in indices]).keys() == expected.keys()  # rows one by one still collate


def test_other_columns_are_read_by_name(encoded):
    tensors = FlipTensorDataset.from_dataset(encoded)
    assert tensors.column_names == ["feature_ids", "numeric_positions", "labels", "user_id"]
    assert list(tensors["user_id"]) == encoded["user_id"]
    assert tensors["labels"].tolist() == encoded["labels"]
    assert len(tensors) == len(encoded)


def test_rows_with_tokens_are_refused(tiny_flip_processor):
    raw = Dataset.from_dict(tiny_rows(8))
    with_tokens = raw.map(tiny_flip_processor, batched=True, remove_columns=raw.column_names)
    with pytest.raises(ValueError, match="rows carry tokens, which vary in length"):
        FlipTensorDataset.from_dataset(with_tokens)


def test_columns_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="one entry per row"):
        FlipTensorDataset({"feature_ids": torch.zeros(4, 2, dtype=torch.long)}, {"user_id": np.arange(3)})


def test_trainer_trains_the_same_on_both_datasets(tmp_path, encoded, tiny_flip_processor):
    """Same sampler, same batches, same updates: the tensor path changes the speed, not the training."""
    def train(dataset, name):
        torch.manual_seed(0)
        model = FlipForCTR(FlipConfig(fields=tiny_flip_processor.field_infos(), ctr_mode="id", backbone="dnn",
                                      embedding_size=8, embedding_l2=0.01))
        initial = {key: value.clone() for key, value in model.state_dict().items()}
        args = TrainingArguments(output_dir=str(tmp_path / name), per_device_train_batch_size=16, learning_rate=1e-2,
                                 num_train_epochs=2, report_to="none", save_strategy="no", use_cpu=True, seed=0,
                                 disable_tqdm=True)
        trainer = FlipTrainer(model=model, args=args, train_dataset=dataset,
                              data_collator=DataCollatorForFlipCTR(tiny_flip_processor, text=False))
        trainer.train()
        return initial, model.state_dict()

    initial, rows = train(encoded, "rows")
    _, tensors = train(FlipTensorDataset.from_dataset(encoded), "tensors")
    assert all(torch.allclose(rows[key], tensors[key], atol=1e-6) for key in rows)
    assert not torch.allclose(rows["id_head.weight"], initial["id_head.weight"])  # it did train
