"""Save and load each stage: the GPT-2 as an HF ``save_pretrained`` folder (with its tokenizer), the extra
modules (readers, predictors, mixture, LSTM, attention) as ``modules.safetensors``, and their settings as
``implicit_cot.json``. So a paper-scale run can stop after any stage and continue from the folder."""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from ..models import load_saved
from .modules import MindReadingStudent, ThoughtEmulator

SETTINGS = "implicit_cot.json"
EXTRAS = "modules.safetensors"


def save_stage(module: MindReadingStudent | ThoughtEmulator, path: str | Path, tokenizer: PreTrainedTokenizerBase) -> Path:
    """Write ``module`` to folder ``path`` (``lm/`` + ``modules.safetensors`` + ``implicit_cot.json``)."""
    path = Path(path)
    module.lm.save_pretrained(path / "lm")
    tokenizer.save_pretrained(path / "lm")
    extras = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items() if not k.startswith("lm.")}
    save_file(extras, str(path / EXTRAS))
    settings = {"kind": type(module).__name__}
    if isinstance(module, ThoughtEmulator):
        settings |= {"mixture_size": module.mixture_size, "softmax_temperature": module.softmax_temperature}
    (path / SETTINGS).write_text(json.dumps(settings, indent=2))
    return path


def load_stage(path: str | Path) -> MindReadingStudent | ThoughtEmulator:
    """Rebuild a saved student or emulator; a folder of the wrong kind or shape raises a clear error."""
    path = Path(path)
    if not (path / SETTINGS).is_file():
        raise FileNotFoundError(f"{path} is not a saved implicit-CoT stage (no {SETTINGS})")
    settings = json.loads((path / SETTINGS).read_text())
    lm = load_saved(str(path / "lm"))
    if settings["kind"] == "MindReadingStudent":
        module = MindReadingStudent(lm)
    elif settings["kind"] == "ThoughtEmulator":
        module = ThoughtEmulator(lm, settings["mixture_size"], settings["softmax_temperature"])
    else:
        raise ValueError(f"{path / SETTINGS}: unknown kind {settings['kind']!r}")
    try:
        missing, unexpected = module.load_state_dict(load_file(str(path / EXTRAS)), strict=False)
    except RuntimeError as err:  # shapes differ
        raise ValueError(f"{path}: saved modules do not fit the model in {path / 'lm'}: {err}") from None
    missing = [k for k in missing if not k.startswith("lm.")]  # the GPT-2 weights came with the lm folder
    if missing or unexpected:
        raise ValueError(f"{path}: saved modules do not fit ({sorted(missing)[:4]} missing, {sorted(unexpected)[:4]} unexpected)")
    return module.train(False)
