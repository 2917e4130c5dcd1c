"""Linear probes on hidden states, for any chapter (§3.7 of ``shared/specs/capacity_and_probes.md``).

``features`` reads the hidden states of any HF model (or any model through ``forward``) at token positions
or named token groups; ``linear`` fits one logistic-regression probe per (hidden state, position) cell with
L-BFGS and cross-validated L2; ``grid`` holds the results and the train-label baselines; ``plots`` draws the
layer x position heat-map.
"""
from .features import (
    POOLS, collect_hidden_states, hf_hidden_states, hf_logits, model_cross_entropy, pad_batch, token_groups,
    token_groups_from_spans,
)
from .grid import LabelSpace, ProbeGrid, hidden_state_names
from .linear import SPEC_PENALTIES, LinearProbes, ProbeConfig, fit_probes, run_probes, split_rows
from .plots import probe_heatmap

__all__ = [
    "POOLS", "collect_hidden_states", "hf_hidden_states", "hf_logits", "model_cross_entropy", "pad_batch",
    "token_groups", "token_groups_from_spans", "LabelSpace", "ProbeGrid", "hidden_state_names", "SPEC_PENALTIES",
    "LinearProbes", "ProbeConfig", "fit_probes", "run_probes", "split_rows", "probe_heatmap",
]
