"""SEDD's DDiT, EMA and loaders against the reference ``model/transformer.py``, ``model/ema.py`` and
``load_model.py``: output parametrisation, identity blocks at init, rotary relativity, key names and shapes."""
from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from reasoning_lib.sedd.loading import load_model, save_model
from reasoning_lib.sedd.model import EMA, SEDD, DDiTConfig, apply_rotary

TOKENS = 16
SMALL = dict(hidden_size=32, n_blocks=2, n_heads=2, cond_dim=16, length=24, dropout=0.0)
NOISE = {"type": "loglinear", "sigma_min": 1e-4, "sigma_max": 20}


def tiny(graph_type: str = "absorb", seed: int = 0, randomise: bool = True) -> SEDD:
    """A small model; ``randomise`` also fills the zero-initialised layers so outputs depend on every weight."""
    torch.manual_seed(seed)
    config = DDiTConfig(vocab_size=TOKENS + (graph_type == "absorb"), scale_by_sigma=graph_type == "absorb", **SMALL)
    model = SEDD(config)
    if randomise:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "adaLN" in name or "output_layer.linear" in name:
                    p.normal_(0, 0.2)
    return model.eval()


def inputs(vocab_size: int, batch: int = 3, length: int = 24, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch, length), generator=g)
    ids[0, :5] = vocab_size - 1  # some masks (for absorb)
    sigma = torch.tensor([1e-4, 0.3, 6.9])[:batch]
    return ids, sigma


def reference_config(graph_type: str = "absorb", scale_by_sigma: bool | None = None, tokens: int = TOKENS) -> dict:
    """The nested training config of the hub's config.json, with the keys the loader must ignore."""
    model = {"name": "tiny", "type": "ddit", "score_strategy": 0, **SMALL}
    model["scale_by_sigma"] = graph_type == "absorb" if scale_by_sigma is None else scale_by_sigma
    noise = NOISE if graph_type == "absorb" else {"type": "geometric", "sigma_min": 1e-4, "sigma_max": 20}
    return {"ngpus": 8, "tokens": tokens, "training": {"ema": 0.9999, "batch_size": 512}, "graph": {"type": graph_type},
            "noise": noise, "sampling": {"predictor": "euler", "steps": 128}, "model": model, "work_dir": "absorb_tiny"}


def expected_shapes(v: int, d: int, n_blocks: int, heads: int, cond: int) -> dict:
    """The state-dict key names and shapes of the published ``louaaron/sedd-small`` weights, written out by hand."""
    shapes = {
        "vocab_embed.embedding": (v, d), "sigma_map.mlp.0.weight": (cond, 256), "sigma_map.mlp.0.bias": (cond,),
        "sigma_map.mlp.2.weight": (cond, cond), "sigma_map.mlp.2.bias": (cond,), "rotary_emb.inv_freq": (d // heads // 2,),
        "output_layer.norm_final.weight": (d,), "output_layer.linear.weight": (v, d), "output_layer.linear.bias": (v,),
        "output_layer.adaLN_modulation.weight": (2 * d, cond), "output_layer.adaLN_modulation.bias": (2 * d,),
    }
    for i in range(n_blocks):
        shapes.update({
            f"blocks.{i}.norm1.weight": (d,), f"blocks.{i}.attn_qkv.weight": (3 * d, d), f"blocks.{i}.attn_out.weight": (d, d),
            f"blocks.{i}.norm2.weight": (d,), f"blocks.{i}.mlp.0.weight": (4 * d, d), f"blocks.{i}.mlp.0.bias": (4 * d,),
            f"blocks.{i}.mlp.2.weight": (d, 4 * d), f"blocks.{i}.mlp.2.bias": (d,),
            f"blocks.{i}.adaLN_modulation.weight": (6 * d, cond), f"blocks.{i}.adaLN_modulation.bias": (6 * d,),
        })
    return shapes


# ---- architecture -------------------------------------------------------------------------------------------------

def test_state_dict_names_and_shapes_match_the_reference_checkpoint():
    got = {k: tuple(v.shape) for k, v in tiny().state_dict().items()}
    assert got == expected_shapes(TOKENS + 1, 32, 2, 2, 16)


@pytest.mark.parametrize("d, n_blocks, heads, total, blocks_only", [(768, 12, 12, 169.6, 92.1), (1024, 24, 16, 424.5, 321.2)])
def test_published_sizes_on_meta_device(d, n_blocks, heads, total, blocks_only):
    with torch.device("meta"):
        model = SEDD(DDiTConfig(vocab_size=50258, hidden_size=d, n_blocks=n_blocks, n_heads=heads))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected_shapes(50258, d, n_blocks, heads, 128)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == total
    assert round(sum(p.numel() for p in model.blocks.parameters()) / 1e6, 1) == blocks_only


def test_rotary_buffer_and_attention_layout():
    model = tiny()
    head_dim = 16
    expected = 1.0 / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)
    torch.testing.assert_close(model.rotary_emb.inv_freq, expected)
    # qkv rows are laid out (three, heads, head_dim): zeroing the k and v rows must leave q (rows 0..D) untouched.
    block = model.blocks[0]
    qkv = block.attn_qkv.weight.detach().view(3, 2, head_dim, 32)
    assert torch.equal(qkv[0].reshape(32, 32), block.attn_qkv.weight[:32])


@pytest.mark.parametrize("graph_type", ["absorb", "uniform"])
def test_log_score_is_zero_at_current_token(graph_type):
    model = tiny(graph_type)
    ids, sigma = inputs(model.config.vocab_size)
    log_s = model(ids, sigma)
    assert log_s.shape == (3, 24, model.config.vocab_size) and log_s.dtype == torch.float32
    assert torch.equal(log_s.gather(-1, ids[..., None]), torch.zeros(3, 24, 1))
    assert (log_s != 0).sum() > log_s.numel() // 2, "the other entries should be non-trivial for a randomised model"


def test_absorb_scores_at_init_are_the_uniform_posterior():
    model = tiny(randomise=False)
    v = model.config.vocab_size
    ids, sigma = inputs(v)
    sigma = torch.tensor([1e-4, 0.3, 100.0])  # tiny, moderate, large: expm1 must neither cancel nor overflow fp32
    log_s = model(ids, sigma).double()
    expected = -torch.log(torch.expm1(sigma.double())) - math.log(v - 1)  # (B,)
    off_token = torch.ones_like(log_s, dtype=torch.bool).scatter(-1, ids[..., None], False)
    want = expected[:, None, None].expand_as(log_s)
    torch.testing.assert_close(log_s[off_token], want[off_token], rtol=1e-6, atol=1e-5)


def test_every_block_is_the_identity_at_init():
    model = tiny(randomise=False).train()  # dropout on: a zero gate must still give exactly x
    model.blocks[0].dropout = 0.5
    x = torch.randn(2, 24, 32)
    c = model.condition(torch.tensor([0.5, 3.0]))
    cos, sin = model.rotary_emb(torch.arange(24))
    for block in model.blocks:
        assert torch.equal(block(x, cos, sin, c), x)
    with torch.no_grad():
        model.blocks[0].adaLN_modulation.bias.normal_()
    assert not torch.allclose(model.blocks[0](x, cos, sin, c), x), "a non-zero gate must change x (test sanity)"


def test_rotary_scores_depend_only_on_relative_position():
    rotary = tiny().rotary_emb
    torch.manual_seed(0)
    q, k = torch.randn(10, 1, 16), torch.randn(10, 1, 16)  # (n, heads, head_dim)

    def scores(offset: int) -> torch.Tensor:
        cos, sin = rotary(torch.arange(10) + offset)
        return torch.einsum("nhd,mhd->nm", apply_rotary(q, cos, sin), apply_rotary(k, cos, sin))

    torch.testing.assert_close(scores(7), scores(0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(scores(1000), scores(0), atol=1e-3, rtol=1e-3)
    assert not torch.allclose(scores(0), torch.einsum("nhd,mhd->nm", q, k), atol=1e-2), "rotary must change the scores"


@pytest.mark.parametrize("graph_type", ["absorb", "uniform"])  # uniform: no sigma scaling to promote the dtype
def test_output_is_fp32_under_bf16_autocast(graph_type):
    model = tiny(graph_type)
    ids, sigma = inputs(model.config.vocab_size)
    reference = model(ids, sigma)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log_s = model(ids, sigma)
    assert log_s.dtype == torch.float32
    assert torch.isfinite(log_s).all()
    assert torch.equal(log_s.gather(-1, ids[..., None]), torch.zeros(3, 24, 1))
    torch.testing.assert_close(log_s, reference, atol=0.15, rtol=0.05)


def test_forward_rejects_bad_inputs():
    model = tiny()
    ids, sigma = inputs(17)
    with pytest.raises(ValueError, match="vocab_size"):
        model(ids.masked_fill(ids == 0, 17), sigma)
    with pytest.raises(ValueError, match="vocab_size"):
        model(ids - 1, sigma)
    with pytest.raises(ValueError, match="config.length=24"):
        model(torch.zeros(3, 25, dtype=torch.long), sigma)
    with pytest.raises(ValueError, match="sigma"):
        model(ids, sigma[:2])


def test_config_validation_and_reference_round_trip():
    with pytest.raises(ValueError, match="n_heads=5"):
        DDiTConfig(vocab_size=17, hidden_size=32, n_heads=5)
    with pytest.raises(ValueError, match="vocab_size"):
        DDiTConfig(vocab_size=0)
    with pytest.raises(ValueError, match="scale_by_sigma"):
        DDiTConfig.from_reference(reference_config("uniform", scale_by_sigma=True))
    absorb = DDiTConfig.from_reference(reference_config("absorb"))
    assert absorb.vocab_size == TOKENS + 1 and absorb.scale_by_sigma
    assert DDiTConfig.from_reference(reference_config("uniform")).vocab_size == TOKENS
    nested = absorb.to_reference("absorb", NOISE)
    assert nested["tokens"] == TOKENS and nested["graph"] == {"type": "absorb"} and nested["noise"] == NOISE
    assert DDiTConfig.from_reference(json.loads(json.dumps(nested))) == absorb


# ---- EMA ----------------------------------------------------------------------------------------------------------

def test_ema_update_follows_the_warm_up_formula():
    model = tiny()
    ema = EMA(model, decay=0.9999)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    shadow = dict(start)
    for n in (1, 2, 3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.update(model)
        d = min(0.9999, (1 + n) / (10 + n))
        for name, p in model.named_parameters():
            shadow[name] = shadow[name] - (1 - d) * (shadow[name] - p.detach())
    assert int(ema.num_updates) == 3
    with ema.swapped_in(model):
        for name, p in model.named_parameters():
            torch.testing.assert_close(p, shadow[name])
    for name, p in model.named_parameters():  # trained weights are back
        assert not torch.allclose(p, shadow[name]) or p.numel() == 0
    # far past warm-up the decay is capped at 0.9999
    ema.num_updates.fill_(10**7)
    before = {name: s.clone() for name, s in shadow.items()}
    trained = {name: p.detach().clone() for name, p in model.named_parameters()}
    ema.update(model)
    ema.copy_to(model)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, before[name] - 1e-4 * (before[name] - trained[name]))


def test_ema_state_survives_state_dict_round_trip():
    model = tiny()
    ema = EMA(model)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2)
    ema.update(model)
    bundle = torch.nn.ModuleDict({"model": model, "ema": ema})
    assert "ema.num_updates" in bundle.state_dict() and "ema.shadow__vocab_embed__embedding" in bundle.state_dict()
    fresh_model = tiny(seed=5)
    fresh = torch.nn.ModuleDict({"model": fresh_model, "ema": EMA(fresh_model)})
    fresh.load_state_dict(bundle.state_dict())
    assert int(fresh["ema"].num_updates) == 1
    for a, b in zip(ema.reference_state()["shadow_params"], fresh["ema"].reference_state()["shadow_params"]):
        assert torch.equal(a, b)
    # and the reference checkpoint's list form
    other = EMA(tiny(seed=6))
    other.load_reference_state(ema.reference_state(), tiny(seed=6))
    assert other.reference_state()["num_updates"] == 1
    assert all(torch.equal(a, b) for a, b in zip(ema.reference_state()["shadow_params"], other.reference_state()["shadow_params"]))


# ---- loading ------------------------------------------------------------------------------------------------------

def assert_same_outputs(a: SEDD, b: SEDD):
    ids, sigma = inputs(a.config.vocab_size)
    torch.testing.assert_close(a(ids, sigma), b(ids, sigma), rtol=0, atol=0)


@pytest.mark.parametrize("drop_inv_freq", [False, True])
def test_load_hub_layout(tmp_path, drop_inv_freq):
    model = tiny()
    state = model.state_dict()
    if drop_inv_freq:
        state.pop("rotary_emb.inv_freq")
    (tmp_path / "config.json").write_text(json.dumps(reference_config()))
    torch.save(state, tmp_path / "pytorch_model.bin")
    loaded, graph, noise = load_model(str(tmp_path))
    assert_same_outputs(model, loaded)
    assert graph.absorbing and graph.num_states == TOKENS + 1
    assert noise.config()["type"] == "loglinear"
    assert not loaded.training


def test_load_reference_run_folder_uses_ema_weights(tmp_path):
    raw, shadow_model = tiny(seed=0), tiny(seed=1)
    optimizer = torch.optim.AdamW(raw.parameters())
    raw(*inputs(17)).sum().backward()
    optimizer.step()
    checkpoint = {
        "model": raw.state_dict(), "optimizer": optimizer.state_dict(), "step": 10,
        "ema": {"decay": 0.9999, "num_updates": 10, "shadow_params": [p.detach().clone() for p in shadow_model.parameters()]},
    }
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(reference_config()))
    (tmp_path / "checkpoints-meta").mkdir()
    torch.save(checkpoint, tmp_path / "checkpoints-meta" / "checkpoint.pth")
    loaded, graph, _ = load_model(tmp_path)
    for (name, p), q in zip(loaded.named_parameters(), shadow_model.parameters()):
        assert torch.equal(p, q), f"{name} should hold the EMA shadow, not the raw weights"
    assert_same_outputs(shadow_model, loaded)
    assert graph.absorbing


@pytest.mark.parametrize("graph_type", ["absorb", "uniform"])
def test_save_and_load_our_layout(tmp_path, graph_type):
    from safetensors.torch import load_file

    model = tiny(graph_type)
    noise = NOISE if graph_type == "absorb" else {"type": "geometric", "sigma_min": 1e-4, "sigma_max": 20}
    save_model(model, tmp_path, graph_type, noise)
    assert "rotary_emb.inv_freq" in load_file(str(tmp_path / "model.safetensors"))
    assert json.loads((tmp_path / "config.json").read_text())["tokens"] == TOKENS
    loaded, graph, loaded_noise = load_model(str(tmp_path))
    assert loaded.config == model.config
    assert_same_outputs(model, loaded)
    assert graph.absorbing == (graph_type == "absorb") and graph.num_states == model.config.vocab_size
    assert loaded_noise.config()["type"] == noise["type"]


def test_mismatched_vocabulary_is_named(tmp_path):
    torch.save(tiny("uniform").state_dict(), tmp_path / "pytorch_model.bin")  # 16 rows, but the config says absorb
    (tmp_path / "config.json").write_text(json.dumps(reference_config("absorb")))
    with pytest.raises(ValueError, match=r"tokens=16 \+ mask \(absorb\) = 17 states but vocab_embed.embedding has 16 rows"):
        load_model(str(tmp_path))


def test_mismatched_hidden_size_is_named(tmp_path):
    cfg = reference_config()
    cfg["model"]["hidden_size"] = 64
    torch.save(tiny().state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="hidden_size=64"):
        load_model(str(tmp_path))


def test_scale_by_sigma_with_uniform_is_refused(tmp_path):
    torch.save(tiny("uniform").state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(reference_config("uniform", scale_by_sigma=True)))
    with pytest.raises(ValueError, match="scale_by_sigma"):
        load_model(str(tmp_path))
    with pytest.raises(ValueError, match="scale_by_sigma"):
        save_model(tiny("absorb"), tmp_path / "out", "uniform", NOISE)


def test_folder_without_a_layout_lists_what_was_looked_for(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"pytorch_model\.bin.*checkpoint\.pth"):
        load_model(str(tmp_path))


def test_hub_id_offline_raises_file_not_found(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="reasoning-lib-tests/no-such-sedd.*HF_HUB_OFFLINE=1"):
        load_model("reasoning-lib-tests/no-such-sedd")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_model(str(tmp_path / "missing" / "folder"))
