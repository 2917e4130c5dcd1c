"""Causal distillation with interchange-intervention training, DIITO (Wu et al. 2022, arXiv 2112.02505).

``sentiment`` generates the offline task with a known causal structure; ``data`` encodes it (and GLUE);
``intervention`` reads and writes block outputs with forward hooks; ``models`` builds teacher, student and
the layer map; ``losses`` holds KD and the counterfactual term; ``stages`` runs training; ``evaluate``
measures accuracy and interchange-intervention accuracy.
"""
from .data import build_word_tokenizer, collate, encode, load_glue, load_sentiment, subset
from .evaluate import InterchangeResult, accuracy, correct, iia_matrix, interchange_accuracy, predict
from .intervention import (
    Sites, all_sites, counterfactual_logits, eligible, encoder_layers, interchanged, recording, sample_sites, source_values,
)
from .losses import DistillObjective, derangement, soft_kl
from .models import build_student, build_teacher, freeze, layer_mapping
from .presets import PRESETS, DistillConfig, get_config
from .stages import METHODS, Trained, distill, prepare_data, train_teacher

__all__ = [
    "build_word_tokenizer", "collate", "encode", "load_glue", "load_sentiment", "subset", "InterchangeResult",
    "accuracy", "correct", "iia_matrix", "interchange_accuracy", "predict", "Sites", "all_sites",
    "counterfactual_logits", "eligible", "encoder_layers", "interchanged", "recording", "sample_sites", "source_values",
    "DistillObjective",
    "derangement", "soft_kl", "build_student", "build_teacher", "freeze", "layer_mapping", "PRESETS",
    "DistillConfig", "get_config", "METHODS", "Trained", "distill", "prepare_data", "train_teacher",
]
