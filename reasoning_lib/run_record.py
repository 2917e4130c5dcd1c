"""What defines a training run, recorded next to it, so a finished run is reloaded and never trained again.

``run.json`` in a run's folder holds the settings that define the run (the caller's: task, data files and their
hashes, model, dropout; the loop's: seed, global batch, steps, optimiser) and whether it finished. Reopening the
folder with the same settings reloads; with different ones it is refused with an error naming each setting and
both values, so a changed task, data file or dropout never silently reuses an old model.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

RECORD = "run.json"
# TrainConfig fields that define a run; the per-process split (batch_size, grad_accum_steps) does not: it follows
# from the world size, and the global batch is recorded instead.
LOOP_FIELDS = ("max_steps", "lr", "weight_decay", "warmup_steps", "schedule", "decay_fraction", "max_grad_norm", "seed")


def loop_identity(config, world_size: int, num_examples: int) -> dict:
    """The loop's part of a run's identity: optimiser and length, global batch, training-set size."""
    identity = {name: getattr(config, name) for name in LOOP_FIELDS}
    identity["global_batch"] = config.batch_size * config.grad_accum_steps * world_size
    identity["num_examples"] = num_examples
    return identity


def test_set_name(config, seed: int) -> str:
    """Which test set a reported number is from, for any config with ``task``, ``test_file`` and ``num_test``: the
    published file (name and hash prefix) or the generated split. Chapters that share a test set print the same
    name, which is how the capstone knows it may adopt their runs."""
    if config.test_file:
        return f"{Path(config.test_file).name} (sha256 {file_digest(config.test_file)[:12]}, first {config.num_test})"
    if config.task == "gsm8k":
        return f"GSM8K test split from the hub (first {config.num_test})"
    return f"generated {config.task} split (seed {seed}, {config.num_test} problems)"


def file_digest(path: str | os.PathLike | None) -> str | None:
    """SHA-256 of a data file (None for None), so a run records *which* data it trained on, not only its name."""
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _flat(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))  # tuples -> lists, paths -> strings


def read_record(folder: str | os.PathLike) -> dict | None:
    path = Path(folder) / RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}): delete it only if you mean to retrain that run") from None


def differences(saved: dict, now: dict) -> list[str]:
    """Each setting whose value differs, as 'name: saved -> now'."""
    old, new = _flat(_jsonable(saved)), _flat(_jsonable(now))
    return [f"{key}: {old.get(key, '(absent)')!r} -> {new.get(key, '(absent)')!r}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


# What may change when a run is extended (``extendable``): its length and the data a longer run draws.
EXTENSIBLE = ("max_steps", "num_examples")


def check_same_run(folder: str | os.PathLike, identity: dict, extendable: bool = False) -> dict | None:
    """The saved record when it was written for ``identity``; raises when it was written for other settings.

    With ``extendable``, a record that differs only in a larger ``max_steps`` (and the data it implies) is the same
    run, to be continued: it comes back marked unfinished."""
    record = read_record(folder)
    if record is None:
        return None
    changed = differences(record.get("identity", {}), identity)
    saved_steps = record.get("identity", {}).get("loop", {}).get("max_steps", 0)
    longer = identity.get("loop", {}).get("max_steps", 0) > saved_steps
    if changed and extendable and longer and all(c.split(":")[0].split(".")[-1] in EXTENSIBLE for c in changed):
        return {**record, "finished": False}
    if changed:
        state = "a finished run" if record.get("finished") else "checkpoints of a run"
        raise ValueError(
            f"{folder} holds {state} with other settings ({'; '.join(changed)}; saved -> now): use another "
            "output_dir, or delete that folder to train again"
        )
    return record


def write_record(folder: str | os.PathLike, identity: dict, finished: bool, **extra) -> None:
    """Write ``run.json`` atomically (a reader never sees half a record)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{RECORD}.tmp"
    tmp.write_text(json.dumps({"identity": _jsonable(identity), "finished": finished, **_jsonable(extra)}, indent=2))
    os.replace(tmp, folder / RECORD)


__all__ = ["RECORD", "check_same_run", "differences", "file_digest", "loop_identity", "read_record", "write_record"]
