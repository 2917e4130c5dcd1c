"""Sequence-classification data for distillation: the generated task offline, GLUE from the hub.

Every example is encoded once as ``{"input_ids", "token_type_ids", "label"}`` with the BERT layout
``[CLS] a [SEP] (b [SEP])``; :func:`collate` pads a batch and builds the attention mask.
"""
from __future__ import annotations

import os
import random

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from ..config import check_choice
from ..data import reviews

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# GLUE classification tasks: (text fields, name of the evaluation split). STS-B is a regression task: a
# temperature-scaled KL between label distributions does not apply to it.
GLUE_TASKS = {
    "sst2": (("sentence",), "validation"),
    "cola": (("sentence",), "validation"),
    "mrpc": (("sentence1", "sentence2"), "validation"),
    "qqp": (("question1", "question2"), "validation"),
    "mnli": (("premise", "hypothesis"), "validation_matched"),
    "qnli": (("question", "sentence"), "validation"),
    "rte": (("sentence1", "sentence2"), "validation"),
    "wnli": (("sentence1", "sentence2"), "validation"),
}
TASKS = ("sentiment", *GLUE_TASKS)


def build_word_tokenizer(words: list[str] = reviews.WORDS) -> PreTrainedTokenizerFast:
    """A BERT-style word-level tokenizer over ``words`` (the generated task's vocabulary)."""
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *dict.fromkeys(words)])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def encode(tokenizer: PreTrainedTokenizerBase, texts: list, labels: list[int], max_length: int = 128) -> list[dict]:
    """Encode texts (strings, or (a, b) pairs) with their labels; refuses labels that are not classes."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    bad = [i for i, y in enumerate(labels) if not isinstance(y, int) or y < 0]
    if bad:
        raise ValueError(f"labels must be class indices >= 0; example {bad[0]} has {labels[bad[0]]!r}")
    firsts = [t if isinstance(t, str) else t[0] for t in texts]
    seconds = None if all(isinstance(t, str) for t in texts) else [t[1] for t in texts]
    enc = tokenizer(firsts, seconds, truncation=True, max_length=max_length)
    types = enc.get("token_type_ids") or [[0] * len(ids) for ids in enc["input_ids"]]
    return [{"input_ids": ids, "token_type_ids": tt, "label": y} for ids, tt, y in zip(enc["input_ids"], types, labels)]


def collate(examples: list[dict], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example of the batch; ``attention_mask`` marks the real tokens."""
    length = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), length), pad_token_id, dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[row, :n] = torch.tensor(e["input_ids"])
        types[row, :n] = torch.tensor(e["token_type_ids"])
        mask[row, :n] = 1
    labels = torch.tensor([e["label"] for e in examples], dtype=torch.long)
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "labels": labels}


def load_sentiment(tokenizer, num_train: int, num_test: int, seed: int) -> tuple[list[dict], list[dict]]:
    """The generated task, encoded: disjoint train and test sets."""
    train, test = reviews.make_splits(num_train, num_test, seed)
    return tuple(encode(tokenizer, [r.text for r in split], [r.label for r in split]) for split in (train, test))


def load_glue(task: str, tokenizer, max_length: int = 128, num_test: int | None = None,
              data_dir: str | os.PathLike | None = None, max_train: int | None = None,
              seed: int = 0) -> tuple[list[dict], list[dict]]:
    """A GLUE task through ``datasets`` (the hub or a local cache), or from ``data_dir``'s local files with the hub's
    columns (``reasoning_lib.distill.glue.glue_files``); test = the dev split, as in the paper; ``max_train`` keeps a
    seeded random subset of the train split."""
    check_choice("task", task, GLUE_TASKS)
    from datasets import load_dataset

    fields, eval_split = GLUE_TASKS[task]
    if data_dir is not None:  # local files with the hub's columns, <data_dir>/<task>/<split>.tsv (or .jsonl, ...)
        from .glue import load_glue_splits

        data = load_glue_splits(task, data_dir)
    else:
        try:
            data = load_dataset("nyu-mll/glue", task)
        except Exception as err:  # datasets raises several types when offline
            offline = os.environ.get("HF_DATASETS_OFFLINE") == "1"
            hint = " (HF_DATASETS_OFFLINE=1: the hub is off; use task='sentiment', a cached copy or local files)" \
                if offline else ""
            raise FileNotFoundError(f"could not load GLUE {task!r}: {err}{hint}") from None

    def rows(split):
        texts = [r[fields[0]] if len(fields) == 1 else (r[fields[0]], r[fields[1]]) for r in split]
        return encode(tokenizer, texts, [int(y) for y in split["label"]], max_length)

    test, train = rows(data[eval_split]), rows(data["train"])
    if max_train and max_train < len(train):  # seeded, as subset(): the first N would be an ordered slice
        train = subset(train, max_train, seed)
    return train, test[:num_test] if num_test else test


def subset(examples: list[dict], size: int, seed: int) -> list[dict]:
    """A seeded random subset (a deliberate difference: the reference XXS code takes the first N, unshuffled)."""
    if size > len(examples):
        raise ValueError(f"asked for {size} training examples but the task has {len(examples)}")
    return random.Random(seed).sample(examples, size)
