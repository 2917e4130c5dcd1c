"""GSM8K in the ICoT-KD *formula* format: ``question||<<e1>> <<e2>> ... #### answer``.

The chain of thought keeps only the calculator annotations of the GSM8K solutions, in order, joined by single
spaces (spec §2.4). ``read_gsm8k`` reads the published files; ``load_gsm8k_from_hub`` converts the hub dataset
(``openai/gsm8k``, config ``main``) for users with internet. That conversion reproducing the published test
file line for line is a hypothesis the test suite checks when both are available.
"""
from __future__ import annotations

import os
import re

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
