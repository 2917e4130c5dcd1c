"""Probe data for chapter 06: 2-hop questions, their token groups and targets (after the reference's
``train/train_probe.py``, which predicts the bridge's first token; here the targets are classes over people and
answers, and a *last* token group is added).

Each row is the prompt of a 2-hop question, ``Question: What was {name}'s {relation}'s {subject}? Answer:``
(BOS first, no answer), with four token groups found from character spans through the tokenizer's offsets
(:func:`reasoning_lib.probes.token_groups_from_spans`, so multi-token names and relations work): *name*,
*relation*, *attribute* (the asked subject) and *last* (the ``:`` of ``Answer:``, where the answer is
predicted). Targets: the **bridge entity** b = r(p) as a class over the N people, and the **final answer**
as a class over the distinct answer strings.

The held-out rows (the last ``eval_fraction``, as ``run_probes`` splits them) ask about (person, relation)
pairs that no training row asks about. Without this, a probe could score on held-out rows by memorising
(name, relation) -> bridge from identical prefixes it saw in training, even on an untrained model's random
features; with it, held-out accuracy measures a bridge representation shared across questions.

Differences from the reference (``train/train_probe.py``): every
relation may be the first hop (the reference keeps the 4 single-token ones), the bridge is a person index
rather than the first token of its name, and a group is pooled by ``last``/``mean`` instead of concatenated.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import check_range
from ..probes import ProbeConfig, collect_hidden_states, run_probes, token_groups_from_spans
from ..probes.grid import ProbeGrid
from .presets import CapacityConfig
from .profiles import Profiles
from .questions import QUESTION_PREFIX, answer_table, bridges, subject_text
from .splits import QuestionBatch, TwoHopSplit

GROUPS = ("name", "relation", "attribute", "last")
TARGETS = ("bridge entity", "answer")


@dataclass
class ProbeData:
    """Probe rows: prompts, their token ids, per-group token indices (BOS = index 0) and integer targets."""

    questions: QuestionBatch
    prompts: list[str]
    sequences: list[list[int]]  # BOS + prompt ids, one list per row
    groups: dict[str, list[list[int]]]  # group -> per-row token indices into ``sequences``
    targets: dict[str, torch.Tensor]  # target -> (Q,) int64 labels
    num_classes: dict[str, int]  # target -> size of its label space
    eval_fraction: float  # the last rows, whose (person, relation) pairs no earlier row has


def _prompt_and_spans(name: str, relation: str, subject: str) -> tuple[str, dict[str, tuple[int, int]]]:
    """The 2-hop prompt and the character spans of its name, relation and subject."""
    head = f"{QUESTION_PREFIX} "
    rel, subj = subject_text(relation), subject_text(subject)
    spans = {"name": (len(head), len(head) + len(name))}
    spans["relation"] = (spans["name"][1] + 3, spans["name"][1] + 3 + len(rel))  # after "'s "
    spans["attribute"] = (spans["relation"][1] + 3, spans["relation"][1] + 3 + len(subj))
    return f"{head}{name}'s {rel}'s {subj}? Answer:", spans


def answer_ids(profiles: Profiles) -> tuple[np.ndarray, np.ndarray]:
    """(N, S) answer id of every 1-hop fact and the sorted distinct answer strings the ids index."""
    table = answer_table(profiles).astype(str)  # (N, S)
    values, ids = np.unique(table, return_inverse=True)
    return ids.reshape(table.shape), values


def _held_out_pair_rows(draw, num: int, eval_fraction: float, num_relations: int, num_pairs: int,
                        rng: np.random.Generator, max_rounds: int = 1000) -> QuestionBatch:
    """``num`` rows from ``draw(k)``: ``⌊(1 - f)·num⌋`` rows of training pairs, then rows of held-out pairs."""
    num_train = int((1 - eval_fraction) * num)
    held = rng.random(num_pairs) < eval_fraction  # (N·R,) pairs whose rows only evaluate
    parts, have = {False: [], True: []}, {False: 0, True: 0}
    for _ in range(max_rounds):
        if have[False] >= num_train and have[True] >= num - num_train:
            break
        batch = draw(max(num, 256))
        in_held = held[batch.person * num_relations + batch.relation]
        for flag in (False, True):
            parts[flag].append(batch[in_held == flag])
            have[flag] += int((in_held == flag).sum())
    else:
        raise ValueError(f"could not draw {num} probe rows with held-out (person, relation) pairs; "
                         "is the question category nearly empty?")
    return QuestionBatch.concat([QuestionBatch.concat(parts[False])[:num_train],
                                 QuestionBatch.concat(parts[True])[:num - num_train]])


def probe_dataset(profiles: Profiles, tokenizer, num: int, seed: int = 0, split: TwoHopSplit | None = None,
                  category: str = "train", eval_fraction: float = 0.05) -> ProbeData:
    """``num`` 2-hop probe rows from ``split``'s ``category`` (default: the model's training tuples), or uniform
    over all (p, r, s) without a split; the last ``eval_fraction`` ask about unseen (person, relation) pairs."""
    check_range("eval_fraction", eval_fraction, 1e-9, 1 - 1e-9)
    rng = np.random.default_rng([seed, 6])
    n, r, s = profiles.num_people, profiles.num_relations, len(profiles.subjects)
    if split is not None:
        draw = lambda k: split.sample(category, k, rng)  # noqa: E731
    else:
        draw = lambda k: QuestionBatch(  # noqa: E731
            rng.integers(0, n, k), rng.integers(0, r, k), rng.integers(0, s, k))
    questions = _held_out_pair_rows(draw, num, eval_fraction, r, n * r, rng)
    prompts, spans = zip(*(
        _prompt_and_spans(str(profiles.names[person]), profiles.relation_names[relation], profiles.subjects[subject])
        for person, relation, subject in zip(questions.person, questions.relation, questions.subject)))
    encoded = tokenizer(list(prompts), return_offsets_mapping=True)  # BOS prepended, offset (0, 0)
    groups = {g: [] for g in GROUPS}
    for offsets, row_spans, ids in zip(encoded["offset_mapping"], spans, encoded["input_ids"]):
        for group, index in token_groups_from_spans(offsets, row_spans).items():
            groups[group].append(index)
        groups["last"].append([len(ids) - 1])
    bridge = bridges(profiles, questions)  # (Q,)
    table, values = answer_ids(profiles)
    targets = {"bridge entity": torch.from_numpy(bridge).long(),
               "answer": torch.from_numpy(table[bridge, questions.subject]).long()}
    return ProbeData(questions, list(prompts), [list(ids) for ids in encoded["input_ids"]], groups, targets,
                     {"bridge entity": profiles.num_people, "answer": len(values)}, eval_fraction)


def probe_grids(model: torch.nn.Module, data: ProbeData, config: CapacityConfig, pad_token_id: int = 0,
                targets: tuple[str, ...] = TARGETS, batch_size: int = 64,
                device: str = "cpu") -> dict[str, dict[str, ProbeGrid]]:
    """Probe every hidden state x token group for each target: ``{target: {'train': grid, 'held-out': grid}}``.

    ``device`` is where the probes are fitted (features are collected on the model's device)."""
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise ValueError(f"targets {unknown} are unknown; choose from {list(TARGETS)}")
    features = collect_hidden_states(model, data.sequences, data.groups, pool=config.probe_pool,
                                     batch_size=batch_size, pad_token_id=pad_token_id)  # (Q, L+1, P, D)
    grids = {}
    for target in targets:
        settings = ProbeConfig(penalties=config.probe_penalties, max_iter=config.probe_max_iter,
                               eval_fraction=data.eval_fraction, num_classes=data.num_classes[target], device=device)
        grids[target] = run_probes(features, data.targets[target], settings, position_names=list(data.groups))
        for split, grid in grids[target].items():
            grid.extra.update({"target": target, "split": split})
    return grids


__all__ = ["GROUPS", "TARGETS", "ProbeData", "answer_ids", "probe_dataset", "probe_grids"]
