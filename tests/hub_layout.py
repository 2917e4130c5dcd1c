"""Stand-ins for the Hugging Face hub in tests: a local cache in the hub's exact layout, holding random-init
models at the real configs, and GPT-2's real byte-level BPE built from the files in ``../shared`` (skipped when
absent). Code under test then loads ``"gpt2"`` exactly as on a machine with internet, from the cache."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPT2_FILES = ROOT.parent / "shared" / "data" / "gpt2_tokenizer"
EOT = "<|endoftext|>"


def gpt2_tokenizer():
    """GPT-2's tokenizer from ``vocab.json`` + ``merges.txt`` (the recipe of their README); skips when absent."""
    if not (GPT2_FILES / "vocab.json").is_file():
        pytest.skip(f"{GPT2_FILES} not present (../shared is optional)")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2TokenizerFast

    vocab = json.loads((GPT2_FILES / "vocab.json").read_text(encoding="utf-8"))
    merges = [tuple(line.split()) for line in (GPT2_FILES / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
              if line.strip()]
    core = Tokenizer(models.BPE(vocab, merges))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    return GPT2TokenizerFast(tokenizer_object=core, bos_token=EOT, eos_token=EOT, unk_token=EOT)


def snapshot_dir(cache: Path, repo_id: str) -> Path:
    """``cache/models--org--name/snapshots/<commit>/``, with ``refs/main`` naming the commit, as the hub writes."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def add_gpt2(cache: Path, repo_id: str = "gpt2", **shape) -> Path:
    """A random-init GPT-2 at the hub's config (GPT-2 small unless ``shape`` overrides it) with the real tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    snapshot = snapshot_dir(cache, repo_id)
    if not (snapshot / "config.json").is_file():
        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config(**shape)).save_pretrained(snapshot)  # GPT2Config() is the hub's gpt2 config
        gpt2_tokenizer().save_pretrained(snapshot)
    return snapshot


def add_sedd_small(cache: Path, repo_id: str = "louaaron/sedd-small") -> Path:
    """sedd-small's ``config.json`` (the reference's nested config) and random ``pytorch_model.bin``."""
    import torch

    from reasoning_lib.sedd.loading import HUB_WEIGHTS
    from reasoning_lib.sedd.model import SEDD, DDiTConfig

    snapshot = snapshot_dir(cache, repo_id)
    if not (snapshot / HUB_WEIGHTS).is_file():
        config = {"tokens": 50257, "model": {"name": "small", "type": "ddit", "hidden_size": 768, "cond_dim": 128,
                                             "length": 1024, "n_blocks": 12, "n_heads": 12, "scale_by_sigma": True,
                                             "dropout": 0.1},
                  "graph": {"type": "absorb", "file": "data", "report_all": False},
                  "noise": {"type": "loglinear", "sigma_min": 1e-4, "sigma_max": 20}}
        (snapshot / "config.json").write_text(json.dumps(config, indent=2))
        torch.manual_seed(0)
        model = SEDD(DDiTConfig.from_reference(config))
        torch.save(model.state_dict(), snapshot / HUB_WEIGHTS)
    return snapshot
