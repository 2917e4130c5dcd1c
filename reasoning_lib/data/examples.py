"""The ``INPUT||COT #### ANSWER`` text format shared by every task of the book.

Follows the ICoT-KD release (Deng et al. 2023, ``da03/implicit_chain_of_thought``, ``src/data.py``): the
chain of thought (CoT) is the text before the first ``####``; the answer keeps its ``####`` prefix and loses
its commas (``reasoning_lib.answers`` extracts and scores answers). Deliberate difference: lines are split on
``\\n`` only (not ``str.splitlines``, which also cuts at U+2028 and mangles one GSM8K training line), and a
malformed line raises ``MalformedLineError`` naming ``path:line`` instead of being dropped.
"""
from __future__ import annotations

import hashlib

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..answers import ANSWER_MARKER

FIELD_SEPARATOR = "||"


class MalformedLineError(ValueError):
    """A data line that does not follow ``INPUT||COT #### ANSWER``; the message starts with ``path:line:``."""


@dataclass(frozen=True)
class Example:
    """One problem: ``question``, its chain of thought ``cot`` (may be empty) and ``answer`` (``'#### ...'``)."""

    question: str
    cot: str
    answer: str
    source: str = field(default="", compare=False, repr=False)  # "path:line" when read from a file

    def where(self, index: int) -> str:
        """Where the example came from, for error messages: ``path:line``, else its position in the list."""
        return self.source or f"example {index}"

    def to_line(self) -> str:
        """The published one-line form, ``question||cot #### answer-digits``."""
        return f"{self.question}{FIELD_SEPARATOR}{self.cot} {self.answer}"


def parse_line(line: str, where: str = "<string>") -> Example:
    """Parse one ``INPUT||COT #### ANSWER`` line; ``where`` prefixes error messages (e.g. ``'file.txt:12'``)."""
    parts = line.strip().split(FIELD_SEPARATOR)
    if len(parts) != 2:
        raise MalformedLineError(f"{where}: expected exactly one '{FIELD_SEPARATOR}', found {len(parts) - 1}")
    question, target = parts
    if not question.strip():
        raise MalformedLineError(f"{where}: empty question before '{FIELD_SEPARATOR}'")
    if ANSWER_MARKER not in target:
        raise MalformedLineError(f"{where}: no '{ANSWER_MARKER}' answer marker after '{FIELD_SEPARATOR}'")
    cot, rest = target.split(ANSWER_MARKER, 1)
    answer = (ANSWER_MARKER + rest).strip().replace(",", "")
    if answer == ANSWER_MARKER:
        raise MalformedLineError(f"{where}: empty answer after '{ANSWER_MARKER}'")
    return Example(question.strip(), cot.strip(), answer, source="" if where == "<string>" else where)


def read_examples(path: str | os.PathLike) -> list[Example]:
    """Read every example of a text file; blank lines are skipped, a malformed one raises with ``path:line``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    examples = []
    # utf-8-sig: a byte-order mark (Windows editors write one) is not part of the first question
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    examples.append(parse_line(line.rstrip("\r\n"), where=f"{path}:{number}"))
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    return examples


def _not_utf8(path: Path) -> ValueError:
    """The error for a file that is not UTF-8, naming its line and the first bad byte's offset."""
    data = path.read_bytes()
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        return ValueError(f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}): "
                          "convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8")
    return ValueError(f"{path}: not UTF-8 text")


def write_examples(path: str | os.PathLike, examples: Iterable[Example]) -> Path:
    """Write examples one per line in the published format (atomically: temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        for example in examples:
            handle.write(example.to_line() + "\n")
    os.replace(tmp, path)
    return path


def data_digest(examples: Iterable[Example]) -> str:
    """SHA-256 of the examples' text lines: what identifies the data a run trained on."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(example.to_line().encode("utf-8") + b"\n")
    return digest.hexdigest()
