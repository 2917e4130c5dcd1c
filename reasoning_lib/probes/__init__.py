"""Linear probes on hidden states, for any chapter (the multi-hop probes of the ``EleutherAI/transformer-reasoning``
reference, ``train/train_probe.py``, on the worlds of Allen-Zhu & Li 2024).

``features`` reads the hidden states of any HF model (or any model through ``forward``) at token positions
or named token groups; ``linear`` fits one logistic-regression probe per (hidden state, position) cell with
L-BFGS and cross-validated L2; ``stream`` streams rows and chunks classes so no (N, C) logits exist; ``memory``
cuts the fit under a memory cap and estimates its peak (``probe_memory``); ``grid`` holds the results and the
train-label baselines; ``plots`` draws the layer x position heat-map and ``report`` states a grid's best cell in
words.
"""
from .features import (
    POOLS, collect_hidden_states, hf_hidden_states, hf_logits, model_cross_entropy, pad_batch, token_groups,
    token_groups_from_spans,
)
from .grid import LabelSpace, ProbeGrid, hidden_state_names
from .linear import SPEC_PENALTIES, LinearProbes, ProbeConfig, fit_probes, run_probes, split_rows
from .memory import ProbeLayout, ProbeMemory, ProbeMemoryError, choose_layout, probe_memory
from .plots import probe_heatmap
from .report import best_cell, probe_line

__all__ = [
    "POOLS", "collect_hidden_states", "hf_hidden_states", "hf_logits", "model_cross_entropy", "pad_batch",
    "token_groups", "token_groups_from_spans", "LabelSpace", "ProbeGrid", "hidden_state_names", "SPEC_PENALTIES",
    "LinearProbes", "ProbeConfig", "fit_probes", "run_probes", "split_rows", "ProbeLayout", "ProbeMemory",
    "ProbeMemoryError", "choose_layout", "probe_memory", "probe_heatmap", "best_cell", "probe_line",
]
