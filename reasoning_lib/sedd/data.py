"""Offline corpora for SEDD at CPU scale: generated reviews on a fixed-length canvas.

Each example is one review (``reasoning_lib.data.reviews``) followed by end-of-text tokens up to the canvas
length; there is no padding token and no attention mask, as in the reference's packed blocks. The grammar
is known, so a sample's quality is measurable: does the text before its first end-of-text parse as a review,
with nothing but end-of-text after it?
"""
from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from ..config import check_positive
from ..data import reviews

EOS_TOKEN = "<eos>"
UNK_TOKEN = "<unk>"
MASK_TEXT = "▒"  # how a mask state is drawn (the graph's mask id lies past the tokenizer's vocabulary)


def build_review_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the review vocabulary; the absorbing graph adds the mask as id ``len(tok)``."""
    vocab = {token: i for i, token in enumerate([EOS_TOKEN, UNK_TOKEN, *dict.fromkeys(reviews.WORDS)])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS_TOKEN, unk_token=UNK_TOKEN,
                                   clean_up_tokenization_spaces=False)


def review_canvases(tokenizer, num: int, length: int, seed: int) -> torch.Tensor:
    """[num, length] ids: one generated review per row, then end-of-text to the end."""
    check_positive("num", num)
    rows = []
    for review in reviews.make_reviews(num, seed):
        ids = tokenizer(review.text)["input_ids"]
        if len(ids) >= length:
            raise ValueError(f"length={length} is too short for a review of {len(ids)} tokens; use at least {len(ids) + 1}")
        rows.append(ids + [tokenizer.eos_token_id] * (length - len(ids)))
    return torch.tensor(rows)


def decode(tokenizer, ids) -> list[str]:
    """Tokens of one row as strings; ids past the vocabulary (the mask state) become ``MASK_TEXT``."""
    vocab = len(tokenizer)
    return [tokenizer.convert_ids_to_tokens(int(i)) if int(i) < vocab else MASK_TEXT for i in ids]


def is_well_formed(tokenizer, ids) -> bool:
    """A grammatical review, then only the tokenizer's own end-of-text (``<eos>`` here, ``<|endoftext|>`` for
    GPT-2). The review is read from the decoded text, so subword tokenizers (GPT-2's BPE) work too."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"{type(tokenizer).__name__} has no eos_token: set one (the canvases end in end-of-text)")
    ids = [int(i) for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)]
    if eos not in ids:
        return False
    cut = ids.index(eos)
    text, tail = ids[:cut], ids[cut:]
    if any(i != eos for i in tail) or any(i >= len(tokenizer) for i in text):  # ids past the vocabulary are masks
        return False
    return reviews.parse_review(tokenizer.decode(text, clean_up_tokenization_spaces=False)) is not None


def well_formed_fraction(tokenizer, samples: torch.Tensor) -> float:
    """Fraction of sampled rows that are well formed."""
    return sum(is_well_formed(tokenizer, row) for row in samples) / len(samples)


def text_blocks(dataset_id: str, tokenizer, length: int, num_blocks: int, split: str = "train",
                text_field: str = "text") -> torch.Tensor:
    """[num_blocks, length] ids from a hub text dataset, as the reference packs OpenWebText: every document
    tokenised with end-of-text appended, all concatenated, cut into blocks (remainder dropped). Streams, so
    only what is needed is downloaded; needs the hub (or its cache)."""
    import os

    from datasets import load_dataset

    try:
        stream = load_dataset(dataset_id, split=split, streaming=True)
        buffer, blocks = [], []
        for record in stream:
            buffer += tokenizer(record[text_field])["input_ids"] + [tokenizer.eos_token_id]
            while len(buffer) >= length and len(blocks) < num_blocks:
                blocks.append(buffer[:length])
                buffer = buffer[length:]
            if len(blocks) == num_blocks:
                break
    except Exception as err:  # datasets raises several types when offline
        hint = " (HF_DATASETS_OFFLINE=1: use corpus='reviews' or a cached copy)" if os.environ.get("HF_DATASETS_OFFLINE") == "1" else ""
        raise FileNotFoundError(f"could not stream {dataset_id!r} ({split}): {err}{hint}") from None
    if len(blocks) < num_blocks:
        raise ValueError(f"{dataset_id!r} ({split}) yields only {len(blocks)} blocks of {length} tokens, not {num_blocks}")
    return torch.tensor(blocks)


def prepare_corpus(corpus: str, tokenizer_name: str, num_sequences: int, num_test: int, length: int, seed: int):
    """``(tokenizer, train, test, num_states)`` with num_states = vocabulary + 1 mask state.

    ``corpus='reviews'`` generates disjoint train/test canvases; anything else is a hub dataset id whose
    held-out blocks are taken from its 'validation' split when it has one, else after the training blocks."""
    if corpus == "reviews":
        tokenizer = build_review_tokenizer()
        rows = review_canvases(tokenizer, num_sequences + num_test, length, seed)
        return tokenizer, rows[:num_sequences], rows[num_sequences:], len(tokenizer) + 1
    from ..tokenization import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_name)
    rows = text_blocks(corpus, tokenizer, length, num_sequences + num_test)
    return tokenizer, rows[:num_sequences], rows[num_sequences:], len(tokenizer) + 1
