"""Collators: FLIP's joint field-level masking for pretraining, dynamic padding for CTR."""

import pytest
import torch
from tiny import TINY_TOKENIZERS, tiny_bert_tokenizer, tiny_rows, tiny_schema

from flip_hf import DataCollatorForFlipCTR, DataCollatorForFlipPretraining, FieldSpec, FlipProcessor, TabularSchema
from flip_hf.collator import IGNORE_INDEX
from flip_hf.configuration_flip import MASK_ID, NO_FIELD, PAD_ID



@pytest.fixture(scope="module", params=sorted(TINY_TOKENIZERS))
def processor(request):
    return FlipProcessor(TINY_TOKENIZERS[request.param](), tiny_schema()).fit(tiny_rows(64))


@pytest.fixture(scope="module")
def wide_processor():
    """20 fields (round(0.15 * 20) = 3 per sample), two of them multi-valued with 3 slots."""
    names = [f"f{i:02d}" for i in range(20)]
    fields = [FieldSpec(n, kind="multi_categorical" if n in ("f05", "f13") else "categorical") for n in names]
    columns = {}
    for n, spec in zip(names, fields):
        if spec.kind == "multi_categorical":
            columns[n] = [[f"v{(i + j) % 4}" for j in range(1 + i % 3)] for i in range(48)]
        else:
            columns[n] = [f"v{(i * (int(n[1:]) + 1)) % 5}" for i in range(48)]
    columns["label"] = [i % 2 for i in range(48)]
    processor = FlipProcessor(tiny_bert_tokenizer(), TabularSchema(fields), max_length=512).fit(columns)
    return processor, columns


def encoded_rows(processor, columns):
    encoded = processor(columns)
    return [dict(zip(encoded, values)) for values in zip(*encoded.values())]


def check_field_masking(processor, batch, expected_k):
    """Every sample's masked positions are exactly all tokens of k whole fields; labels and inputs match."""
    mask_token = processor.tokenizer.mask_token_id
    input_ids, masked, labels = batch["input_ids"], batch["masked_input_ids"], batch["mlm_labels"]
    field_ids, attention = batch["token_field_ids"], batch["attention_mask"]
    chosen_per_sample = []
    for i in range(len(input_ids)):
        positions = set((labels[i] != IGNORE_INDEX).nonzero().flatten().tolist())
        chosen = {int(field_ids[i, p]) for p in positions}
        assert NO_FIELD not in chosen
        assert len(chosen) == expected_k
        union = {p for p in range(input_ids.shape[1]) if int(field_ids[i, p]) in chosen}
        assert positions == union
        assert all(attention[i, p] == 1 for p in positions)  # padding is never masked
        is_masked = labels[i] != IGNORE_INDEX
        assert torch.equal(labels[i][is_masked], input_ids[i][is_masked])
        assert (masked[i][is_masked] == mask_token).all()
        assert torch.equal(masked[i][~is_masked], input_ids[i][~is_masked])
        chosen_per_sample.append(frozenset(chosen))
    return chosen_per_sample


def check_id_masking(processor, batch, expected_k):
    slots = processor.max_values
    starts = [sum(slots[:f]) for f in range(len(slots))]
    clean, masked, labels = batch["feature_ids"], batch["masked_feature_ids"], batch["mtm_labels"]
    chosen_per_sample = []
    for i in range(len(clean)):
        chosen = set()
        for f, (start, count) in enumerate(zip(starts, slots)):
            span = slice(start, start + count)
            if masked[i, start] == MASK_ID:
                chosen.add(f)
                assert (masked[i, start + 1 : start + count] == PAD_ID).all()
                original = clean[i, span]
                expected = torch.where(original == PAD_ID, torch.full_like(original, IGNORE_INDEX), original)
                assert torch.equal(labels[i, span], expected)
                assert (labels[i, span] != IGNORE_INDEX).any()
            else:
                assert torch.equal(masked[i, span], clean[i, span])
                assert (labels[i, span] == IGNORE_INDEX).all()
        assert len(chosen) == expected_k
        chosen_per_sample.append(frozenset(chosen))
    return chosen_per_sample


# ------------------------------------------------------------------------------------ field masking
def test_text_and_id_masks_are_field_level(processor):
    collator = DataCollatorForFlipPretraining(processor, seed=0)
    features = encoded_rows(processor, tiny_rows(32, seed=1))
    batch = collator(features)
    assert "labels" not in batch
    assert set(batch) >= {"input_ids", "attention_mask", "token_field_ids", "feature_ids", "masked_input_ids",
                          "mlm_labels", "masked_feature_ids", "mtm_labels"}
    assert (batch["attention_mask"] == 0).any()  # rows of different lengths were padded
    expected_k = max(1, round(0.15 * len(processor.fields)))
    check_field_masking(processor, batch, expected_k)
    check_id_masking(processor, batch, expected_k)


def test_wide_schema_masks_round_ratio_fields_and_choices_are_independent(wide_processor):
    processor, columns = wide_processor
    features = encoded_rows(processor, columns)
    collator = DataCollatorForFlipPretraining(processor, seed=1)
    batch = collator(features)
    assert round(0.15 * 20) == 3
    text_choices = check_field_masking(processor, batch, 3)
    id_choices = check_id_masking(processor, batch, 3)
    assert any(t != d for t, d in zip(text_choices, id_choices))  # independent draws
    assert len(set(text_choices)) > 1  # per sample, not one choice for the whole batch
    # every field gets chosen sometimes
    more = [collator(features) for _ in range(5)]
    seen = set().union(*text_choices, *(c for b in more for c in check_field_masking(processor, b, 3)))
    assert seen == set(range(20))
    ratio = DataCollatorForFlipPretraining(processor, text_mask_ratio=0.5, id_mask_ratio=0.01,
                                           seed=2)(features)
    check_field_masking(processor, ratio, 10)
    check_id_masking(processor, ratio, 1)  # at least one field


def test_multi_valued_mtm_labels_cover_all_present_values(wide_processor):
    processor, columns = wide_processor
    features = encoded_rows(processor, columns)
    collator = DataCollatorForFlipPretraining(processor, id_mask_ratio=1.0, seed=0)
    batch = collator(features)
    check_id_masking(processor, batch, 20)
    start = sum(processor.max_values[:5])  # f05: 1..3 values in 3 slots
    labels = batch["mtm_labels"][:, start : start + 3]
    counts = (labels != IGNORE_INDEX).sum(1).tolist()
    assert counts == [1 + i % 3 for i in range(48)]


def test_token_level_masking(processor):
    collator = DataCollatorForFlipPretraining(processor, masking="token", seed=0)
    batch = collator(encoded_rows(processor, tiny_rows(32, seed=2)))
    is_masked = batch["mlm_labels"] != IGNORE_INDEX
    assert (batch["token_field_ids"][is_masked] != NO_FIELD).all()  # value tokens only
    assert is_masked.sum(1).min() >= 1
    assert torch.equal(batch["mlm_labels"][is_masked], batch["input_ids"][is_masked])
    assert (batch["masked_input_ids"][is_masked] == processor.tokenizer.mask_token_id).all()
    assert torch.equal(batch["masked_input_ids"][~is_masked], batch["input_ids"][~is_masked])
    # not whole fields: some sample has a field only partly masked
    partial = False
    for i in range(len(is_masked)):
        for f in set(batch["token_field_ids"][i][is_masked[i]].tolist()):
            in_field = batch["token_field_ids"][i] == f
            partial |= bool((in_field & ~is_masked[i]).any())
    assert partial


def test_token_masking_masks_at_least_one_token_even_at_a_tiny_ratio(processor):
    collator = DataCollatorForFlipPretraining(processor, masking="token", text_mask_ratio=1e-6,
                                              seed=0)
    batch = collator(encoded_rows(processor, tiny_rows(16, seed=3)))
    is_masked = batch["mlm_labels"] != IGNORE_INDEX
    assert is_masked.sum(1).tolist() == [1] * 16
    assert (batch["token_field_ids"][is_masked] != NO_FIELD).all()


# ----------------------------------------------------------------------------------- reproducibility
MASK_KEYS = ("masked_input_ids", "mlm_labels", "masked_feature_ids", "mtm_labels")


@pytest.mark.parametrize("masking", ["field", "token"])
def test_masks_are_keyed_by_seed_and_batch_not_by_the_global_rng(processor, masking):
    features = encoded_rows(processor, tiny_rows(32, seed=4))

    def draw(seed=0, rows=features):
        return DataCollatorForFlipPretraining(processor, masking=masking, seed=seed)(rows)

    torch.manual_seed(1)
    first = draw()
    torch.manual_seed(2)  # what a data loader's prefetch or a resumed run does to the global RNG
    second = draw()
    assert all(torch.equal(first[k], second[k]) for k in MASK_KEYS)
    assert any(not torch.equal(first[k], draw(seed=1)[k]) for k in MASK_KEYS)
    reordered = draw(rows=features[1:] + features[:1])  # another batch (e.g. the next epoch's shuffle)
    assert any(not torch.equal(first[k][1:], reordered[k][:-1]) for k in MASK_KEYS)


def test_seed_none_uses_the_global_rng(processor):
    features = encoded_rows(processor, tiny_rows(32, seed=4))
    collator = DataCollatorForFlipPretraining(processor, seed=None)
    torch.manual_seed(123)
    a = collator(features)
    torch.manual_seed(123)
    b = collator(features)
    c = collator(features)  # the global RNG moved on
    assert all(torch.equal(a[k], b[k]) for k in MASK_KEYS)
    assert any(not torch.equal(a[k], c[k]) for k in MASK_KEYS)


def test_pretraining_collator_errors(processor):
    with pytest.raises(ValueError, match="field, token"):
        DataCollatorForFlipPretraining(processor, masking="span")
    with pytest.raises(ValueError, match="text=True"):
        DataCollatorForFlipPretraining(processor, text=False)


# -------------------------------------------------------------------------------------------- CTR
def test_ctr_collator_pads_to_the_longest_row(processor):
    features = encoded_rows(processor, tiny_rows(9, seed=5))
    batch = DataCollatorForFlipCTR(processor)(features)
    lengths = [len(f["input_ids"]) for f in features]
    assert batch["input_ids"].shape == (9, max(lengths)) and min(lengths) < max(lengths)
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [float(f["labels"]) for f in features]
    assert batch["feature_ids"].dtype == torch.long
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        assert batch["input_ids"][i, :n].tolist() == f["input_ids"]
        assert (batch["input_ids"][i, n:] == processor.tokenizer.pad_token_id).all()
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (max(lengths) - n)
        assert batch["token_field_ids"][i].tolist() == f["token_field_ids"] + [NO_FIELD] * (max(lengths) - n)
    padded = DataCollatorForFlipCTR(processor, pad_to_multiple_of=16)(features)
    assert padded["input_ids"].shape[1] % 16 == 0 and padded["input_ids"].shape[1] >= max(lengths)


def test_ctr_collator_text_false_and_raw_rows(processor, monkeypatch):
    columns = tiny_rows(6, seed=6)
    raw = [dict(zip(columns, values)) for values in zip(*columns.values())]
    from_raw = DataCollatorForFlipCTR(processor)(raw)
    from_encoded = DataCollatorForFlipCTR(processor)(encoded_rows(processor, columns))
    assert set(from_raw) == set(from_encoded) == {"feature_ids", "numeric_positions", "input_ids", "attention_mask",
                                                  "token_field_ids", "labels"}
    assert all(torch.equal(from_raw[k], from_encoded[k]) for k in from_raw)

    ids_only = DataCollatorForFlipCTR(processor, text=False)
    assert set(ids_only(encoded_rows(processor, columns))) == {"feature_ids", "numeric_positions", "labels"}

    def refuse(*args, **kwargs):
        raise AssertionError("text=False must not tokenize")

    monkeypatch.setattr(processor, "encode_text", refuse)
    out = ids_only(raw)
    assert set(out) == {"feature_ids", "numeric_positions", "labels"}
    assert torch.equal(out["feature_ids"], from_raw["feature_ids"]) and out["labels"].dtype == torch.float32
    unlabeled = [{k: v for k, v in row.items() if k != "label"} for row in raw]
    assert set(ids_only(unlabeled)) == {"feature_ids", "numeric_positions"}
