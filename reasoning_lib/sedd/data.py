"""Corpora for SEDD: generated reviews on a fixed-length canvas (CPU scale), and hub text corpora as blocks.

Each review example is one review (``reasoning_lib.data.reviews``) followed by end-of-text tokens up to the
canvas length; there is no padding token and no attention mask, as in the reference's packed blocks. The grammar
is known, so a sample's quality is measurable: does the text before its first end-of-text parse as a review,
with nothing but end-of-text after it?

A hub corpus (OpenWebText for SEDD small, Lou et al. 2024 §5.1) is tokenised once into memory-mapped token
files (``sedd.corpus``) and read as blocks of ``length`` tokens, with held-out blocks from documents that no
training block contains.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from ..chapter import resolve_output_dir
from ..config import check_positive
from ..data import reviews
from .corpus import TokenBlocks, build_token_file, file_builder, token_folder

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


def preview(tokenizer, row, corpus: str, num_tokens: int = 40) -> str:
    """One sequence as a line of text: a review's tokens (masks as ``MASK_TEXT``), or the first ``num_tokens``
    tokens of a hub corpus's block, which is too long to print whole."""
    if corpus == "reviews":
        return " ".join(decode(tokenizer, row))
    return tokenizer.decode(row[:num_tokens]).replace("\n", " ") + " …"


# ------------------------------------------------------------------------------------------------ hub corpora
# OpenWebText has only a 'train' split. SEDD's reference validates on WikiText-103 instead and holds none of it
# out; here, as in MDLM's 'openwebtext-split' (Sahoo et al. 2024, which follows SEDD's setup; kuleshov-group/mdlm
# dataloader.py: train[:-100000] / train[-100000:]), its last 100,000 documents are held out.
HELD_OUT_DOCUMENTS = 100_000
DEFAULT_CACHE_DIR = "outputs/data"  # token files, under the book's root (outputs/ is not tracked by git)


def open_corpus(corpus: str, data_files=None) -> dict:
    """Split name → ``datasets.Dataset`` (Arrow, memory-mapped) of a hub dataset id, a folder written by
    ``save_to_disk``, or local ``data_files`` (json/jsonl/parquet/text/csv; a dict maps split → files)."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    try:
        if data_files is not None:
            files = data_files if isinstance(data_files, dict) else {"train": data_files}
            loaded = load_dataset(file_builder(files), data_files=files)
        elif Path(corpus).is_dir():
            loaded = load_from_disk(corpus)
        else:
            loaded = load_dataset(corpus)
    except RuntimeError as err:
        if "scripts are no longer supported" not in str(err):
            raise
        raise RuntimeError(f"{corpus!r} on the hub is still a loading script, which datasets>=4 refuses: download "
                           f"its data files and pass data_files= (e.g. data_files={{'train': [...parquet]}})") from None
    except (FileNotFoundError, ConnectionError, OSError) as err:  # datasets' offline / missing errors
        hint = " (HF_DATASETS_OFFLINE=1: use corpus='reviews', a cached copy or data_files=)" \
            if os.environ.get("HF_DATASETS_OFFLINE") == "1" else ""
        raise FileNotFoundError(f"could not load corpus {corpus!r}: {err}{hint}") from None
    return dict(loaded) if isinstance(loaded, DatasetDict) else {"train": loaded}


def split_documents(splits: dict, held_out_documents: int = HELD_OUT_DOCUMENTS, name: str = "corpus") -> dict:
    """``{"train": (documents, details), "held_out": (documents, details)}``: the 'validation' split held out when
    there is one, else the last ``held_out_documents`` of 'train' (disjoint from the training documents)."""
    if "train" not in splits:
        raise ValueError(f"{name} has no 'train' split (its splits: {sorted(splits)})")
    train = splits["train"]
    if "validation" in splits:
        held = splits["validation"]
        print(f"{name}: held-out blocks from its 'validation' split ({len(held):,} documents); "
              f"training on all {len(train):,} 'train' documents")
        return {"train": (train, {"split": "train", "documents": [0, len(train)]}),
                "held_out": (held, {"split": "validation", "documents": [0, len(held)]})}
    check_positive("held_out_documents", held_out_documents)
    cut = len(train) - held_out_documents
    if cut <= 0:
        raise ValueError(f"{name} has {len(train):,} 'train' documents, not more than held_out_documents="
                         f"{held_out_documents:,}; lower held_out_documents")
    print(f"{name} has no 'validation' split (splits: {', '.join(sorted(splits))}): holding out its last "
          f"{held_out_documents:,} 'train' documents ({cut:,}..{len(train) - 1:,}); "
          f"training on documents 0..{cut - 1:,}")
    return {"train": (train.select(range(cut)), {"split": "train", "documents": [0, cut]}),
            "held_out": (train.select(range(cut, len(train))), {"split": "train", "documents": [cut, len(train)]})}


def prepare_token_files(corpus: str, tokenizer, tokenizer_name: str, cache_dir=None, data_files=None,
                        text_field: str = "text", held_out_documents: int = HELD_OUT_DOCUMENTS,
                        progress: bool = True) -> dict:
    """``{"train": path, "held_out": path}`` of the corpus's token files, tokenised once (rank 0 writes, the
    others wait; an interrupted run resumes) into ``<cache_dir>/<corpus>/<tokenizer>-<fingerprint>/``."""
    folder = token_folder(resolve_output_dir(cache_dir or DEFAULT_CACHE_DIR), corpus, tokenizer, tokenizer_name)
    parts: dict = {}

    def load(part: str):
        if not parts:  # the dataset is opened once, on rank 0, and only if a file still needs writing
            parts.update(split_documents(open_corpus(corpus, data_files), held_out_documents, corpus))
        return parts[part]

    # known before loading, so a finished file is checked without opening the dataset (held_out_documents is
    # recorded even when a 'validation' split makes it moot)
    source = {"dataset": str(corpus), "text_field": text_field, "held_out_documents": held_out_documents}
    paths = {}
    for part in ("train", "held_out"):
        paths[part] = folder / f"{part}.bin"
        meta = build_token_file(paths[part], lambda part=part: load(part), tokenizer, {**source, "part": part},
                                tokenizer_name=tokenizer_name, text_field=text_field, progress=progress)
        if progress:
            first, last = meta["source"]["documents"]
            print(f"{part}: {meta['num_tokens']:,} tokens from {corpus}'s '{meta['source']['split']}' documents "
                  f"{first:,}..{last - 1:,} ({paths[part]})")
    return paths


def prepare_corpus(corpus: str, tokenizer_name: str, num_sequences: int, num_test: int, length: int, seed: int,
                   cache_dir=None, data_files=None, text_field: str = "text",
                   held_out_documents: int = HELD_OUT_DOCUMENTS, progress: bool = True):
    """``(tokenizer, train, test, num_states)`` with num_states = vocabulary + 1 mask state.

    ``corpus='reviews'`` generates disjoint train/test canvases ([N, length] tensors). Anything else is a hub
    dataset id, a ``save_to_disk`` folder or a name for local ``data_files``: it is tokenised once into token
    files under ``cache_dir`` (default ``outputs/data`` in the book's root), ``train`` is the first
    ``num_sequences`` blocks of the training file (a memory-mapped :class:`TokenBlocks`), ``test`` the first
    ``num_test`` held-out blocks as a tensor: from the 'validation' split, or the last ``held_out_documents``
    documents of 'train' when there is none (OpenWebText). ``seed`` only draws the generated reviews."""
    if corpus == "reviews":
        tokenizer = build_review_tokenizer()
        rows = review_canvases(tokenizer, num_sequences + num_test, length, seed)
        return tokenizer, rows[:num_sequences], rows[num_sequences:], len(tokenizer) + 1
    from ..tokenization import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_name)
    paths = prepare_token_files(corpus, tokenizer, tokenizer_name, cache_dir, data_files, text_field,
                                held_out_documents, progress)
    train = TokenBlocks(paths["train"], length).take(num_sequences)
    test = TokenBlocks(paths["held_out"], length).take(num_test).tensor()
    return tokenizer, train, test, len(tokenizer) + 1
