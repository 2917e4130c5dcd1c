"""Datasets of the book: the shared text format, multiplication, GSM8K, and token sequences."""
from ..answers import extract_answer  # the book's one extraction rule, re-exported
from .examples import Example, MalformedLineError, data_digest, parse_line, read_examples, write_examples
from .multiplication import format_example, make_splits, parse_operands, parse_task
from .sequences import FORMATS, IGNORE_INDEX, EncodedExample, collate, encode_examples

__all__ = [
    "Example", "MalformedLineError", "data_digest", "extract_answer", "parse_line", "read_examples", "write_examples",
    "format_example", "make_splits", "parse_operands", "parse_task",
    "FORMATS", "IGNORE_INDEX", "EncodedExample", "collate", "encode_examples",
]
