"""Save and load SEDD models with their graph and noise schedule (reference ``load_model.py``; the published
``louaaron/sedd-small`` has no ``model_type``, so ``transformers.AutoModel`` cannot load it).

Three layouts are recognised:

* hub: ``config.json`` (the reference's nested training config) + ``pytorch_model.bin`` (pickled fp32 state
  dict), as in ``louaaron/sedd-small``; a hub id is fetched with ``huggingface_hub``;
* reference run folder: ``.hydra/config.yaml`` + ``checkpoints-meta/checkpoint.pth``; the EMA shadow weights are
  loaded, as ``load_model.py`` of the reference does;
* ours: ``config.json`` in the hub layout + ``model.safetensors`` (written by ``save_model``).

Every pickle is read with ``weights_only=True``. A config that disagrees with its weights is refused by name.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
import os
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

from .graph import build_graph
from .model import EMA, SEDD, DDiTConfig
from .noise import build_noise

CONFIG_FILE = "config.json"
HUB_WEIGHTS = "pytorch_model.bin"
OUR_WEIGHTS = "model.safetensors"
RUN_CONFIG = ".hydra/config.yaml"
RUN_CHECKPOINT = "checkpoints-meta/checkpoint.pth"
OPTIONAL_KEYS = {"rotary_emb.inv_freq"}  # a buffer recomputed at construction; old checkpoints may lack it


def save_model(model: SEDD, folder: str | os.PathLike, graph_type: str, noise: dict) -> Path:
    """Write ``config.json`` (hub layout) and ``model.safetensors`` (every tensor, the rotary buffer included)."""
    config = model.config.to_reference(graph_type, noise)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    save_file(tensors, str(folder / OUR_WEIGHTS), metadata={"format": "pt"})
    return folder


def load_model(path_or_repo_id: str | os.PathLike, device: str | torch.device = "cpu"):
    """``(model, graph, noise)`` from a local folder in any of the three layouts or a hub repo id; model in eval mode."""
    folder = Path(path_or_repo_id)
    if folder.is_dir():
        found = _read_folder(folder)
    elif folder.exists() or folder.is_absolute() or str(path_or_repo_id).startswith(".") or str(path_or_repo_id).count("/") > 1:
        raise FileNotFoundError(f"{path_or_repo_id} is not a folder (expected a model folder or a hub repo id)")
    else:
        found = _download(str(path_or_repo_id))
    cfg, state, ema_state = found
    with _naming(path_or_repo_id):
        model = build_from_state(cfg, state)
        if ema_state is not None:
            ema = EMA(model)
            ema.load_reference_state(ema_state, model)
            ema.copy_to(model)
        graph_type = cfg["graph"]["type"]
        return model.to(device).eval(), build_graph(graph_type, model.config.vocab_size), build_noise(dict(cfg["noise"]))


def build_random(path_or_repo_id: str | os.PathLike) -> SEDD:
    """A SEDD with random weights at the config of a folder (any layout) or hub repo (its ``config.json`` only):
    the paper dry run's stand-in for a pretrained checkpoint, at its real shapes."""
    folder = Path(path_or_repo_id)
    if folder.is_dir():
        path = folder / (RUN_CONFIG if (folder / RUN_CONFIG).is_file() else CONFIG_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"{folder} has no {CONFIG_FILE} or {RUN_CONFIG} to build a SEDD from")
        cfg = read_config(path)
    else:
        cfg = _download(str(path_or_repo_id), files=(CONFIG_FILE,))[0]
    with _naming(path_or_repo_id):
        return SEDD(DDiTConfig.from_reference(cfg))


def read_config(path: Path) -> dict:
    """A SEDD config (JSON, or the reference run folder's YAML); a file that does not parse is named with its line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
        cfg = yaml.safe_load(text) if path.suffix == ".yaml" else json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg}, column {err.colno})") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a mapping of settings, found {type(cfg).__name__}")
    return cfg


@contextmanager
def _naming(source):
    """A missing config entry named with the model it belongs to and the keys a SEDD config has."""
    try:
        yield
    except KeyError as err:
        raise ValueError(f"the SEDD config of {source} has no {err} entry: it needs the reference's keys "
                         "(tokens, graph.type, noise.type, model.hidden_size, model.cond_dim, model.n_heads, "
                         "model.n_blocks, ...)") from None


def _read_folder(folder: Path) -> tuple[dict, dict, dict | None]:
    if (folder / RUN_CONFIG).is_file() and (folder / RUN_CHECKPOINT).is_file():
        cfg = read_config(folder / RUN_CONFIG)
        checkpoint = torch.load(folder / RUN_CHECKPOINT, map_location="cpu", weights_only=True)
        return cfg, checkpoint["model"], checkpoint["ema"]
    if (folder / CONFIG_FILE).is_file():
        cfg = read_config(folder / CONFIG_FILE)
        if (folder / OUR_WEIGHTS).is_file():
            return cfg, load_file(str(folder / OUR_WEIGHTS)), None
        if (folder / HUB_WEIGHTS).is_file():
            return cfg, torch.load(folder / HUB_WEIGHTS, map_location="cpu", weights_only=True), None
    raise FileNotFoundError(
        f"{folder} holds no SEDD model: looked for {CONFIG_FILE} + {OUR_WEIGHTS} (ours), {CONFIG_FILE} + {HUB_WEIGHTS} "
        f"(hub) and {RUN_CONFIG} + {RUN_CHECKPOINT} (reference run folder)"
    )


def _download(repo_id: str, files: tuple[str, ...] = (CONFIG_FILE, HUB_WEIGHTS)) -> tuple[dict, dict | None, None]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, HFValidationError, RepositoryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
    try:
        paths = [hf_hub_download(repo_id, name, local_files_only=offline) for name in files]
    except (EntryNotFoundError, RepositoryNotFoundError, HfHubHTTPError, HFValidationError, OSError) as err:
        why = "it is not in the local cache and HF_HUB_OFFLINE=1 forbids downloading" if offline else f"{type(err).__name__}: {err}"
        raise FileNotFoundError(f"{repo_id!r} is not a local folder and its {CONFIG_FILE}/{HUB_WEIGHTS} could not be fetched from the hub: {why}") from None
    cfg = read_config(Path(paths[0]))
    state = torch.load(paths[1], map_location="cpu", weights_only=True) if len(paths) > 1 else None
    return cfg, state, None


def build_from_state(cfg: dict, state: dict) -> SEDD:
    """A SEDD built from the reference config and filled with ``state``, after checking that the two agree."""
    config = DDiTConfig.from_reference(cfg)  # refuses scale_by_sigma with the uniform graph
    if state and all(name.startswith("module.") for name in state):  # saved from a DDP wrapper
        state = {name[len("module."):]: t for name, t in state.items()}
    _check_sizes(cfg, config, state)
    model = SEDD(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state) - OPTIONAL_KEYS)
    extra = sorted(set(state) - set(expected) - OPTIONAL_KEYS)
    if missing or extra:
        raise ValueError(f"checkpoint does not fit the config's model: missing {missing[:8]}, unexpected {extra[:8]}")
    wrong = [f"{n} {tuple(state[n].shape)} vs {tuple(t.shape)}" for n, t in expected.items() if n in state and state[n].shape != t.shape]
    if wrong:
        raise ValueError(f"checkpoint shapes differ from the config's model (checkpoint vs config): {wrong[:8]}")
    model.load_state_dict({n: t for n, t in state.items() if n in expected}, strict=False)
    return model


def _check_sizes(cfg: dict, config: DDiTConfig, state: dict) -> None:
    """Name the config entry that disagrees with the weights, before any generic shape check."""
    graph_type = cfg["graph"]["type"]
    mask = " + mask (absorb)" if graph_type == "absorb" else " (uniform, no mask)"
    states = f"config says tokens={cfg['tokens']}{mask} = {config.vocab_size} states"
    for name in ("vocab_embed.embedding", "output_layer.linear.weight"):
        if name in state and state[name].shape[0] != config.vocab_size:
            raise ValueError(f"{states} but {name} has {state[name].shape[0]} rows")
    embedding = state.get("vocab_embed.embedding")
    if embedding is not None and embedding.shape[1] != config.hidden_size:
        raise ValueError(f"config says model.hidden_size={config.hidden_size} but vocab_embed.embedding has {embedding.shape[1]} columns")
    num_blocks = len({name.split(".")[1] for name in state if name.startswith("blocks.")})
    if num_blocks != config.n_blocks:
        raise ValueError(f"config says model.n_blocks={config.n_blocks} but the checkpoint has {num_blocks} blocks")
    inv_freq = state.get("rotary_emb.inv_freq")
    if inv_freq is not None and 2 * inv_freq.numel() != config.head_dim:
        raise ValueError(f"config says head width {config.head_dim} (n_heads={config.n_heads}) but rotary_emb.inv_freq implies {2 * inv_freq.numel()}")


__all__ = ["build_from_state", "build_random", "load_model", "save_model"]
