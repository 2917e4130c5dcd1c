"""The DDiT score network of SEDD and its EMA (Lou, Meng & Ermon 2024, §3; reference repo louaaron/Score-Entropy-Discrete-Diffusion, model/).

Follows ``model/transformer.py``, ``model/rotary.py`` and ``model/ema.py`` of louaaron/Score-Entropy-Discrete-Diffusion
with the same parameter names and shapes, so the published ``louaaron/sedd-small``/``-medium`` weights load unchanged.
Deliberate differences: attention falls back to PyTorch SDPA when flash-attn is unavailable (CPU works); the
network does not switch on bf16 autocast itself (the caller chooses); and the log-scores are always returned in fp32,
because the reference runs the blocks under bf16 autocast and so computes the loss from bf16 values.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..config import check_choice, check_positive, check_range
from ..models import attention_implementation

try:  # flash-attn is optional: CUDA only, and often mis-built against torch (reference issue #5)
    from flash_attn import flash_attn_qkvpacked_func
except (ImportError, OSError):
    flash_attn_qkvpacked_func = None

FREQUENCY_EMBEDDING_SIZE = 256  # width of the sinusoidal sigma features, fixed in the reference
ROTARY_BASE = 10_000


@dataclass(frozen=True)
class DDiTConfig:
    """Sizes of the DDiT. ``vocab_size`` counts every state: GPT-2's 50257 tokens + 1 mask for absorb."""

    vocab_size: int
    hidden_size: int = 768
    n_blocks: int = 12
    n_heads: int = 12
    cond_dim: int = 128
    length: int = 1024
    dropout: float = 0.1
    scale_by_sigma: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "n_blocks", "n_heads", "cond_dim", "length"):
            check_positive(name, getattr(self, name))
        check_range("dropout", self.dropout, 0.0, 0.99)
        if self.hidden_size % self.n_heads or (self.hidden_size // self.n_heads) % 2:
            raise ValueError(f"hidden_size={self.hidden_size} must split into n_heads={self.n_heads} heads of even width (rotary)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.n_heads

    @classmethod
    def from_reference(cls, cfg: dict) -> DDiTConfig:
        """From the reference's nested training config (hub ``config.json`` or ``.hydra/config.yaml``)."""
        graph_type = cfg["graph"]["type"]
        check_choice("graph.type", graph_type, ("absorb", "uniform"))
        model = cfg["model"]
        if "type" in model:
            check_choice("model.type", model["type"], ("ddit",))
        scale_by_sigma = bool(model.get("scale_by_sigma", True))
        if scale_by_sigma and graph_type == "uniform":
            raise ValueError("model.scale_by_sigma=True is only defined for graph.type='absorb'; set it False for 'uniform'")
        keys = ("hidden_size", "n_blocks", "n_heads", "cond_dim", "length", "dropout")
        return cls(vocab_size=cfg["tokens"] + (graph_type == "absorb"), scale_by_sigma=scale_by_sigma, **{k: model[k] for k in keys})

    def to_reference(self, graph_type: str, noise: dict) -> dict:
        """The nested layout of the hub's ``config.json`` (only the keys needed to rebuild model, graph and noise)."""
        check_choice("graph_type", graph_type, ("absorb", "uniform"))
        if self.scale_by_sigma and graph_type == "uniform":
            raise ValueError("scale_by_sigma=True is only defined for graph_type='absorb'")
        model = {k: v for k, v in asdict(self).items() if k != "vocab_size"}
        tokens = self.vocab_size - (graph_type == "absorb")
        return {"tokens": tokens, "graph": {"type": graph_type}, "noise": dict(noise), "model": {"type": "ddit", **model}}


def log_expm1(x: torch.Tensor) -> torch.Tensor:
    """log(e^x - 1) for x > 0 without overflow at large x or cancellation at small x."""
    return x + torch.log(-torch.expm1(-x))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class LayerNorm(nn.Module):
    """LayerNorm with a weight but no bias, normalised in fp32 even under autocast (as the reference)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = F.layer_norm(x.float(), self.weight.shape)
        return x * self.weight


class EmbeddingLayer(nn.Module):
    """A free [V, D] table (not tied to the output layer)."""

    def __init__(self, hidden_size: int, vocab_size: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(vocab_size, hidden_size))
        nn.init.kaiming_uniform_(self.embedding, a=math.sqrt(5))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embedding[input_ids]


class SigmaEmbedder(nn.Module):
    """sigma_bar [B] -> sinusoidal features (cosines then sines) -> MLP -> [B, cond_dim]."""

    def __init__(self, cond_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQUENCY_EMBEDDING_SIZE, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    @staticmethod
    def sinusoid(sigma: torch.Tensor, max_period: float = 10_000.0) -> torch.Tensor:
        half = FREQUENCY_EMBEDDING_SIZE // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=sigma.device) / half)
        args = sigma.float()[:, None] * freqs[None]  # (B, half)
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.sinusoid(sigma))


class Rotary(nn.Module):
    """GPT-NeoX rotary embedding (rotate-half, frequencies duplicated as [f, f])."""

    def __init__(self, head_dim: int, base: float = ROTARY_BASE):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim))

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin tables, each (n, head_dim), for integer ``positions`` (n,)."""
        freqs = positions.to(self.inv_freq.dtype)[:, None] * self.inv_freq[None]
        angles = torch.cat([freqs, freqs], dim=-1)
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (..., n, heads, head_dim) by the position tables (n, head_dim)."""
    cos, sin = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


class DDiTBlock(nn.Module):
    """Pre-LN transformer block with adaLN-Zero conditioning (DiT); the identity at init."""

    def __init__(self, config: DDiTConfig):
        super().__init__()
        d = config.hidden_size
        self.n_heads, self.dropout = config.n_heads, config.dropout
        # Registration order fixes model.parameters() order, which the reference EMA's shadow list relies on.
        self.norm1 = LayerNorm(d)
        self.attn_qkv = nn.Linear(d, 3 * d, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.norm2 = LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d))
        self.adaLN_modulation = nn.Linear(config.cond_dim, 6 * d)
        nn.init.zeros_(self.adaLN_modulation.weight)
        nn.init.zeros_(self.adaLN_modulation.bias)
        self.use_flash = attention_implementation() == "flash_attention_2" and flash_attn_qkvpacked_func is not None

    def attention(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, n, d = h.shape
        qkv = self.attn_qkv(h).view(b, n, 3, self.n_heads, d // self.n_heads)  # (B, n, three, heads, head_dim)
        q, k, v = qkv.unbind(dim=2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if self.use_flash and qkv.is_cuda and qkv.dtype in (torch.float16, torch.bfloat16):
            out = flash_attn_qkvpacked_func(torch.stack([q, k, v], dim=2), dropout_p=0.0, causal=False)
        else:  # SDPA wants (B, heads, n, head_dim); no mask: every position sees every other
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
        return self.attn_out(out.reshape(b, n, d))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x (B, n, D), conditioning c (B, cond_dim) -> (B, n, D)."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c)[:, None].chunk(6, dim=2)
        attended = self.attention(modulate(self.norm1(x), shift_msa, scale_msa), cos, sin)
        x = x + gate_msa * F.dropout(attended, self.dropout, self.training)
        hidden = self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x + gate_mlp * F.dropout(hidden, self.dropout, self.training)


class DDiTFinalLayer(nn.Module):
    """LN -> adaLN (shift, scale) -> Linear(D -> V); adaLN and the linear start at zero."""

    def __init__(self, config: DDiTConfig):
        super().__init__()
        self.norm_final = LayerNorm(config.hidden_size)
        self.linear = nn.Linear(config.hidden_size, config.vocab_size)
        self.adaLN_modulation = nn.Linear(config.cond_dim, 2 * config.hidden_size)
        for layer in (self.linear, self.adaLN_modulation):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, dim=2)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class SEDD(nn.Module):
    """DDiT score network: token ids x_t (B, n) and total noise sigma_bar (B,) -> log-scores (B, n, V) in fp32.

    log_s[b, i, y] estimates log p_t(y at i)/p_t(x_t at i); the entry at y = x_t is exactly 0."""

    def __init__(self, config: DDiTConfig):
        super().__init__()
        self.config = config
        self.vocab_embed = EmbeddingLayer(config.hidden_size, config.vocab_size)
        self.sigma_map = SigmaEmbedder(config.cond_dim)
        self.rotary_emb = Rotary(config.head_dim)
        self.blocks = nn.ModuleList(DDiTBlock(config) for _ in range(config.n_blocks))
        self.output_layer = DDiTFinalLayer(config)

    def condition(self, sigma: torch.Tensor) -> torch.Tensor:
        """The noise conditioning c = SiLU(MLP(sinusoid(sigma_bar))), (B, cond_dim)."""
        return F.silu(self.sigma_map(sigma))

    def _check_inputs(self, input_ids: torch.Tensor, sigma: torch.Tensor) -> None:
        v, length = self.config.vocab_size, self.config.length
        if input_ids.dim() != 2 or input_ids.dtype != torch.long:
            raise ValueError(f"input_ids must be a LongTensor [B, n]; got {input_ids.dtype} of shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] > length:
            raise ValueError(f"sequence length {input_ids.shape[1]} exceeds config.length={length}")
        if input_ids.numel():
            low, high = torch.stack(torch.aminmax(input_ids)).tolist()  # one device sync for both bounds
            if low < 0 or high >= v:
                raise ValueError(f"input_ids must lie in [0, {v}) (vocab_size); got [{low}, {high}]")
        if sigma.shape != input_ids.shape[:1]:
            raise ValueError(f"sigma must have shape [B]={tuple(input_ids.shape[:1])}; got {tuple(sigma.shape)}")

    def forward(self, input_ids: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self._check_inputs(input_ids, sigma)
        x = self.vocab_embed(input_ids)  # (B, n, D)
        c = self.condition(sigma)  # (B, cond_dim)
        cos, sin = self.rotary_emb(torch.arange(input_ids.shape[1], device=input_ids.device))
        for block in self.blocks:
            x = block(x, cos, sin, c)
        out = self.output_layer(x, c).float()  # (B, n, V); fp32 whatever the autocast
        if self.config.scale_by_sigma:  # absorb: at init s_y = 1 / ((e^sigma - 1)(V - 1)), the uniform posterior
            out = out - log_expm1(sigma.float())[:, None, None] - math.log(self.config.vocab_size - 1)
        return torch.scatter(out, -1, input_ids[..., None], torch.zeros_like(out[..., :1]))


class EMA(nn.Module):
    """Exponential moving average of a model's trainable parameters, kept as buffers so it rides in state dicts.

    At update n (counted from 1) the decay is min(decay, (1 + n)/(10 + n)), and shadow <- shadow - (1 - d)(shadow - theta)."""

    def __init__(self, model: nn.Module, decay: float = 0.9999):
        super().__init__()
        check_range("decay", decay, 0.0, 1.0)
        self.decay = decay
        self.names = [name for name, p in model.named_parameters() if p.requires_grad]
        for name, p in model.named_parameters():
            if p.requires_grad:
                self.register_buffer(self._key(name), p.detach().clone())
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @staticmethod
    def _key(name: str) -> str:
        return "shadow__" + name.replace(".", "__")  # buffer names may not contain dots

    def _pairs(self, model: nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        params = dict(model.named_parameters())
        for name in self.names:
            yield getattr(self, self._key(name)), params[name]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        n = int(self.num_updates)
        decay = min(self.decay, (1 + n) / (10 + n))
        for shadow, param in self._pairs(model):
            shadow.sub_((1 - decay) * (shadow - param.detach().to(shadow.dtype)))

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for shadow, param in self._pairs(model):
            param.copy_(shadow)

    @contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """Run the body with the EMA weights in ``model``, then put the trained weights back."""
        saved = [param.detach().clone() for _, param in self._pairs(model)]
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for (_, param), original in zip(self._pairs(model), saved):
                    param.copy_(original)

    def reference_state(self) -> dict:
        """The reference checkpoint's ``ema`` entry: shadows listed in ``model.parameters()`` order."""
        shadows = [getattr(self, self._key(name)).clone() for name in self.names]
        return {"decay": self.decay, "num_updates": int(self.num_updates), "shadow_params": shadows}

    @torch.no_grad()
    def load_reference_state(self, state: dict, model: nn.Module) -> None:
        """Load a reference ``ema`` entry; ``model`` gives the parameter order the shadow list follows."""
        order = [name for name, p in model.named_parameters() if p.requires_grad]
        shadows = state["shadow_params"]
        if order != self.names or len(shadows) != len(order):
            raise ValueError(f"EMA state has {len(shadows)} shadow tensors but the model has {len(order)} trainable parameters")
        for name, shadow in zip(order, shadows):
            target = getattr(self, self._key(name))
            if shadow.shape != target.shape:
                raise ValueError(f"EMA shadow for {name} has shape {tuple(shadow.shape)}, the parameter {tuple(target.shape)}")
            target.copy_(shadow)
        self.decay = float(state["decay"])
        self.num_updates.fill_(int(state["num_updates"] or 0))


__all__ = ["DDiTConfig", "EMA", "SEDD", "apply_rotary", "log_expm1"]
