"""Model builders: HF ``transformers`` models from named size presets or from a hub/local path.

Random-init presets (``tiny``, ``mini``, ``small``, ``medium``) give the same architecture as the published
checkpoints at a size that trains on a CPU; ``small``/``medium`` match GPT-2 small/medium shapes. The attention
implementation is chosen once: FlashAttention-2 on CUDA when ``flash_attn`` is installed, else PyTorch SDPA.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertConfig,
    GPT2Config,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from transformers.utils import logging as hf_logging

from .config import check_choice, check_positive

logger = logging.getLogger(__name__)
# transformers' own progress bars (weight loading/saving) would land in chapter pages as empty widgets.
hf_logging.disable_progress_bar()

# (num_hidden_layers, hidden_size, num_attention_heads); the MLP is 4x wide as in GPT-2.
SIZE_PRESETS = {
    "tiny": (2, 128, 4),
    "mini": (4, 128, 4),
    "small": (12, 768, 12),
    "medium": (24, 1024, 16),
}
ARCHITECTURES = ("gpt2", "llama", "bert")
_announced: set[str] = set()


def attention_implementation() -> str:
    """``'flash_attention_2'`` on CUDA with flash-attn installed, else ``'sdpa'``; says which, once."""
    has_flash = importlib.util.find_spec("flash_attn") is not None
    choice = "flash_attention_2" if torch.cuda.is_available() and has_flash else "sdpa"
    if choice not in _announced:
        _announced.add(choice)
        if choice == "sdpa" and torch.cuda.is_available():
            logger.warning("flash-attn is not installed: using PyTorch SDPA attention (pip install -e .[gpu] adds it)")
        else:
            logger.info("attention implementation: %s", choice)
    return choice


def _config_from_preset(arch: str, preset: str, vocab_size: int, special_ids: dict, dropout: float, max_positions: int):
    check_choice("preset", preset, SIZE_PRESETS)
    layers, hidden, heads = SIZE_PRESETS[preset]
    if arch == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size, n_positions=max_positions, n_embd=hidden, n_layer=layers, n_head=heads,
            resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout, **special_ids,
        )
    if arch == "llama":
        return LlamaConfig(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
            num_attention_heads=heads, max_position_embeddings=max_positions, attention_dropout=dropout,
            tie_word_embeddings=True, **special_ids,
        )
    return BertConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * hidden, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
        max_position_embeddings=max_positions, pad_token_id=special_ids.get("pad_token_id", 0),
    )


def build_model(
    name_or_preset: str,
    arch: str = "gpt2",
    tokenizer: PreTrainedTokenizerBase | None = None,
    dropout: float | None = None,
    max_positions: int = 1024,
    num_labels: int | None = None,
    pretrained: bool = True,
) -> PreTrainedModel:
    """A causal LM (``gpt2``/``llama``) or sequence classifier (``bert``).

    ``name_or_preset`` is a size preset (random init, vocabulary and special ids from ``tokenizer``) or a
    local folder / hub id: its weights, or with ``pretrained=False`` only its config (random init at the real
    shapes: the paper dry run). ``dropout`` None keeps a hub config's own dropout (0 for a size preset).
    ``num_labels`` (``bert``) None keeps a folder's or hub config's own label count (2 for a size preset)."""
    check_choice("arch", arch, ARCHITECTURES)
    if num_labels is not None:
        check_positive("num_labels", num_labels)
    auto = AutoModelForSequenceClassification if arch == "bert" else AutoModelForCausalLM
    # None must not override a saved classifier's head: a 3-label model reloaded as 2 labels does not fit
    extra = {"num_labels": num_labels} if arch == "bert" and num_labels is not None else {}
    attn = attention_implementation()
    if name_or_preset not in SIZE_PRESETS:
        extra |= _dropout_settings(arch, dropout)
        if not pretrained:
            config = AutoConfig.from_pretrained(name_or_preset, local_files_only=_offline(), **extra)
            return _named_loss(auto.from_config(config, attn_implementation=attn), arch)
        model = _load_pretrained(auto, name_or_preset, attn, extra)
        return _named_loss(model, arch)
    if tokenizer is None:
        raise ValueError(f"build_model({name_or_preset!r}) needs the tokenizer to size the vocabulary")
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
    config = _config_from_preset(arch, name_or_preset, len(tokenizer), special, dropout or 0.0, max_positions)
    if arch == "bert":
        config.num_labels = 2 if num_labels is None else num_labels
    return _named_loss(auto.from_config(config, attn_implementation=attn), arch)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE") == "1"


def _dropout_settings(arch: str, dropout: float | None) -> dict:
    """Config overrides that set every dropout of a hub model to ``dropout`` (nothing when None)."""
    if dropout is None:
        return {}
    if arch == "gpt2":
        return {"resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": dropout}
    if arch == "llama":
        return {"attention_dropout": dropout}
    return {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}


def _load_pretrained(auto, name: str, attn: str, extra: dict) -> PreTrainedModel:
    try:
        return auto.from_pretrained(name, attn_implementation=attn, local_files_only=_offline(), **extra)
    except (OSError, ValueError) as err:
        if Path(name).is_dir():  # a local folder: its own problem (no weights, a bad config.json), not the hub's
            raise FileNotFoundError(f"model folder {name} could not be loaded ({folder_contents(name)}): "
                                    f"{type(err).__name__}: {err}") from None
        if not isinstance(err, OSError):
            raise
        where = "not a local folder nor in the local cache, and HF_HUB_OFFLINE=1 forbids the hub" if _offline() else str(err)
        raise FileNotFoundError(
            f"model {name!r} is not a size preset {list(SIZE_PRESETS)} and could not be loaded: {where}"
        ) from None


def folder_contents(folder: str | os.PathLike, limit: int = 8) -> str:
    """``'holds config.json, vocab.json'``: what a model folder that failed to load actually has."""
    names = sorted(p.name for p in Path(folder).iterdir())
    shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
    return f"it holds {shown}" if names else "it is empty"


def _named_loss(model: PreTrainedModel, arch: str) -> PreTrainedModel:
    # GPT2LMHeadModel's class name does not tell transformers its loss; naming it avoids a warning per run.
    if arch != "bert":
        model.loss_type = "ForCausalLM"
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def load_saved(path: str, arch: str = "gpt2") -> PreTrainedModel:
    """Reload a model written with ``save_pretrained`` (used for chapter outputs and checkpoints), with the saved
    config's own shapes, a classifier's ``num_labels`` included."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no saved model folder at {path}")
    return build_model(path, arch=arch, num_labels=None)


__all__ = ["SIZE_PRESETS", "attention_implementation", "build_model", "count_parameters", "load_saved"]
