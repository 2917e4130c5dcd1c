"""Greedy generation, exact-match accuracy and throughput (Deng et al. 2023, Table 2; reference
``da03/implicit_chain_of_thought``, ``src/generate.py``).

A model reads the prompt `` {x} E`` and generates greedily with the KV cache until it has written
``num_separators`` E tokens: 1 for a model that answers directly, 2 for explicit CoT (CoT E answer E).
The decoding loop is our own (a few lines over the model's forward and its cache) because HF ``generate``
always stops at the first end-of-sequence token, and because later chapters need to alter the prompt pass.
A prediction is scored by ``reasoning_lib.answers``, the book's one rule: the answer after the first ``####``
must be the gold digit sequence exactly (every digit of a reversed, zero-padded product) or, for GSM8K, a number
of the same value. Throughput is examples / wall-clock seconds over the timed region (generate + decode +
compare), with the device synchronised before each clock read.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from . import answers
from .data.examples import Example
from .data.sequences import encode_examples
from .runtime import autocast, model_precision


def prompt_batch(tokenizer, examples: list[Example], device) -> dict[str, torch.Tensor]:
    """Left-padded prompts `` {x} E``: input_ids and attention_mask of shape (B, T)."""
    prompts = [e.input_ids for e in encode_examples(tokenizer, examples, "only")]
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        mask[row, width - len(ids) :] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}


def _cut_after_separators(ids: list[int], eos: int, count: int) -> list[int]:
    seen = 0
    for i, token in enumerate(ids):
        seen += token == eos
        if seen == count:
            return ids[: i + 1]
    return ids


@torch.no_grad()
def greedy_generate(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    eos_token_id: int,
    pad_token_id: int,
    num_separators: int = 1,
    max_new_tokens: int = 128,
    use_cache: bool = True,
) -> torch.Tensor:
    """Greedy tokens (B, N) after left-padded prompts (B, T); a row stops after ``num_separators`` E tokens
    and is padded with ``pad_token_id`` while the others finish. ``use_cache=False`` recomputes the whole
    sequence every step (a slow reference for tests)."""
    batch = input_ids.shape[0]
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift positions
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=use_cache)
    seen = torch.zeros(batch, dtype=torch.long, device=input_ids.device)
    done = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    tokens = []
    for _ in range(max_new_tokens):
        token = out.logits[:, -1].argmax(-1).masked_fill(done, pad_token_id)  # (B,)
        tokens.append(token)
        seen += token == eos_token_id
        done |= seen >= num_separators
        if bool(done.all()):
            break
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, 1)], dim=1)
        if use_cache:
            positions = positions[:, -1:] + 1
            out = model(input_ids=token[:, None], attention_mask=attention_mask, position_ids=positions,
                        past_key_values=out.past_key_values, use_cache=True)
        else:
            input_ids = torch.cat([input_ids, token[:, None]], dim=1)
            positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
            out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=False)
    return torch.stack(tokens, dim=1)


def generate_text(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    num_separators: int = 1,
    max_new_tokens: int = 128,
) -> list[str]:
    """Greedy continuations of the prompts, cut after the ``num_separators``-th E, special tokens removed."""
    batch = prompt_batch(tokenizer, examples, next(model.parameters()).device)
    output = greedy_generate(model, **batch, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                             num_separators=num_separators, max_new_tokens=max_new_tokens)
    return decode_generated(tokenizer, output, num_separators)


def decode_generated(tokenizer: PreTrainedTokenizerBase, tokens: torch.Tensor, num_separators: int) -> list[str]:
    """Texts of generated ``tokens`` (B, N), each cut after its ``num_separators``-th E, special tokens removed."""
    texts = []
    for row in tokens.tolist():
        kept = _cut_after_separators(row, tokenizer.eos_token_id, num_separators)
        texts.append(tokenizer.decode(kept, skip_special_tokens=True).strip())
    return texts


def is_correct(prediction: str, example: Example) -> bool:
    """Whether the answer a prediction writes after ``####`` is right for ``example`` (``answers.is_correct``)."""
    return answers.is_correct(prediction, example.answer)


def position_accuracy(predictions: list[str], examples: list[Example]) -> list[float]:
    """For each position i of the gold answer's symbols (after ``####``), the fraction of predictions whose
    i-th answer symbol matches: which digits of a product a model gets right (i = 0 is the ones digit)."""
    golds = [answers.digit_positions(answers.extract_answer(e.answer)) for e in examples]
    hits = [0] * max(len(g) for g in golds)
    for prediction, gold in zip(predictions, golds, strict=True):
        predicted = answers.digit_positions(answers.extract_answer(prediction))
        for i, (p, g) in enumerate(zip(predicted, gold)):
            hits[i] += p == g
    return [h / len(examples) for h in hits]


@dataclass
class EvalResult:
    """Accuracy (fraction correct), throughput (examples/s) and every prediction."""

    accuracy: float
    throughput: float
    num_examples: int
    batch_size: int
    predictions: list[str] = field(repr=False, default_factory=list)
    correct: list[bool] = field(repr=False, default_factory=list)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    num_separators: int = 1,
    batch_size: int = 1,
    max_new_tokens: int = 128,
) -> EvalResult:
    """Accuracy and throughput on ``examples``; ``batch_size=1`` is the paper's protocol, larger is batched mode."""
    model.eval()

    def generate(chunk: list[Example]) -> list[str]:
        return generate_text(model, tokenizer, chunk, num_separators, max_new_tokens)

    return evaluate_generator(generate, examples, batch_size, next(model.parameters()).device,
                              precision=model_precision(model))


def evaluate_generator(
    generate: Callable[[list[Example]], list[str]], examples: list[Example], batch_size: int, device: torch.device | str,
    score: Callable[[str, Example], bool] = is_correct, precision: str = "auto",
) -> EvalResult:
    """Time ``generate`` (a batch of examples → predictions) plus ``score`` (prediction, example → correct) over
    ``examples`` in batches, in the precision training used (``runtime.autocast``: bf16 on CUDA)."""
    if not examples:
        raise ValueError("evaluate() got no examples")
    device = torch.device(device)
    predictions, correct, seconds = [], [], 0.0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        _sync(device)
        tic = time.perf_counter()
        with autocast(device, precision):
            texts = generate(chunk)
        hits = [score(t, e) for t, e in zip(texts, chunk, strict=True)]
        _sync(device)
        seconds += time.perf_counter() - tic
        predictions += texts
        correct += hits
    return EvalResult(sum(correct) / len(correct), len(examples) / seconds, len(examples), batch_size, predictions, correct)
