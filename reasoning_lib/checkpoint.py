"""Atomic training checkpoints: weights as safetensors, the rest as a ``weights_only`` torch file.

A checkpoint is a folder ``step-000120/`` holding ``model.safetensors`` and ``trainer_state.pt`` (optimizer,
scheduler, step, RNG states). It is written under a temporary name and renamed, so a run killed mid-write
never leaves a half checkpoint that resume would pick up; every file and folder is fsynced before and after the
rename, so a power cut cannot leave a renamed folder of empty files. A file that cannot be read (truncated,
garbage, or holding pickled objects that ``weights_only`` loading refuses) raises :class:`CorruptCheckpointError`
naming it, so a resume can fall back to an older checkpoint.
"""
from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

import pickle

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

STEP_DIR = re.compile(r"^step-(\d+)$")


class CorruptCheckpointError(ValueError):
    """A checkpoint file that is missing or unreadable; the message starts with ``checkpoint file <path>``."""


def _fsync(path: Path) -> None:
    """Flush a file's or a folder's contents to the disk (folders: their entries, i.e. a rename)."""
    if path.is_dir() and not hasattr(os, "O_DIRECTORY"):  # Windows cannot open folders; NTFS journals renames
        return
    fd = os.open(path, (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if path.is_dir() else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict:
    """Every random generator that training touches, in a form ``torch.load(weights_only=True)`` accepts."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: str | os.PathLike, step: int, model: torch.nn.Module, trainer_state: dict, keep_last: int = 2) -> Path:
    """Write ``folder/step-{step}`` atomically and delete all but the newest ``keep_last`` checkpoints."""
    folder = Path(folder)
    final = folder / f"step-{step:06d}"
    tmp = folder / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    torch.save({**trainer_state, "step": step, "rng": rng_state()}, tmp / "trainer_state.pt")
    for path in (tmp / "model.safetensors", tmp / "trainer_state.pt", tmp):
        _fsync(path)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _fsync(folder)
    for old in list_checkpoints(folder)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def save_weights(folder: str | os.PathLike, model: torch.nn.Module) -> Path:
    """Write ``folder/model.safetensors`` atomically (a temporary file, then a rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".model.safetensors.tmp"
    save_model(model, str(tmp))
    _fsync(tmp)
    os.replace(tmp, folder / "model.safetensors")
    _fsync(folder)
    return folder / "model.safetensors"


def load_weights(folder: str | os.PathLike, model: torch.nn.Module) -> None:
    """Load ``folder/model.safetensors`` into ``model``; a checkpoint of another model is refused by name."""
    path = Path(folder)
    file = path / "model.safetensors"
    if not file.is_file():
        raise CorruptCheckpointError(f"checkpoint file {file} is missing")
    try:
        missing, unexpected = load_model(model, str(file), strict=False)
    except SafetensorError as err:  # truncated or not a safetensors file at all
        raise CorruptCheckpointError(f"checkpoint file {file} is corrupt ({err})") from None
    except RuntimeError as err:  # size mismatch: a checkpoint of another model
        raise ValueError(f"checkpoint {path} does not fit this model: {err}") from None
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not fit this model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")


def load_trainer_state(path: str | os.PathLike) -> dict:
    """The optimizer, scheduler, step and RNG states of checkpoint folder ``path`` (tensors and plain data only)."""
    file = Path(path) / "trainer_state.pt"
    if not file.is_file():
        raise CorruptCheckpointError(f"checkpoint file {file} is missing")
    try:
        return torch.load(file, weights_only=True)
    except pickle.UnpicklingError as err:  # a pickled object: never executed, refused
        first = str(err).strip().splitlines()[-1]
        raise CorruptCheckpointError(f"checkpoint file {file} holds objects that weights_only loading refuses "
                                     f"({first}); it was not written by this library") from None
    except (RuntimeError, EOFError, OSError) as err:  # truncated or garbage: "PytorchStreamReader failed ..."
        raise CorruptCheckpointError(f"checkpoint file {file} is corrupt ({str(err).splitlines()[0]})") from None


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module) -> dict:
    """Load weights into ``model`` (shapes must match) and return the trainer state dict.

    The trainer state is read first: a corrupt one then leaves ``model`` untouched."""
    state = load_trainer_state(path)
    load_weights(path, model)
    return state
