"""Llama configs from a parameter budget (reference ``train/train_utils.py``, ``models/llama_mup.py``).

Two ways to size a model of ``num_hidden_layers`` L for a budget P:
* ``'reference'``: d = ⌊√((P − 320,000)/(12L))⌋ rounded down to a multiple of 16 (at least 16), intermediate 4d.
  The rule assumes 12d² per layer while a SwiGLU Llama layer has 16d², so the real count differs from P (the
  reference plots the real count);
* ``'exact'``: search hidden sizes (multiples of 16) and integer intermediate sizes in [2d, 8d] for the count
  closest to P. Tolerance: one intermediate unit costs 3·L·d parameters, so |count − P| ≤ 1.5·L·d for the chosen
  d (under 0.1% for the reference's budgets). Every count is a multiple of d, so P itself is hit only when d divides it.

Counts include the input embedding and the untied output head, as the reference's real (plotted) count does:
2·V·d + L·(4d² + 3d·f + 2d) + d (= 2·V·d + L·(16d² + 2d) + d at f = 4d). Fixed settings: head_dim 16, no GQA,
RMSNorm eps 1e-6, RoPE θ 10⁴, SiLU, init std 0.02, untied embeddings, no dropout, no biases.
Not implemented: the reference's µP variant (attention scaled by 1/d_head, MuReadout): this builds plain Llama.
"""
from __future__ import annotations

import math

from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedModel

from ..config import check_choice, check_positive
from ..models import attention_implementation

HEAD_DIM = 16
REFERENCE_ALLOWANCE = 320_000  # the reference's budget offset for embeddings
SIZING_MODES = ("reference", "exact")
FFN_RATIO_RANGE = (2, 8)  # 'exact' keeps intermediate_size within [2d, 8d]


def count_llama_parameters(vocab_size: int, hidden_size: int, intermediate_size: int, num_hidden_layers: int,
                           include_embeddings: bool = True) -> int:
    """Parameters of an untied, bias-free Llama; ``include_embeddings=False`` drops both V·d matrices."""
    d, f, layers = hidden_size, intermediate_size, num_hidden_layers
    per_layer = 4 * d * d + 3 * d * f + 2 * d  # q, k, v, o; gate, up, down; two RMSNorms
    embeddings = 2 * vocab_size * d if include_embeddings else 0
    return embeddings + layers * per_layer + d  # + the final norm


def config_parameter_count(config: LlamaConfig, include_embeddings: bool = True) -> int:
    """:func:`count_llama_parameters` of a config built here (raises for GQA, tying or biases)."""
    if config.tie_word_embeddings or config.attention_bias or config.mlp_bias:
        raise ValueError("the count assumes untied embeddings and no biases (as built by llama_config)")
    if config.num_key_value_heads != config.num_attention_heads:
        raise ValueError("the count assumes no grouped-query attention")
    return count_llama_parameters(config.vocab_size, config.hidden_size, config.intermediate_size,
                                  config.num_hidden_layers, include_embeddings)


def reference_hidden_size(num_parameters: int, num_hidden_layers: int) -> int:
    """The reference's width rule d = ⌊√((P − 320k)/(12L))⌋, down to a multiple of 16, at least 16."""
    check_positive("num_parameters", num_parameters)
    check_positive("num_hidden_layers", num_hidden_layers)
    width = math.isqrt(max(0, num_parameters - REFERENCE_ALLOWANCE) // (12 * num_hidden_layers))
    return max(HEAD_DIM, width // HEAD_DIM * HEAD_DIM)


def exact_widths(num_parameters: int, num_hidden_layers: int, vocab_size: int) -> tuple[int, int]:
    """(hidden_size, intermediate_size) whose count is closest to ``num_parameters``; ties prefer f/d nearest 4."""
    low, high = FFN_RATIO_RANGE
    best = None
    d = HEAD_DIM
    while count_llama_parameters(vocab_size, d, low * d, num_hidden_layers) <= num_parameters + 3 * num_hidden_layers * d:
        fixed = count_llama_parameters(vocab_size, d, 0, num_hidden_layers)
        ideal = (num_parameters - fixed) / (3 * num_hidden_layers * d)
        for f in {math.floor(ideal), math.ceil(ideal)}:
            if low * d <= ideal <= high * d:  # then floor and ceil are both in range: error ≤ 1.5·L·d
                error = abs(count_llama_parameters(vocab_size, d, f, num_hidden_layers) - num_parameters)
                key = (error, abs(f / d - 4))
                if best is None or key < best[0]:
                    best = (key, d, f)
        d += HEAD_DIM
    if best is None:
        smallest = count_llama_parameters(vocab_size, HEAD_DIM, low * HEAD_DIM, num_hidden_layers)
        raise ValueError(f"num_parameters={num_parameters} is below the smallest model ({smallest} parameters at "
                         f"hidden_size {HEAD_DIM}, vocab_size {vocab_size}, {num_hidden_layers} layers)")
    return best[1], best[2]


def llama_config(vocab_size: int, hidden_size: int, num_hidden_layers: int, intermediate_size: int | None = None,
                 special_ids: dict | None = None, max_position_embeddings: int = 2048) -> LlamaConfig:
    """The reference's Llama (``train/train_utils.py``): head_dim 16, intermediate 4d unless given, untied, no
    dropout."""
    check_positive("vocab_size", vocab_size)
    check_positive("num_hidden_layers", num_hidden_layers)
    if hidden_size <= 0 or hidden_size % HEAD_DIM:
        raise ValueError(f"hidden_size={hidden_size} must be a positive multiple of head_dim {HEAD_DIM}")
    intermediate_size = 4 * hidden_size if intermediate_size is None else intermediate_size
    check_positive("intermediate_size", intermediate_size)
    heads = hidden_size // HEAD_DIM
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers, num_attention_heads=heads, num_key_value_heads=heads, head_dim=HEAD_DIM,
        hidden_act="silu", max_position_embeddings=max_position_embeddings, initializer_range=0.02,
        rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
        tie_word_embeddings=False, attention_bias=False, mlp_bias=False, attention_dropout=0.0,
        **(special_ids or {}),
    )


def llama_config_for_budget(num_parameters: int, num_hidden_layers: int, vocab_size: int = 3000,
                            mode: str = "reference", tokenizer=None, max_position_embeddings: int = 2048) -> LlamaConfig:
    """A Llama config for a parameter budget; ``tokenizer`` (optional) sets the vocabulary and special ids."""
    check_choice("mode", mode, SIZING_MODES)
    check_positive("num_parameters", num_parameters)
    special = None
    if tokenizer is not None:
        vocab_size = len(tokenizer)
        special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                   "pad_token_id": tokenizer.pad_token_id}
    if mode == "reference":
        hidden, intermediate = reference_hidden_size(num_parameters, num_hidden_layers), None
    else:
        hidden, intermediate = exact_widths(num_parameters, num_hidden_layers, vocab_size)
    return llama_config(vocab_size, hidden, num_hidden_layers, intermediate, special, max_position_embeddings)


def build_llama(config: LlamaConfig) -> PreTrainedModel:
    """A randomly initialised ``LlamaForCausalLM`` (SDPA, or FlashAttention-2 on CUDA when installed)."""
    return AutoModelForCausalLM.from_config(config, attn_implementation=attention_implementation())


__all__ = ["HEAD_DIM", "build_llama", "SIZING_MODES", "config_parameter_count", "count_llama_parameters", "exact_widths",
           "llama_config", "llama_config_for_budget", "reference_hidden_size"]
