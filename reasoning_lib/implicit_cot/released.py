"""Load the authors' released implicit-CoT checkpoints (Deng et al. 2023, arXiv 2311.01460, §3 and Table 2).

The reference code (``da03/implicit_chain_of_thought``, ``src/models/student.py`` and ``src/models/emulator.py``)
saves a stage as a folder with two files:

* ``config.json``: its ``StudentConfig`` / ``EmulatorConfig`` (a ``PretrainedConfig``): ``base_model`` (the hub id
  of the GPT-2 it started from, ``gpt2`` or ``gpt2-medium``), ``tokenizer_name``, ``mixture_size`` and, for the
  emulator, ``softmax_temperature``;
* ``state_dict.bin``: ``torch.save`` of the whole module's ``state_dict()``: the GPT-2 under ``base_model.``, one
  ``nn.Sequential(Linear, ReLU, Linear)`` per layer under ``mlps.<l>.`` (weights at indices 0 and 2), and for the
  emulator ``mixture_components``, ``rnn`` (a one-layer LSTM), ``key_proj``, ``query_proj``, ``out_proj``.

``key_table`` spells out, key by key, where each reference tensor goes in ``MindReadingStudent`` /
``ThoughtEmulator``; the loaders refuse any key outside it, any key it expects and the file lacks, and any shape
that does not fit. Two deliberate allowances: a ``module.`` / ``_orig_mod.`` prefix on every key (DataParallel,
``torch.compile``) is stripped, and the causal-mask buffers ``attn.bias`` / ``attn.masked_bias`` that
``transformers`` before 4.30 stored in every GPT-2 state dict (the released files have them, see the reference's
pull request #3) are dropped, since they hold no learned value. The reference's LSTM is not ``batch_first``; ours
is: the parameters (``weight_ih_l0`` …, gates in PyTorch's order) are the same either way.

Using the released models in chapter 2 (the ``released_dir`` parameter of the notebook):

1. Download a model folder from the Google Drive link in the reference README (e.g. ``4 X 4 Mult - GPT-2``):
   it holds ``emulator/`` and ``student/``, each with ``config.json`` and ``state_dict.bin``.
2. ``emulator, student = load_released_pair(released_dir)`` (or ``load_released_emulator(released_dir +
   "/emulator")`` and ``load_released_student(released_dir + "/student")``); pass ``base_model=`` a local GPT-2
   folder when the hub cannot be reached (only its ``config.json`` is read, never its weights).
3. ``tokenizer = released_tokenizer()`` (GPT-2's BPE, end-of-text as pad), the test set read with
   ``reasoning_lib.data.read_examples`` from the reference's ``data/4_by_4_mult/test_bigbench.txt``, then
   ``evaluate_implicit(emulator.to(device), student.to(device), tokenizer, test, batch_size=1)``: the reference's
   log reports 0.966 accuracy on 4×4 with GPT-2 small.

``save_in_released_layout`` writes one of our modules in the same layout; it exists for the tests (a checkpoint
from random weights in the reference's format, loaded back), and its files also load with the reference's own
``Student.from_pretrained`` / ``Emulator.from_pretrained``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from ..models import attention_implementation
from ..tokenization import load_tokenizer
from .modules import MindReadingStudent, ThoughtEmulator

STATE_DICT = "state_dict.bin"
CONFIG = "config.json"
DEFAULT_TEMPERATURE = 0.05  # EmulatorConfig's default softmax_temperature
KINDS = ("student", "emulator")

# GPT-2 parameters in the order HF's state_dict lists them; the reference wraps the model as `base_model`, we as `lm`.
_GPT2_FIRST = ("transformer.wte.weight", "transformer.wpe.weight")
_GPT2_BLOCK = (
    "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias",
    "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias",
)
_GPT2_LAST = ("transformer.ln_f.weight", "transformer.ln_f.bias", "lm_head.weight")
# Per-layer MLP: nn.Sequential(Linear, ReLU, Linear) on both sides, so the weights sit at indices 0 and 2.
_MLP = ("0.weight", "0.bias", "2.weight", "2.bias")
# Reference name -> ours, per layer l, after the GPT-2.
STUDENT_LAYER_KEYS = {f"mlps.{{l}}.{p}": f"readers.{{l}}.{p}" for p in _MLP}
EMULATOR_LAYER_KEYS = {f"mlps.{{l}}.{p}": f"predictors.{{l}}.{p}" for p in _MLP}
# Reference name -> ours, once, after the per-layer MLPs (emulator only).
EMULATOR_KEYS = {
    "mixture_components.weight": "mixture.weight",
    "rnn.weight_ih_l0": "lstm.weight_ih_l0",
    "rnn.weight_hh_l0": "lstm.weight_hh_l0",
    "rnn.bias_ih_l0": "lstm.bias_ih_l0",
    "rnn.bias_hh_l0": "lstm.bias_hh_l0",
    "key_proj.weight": "key.weight",
    "key_proj.bias": "key.bias",
    "query_proj.weight": "query.weight",
    "query_proj.bias": "query.bias",
    "out_proj.weight": "out.weight",
    "out_proj.bias": "out.bias",
}
# Causal-mask buffers that transformers before 4.30 saved in each GPT-2 attention block; no learned value.
LEGACY_BUFFERS = ("attn.bias", "attn.masked_bias")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class ReleasedConfig:
    """What a reference ``config.json`` records (``StudentConfig`` / ``EmulatorConfig``)."""

    base_model: str = "gpt2"
    tokenizer_name: str = "gpt2"
    mixture_size: int | str | None = None  # int, or 'vocab_size' on the reference's `mixture` branch
    softmax_temperature: float = DEFAULT_TEMPERATURE

    def __post_init__(self):
        if not isinstance(self.base_model, str) or not self.base_model:
            raise ValueError(f"base_model={self.base_model!r} must name a GPT-2 (hub id such as 'gpt2' or a local folder)")
        if not self.softmax_temperature > 0:
            raise ValueError(f"softmax_temperature={self.softmax_temperature} must be > 0")
        if isinstance(self.mixture_size, str) and self.mixture_size.isdigit():
            self.mixture_size = int(self.mixture_size)  # the `mixture` branch stores it as a string
        if self.mixture_size is not None and self.mixture_size != "vocab_size" and not (
            isinstance(self.mixture_size, int) and self.mixture_size >= 1
        ):
            raise ValueError(f"mixture_size={self.mixture_size!r} must be a positive integer or 'vocab_size'")


def read_released_config(folder: str | Path, base_model: str | None = None) -> ReleasedConfig:
    """``folder/config.json`` when present (else the reference defaults); ``base_model`` overrides its entry."""
    path = Path(folder) / CONFIG
    if not path.is_file():
        if base_model is None:
            raise FileNotFoundError(f"{path} not found: pass base_model= (e.g. 'gpt2' or 'gpt2-medium') to say which GPT-2 it is")
        return ReleasedConfig(base_model=base_model)
    raw = json.loads(path.read_text())
    fields = {k: raw[k] for k in ("base_model", "tokenizer_name", "mixture_size", "softmax_temperature") if k in raw}
    if base_model is not None:
        fields["base_model"] = base_model
    try:
        return ReleasedConfig(**fields)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def key_table(kind: str, num_layers: int) -> dict[str, str]:
    """Every reference state-dict key of a ``kind`` ('student'/'emulator') on an ``num_layers``-block GPT-2 -> ours."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} must be one of {KINDS}")
    gpt2 = list(_GPT2_FIRST) + [f"transformer.h.{l}.{p}" for l in range(num_layers) for p in _GPT2_BLOCK] + list(_GPT2_LAST)
    table = {f"base_model.{name}": f"lm.{name}" for name in gpt2}
    per_layer = STUDENT_LAYER_KEYS if kind == "student" else EMULATOR_LAYER_KEYS
    table |= {ref.format(l=l): ours.format(l=l) for l in range(num_layers) for ref, ours in per_layer.items()}
    if kind == "emulator":
        table |= EMULATOR_KEYS
    return table


def _kind(module: nn.Module) -> str:
    if isinstance(module, MindReadingStudent):
        return "student"
    if isinstance(module, ThoughtEmulator):
        return "emulator"
    raise TypeError(f"expected a MindReadingStudent or ThoughtEmulator, got {type(module).__name__}")


def _module_table(module: MindReadingStudent | ThoughtEmulator) -> dict[str, str]:
    table = key_table(_kind(module), module.num_layers)
    ours = set(module.state_dict())
    if set(table.values()) != ours:  # transformers renamed a GPT-2 tensor: the table needs updating
        raise RuntimeError(
            f"the reference key table does not cover {type(module).__name__}: ours only "
            f"{sorted(ours - set(table.values()))[:4]}, table only {sorted(set(table.values()) - ours)[:4]}"
        )
    return table


def _is_legacy_buffer(key: str) -> bool:
    parts = key.split(".")  # base_model.transformer.h.<l>.attn.(masked_)bias
    return (len(parts) == 6 and parts[:3] == ["base_model", "transformer", "h"] and parts[3].isdigit()
            and ".".join(parts[4:]) in LEGACY_BUFFERS)


def _strip_wrapper(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a prefix that every key shares (``module.`` from DataParallel, ``_orig_mod.`` from torch.compile)."""
    for prefix in WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            return _strip_wrapper({k[len(prefix) :]: v for k, v in state.items()})
    return state


def read_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """``folder/state_dict.bin`` as a plain dict of CPU tensors, wrapper prefixes removed."""
    path = Path(folder) / STATE_DICT
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: a released stage folder holds config.json and state_dict.bin "
            "(download it from the Google Drive link in the README of da03/implicit_chain_of_thought)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors (got {type(state).__name__})")
    return _strip_wrapper(dict(state))


def build_base_model(base_model: str) -> PreTrainedModel:
    """A randomly initialised GPT-2 shaped like ``base_model``'s config (hub id or local folder); no weights downloaded."""
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        config = AutoConfig.from_pretrained(base_model, local_files_only=offline)
    except OSError as err:
        where = "not a local folder nor in the local cache, and HF_HUB_OFFLINE=1 forbids the hub" if offline else str(err)
        raise FileNotFoundError(
            f"GPT-2 config {base_model!r} could not be loaded ({where}): pass base_model= a local folder with its config.json"
        ) from None
    if config.model_type != "gpt2":
        raise ValueError(
            f"base_model={base_model!r} is a {config.model_type!r} model; the released implicit-CoT checkpoints are GPT-2"
        )
    lm = AutoModelForCausalLM.from_config(config, attn_implementation=attention_implementation())
    lm.loss_type = "ForCausalLM"  # as reasoning_lib.models names it, so transformers does not warn per call
    return lm


def _listed(keys: list[str], limit: int = 5) -> str:
    return ", ".join(keys[:limit]) + (f" … ({len(keys)} in all)" if len(keys) > limit else "")


def _check_keys(path: Path, kind: str, num_layers: int, state: dict, expected: dict[str, tuple]) -> None:
    """Refuse a file whose keys are not exactly ``expected`` (reference name -> the shape our module needs)."""
    unknown = sorted(k for k in state if k not in expected)
    missing = [f"{k} {expected[k]}" for k in expected if k not in state]
    if not unknown and not missing:
        return
    found = [f"{what} key(s) {_listed(keys)}" for what, keys in (("unexpected", unknown), ("missing", missing)) if keys]
    raise ValueError(
        f"{path}: not the reference's {kind} layout for a {num_layers}-layer GPT-2: {'; '.join(found)}. "
        f"Expected exactly the {len(expected)} keys of key_table({kind!r}, {num_layers}); "
        "another layer count means the checkpoint is for another base model (pass base_model=)"
    )


def _mapped_state(path: Path, state: dict, module: MindReadingStudent | ThoughtEmulator) -> dict[str, torch.Tensor]:
    """The released tensors under our names, after checking keys and shapes against ``module``."""
    kind, table = _kind(module), _module_table(module)
    ours = module.state_dict()
    state = {k: v for k, v in state.items() if not _is_legacy_buffer(k)}
    _check_keys(path, kind, module.num_layers, state, {ref: tuple(ours[name].shape) for ref, name in table.items()})
    mapped = {}
    for ref, name in table.items():
        if tuple(state[ref].shape) != tuple(ours[name].shape):
            raise ValueError(
                f"{path}: {ref!r} has shape {tuple(state[ref].shape)} but {type(module).__name__}.{name} expects "
                f"{tuple(ours[name].shape)}: is base_model the GPT-2 this checkpoint was trained from?"
            )
        mapped[name] = state[ref].to(ours[name].dtype)
    if not torch.equal(mapped["lm.lm_head.weight"], mapped["lm.transformer.wte.weight"]):
        raise ValueError(
            f"{path}: 'base_model.lm_head.weight' differs from 'base_model.transformer.wte.weight'; GPT-2 ties them"
        )
    return mapped


def _check_kind(path: Path, state: dict, kind: str) -> None:
    is_emulator = "mixture_components.weight" in state
    if is_emulator != (kind == "emulator"):
        found, loader = ("an emulator", "load_released_emulator") if is_emulator else ("a student", "load_released_student")
        marker = "present" if is_emulator else "absent"
        raise ValueError(f"{path} holds {found} checkpoint ('mixture_components.weight' {marker}): use {loader}")


def _load_into(module, folder: Path, state: dict):
    module.load_state_dict(_mapped_state(folder / STATE_DICT, state, module), strict=True)
    return module.train(False)


def load_released_student(folder: str | Path, base_model: str | None = None) -> MindReadingStudent:
    """The reference's ``Student`` from ``folder`` (``config.json`` + ``state_dict.bin``) as a ``MindReadingStudent``
    (CPU, eval); ``base_model`` overrides the GPT-2 its config names (e.g. a local copy of ``gpt2-medium``)."""
    folder = Path(folder)
    state = read_state_dict(folder)
    config = read_released_config(folder, base_model)
    _check_kind(folder / STATE_DICT, state, "student")
    return _load_into(MindReadingStudent(build_base_model(config.base_model)), folder, state)


def load_released_emulator(folder: str | Path, base_model: str | None = None) -> ThoughtEmulator:
    """The reference's ``Emulator`` from ``folder`` as a ``ThoughtEmulator`` (CPU, eval); M and τ from its config."""
    folder = Path(folder)
    state = read_state_dict(folder)
    config = read_released_config(folder, base_model)
    _check_kind(folder / STATE_DICT, state, "emulator")
    mixture_size = state["mixture_components.weight"].shape[0]  # the table's rows decide; 'vocab_size' is resolved by it
    if isinstance(config.mixture_size, int) and config.mixture_size != mixture_size:
        raise ValueError(
            f"{folder / CONFIG} says mixture_size={config.mixture_size} but 'mixture_components.weight' in "
            f"{folder / STATE_DICT} has {mixture_size} rows"
        )
    emulator = ThoughtEmulator(build_base_model(config.base_model), mixture_size, config.softmax_temperature)
    return _load_into(emulator, folder, state)


def load_released_pair(folder: str | Path, base_model: str | None = None) -> tuple[ThoughtEmulator, MindReadingStudent]:
    """A downloaded model folder of the reference README (``emulator/`` and ``student/``) as (emulator, student)."""
    folder = Path(folder)
    return load_released_emulator(folder / "emulator", base_model), load_released_student(folder / "student", base_model)


def released_tokenizer(name: str = "gpt2") -> PreTrainedTokenizerBase:
    """The reference's tokenizer (``tokenizer_name`` of its config, GPT-2's BPE) with end-of-text as pad."""
    tokenizer = load_tokenizer(name)
    tokenizer.pad_token = tokenizer.eos_token  # the reference pads with E, never with a token of its own
    return tokenizer


def _legacy_buffers(module: MindReadingStudent | ThoughtEmulator) -> dict[str, torch.Tensor]:
    positions = module.lm.config.n_positions
    mask = torch.tril(torch.ones(positions, positions, dtype=torch.bool)).view(1, 1, positions, positions)
    return {"attn.bias": mask, "attn.masked_bias": torch.tensor(-1e4)}


def save_in_released_layout(
    module: MindReadingStudent | ThoughtEmulator, folder: str | Path, base_model: str,
    tokenizer_name: str = "gpt2", legacy_buffers: bool = False,
) -> Path:
    """Write ``module`` as the reference's ``save_pretrained`` would (for tests and for the reference's scripts).

    ``base_model`` goes into ``config.json``; ``legacy_buffers`` also writes the causal-mask buffers that
    transformers before 4.30 kept in the state dict, as the released files have them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ours = module.state_dict()
    extra = _legacy_buffers(module) if legacy_buffers else {}
    state = {}
    for ref, name in _module_table(module).items():
        state[ref] = ours[name].detach().cpu()
        if extra and ref.endswith(".ln_1.bias"):  # HF lists an attention block's buffers before its sub-layers
            block = ref[: -len("ln_1.bias")]
            state |= {block + buffer: value for buffer, value in extra.items()}
    torch.save(state, folder / STATE_DICT)
    config = {"base_model": base_model, "tokenizer_name": tokenizer_name, "mixture_size": getattr(module, "mixture_size", 1)}
    if isinstance(module, ThoughtEmulator):
        config["softmax_temperature"] = module.softmax_temperature
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return folder


__all__ = [
    "CONFIG", "EMULATOR_KEYS", "EMULATOR_LAYER_KEYS", "LEGACY_BUFFERS", "STATE_DICT", "STUDENT_LAYER_KEYS", "ReleasedConfig",
    "build_base_model", "key_table", "load_released_emulator", "load_released_pair", "load_released_student",
    "read_released_config", "read_state_dict", "released_tokenizer", "save_in_released_layout",
]


def evaluate_released(folder: str | Path, examples, device: str = "auto", base_model: str | None = None,
                      batch_size: int = 1, max_new_tokens: int = 128):
    """Accuracy and throughput of the released (emulator, student) pair in ``folder`` on ``examples`` (chapter 2's
    ``released_dir``); the test problems should be the reference's (``test_bigbench.txt``) for its numbers."""
    from ..runtime import resolve_device
    from .stages import evaluate_implicit

    emulator, student = load_released_pair(folder, base_model)
    config = read_released_config(Path(folder) / "student", base_model)
    target = resolve_device(device)
    return evaluate_implicit(emulator.to(target), student.to(target), released_tokenizer(config.tokenizer_name),
                             examples, batch_size, max_new_tokens)
