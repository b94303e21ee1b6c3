"""Free-text fields (FieldSpec kind="text"): whole in the prompt, only their presence on the ID side.

The learning test uses data whose click lives only in a review's words: the text and joint modes
must find it, the ID model cannot."""

import random

import pytest
import torch
from tiny import CHARACTERS, tiny_bert_config
from transformers import BertTokenizer

from flip_hf import DataCollatorForFlipCTR, FieldSpec, FlipConfig, FlipForCTR, FlipProcessor, TabularSchema
from flip_hf.metrics import compute_ctr_metrics
from flip_hf.configuration_flip import NUM_RESERVED_IDS, UNKNOWN_ID

GOOD, BAD = ["great", "lovely", "superb"], ["awful", "boring", "dull"]
FILLER = ["the", "movie", "was", "and", "plot", "actors", "music", "really", "quite"]


def review_tokenizer() -> BertTokenizer:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = ["user", "id", "review", "is", "unknown", *GOOD, *BAD, *FILLER]
    tokens = specials + words + CHARACTERS + [f"##{c}" for c in CHARACTERS]
    return BertTokenizer(vocab={token: index for index, token in enumerate(tokens)})


def review_schema() -> TabularSchema:
    return TabularSchema(fields=[FieldSpec("user_id"), FieldSpec("review", kind="text")], name="reviews")


def review_rows(num_rows: int, seed: int) -> dict[str, list]:
    """Every review is different and the users carry no signal: only the sentiment words do."""
    rng = random.Random(seed)
    rows = {"user_id": [], "review": [], "label": []}
    for _ in range(num_rows):
        label = rng.randint(0, 1)
        words = rng.sample(FILLER, 5) + [rng.choice(GOOD if label else BAD)]
        rng.shuffle(words)
        rows["user_id"].append(str(rng.randint(1, 5)))
        rows["review"].append(" ".join(words))
        rows["label"].append(label)
    return rows


@pytest.fixture(scope="module")
def processor():
    return FlipProcessor(review_tokenizer(), review_schema(), max_length=32).fit(review_rows(200, seed=0))


def test_a_text_field_gets_no_per_row_vocabulary(processor):
    infos = {info["name"]: info for info in processor.field_infos()}
    assert infos["review"]["vocab_size"] == NUM_RESERVED_IDS + 1  # present, or not
    encoded = processor({"user_id": ["1", "2"], "review": ["the plot was great", None]})
    assert [row[1] for row in encoded["feature_ids"]] == [NUM_RESERVED_IDS, UNKNOWN_ID]


def test_a_text_field_is_written_whole_and_cut_inside_its_span(processor):
    assert processor.render_text({"user_id": "1", "review": "the plot was great"}) == "user id is 1. review is the plot was great."
    long_review = " ".join(["the movie was really quite dull"] * 10)
    encoded = processor({"user_id": ["4"], "review": [long_review]})
    field_ids = encoded["token_field_ids"][0]
    assert len(encoded["input_ids"][0]) <= 32
    assert 0 in field_ids and 1 in field_ids  # the user id survives: the review is what got cut
    assert field_ids[-2] == -1 and encoded["input_ids"][0][-1] == processor.tokenizer.sep_token_id


def train_and_score(mode: str, processor) -> float:
    torch.manual_seed(0)
    tokenizer = processor.tokenizer
    config = FlipConfig(fields=processor.field_infos(), text_config=tiny_bert_config(len(tokenizer)), backbone="dnn",
                        embedding_size=8, ctr_mode=mode, text_pooling="mean", fusion_init=0.5,
                        pad_token_id=tokenizer.pad_token_id, mask_token_id=tokenizer.mask_token_id)
    model = FlipForCTR(config)
    collator = DataCollatorForFlipCTR(processor, text=mode != "id")
    train, test = review_rows(256, seed=1), review_rows(128, seed=2)
    rows = [dict(zip(train, values)) for values in zip(*train.values())]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for epoch in range(5):
        random.Random(epoch).shuffle(rows)
        for start in range(0, len(rows), 32):
            loss = model(**collator(rows[start : start + 32])).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        logits = model(**collator([dict(zip(test, values)) for values in zip(*test.values())])).logits
    return compute_ctr_metrics(logits.numpy(), test["label"], from_logits=True)["auc"]


def test_only_the_text_side_can_learn_a_label_that_lives_in_the_words(processor):
    assert train_and_score("text", processor) > 0.9
    assert train_and_score("joint", processor) > 0.9
    assert train_and_score("id", processor) < 0.65
