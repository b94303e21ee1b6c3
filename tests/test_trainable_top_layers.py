"""A frozen PLM whose top k layers train (`text_trainable_layers`): the split forward, what trains, the cached
token states of the frozen part, and training on them. Tiny BERT and RoBERTa, no network."""

import pytest
import torch
from datasets import Dataset
from tiny import tiny_bert_config, tiny_roberta_config, tiny_rows
from transformers import DistilBertConfig, TrainingArguments

from flip_hf import DataCollatorForFlipCTR, FlipConfig, FlipForCTR
from flip_hf.text_cache import cache_text_states, text_encoder_digest
from flip_hf.trainer import FlipTrainer


def encoded_rows(processor, num_rows=24, seed=0):
    return Dataset.from_dict(tiny_rows(num_rows, seed=seed)).map(processor, batched=True, remove_columns=list(tiny_rows(1)))


def token_batch(processor, num_rows=6):
    """Rows of different lengths, padded: the split forward must mask the padding as the PLM does."""
    dataset = encoded_rows(processor, num_rows)
    return DataCollatorForFlipCTR(processor)([dataset[i] for i in range(num_rows)])


def top_layer_model(make_tiny_flip, mode="joint", k=1, **overrides):
    return make_tiny_flip(mode, freeze_text_encoder=True, text_trainable_layers=k, text_pooling="mean", **overrides)


# ------------------------------------------------------------------------------------ the split
@pytest.mark.parametrize("k", [1, 2])
def test_frozen_part_then_top_layers_give_the_plm_own_states(make_tiny_flip, tiny_flip_processor, k):
    model = top_layer_model(make_tiny_flip, k=k, text_config=tiny_bert_config(len(tiny_flip_processor.tokenizer), num_hidden_layers=3))
    batch = token_batch(tiny_flip_processor)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert (mask == 0).any()  # the batch has padding
    with torch.no_grad():
        whole = model.flip.encode_text(ids, mask)
        split = model.flip.top_text_states(model.flip.frozen_text_states(ids, mask), mask)
        real = mask.bool()
        torch.testing.assert_close(split[real], whole[real], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.embed_text(ids, mask), model.flip.pool_text(whole, mask), atol=1e-5, rtol=1e-5)


def test_the_split_follows_roberta_positions_too(tiny_flip_processor):
    """RoBERTa numbers positions from its padding id: the frozen part must embed the tokens as its own forward does."""
    tokenizer = tiny_flip_processor.tokenizer
    config = FlipConfig(fields=tiny_flip_processor.field_infos(), ctr_mode="text", backbone="dnn", freeze_text_encoder=True,
                        text_trainable_layers=1, text_config=tiny_roberta_config(len(tokenizer), tokenizer.pad_token_id),
                        pad_token_id=tokenizer.pad_token_id, mask_token_id=tokenizer.mask_token_id)
    torch.manual_seed(0)
    model = FlipForCTR(config).eval()
    batch = token_batch(tiny_flip_processor)
    with torch.no_grad():
        torch.testing.assert_close(model.embed_text(batch["input_ids"], batch["attention_mask"]),
                                   model.flip.pool_text(model.flip.encode_text(batch["input_ids"], batch["attention_mask"]),
                                                        batch["attention_mask"]), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------- what trains
def test_only_the_top_layers_of_the_plm_train(make_tiny_flip, tiny_flip_processor):
    model = top_layer_model(make_tiny_flip).train()
    layers = model.flip.text_encoder.encoder.layer
    trainable = {n for n, p in model.flip.text_encoder.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("encoder.layer.1.") for n in trainable)
    assert layers[1].training and not layers[0].training and not model.flip.text_encoder.embeddings.training
    model(**token_batch(tiny_flip_processor)).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layers[1].parameters())
    assert all(p.grad is None for p in layers[0].parameters())
    # the text side that side stopping freezes includes the layers that train
    assert model.text_side()[0] is not None and list(model.text_side()[0].parameters())[0] is next(layers[1].parameters())
    model.freeze_text_side()
    assert not any(p.requires_grad for p in layers[1].parameters()) and not layers[1].training


def test_trainable_layers_are_checked_against_the_plm(tiny_flip_processor):
    tokenizer = tiny_flip_processor.tokenizer
    common = dict(fields=tiny_flip_processor.field_infos(), pad_token_id=tokenizer.pad_token_id)
    bert = tiny_bert_config(len(tokenizer))
    with pytest.raises(ValueError, match="freeze_text_encoder=True"):
        FlipConfig(text_config=bert, text_trainable_layers=1, **common)
    with pytest.raises(ValueError, match="between 0 and the PLM's 2 layers"):
        FlipConfig(text_config=bert, freeze_text_encoder=True, text_trainable_layers=3, **common)
    with pytest.raises(ValueError, match=">= 0, got -1"):
        FlipConfig(text_config=bert, freeze_text_encoder=True, text_trainable_layers=-1, **common)
    # kept layers are counted after text_num_layers has cut the PLM
    with pytest.raises(ValueError, match="PLM's 1 layers"):
        FlipConfig(text_config=tiny_bert_config(len(tokenizer)), text_num_layers=1, freeze_text_encoder=True,
                   text_trainable_layers=2, **common)
    distilbert = DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=2, hidden_dim=37)
    with pytest.raises(ValueError, match="'distilbert'"):
        FlipConfig(text_config=distilbert, freeze_text_encoder=True, text_trainable_layers=1, **common)


def test_text_inputs_must_suit_the_layers_that_train(make_tiny_flip, tiny_flip_processor):
    hidden = 32
    frozen = make_tiny_flip("text", freeze_text_encoder=True)
    with pytest.raises(ValueError, match="text_trainable_layers > 0"):
        frozen(text_states=torch.zeros(2, 4, hidden), attention_mask=torch.ones(2, 4, dtype=torch.long))
    model = top_layer_model(make_tiny_flip, "text").train()
    with pytest.raises(ValueError, match="text_states"):  # pooled vectors would skip the layers that learn
        model(text_embeds=torch.zeros(2, hidden), labels=torch.ones(2))
    model.eval()  # at inference the top layers are fixed: vectors cached per item serve as well
    assert model(text_embeds=torch.zeros(2, hidden)).logits.shape == (2,)


# ------------------------------------------------------------------------------- cached states
def test_cached_states_give_the_tokens_logits_and_are_reused(tmp_path, make_tiny_flip, tiny_flip_processor, monkeypatch):
    model = top_layer_model(make_tiny_flip)
    dataset = encoded_rows(tiny_flip_processor)
    cached = cache_text_states(dataset, model, batch_size=5, cache_dir=tmp_path)
    collator = DataCollatorForFlipCTR(tiny_flip_processor)
    from_states = collator([cached[i] for i in range(len(cached))])
    from_tokens = collator([dataset[i] for i in range(len(dataset))])
    assert "input_ids" not in from_states and from_states["text_states"].shape[:2] == from_tokens["input_ids"].shape
    torch.testing.assert_close(from_states["attention_mask"], from_tokens["attention_mask"])
    with torch.no_grad():  # float16 storage: close, not equal
        torch.testing.assert_close(model(**from_states).logits, model(**from_tokens).logits, atol=2e-3, rtol=2e-3)

    # what the top layers learn does not touch the cache key; a change below them does
    before = text_encoder_digest(model, frozen_part_only=True)
    with torch.no_grad():
        model.flip.text_encoder.encoder.layer[1].output.dense.weight.add_(1.0)
    assert text_encoder_digest(model, frozen_part_only=True) == before
    monkeypatch.setattr(type(model.flip), "frozen_text_states", lambda *args: pytest.fail("recomputed cached states"))
    again = cache_text_states(dataset, model, batch_size=5, cache_dir=tmp_path)
    assert all((a == b).all() for a, b in zip(again["text_states"], cached["text_states"]))
    with torch.no_grad():
        model.flip.text_encoder.encoder.layer[0].output.dense.weight.add_(1.0)
    assert text_encoder_digest(model, frozen_part_only=True) != before


def test_states_are_cached_only_for_a_model_with_trainable_layers(make_tiny_flip, tiny_flip_processor, tmp_path):
    with pytest.raises(ValueError, match="text_trainable_layers > 0"):
        cache_text_states(encoded_rows(tiny_flip_processor), make_tiny_flip("text", freeze_text_encoder=True), cache_dir=tmp_path)


def test_states_beyond_float16_are_refused_not_stored_as_infinity(make_tiny_flip, tiny_flip_processor, tmp_path):
    model = top_layer_model(make_tiny_flip)
    with torch.no_grad():
        model.flip.text_encoder.encoder.layer[0].output.LayerNorm.weight.fill_(1e6)
    with pytest.raises(ValueError, match="beyond float16's range"):
        cache_text_states(encoded_rows(tiny_flip_processor), model, cache_dir=tmp_path)


def test_states_pad_to_a_multiple(make_tiny_flip, tiny_flip_processor, tmp_path):
    cached = cache_text_states(encoded_rows(tiny_flip_processor, 4), top_layer_model(make_tiny_flip), cache_dir=tmp_path)
    batch = DataCollatorForFlipCTR(tiny_flip_processor, pad_to_multiple_of=16)([cached[i] for i in range(4)])
    assert batch["text_states"].shape[1] % 16 == 0 and batch["attention_mask"].shape == batch["text_states"].shape[:2]
    lengths = [len(cached[i]["text_states"]) for i in range(4)]
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths
    assert batch["text_states"][batch["attention_mask"] == 0].abs().sum() == 0


# ------------------------------------------------------------------------------------- training
def test_joint_model_trains_its_top_layer_on_cached_states(make_tiny_flip, tiny_flip_processor, tmp_path):
    model = top_layer_model(make_tiny_flip, embedding_size=8)
    before = {k: v.clone() for k, v in model.flip.text_encoder.state_dict().items()}
    train = cache_text_states(encoded_rows(tiny_flip_processor, 64), model, cache_dir=tmp_path)
    args = TrainingArguments(str(tmp_path / "out"), per_device_train_batch_size=16, max_steps=4, learning_rate=1e-2,
                             report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True,
                             remove_unused_columns=False)
    batches = []
    collator = DataCollatorForFlipCTR(tiny_flip_processor)
    FlipTrainer(model=model, args=args, train_dataset=train,
                data_collator=lambda rows: batches.append(collator(rows)) or batches[-1]).train()
    assert "text_states" in batches[0] and "input_ids" not in batches[0]  # the frozen part never ran
    after = model.flip.text_encoder.state_dict()
    moved = {k for k in after if not torch.equal(after[k], before[k])}
    assert moved and all(k.startswith("encoder.layer.1.") for k in moved)
