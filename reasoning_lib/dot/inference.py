"""DoT and DoT-MP sampling on the SEDD core (Ye et al. 2024, §3; reference ``dot-sedd`` branch,
``gsm8k_run_sample_cond.py`` and ``gsm8k_run_sample_cond_mp.py``), evaluation and batch-1 throughput (samples per
second at batch size 1, as in Ye et al. 2024, Table 1).

Both use ``reasoning_lib.sedd.sample`` with the question (and, for DoT-MP, the thoughts so far) fixed by
projection, so those tokens never change: before every step, before the denoiser and on the output.

DoT-MP loop: each pass samples one thought for every unfinished row; a row whose thought carries ``####`` is
finished (it is never sampled again); the others append the thought to their context, rebuilt as text with
``mp_context`` exactly as in training, until ``max_passes``.

A question longer than the canvas allows is refused, or with ``truncate`` keeps its first tokens (DoT; counted in
``Generation.truncated``); in DoT-MP its row ends without an answer, as does a context that fills the canvas.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..config import check_choice, check_positive
from ..data.examples import Example
from ..sedd import sample
from ..answers import answers_match, extract_answer
from .data import Layout, generated_text, has_answer, mp_context, prompt_canvases, source_fits


@dataclass
class Generation:
    """Per question: the generated target text (None = never ended), its extracted answer, and the model
    calls spent on it; ``chains[i]`` (when recorded) is every intermediate canvas of row i, pass after pass;
    ``truncated[i]``: whether question i lost its last tokens to fit the canvas."""

    texts: list[str | None]
    answers: list[str | None]
    nfe: list[int]
    passes: list[int]
    chains: list[list[torch.Tensor]] = field(default_factory=list)
    chain_labels: list[list[str]] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)


@dataclass
class Sampler:
    """A trained model with its graph, noise and layout, and how to sample (steps T, predictor); ``truncate``
    lets a question too long for the canvas keep its first tokens instead of raising."""

    model: torch.nn.Module
    graph: object
    noise: object
    tokenizer: object
    layout: Layout
    steps: int = 32
    predictor: str = "analytic"
    truncate: bool = False

    def _pass(self, sources: list[str], generator, record: bool):
        ids, fixed, _ = prompt_canvases(self.tokenizer, self.layout, sources, self.truncate)
        device = next(self.model.parameters()).device
        out = sample(self.model, self.graph, self.noise, len(sources), self.layout.length, self.steps, self.predictor,
                     fixed_ids=ids.to(device), fixed_mask=fixed.to(device), record_chain=record, generator=generator)
        texts = [generated_text(self.tokenizer, self.layout, row) for row in out.tokens]
        return texts, out

    def dot(self, questions: list[str], generator: torch.Generator | None = None, record_chain: bool = False) -> Generation:
        """The whole rationale and answer in one diffusion pass: NFE = T + 1 per question."""
        texts, out = self._pass(questions, generator, record_chain)
        # without truncate a question that does not fit has raised, so only a truncating sampler can cut one
        truncated = [not source_fits(self.tokenizer, self.layout, q) for q in questions] if self.truncate else \
            [False] * len(questions)
        result = Generation(texts, [extract_answer(t) for t in texts], [out.nfe] * len(texts), [1] * len(texts),
                            truncated=truncated)
        if record_chain:
            labels = [f"t = {t:.2f}" if t > 0 else "denoised" for t in out.times]
            result.chains = [[state[i] for state in out.chain] for i in range(len(texts))]
            result.chain_labels = [labels] * len(texts)
        return result

    def dot_mp(self, questions: list[str], max_passes: int = 10, generator: torch.Generator | None = None,
               record_chain: bool = False) -> Generation:
        """One thought per pass until a thought carries ``####`` or ``max_passes`` passes."""
        check_positive("max_passes", max_passes)
        n = len(questions)
        previous: list[list[str]] = [[] for _ in range(n)]
        texts: list[str | None] = [None] * n
        nfe, passes = [0] * n, [0] * n
        chains: list[list[torch.Tensor]] = [[] for _ in range(n)]
        labels: list[list[str]] = [[] for _ in range(n)]
        active = list(range(n))
        for number in range(1, max_passes + 1):
            contexts = {i: mp_context(questions[i], previous[i]) for i in active}
            for i in [i for i in active if not source_fits(self.tokenizer, self.layout, contexts[i])]:
                texts[i] = " ".join(previous[i])  # the thoughts so far fill the canvas: stop without an answer
                active.remove(i)
            if not active:
                break
            thoughts, out = self._pass([contexts[i] for i in active], generator, record_chain)
            still = []
            for row, (i, thought) in enumerate(zip(active, thoughts)):
                nfe[i] += out.nfe
                passes[i] = number
                if record_chain:
                    chains[i] += [state[row] for state in out.chain]
                    labels[i] += [f"pass {number}, " + (f"t = {t:.2f}" if t > 0 else "denoised") for t in out.times]
                if thought is None or has_answer(thought):  # an answer, or a pass that never ended: stop
                    texts[i] = " ".join([*previous[i], thought]) if thought is not None else None
                else:
                    previous[i].append(thought)
                    still.append(i)
            active = still
        for i in active:  # ran out of passes without an answer
            texts[i] = " ".join(previous[i])
        return Generation(texts, [extract_answer(t) for t in texts], nfe, passes, chains if record_chain else [],
                          labels if record_chain else [], [False] * n)

    def generate(self, variant: str, questions: list[str], max_passes: int = 10,
                 generator: torch.Generator | None = None, record_chain: bool = False) -> Generation:
        """``dot`` and ``answer_only`` sample in one pass; ``dot_mp`` thought by thought."""
        check_choice("variant", variant, ("dot", "dot_mp", "answer_only"))
        if variant == "dot_mp":
            return self.dot_mp(questions, max_passes, generator, record_chain)
        return self.dot(questions, generator, record_chain)


@dataclass
class DoTEval:
    """Accuracy on the test questions, mean NFE per question, and every generation."""

    accuracy: float
    mean_nfe: float
    generation: Generation

    @property
    def answers(self) -> list[str | None]:
        return self.generation.answers

    @property
    def prompts_truncated(self) -> int:
        """How many questions lost their last tokens to fit the canvas."""
        return sum(self.generation.truncated)


def gold_answers(examples: list[Example]) -> list[str]:
    return [extract_answer(e.answer) for e in examples]


def evaluate(sampler: Sampler, variant: str, examples: list[Example], batch_size: int = 128, seed: int = 0,
             max_passes: int = 10) -> DoTEval:
    """Batched accuracy (``answers.answers_match`` of the extracted answers) with one seeded generator for the
    whole run."""
    if not examples:
        raise ValueError("evaluate() got no examples")
    generator = torch.Generator().manual_seed(seed)
    parts = [sampler.generate(variant, [e.question for e in examples[i:i + batch_size]], max_passes, generator)
             for i in range(0, len(examples), batch_size)]
    merged = Generation(**{name: sum((getattr(p, name) for p in parts), [])
                           for name in ("texts", "answers", "nfe", "passes", "truncated")})
    hits = [answers_match(a, g) for a, g in zip(merged.answers, gold_answers(examples))]
    return DoTEval(sum(hits) / len(hits), sum(merged.nfe) / len(merged.nfe), merged)


def throughput(sampler: Sampler, variant: str, examples: list[Example], seed: int = 0, max_passes: int = 10) -> float:
    """Questions per second at batch size 1 (the paper's protocol): the first one is a warm-up and not timed;
    the clock covers every pass, the denoiser and decoding the answer, with the device synchronised."""
    if len(examples) < 2:
        raise ValueError("throughput needs at least 2 examples (the first is a warm-up)")
    device = next(sampler.model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    sampler.generate(variant, [examples[0].question], max_passes, generator)
    seconds = 0.0
    for example in examples[1:]:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        sampler.generate(variant, [example.question], max_passes, generator)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - started
    return (len(examples) - 1) / seconds
