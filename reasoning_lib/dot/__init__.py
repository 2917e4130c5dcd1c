"""Diffusion of Thoughts (Ye et al. 2024, arXiv 2402.07754) on the SEDD core of ``reasoning_lib.sedd``.

``data`` (question-fixed canvases; DoT, DoT-MP thoughts and the answer-only control), ``answers`` (majority
vote and self-consistency; extraction and scoring are the book's ``reasoning_lib.answers``, re-exported),
``inference`` (DoT and DoT-MP sampling, accuracy, batch-1 throughput), ``presets`` and ``stages`` (data,
training from scratch or from a SEDD checkpoint).
"""
from .answers import answers_match, extract_answer, majority_vote, parse_number, self_consistency
from .data import Layout, build_tokenizer, canvas_text, encode_examples, mp_context, thoughts, training_pairs
from .inference import DoTEval, Generation, Sampler, evaluate, throughput
from .presets import PRESETS, DoTConfig, get_config, test_set_name
from .stages import make_sampler, prepare_data, train_dot

__all__ = [
    "answers_match", "extract_answer", "majority_vote", "parse_number", "self_consistency", "Layout",
    "build_tokenizer", "canvas_text", "encode_examples", "mp_context", "thoughts", "training_pairs", "DoTEval",
    "Generation", "Sampler", "evaluate", "throughput", "PRESETS", "DoTConfig", "get_config", "make_sampler",
    "prepare_data", "test_set_name", "train_dot",
]
