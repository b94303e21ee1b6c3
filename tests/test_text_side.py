"""The text side: pooling (and following the checkpoint's own), a frozen PLM, cached text vectors,
ID-text alignment normalisation and the ICL projection head. Tiny BERT, no network."""

import json

import pytest
import torch
from datasets import Dataset
from tiny import tiny_rows
from transformers import TrainingArguments

from flip_hf import DataCollatorForFlipCTR, DataCollatorForFlipPretraining, FlipConfig, FlipForCTR, FlipForPretraining
from flip_hf.text_cache import cache_text_embeddings, text_encoder_digest
from flip_hf.trainer import FlipTrainer


def feature_rows(processor, num_rows, seed=0):
    """Processor outputs as a list of per-row dicts, the way a data loader hands them to a collator."""
    encoded = processor(tiny_rows(num_rows, seed=seed))
    return [dict(zip(encoded, values)) for values in zip(*encoded.values())]


def encoded_rows(processor, num_rows=24, seed=0):
    return Dataset.from_dict(tiny_rows(num_rows, seed=seed)).map(processor, batched=True, remove_columns=list(tiny_rows(1)))


def with_pooling_file(directory, mean: bool):
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_mean_tokens": mean, "pooling_mode_cls_token": not mean})
    )
    return directory


# ------------------------------------------------------------------------------------------ pooling
def test_pooling_follows_the_checkpoint_declaration(tmp_path, tiny_text_model_dir, tiny_flip_processor):
    import shutil

    declared_mean = with_pooling_file(shutil.copytree(tiny_text_model_dir, tmp_path / "mean"), mean=True)
    declared_cls = with_pooling_file(shutil.copytree(tiny_text_model_dir, tmp_path / "cls"), mean=False)
    assert FlipForCTR.from_text_pretrained(declared_mean, tiny_flip_processor).config.text_pooling == "mean"
    assert FlipForCTR.from_text_pretrained(declared_cls, tiny_flip_processor).config.text_pooling == "cls"
    # nothing declared: the first token, as BERT's own classifiers do
    assert FlipForCTR.from_text_pretrained(tiny_text_model_dir, tiny_flip_processor).config.text_pooling == "cls"
    # an explicit choice wins over the declaration
    model = FlipForCTR.from_text_pretrained(declared_mean, tiny_flip_processor, text_pooling="cls")
    assert model.config.text_pooling == "cls"


def test_mean_pooling_ignores_padding(make_tiny_flip, tiny_flip_processor):
    model = make_tiny_flip("text", text_pooling="mean")
    row = tiny_flip_processor(tiny_rows(1), return_tensors="pt")
    ids, mask = row["input_ids"], row["attention_mask"]
    padded_ids = torch.cat([ids, torch.full((1, 5), tiny_flip_processor.tokenizer.pad_token_id)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(1, 5, dtype=mask.dtype)], dim=1)
    with torch.no_grad():
        states = model.flip.encode_text(ids, mask)
        torch.testing.assert_close(model.embed_text(ids, mask), states.mean(dim=1))
        torch.testing.assert_close(model.embed_text(padded_ids, padded_mask), states.mean(dim=1), atol=1e-5, rtol=1e-5)
        # cls pooling reads the first token only
        model.config.text_pooling = "cls"
        torch.testing.assert_close(model.embed_text(ids, mask), states[:, 0])


def test_unknown_pooling_and_projection_head_are_rejected():
    with pytest.raises(ValueError, match="text_pooling 'max'"):
        FlipConfig(text_pooling="max")
    with pytest.raises(ValueError, match="projection_head 'deep'"):
        FlipConfig(projection_head="deep")
    with pytest.raises(ValueError, match="text_head_hidden_size"):
        FlipConfig(text_head_hidden_size=-1)


# --------------------------------------------------------------------------------- frozen PLM
def test_frozen_plm_is_not_trained_and_never_drops_out(make_tiny_flip):
    model = make_tiny_flip("joint", freeze_text_encoder=True).train()
    assert not any(p.requires_grad for p in model.flip.text_encoder.parameters())
    assert not model.flip.text_encoder.training  # cached vectors were computed in eval mode: training sees the same
    assert model.id_head.training and model.fusion_alpha.requires_grad


def test_text_embeds_give_the_same_logits_as_the_tokens(make_tiny_flip, tiny_flip_processor):
    model = make_tiny_flip("joint", freeze_text_encoder=True, text_head_hidden_size=8)
    batch = DataCollatorForFlipCTR(tiny_flip_processor)(feature_rows(tiny_flip_processor, 6))
    with torch.no_grad():
        from_tokens = model(**batch)
        vectors = model.embed_text(batch["input_ids"], batch["attention_mask"])
        from_vectors = model(feature_ids=batch["feature_ids"], text_embeds=vectors, labels=batch["labels"])
    torch.testing.assert_close(from_vectors.logits, from_tokens.logits)
    torch.testing.assert_close(from_vectors.loss, from_tokens.loss)


def test_text_head_standardises_vectors_with_a_common_offset(make_tiny_flip):
    """Mean-pooled sentence vectors share a large offset: the head must see their variation at unit scale."""
    model = make_tiny_flip("text", freeze_text_encoder=True, text_head_hidden_size=8).train()
    hidden = model.config.text_config.hidden_size
    vectors = 10.0 + 0.1 * torch.randn(64, hidden, generator=torch.Generator().manual_seed(0))
    standardised = model.text_norm(vectors)
    torch.testing.assert_close(standardised.mean(0), torch.zeros(hidden), atol=1e-3, rtol=0)
    torch.testing.assert_close(standardised.std(0, unbiased=False), torch.ones(hidden), atol=1e-2, rtol=0)
    # a dataset's last batch may hold one row: it is standardised with the running statistics, not refused
    assert model(text_embeds=vectors[:1], labels=torch.ones(1)).loss.isfinite()

    plain = make_tiny_flip("text", freeze_text_encoder=True, text_head_batch_norm=False)
    assert plain.text_norm is None


def test_a_checkpoint_from_before_the_standardising_head_keeps_its_outputs(make_tiny_flip, tmp_path):
    old = make_tiny_flip("text", freeze_text_encoder=True, text_head_hidden_size=8, text_head_batch_norm=False)
    old.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["text_head_batch_norm"]  # what a checkpoint saved before the option holds
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = FlipForCTR.from_pretrained(tmp_path).eval()
    assert loaded.text_norm is not None  # the default now standardises, starting from the identity
    vectors = torch.randn(6, old.config.text_config.hidden_size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(loaded(text_embeds=vectors).logits, old(text_embeds=vectors).logits, atol=1e-4, rtol=1e-4)


def test_text_head_statistics_survive_save_and_load(make_tiny_flip, tmp_path):
    model = make_tiny_flip("text", freeze_text_encoder=True).train()
    vectors = 3.0 + torch.randn(32, model.config.text_config.hidden_size, generator=torch.Generator().manual_seed(1))
    model(text_embeds=vectors)  # a training step's forward moves the running statistics
    model.eval().save_pretrained(tmp_path)
    loaded = FlipForCTR.from_pretrained(tmp_path).eval()
    assert loaded.text_norm.running_mean.abs().sum() > 0
    with torch.no_grad():
        torch.testing.assert_close(loaded(text_embeds=vectors).logits, model(text_embeds=vectors).logits)


def test_text_embeds_need_a_frozen_plm(make_tiny_flip):
    model = make_tiny_flip("text")
    with pytest.raises(ValueError, match="freeze_text_encoder=True"):
        model(text_embeds=torch.zeros(2, model.config.text_config.hidden_size))


# ----------------------------------------------------------------------------- cached vectors
def test_cached_vectors_match_the_model_and_are_reused(tmp_path, make_tiny_flip, tiny_flip_processor, monkeypatch):
    model = make_tiny_flip("text", freeze_text_encoder=True, text_pooling="mean")
    dataset = encoded_rows(tiny_flip_processor)
    cached = cache_text_embeddings(dataset, model, batch_size=5, cache_dir=tmp_path)
    batch = DataCollatorForFlipCTR(tiny_flip_processor)([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        expected = model.embed_text(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(torch.tensor(cached["text_embeds"]), expected, atol=1e-5, rtol=1e-5)
    assert len(list(tmp_path.glob("*.arrow"))) == 1

    # the same data and PLM: read back, the PLM is not run again
    monkeypatch.setattr(type(model), "embed_text", lambda *args: pytest.fail("recomputed a cached vector"))
    again = cache_text_embeddings(dataset, model, batch_size=5, cache_dir=tmp_path)
    assert again["text_embeds"] == cached["text_embeds"]


def test_bf16_vectors_are_close_to_float32_and_cached_apart(tmp_path, make_tiny_flip, tiny_flip_processor):
    model = make_tiny_flip("text", freeze_text_encoder=True, text_pooling="mean")
    dataset = encoded_rows(tiny_flip_processor)
    full = torch.tensor(cache_text_embeddings(dataset, model, batch_size=5, cache_dir=tmp_path)["text_embeds"])
    half = torch.tensor(cache_text_embeddings(dataset, model, batch_size=5, cache_dir=tmp_path, bf16=True)["text_embeds"])
    assert not torch.equal(half, full)  # computed anew in bfloat16, not read back from the float32 cache
    assert torch.nn.functional.cosine_similarity(half, full).min() > 0.999
    assert len(list(tmp_path.glob("*.arrow"))) == 2


def test_changed_plm_weights_or_pooling_change_the_cache_key(make_tiny_flip):
    model = make_tiny_flip("text", freeze_text_encoder=True)
    before = text_encoder_digest(model)
    model.config.text_pooling = "mean"
    assert text_encoder_digest(model) != before
    model.config.text_pooling = "cls"
    with torch.no_grad():
        model.flip.text_encoder.get_input_embeddings().weight[5, 0] += 1.0
    assert text_encoder_digest(model) != before


def test_caching_needs_a_frozen_plm_and_tokens(make_tiny_flip, tiny_flip_processor, tmp_path):
    dataset = encoded_rows(tiny_flip_processor)
    with pytest.raises(ValueError, match="freeze_text_encoder=True"):
        cache_text_embeddings(dataset, make_tiny_flip("text"), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="'input_ids'"):
        cache_text_embeddings(dataset.remove_columns("input_ids"), make_tiny_flip("text", freeze_text_encoder=True), cache_dir=tmp_path)


def test_joint_model_trains_on_cached_vectors_without_touching_the_plm(make_tiny_flip, tiny_flip_processor, tmp_path):
    model = make_tiny_flip("joint", freeze_text_encoder=True, embedding_size=8)
    plm_before = {k: v.clone() for k, v in model.flip.text_encoder.state_dict().items()}
    head_before = model.text_head.weight.detach().clone()
    train = cache_text_embeddings(encoded_rows(tiny_flip_processor, 64), model, cache_dir=tmp_path)
    args = TrainingArguments(str(tmp_path / "out"), per_device_train_batch_size=16, max_steps=4, learning_rate=1e-2,
                             report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True)
    batches = []
    collator = DataCollatorForFlipCTR(tiny_flip_processor)
    FlipTrainer(model=model, args=args, train_dataset=train,
                data_collator=lambda rows: batches.append(collator(rows)) or batches[-1]).train()
    assert "text_embeds" in batches[0] and "input_ids" not in batches[0]  # the PLM never ran
    for name, value in model.flip.text_encoder.state_dict().items():
        torch.testing.assert_close(value, plm_before[name])
    assert not torch.equal(model.text_head.weight, head_before)


# ------------------------------------------------------------------------------- alignment
def test_alignment_norm_and_mlp_projection(tiny_flip_processor):
    from tiny import tiny_bert_config

    tokenizer = tiny_flip_processor.tokenizer
    common = dict(fields=tiny_flip_processor.field_infos(), text_config=tiny_bert_config(len(tokenizer)), backbone="dnn",
                  pad_token_id=tokenizer.pad_token_id, mask_token_id=tokenizer.mask_token_id)
    model = FlipForPretraining(FlipConfig(projection_head="mlp", **common))
    assert isinstance(model.align_norm, torch.nn.LayerNorm)
    assert isinstance(model.icl_head.id_projection, torch.nn.Sequential)
    batch = DataCollatorForFlipPretraining(tiny_flip_processor)(feature_rows(tiny_flip_processor, 8))
    with torch.no_grad():
        h_id = model.flip.encode_ids(batch["feature_ids"])
        normed = model.align_norm(h_id)
    # h_id starts tiny (std 1e-4 embeddings); the heads see it at unit scale
    assert h_id.std() < 1e-3
    torch.testing.assert_close(normed.std(dim=1, unbiased=False), torch.ones(len(normed)), atol=1e-3, rtol=0)
    model(**batch).loss.backward()
    assert model.icl_head.id_projection[0].weight.grad.abs().sum() > 0

    plain = FlipForPretraining(FlipConfig(align_layer_norm=False, **common))
    assert isinstance(plain.align_norm, torch.nn.Identity)
