"""Tiny offline building blocks for tests: tokenizers, PLM configs, a schema and rows.

Everything is built in memory, so no test touches the network.
"""

from __future__ import annotations

import json
import random
import string

from transformers import BertConfig, BertTokenizer, RobertaConfig, RobertaTokenizer

from flip_hf.schema import FieldSpec, TabularSchema

WORDS = ["user", "id", "is", "are", "gender", "male", "female", "age", "title", "genres", "unknown"]
CHARACTERS = list(string.ascii_lowercase + string.digits + ".,:;()-'|&!?/")
GENRES = ["comedy", "drama", "action", "horror"]
TITLES = ["toy story", "kolya", "golden eye", "heat", "fargo", "alien"]


def tiny_bert_tokenizer() -> BertTokenizer:
    """A WordPiece tokenizer whose character pieces can spell any lower-case ASCII text."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens = specials + WORDS + CHARACTERS + [f"##{c}" for c in CHARACTERS]
    return BertTokenizer(vocab={token: index for index, token in enumerate(tokens)})


def tiny_roberta_tokenizer() -> RobertaTokenizer:
    """A byte-level BPE tokenizer trained in memory on a few prompts."""
    from tokenizers import ByteLevelBPETokenizer

    corpus = [f"user id is {i}. gender is male. title is {t}. genres are {g}." for i, t, g in zip(range(50), TITLES * 9, GENRES * 13)]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    state = json.loads(bpe._tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    return RobertaTokenizer(vocab=state["vocab"], merges=merges)


TINY_TOKENIZERS = {"bert": tiny_bert_tokenizer, "roberta": tiny_roberta_tokenizer}


def tiny_bert_config(vocab_size: int, **overrides) -> BertConfig:
    options = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, max_position_embeddings=128)
    options.update(overrides)
    return BertConfig(vocab_size=vocab_size, **options)


def tiny_roberta_config(vocab_size: int, pad_token_id: int, **overrides) -> RobertaConfig:
    options = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, max_position_embeddings=130)
    options.update(overrides)
    return RobertaConfig(vocab_size=vocab_size, pad_token_id=pad_token_id, **options)


def tiny_schema() -> TabularSchema:
    return TabularSchema(
        fields=[
            FieldSpec("user_id"),
            FieldSpec("gender"),
            FieldSpec("age", kind="numeric", num_buckets=3),
            FieldSpec("title"),
            FieldSpec("genres", kind="multi_categorical"),
        ],
        time_column="timestamp",
        group_column="user_id",
        name="tiny",
    )


def tiny_rows(num_rows: int = 64, seed: int = 0) -> dict[str, list]:
    """Rows in which the click depends on gender x genre, so models can learn something."""
    rng = random.Random(seed)
    rows: dict[str, list] = {k: [] for k in ["user_id", "gender", "age", "title", "genres", "label", "timestamp"]}
    for i in range(num_rows):
        gender = rng.choice(["male", "female"])
        genres = rng.sample(GENRES, rng.randint(1, 2))
        rows["user_id"].append(str(rng.randint(1, 12)))
        rows["gender"].append(gender)
        rows["age"].append(rng.randint(18, 60))
        rows["title"].append(rng.choice(TITLES))
        rows["genres"].append(genres)
        rows["label"].append(int((gender == "male") == ("action" in genres or "horror" in genres)))
        rows["timestamp"].append(1000 + i)
    return rows


def tiny_argv(dataset_dir, text_model_dir):
    """Everything small: a tiny PLM and data, batch 16, a few steps per stage, CPU."""
    return [
        "--dataset", str(dataset_dir), "--text_model", str(text_model_dir), "--backbone", "dnn",
        "--embedding_size", "8", "--max_length", "64", "--pretrain_batch_size", "16", "--id_batch_size", "16",
        "--text_batch_size", "16", "--per_device_eval_batch_size", "32", "--max_steps", "4", "--logging_steps", "1",
        "--use_cpu", "true", "--seed", "7",
    ]
