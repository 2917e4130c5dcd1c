"""Teacher and student BERT classifiers, and the map between their layers."""
from __future__ import annotations

import copy

import torch
from transformers import AutoModelForSequenceClassification, BertConfig, PreTrainedModel

from ..models import attention_implementation, build_model
from .intervention import encoder_layers

# A small BERT trained from scratch on 2 CPU cores (sizes chosen for that): hidden 128, 4 heads, FFN 512.
TINY_BERT = {"hidden_size": 128, "num_attention_heads": 4, "intermediate_size": 512}


def build_teacher(name_or_layers: str | int, tokenizer=None, num_labels: int = 2, dropout: float = 0.1,
                  max_positions: int = 128) -> PreTrainedModel:
    """A BERT classifier: an int builds a random tiny BERT with that many layers; a string is a hub id or folder."""
    if isinstance(name_or_layers, str):
        from .glue import _quiet_loading  # a pretrained masked LM as a classifier: its MLM head goes, a new head starts

        with _quiet_loading():
            return build_model(name_or_layers, arch="bert", num_labels=num_labels)
    if tokenizer is None:
        raise ValueError("a randomly initialised teacher needs the tokenizer to size its vocabulary")
    config = BertConfig(
        vocab_size=len(tokenizer), num_hidden_layers=name_or_layers, max_position_embeddings=max_positions,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id, **TINY_BERT,
    )
    return AutoModelForSequenceClassification.from_config(config, attn_implementation=attention_implementation())


def build_student(init_from: PreTrainedModel, layers: list[int]) -> PreTrainedModel:
    """A BERT with ``len(layers)`` blocks copied from ``init_from``'s blocks ``layers``, plus its embeddings and
    pooler; the classifier is fresh (the PKD/XXS convention). ``init_from`` is the teacher (the CPU setting) or a
    pretrained BERT (the XXS paper setting: ``bert-base-uncased``, layers 0-5)."""
    available = len(encoder_layers(init_from))
    if not layers or any(not 0 <= l < available for l in layers):
        raise ValueError(f"student layers {layers} must be a non-empty list of block indices below {available}")
    config = copy.deepcopy(init_from.config)
    config.num_hidden_layers = len(layers)
    student = AutoModelForSequenceClassification.from_config(config, attn_implementation=attention_implementation())
    source = init_from.state_dict()
    own = student.state_dict()
    for name in own:
        if name.startswith("classifier."):
            continue
        src_name = name
        if ".encoder.layer." in name:
            head, rest = name.split(".encoder.layer.")
            index, tail = rest.split(".", 1)
            src_name = f"{head}.encoder.layer.{layers[int(index)]}.{tail}"
        if src_name in source and source[src_name].shape == own[name].shape:
            own[name] = source[src_name].clone()
    student.load_state_dict(own)
    return student


def layer_mapping(spec: str | dict, teacher_layers: int, student_layers: int) -> dict[int, list[int]]:
    """Student layer -> aligned teacher layers.

    ``'full'``: with r = teacher/student layers, student j <-> teacher {r*j, ..., r*j + r - 1}, the
    reference XXS ``neuron_mapping full``.
    A dict ``{j: [teacher layers]}`` or a string ``'0:1;1:3'`` gives an explicit mapping."""
    if spec == "full":
        if teacher_layers % student_layers:
            raise ValueError(f"'full' mapping needs teacher layers ({teacher_layers}) divisible by student layers ({student_layers})")
        r = teacher_layers // student_layers
        return {j: list(range(r * j, r * j + r)) for j in range(student_layers)}
    if isinstance(spec, str):
        try:
            spec = {int(s): [int(t) for t in ts.split(",")] for s, ts in (part.split(":") for part in spec.split(";"))}
        except ValueError:
            raise ValueError(f"layer mapping {spec!r} is neither 'full' nor of the form '0:0,1;1:2,3'") from None
    mapping = {int(j): sorted(int(t) for t in ts) for j, ts in spec.items()}
    for j, ts in mapping.items():
        if not 0 <= j < student_layers or not ts or any(not 0 <= t < teacher_layers for t in ts):
            raise ValueError(f"mapping {j} -> {ts} is outside {student_layers} student / {teacher_layers} teacher layers")
    return mapping


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, no gradients: the teacher during distillation."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
