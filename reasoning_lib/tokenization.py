"""Tokenizers: an offline digit-level one for arithmetic, and GPT-2's BPE for paper-scale runs.

The digit tokenizer is a HF ``tokenizers`` word-level model over whitespace-separated symbols, wrapped as a
``PreTrainedTokenizerFast`` so it saves and loads next to a model like any hub tokenizer. Its end-of-text
token plays the role of GPT-2's ``<|endoftext|>`` (question/CoT/answer separator and end of sequence, as in
``src/data.py`` of the reference ``da03/implicit_chain_of_thought``); padding has its own token so a pad is
never mistaken for a separator.
"""
from __future__ import annotations

import os
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

EOS_TOKEN = "<eos>"
PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
# Every symbol of the multiplication format, plus a few for other arithmetic tasks.
ARITHMETIC_SYMBOLS = [str(d) for d in range(10)] + ["+", "-", "*", "/", "=", "(", ")", ".", "####"]


def build_digit_tokenizer(symbols: list[str] = ARITHMETIC_SYMBOLS) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: one token per whitespace-separated symbol; unknown symbols map to ``<unk>``."""
    vocab = {token: i for i, token in enumerate([PAD_TOKEN, EOS_TOKEN, UNK_TOKEN, *symbols])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        clean_up_tokenization_spaces=False,
    )


# Files one of which every saved HF tokenizer has (fast, BPE, SentencePiece, WordPiece).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt")


def _check_tokenizer_folder(name_or_path: str) -> None:
    """A local folder without any tokenizer file would load as a 1-token tokenizer that encodes text as []."""
    folder = Path(name_or_path)
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(f"tokenizer folder {folder} has none of {list(TOKENIZER_FILES)}: save the tokenizer "
                                "next to the model (tokenizer.save_pretrained) or pass its name, e.g. 'gpt2'")


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """``'digits'`` builds the arithmetic tokenizer; anything else is a local folder or a hub id (``'gpt2'``).

    GPT-2 has no pad token: padding reuses ``<|endoftext|>`` as the reference's ``src/data.py`` does."""
    if name_or_path == "digits":
        return build_digit_tokenizer()
    _check_tokenizer_folder(name_or_path)
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=offline)
    except (OSError, ValueError) as err:
        if Path(name_or_path).is_dir():  # a local folder: say what is wrong with it, not that the hub is off
            raise FileNotFoundError(f"tokenizer folder {name_or_path} could not be loaded: {type(err).__name__}: {err}") from None
        if not isinstance(err, OSError):
            raise
        where = "not a local folder nor in the local cache, and HF_HUB_OFFLINE=1 forbids the hub" if offline else str(err)
        raise FileNotFoundError(f"tokenizer {name_or_path!r} could not be loaded: {where}") from None
    if len(tokenizer) < 2:  # AutoTokenizer's fallback for a folder it found nothing in
        raise ValueError(f"tokenizer {name_or_path!r} loaded with {len(tokenizer)} token(s): not a real tokenizer")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
