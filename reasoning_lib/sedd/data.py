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
    """A grammatical review, then only end-of-text tokens."""
    tokens = decode(tokenizer, ids)
    if EOS_TOKEN not in tokens:
        return False
    cut = tokens.index(EOS_TOKEN)
    return all(t == EOS_TOKEN for t in tokens[cut:]) and reviews.parse_review(" ".join(tokens[:cut])) is not None


def well_formed_fraction(tokenizer, samples: torch.Tensor) -> float:
    """Fraction of sampled rows that are well formed."""
    return sum(is_well_formed(tokenizer, row) for row in samples) / len(samples)
