"""GSM8K in the ICoT-KD *formula* format: ``question||<<e1>> <<e2>> ... #### answer``.

The chain of thought keeps only the calculator annotations of the GSM8K solutions, in order, joined by single
spaces, as in the GSM8K files of the reference ``da03/implicit_chain_of_thought`` (Deng et al. 2023).
``read_gsm8k`` reads the published files; ``load_gsm8k_from_hub`` converts the hub dataset (``openai/gsm8k``,
config ``main``) for users with internet. That conversion reproducing the published test
file line for line is a hypothesis the test suite checks when both are available.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .examples import ANSWER_MARKER, Example, read_examples

ANNOTATION = re.compile(r"<<([^<>]*)>>")


def read_gsm8k(path: str | os.PathLike) -> list[Example]:
    """Read a formula-format GSM8K file; every CoT must consist of ``<<...>>`` annotations only."""
    examples = read_examples(path)
    for number, example in enumerate(examples, start=1):
        leftover = ANNOTATION.sub("", example.cot).strip()
        if leftover:
            raise ValueError(
                f"{path}: example {number}: CoT has text outside <<...>> ({leftover[:40]!r}); "
                "is this the natural-language train_no_aug.txt instead of the formula format?"
            )
    return examples


def solution_to_example(question: str, solution: str) -> Example:
    """Convert one hub record (``question``, ``answer`` = worked solution ending in ``#### n``)."""
    if ANSWER_MARKER not in solution:
        raise ValueError(f"GSM8K solution without '{ANSWER_MARKER}': {solution[-60:]!r}")
    body, final = solution.split(ANSWER_MARKER, 1)
    cot = " ".join(f"<<{eq}>>" for eq in ANNOTATION.findall(body))
    answer = f"{ANSWER_MARKER} {final.strip().replace(',', '')}"
    return Example(" ".join(question.split("\n")).strip(), cot, answer)


def load_gsm8k_from_hub(split: str = "test", repo_id: str = "openai/gsm8k") -> list[Example]:
    """Download GSM8K (needs internet) and convert it to the formula format."""
    from datasets import load_dataset

    records = load_dataset(repo_id, "main", split=split)
    return [solution_to_example(r["question"], r["answer"]) for r in records]


@dataclass(frozen=True)
class GSM8KSplits:
    """Train/valid/test examples in the formula format."""

    train: list[Example]
    valid: list[Example]
    test: list[Example]


def load_gsm8k_splits(train_file: str | None = None, valid_file: str | None = None, test_file: str | None = None,
                      num_valid: int = 500) -> GSM8KSplits:
    """GSM8K from formula-format files where given, else from the hub (needs internet).

    From the hub, ``valid`` is the last ``num_valid`` problems of the train split (the published valid file is
    500 problems held out of GSM8K train, but which ones is not recorded). The paper trains on GSM8K-Aug
    (~385k problems); pass its formula-format file as ``train_file`` to reproduce that setting."""
    from_hub = {}
    if train_file is None or (valid_file is None and num_valid):
        hub_train = load_gsm8k_from_hub("train")
        cut = len(hub_train) - num_valid
        from_hub = {"train": hub_train[:cut], "valid": hub_train[cut:]}
    train = read_gsm8k(train_file) if train_file else from_hub["train"]
    valid = read_gsm8k(valid_file) if valid_file else from_hub.get("valid", [])
    test = read_gsm8k(test_file) if test_file else load_gsm8k_from_hub("test")
    return GSM8KSplits(train, valid, test)
