"""Training throughput and model FLOPs utilisation (MFU) of GPT-2 small and SEDD small, SDPA vs flash-attn.

Usage: ``python benchmarks/bench_mfu.py [--quick] [--steps 10] [--warmup 3] [--batch-size B] [--peak-flops F]``.

Both models are built from config with random weights (no download):

- ``gpt2``: GPT-2 small (12 layers, 768 wide, 12 heads, vocabulary 50,257, 1,024 positions), trained as a causal LM
  on sequences of 1,024 tokens; transformers' ``attn_implementation`` is ``sdpa`` or ``flash_attention_2``.
- ``sedd``: the DDiT of SEDD small (``reasoning_lib.sedd`` preset ``paper``: 12 blocks, 768 wide, 12 heads, GPT-2's
  tokens + the absorbing mask, length 1,024) trained with the SEDD loss; its blocks call
  ``flash_attn_qkvpacked_func`` or ``F.scaled_dot_product_attention``.

A step is forward + backward + AdamW in bf16 autocast on CUDA (fp32 on the CPU). ``--warmup`` steps are run and
not timed; the timed steps sit between two ``torch.cuda.synchronize()`` calls. A flash-attn row is skipped, with
the reason printed, when flash-attn is not installed (or there is no CUDA).

Model FLOPs per token (PaLM, Chowdhery et al. 2022, appendix B; nanoGPT's ``estimate_mfu``)::

    6 N + 12 L H Q T

with L layers, H heads of width Q, sequence length T, and N the parameters that multiply every token: all
parameters except lookup-only embedding tables. For GPT-2 that is nanoGPT's ``get_num_params(non_embedding=True)``:
the position table is left out and the token table is counted once, because it is tied to the output projection.
For the DDiT the (untied) input table is left out, and so are the noise embedder and the adaLN modulation layers,
which run once per sequence, not per token; the output projection (768 x 50,258) is counted. The attention term
counts the full T x T score matrix for the causal GPT-2 too (the PaLM/nanoGPT convention), and the score-entropy
loss's element-wise work is not counted. MFU = achieved model FLOP/s / the GPU's peak dense bf16 FLOP/s
(``PEAK_BF16_FLOPS``; an unlisted GPU reports n/a unless ``--peak-flops`` gives its peak).

On a machine without CUDA (or with ``--quick``) tiny shapes are used so the whole code path runs in seconds; MFU
is then n/a. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import re
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from reasoning_lib.models import SIZE_PRESETS
from reasoning_lib.runtime import resolve_device

# Peak dense bf16 tensor-core FLOP/s (no sparsity), by a pattern of torch.cuda.get_device_name(); first match wins.
PEAK_BF16_FLOPS = [
    (r"H200", 989e12),
    (r"H100.*PCIe", 756e12),
    (r"H100.*(SXM|HBM3)", 989e12),  # the SXM card reports itself as "NVIDIA H100 80GB HBM3"
    (r"A100", 312e12),
]
BACKENDS = ("sdpa", "flash_attention_2")
GPT2_VOCAB = 50257


def flops_per_token(n_params: int, n_layers: int, n_heads: int, head_dim: int, seq_len: int) -> int:
    """Training FLOPs per token, 6 N + 12 L H Q T (forward + backward; see the module docstring for N)."""
    return 6 * n_params + 12 * n_layers * n_heads * head_dim * seq_len


def gpt2_flops_parameters(model: nn.Module) -> int:
    """N for a transformers GPT-2: every parameter once (tied output counted once) minus the position table."""
    return sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()


def sedd_flops_parameters(model: nn.Module) -> int:
    """N for a DDiT: every parameter minus the input table, the noise embedder and the adaLN modulations."""
    per_sequence = [model.vocab_embed, model.sigma_map, model.output_layer.adaLN_modulation]
    per_sequence += [block.adaLN_modulation for block in model.blocks]
    excluded = sum(p.numel() for module in per_sequence for p in module.parameters())
    return sum(p.numel() for p in model.parameters()) - excluded


def peak_bf16_flops(device_name: str) -> float | None:
    """Peak dense bf16 FLOP/s of a GPU from its name, or None when it is not in the table."""
    for pattern, peak in PEAK_BF16_FLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return peak
    return None


@dataclass
class Case:
    """One model at one attention backend, ready to time."""

    model: nn.Module
    loss: Callable[[], torch.Tensor]  # the scalar loss of one fixed batch
    n_params: int  # N of the FLOPs formula
    flops_per_token: int
    tokens_per_step: int
    attention: str  # what the model really uses


def flash_unavailable(device: torch.device) -> str | None:
    """Why flash-attn cannot be used here, or None."""
    if device.type != "cuda":
        return "no CUDA (flash-attn is a CUDA extension)"
    if importlib.util.find_spec("flash_attn") is None:
        return "flash-attn is not installed (pip install --no-build-isolation -e .[gpu], or make gpu)"
    try:
        import flash_attn  # noqa: F401
    except (ImportError, OSError) as err:  # often mis-built against the installed torch
        return f"flash-attn does not import: {err}"
    return None


def build_gpt2(backend: str, quick: bool, batch: int, device: torch.device) -> Case:
    from transformers import AutoModelForCausalLM, GPT2Config

    layers, hidden, heads = SIZE_PRESETS["tiny" if quick else "small"]
    vocab, length = (512, 128) if quick else (GPT2_VOCAB, 1024)
    config = GPT2Config(vocab_size=vocab, n_positions=length, n_embd=hidden, n_layer=layers, n_head=heads,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=vocab - 1, eos_token_id=vocab - 1)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=backend).to(device).train()
    model.loss_type = "ForCausalLM"  # as reasoning_lib.models does: silences transformers' warning
    x = torch.randint(vocab, (batch, length), device=device)
    n = gpt2_flops_parameters(model)
    return Case(model, lambda: model(input_ids=x, labels=x).loss, n,
                flops_per_token(n, layers, heads, hidden // heads, length), batch * length,
                model.config._attn_implementation)


def build_sedd(backend: str, quick: bool, batch: int, device: torch.device) -> Case:
    from reasoning_lib.sedd import SEDD, SEDDObjective, build_graph, build_noise, get_config
    from reasoning_lib.sedd import model as sedd_model

    config = get_config("tiny" if quick else "paper")
    num_states = 46 if quick else GPT2_VOCAB + 1  # tiny: the reviews vocabulary + mask (as bench_sedd.py)
    torch.manual_seed(0)
    model = SEDD(config.model_config(num_states)).to(device).train()
    use_flash = backend == "flash_attention_2"
    if use_flash and sedd_model.flash_attn_qkvpacked_func is None:
        raise RuntimeError("reasoning_lib.sedd.model could not import flash_attn_qkvpacked_func")
    for block in model.blocks:  # the library picks once at build time; force the backend under test
        block.use_flash = use_flash
    objective = SEDDObjective(build_graph(config.graph, num_states), build_noise(config.noise_config()))
    x = torch.randint(num_states - 1, (batch, config.length), device=device)
    n = sedd_flops_parameters(model)
    fpt = flops_per_token(n, config.n_blocks, config.n_heads, config.hidden_size // config.n_heads, config.length)
    return Case(model, lambda: objective(model, {"input_ids": x}), n, fpt, batch * config.length,
                "flash_attn_qkvpacked_func" if use_flash else "sdpa")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(case: Case, device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per optimizer step (forward + backward + AdamW), warm-up excluded."""
    cuda = device.type == "cuda"
    optimizer = torch.optim.AdamW(case.model.parameters(), lr=1e-4, fused=cuda)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = case.loss()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    sync(device)
    tic = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - tic) / steps


BUILDERS = {"gpt2": build_gpt2, "sedd": build_sedd}
LABELS = {"gpt2": ("GPT-2 small (12 x 768)", "GPT-2 tiny (2 x 128, vocab 512)"),
          "sedd": ("SEDD small DDiT (12 x 768)", "SEDD tiny DDiT (4 x 128, 46 states)")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny shapes (the default without CUDA)")
    parser.add_argument("--models", nargs="+", default=list(BUILDERS), choices=list(BUILDERS))
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    parser.add_argument("--steps", type=int, default=None, help="timed steps (10 on CUDA, 3 quick)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (3 on CUDA, 1 quick)")
    parser.add_argument("--batch-size", type=int, default=None, help="sequences a step (GPT-2 16, SEDD 8; quick 4)")
    parser.add_argument("--peak-flops", type=float, default=None, help="peak bf16 FLOP/s of an unlisted GPU")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    quick = args.quick or not cuda
    steps = args.steps or (3 if quick else 10)
    warmup = args.warmup if args.warmup is not None else (1 if quick else 3)
    if cuda:
        gpu = torch.cuda.get_device_name(device)
        peak = args.peak_flops or peak_bf16_flops(gpu)
        where = f"{gpu}, peak bf16 {peak / 1e12:.0f} TFLOP/s" if peak else f"{gpu} (peak bf16 unknown: MFU n/a)"
    else:
        peak, where = None, f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    flash = importlib.util.find_spec("flash_attn")
    print(f"device: {where}; torch {torch.__version__}; flash-attn {'installed' if flash else 'not installed'}; "
          f"{'bf16 autocast' if cuda else 'fp32'}; {warmup} warm-up + {steps} timed steps"
          f"{'; tiny shapes (' + ('--quick' if args.quick else 'no CUDA') + ')' if quick else ''}\n")

    print("| model | attention | N (FLOPs) | batch x length | ms / step | tokens/s | model FLOPs / token "
          "| achieved TFLOP/s | MFU |")
    print("|---|---|---|---|---|---|---|---|---|")
    notes, failed = [], False
    for name in args.models:
        label = LABELS[name][quick]
        batch = args.batch_size or (4 if quick else {"gpt2": 16, "sedd": 8}[name])
        for backend in args.backends:
            reason = flash_unavailable(device) if backend == "flash_attention_2" else None
            if reason:
                print(f"| {label} | {backend} | skipped: {reason} | | | | | | |", flush=True)
                continue
            case = None
            try:
                case = BUILDERS[name](backend, quick, batch, device)
                seconds = time_training(case, device, warmup, steps)
            except Exception as err:  # noqa: BLE001 - one failing row (OOM, a mis-built kernel) must not hide the others
                failed = True
                first_line = (str(err).splitlines() or [""])[0][:120].replace("|", "/")
                print(f"| {label} | {backend} | failed: {type(err).__name__}: {first_line} | | | | | | |", flush=True)
                notes.append(f"{name} with {backend} failed: {err!r}")
                continue
            finally:
                model_info = None if case is None else (case.n_params, case.flops_per_token, case.tokens_per_step,
                                                        case.attention)
                case = None
                if cuda:
                    torch.cuda.empty_cache()
            n_params, fpt, tokens, attention = model_info
            tokens_per_s = tokens / seconds
            achieved = fpt * tokens_per_s
            mfu = f"{100 * achieved / peak:.1f}%" if peak else ("n/a (no CUDA)" if not cuda else "n/a (unknown GPU)")
            print(f"| {label} | {attention} | {n_params / 1e6:.2f}M | {batch} x {tokens // batch} | {1e3 * seconds:.1f} "
                  f"| {tokens_per_s:,.0f} | {fpt / 1e6:.2f}M | {achieved / 1e12:.3g} | {mfu} |", flush=True)
    if notes:
        print()
        for note in notes:
            print(f"- {note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
