"""A small byte-level BPE for QA text, trained offline (reference ``train/train_tokenizer.py``).

The reference trains a 3,000-token byte-level BPE (min_frequency 2) on 100k unique QA texts and publishes it as
``EleutherAI/llama_multihop_tokenizer``; here it is trained on the caller's own profiles, so nothing is downloaded.
``<|endoftext|>`` is BOS, EOS and PAD, as in the reference, and is prepended to every encoded text. The
pre-tokenizer is GPT-2's byte-level split, which never merges across a space or an ``'s``: a value tokenises the
same in every template, which :class:`~.questions.QAEncoder` relies on. Differences from the reference: no prefix
space (its ``ByteLevel()`` default adds one, so a piece encoded alone would differ from the same piece in context),
and all 256 bytes are seeded into the vocabulary, so no character is ever unknown. Multi-word relations such as
"best friend" are two tokens here (the byte-level split cuts at spaces).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from ..config import check_positive
from .profiles import Profiles
from .questions import QuestionSampler, qa_text, questions_to_text

EOS_TOKEN = "<|endoftext|>"
UNK_TOKEN = "<unk>"


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 3000, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts``; specials ``<|endoftext|>`` (id 0; bos = eos = pad) and ``<unk>`` (id 1)."""
    check_positive("vocab_size", vocab_size)
    check_positive("min_frequency", min_frequency)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + 2:
        raise ValueError(f"vocab_size={vocab_size} must be at least {len(alphabet) + 2} (256 bytes + 2 specials)")
    core = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, initial_alphabet=alphabet,
                                  special_tokens=[EOS_TOKEN, UNK_TOKEN], show_progress=False)
    core.train_from_iterator(texts, trainer=trainer)
    eos_id = core.token_to_id(EOS_TOKEN)
    core.post_processor = processors.TemplateProcessing(  # the reference tokenizer prepends BOS
        single=f"{EOS_TOKEN} $A", pair=f"{EOS_TOKEN} $A {EOS_TOKEN} $B", special_tokens=[(EOS_TOKEN, eos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN,
                                   pad_token=EOS_TOKEN, unk_token=UNK_TOKEN, clean_up_tokenization_spaces=False)


def qa_corpus(profiles: Profiles, num_texts: int = 100_000, orders: tuple[int, ...] = (1, 2),
              seed: int = 0) -> list[str]:
    """Up to ``num_texts`` unique QA strings drawn from ``profiles`` (1- and 2-hop, equal weight)."""
    check_positive("num_texts", num_texts)
    sampler = QuestionSampler(profiles, orders=orders, hop_ratio=1.0)
    questions = sampler.sample(num_texts, np.random.default_rng(seed))
    texts, answers = questions_to_text(profiles, questions)
    return list(dict.fromkeys(qa_text(q, a) for q, a in zip(texts, answers)))


def build_qa_tokenizer(profiles: Profiles, vocab_size: int = 3000, num_texts: int = 100_000,
                       min_frequency: int = 2, seed: int = 0) -> PreTrainedTokenizerFast:
    """Train the QA tokenizer on :func:`qa_corpus` of ``profiles`` (save it with ``save_pretrained``)."""
    return train_bpe_tokenizer(qa_corpus(profiles, num_texts, seed=seed), vocab_size, min_frequency)


__all__ = ["EOS_TOKEN", "UNK_TOKEN", "build_qa_tokenizer", "qa_corpus", "train_bpe_tokenizer"]
