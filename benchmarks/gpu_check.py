"""The first thing to run on a GPU box: every paper model at its real shapes, measured against its resource plan.

Usage: ``python benchmarks/gpu_check.py [--quick] [--steps 30] [--only ch3_sedd_small_owt ...] [--no-chapters]
[--attention sdpa flash_attention_2] [--budget-s 480]``.

For each paper run of ``reasoning_lib.resources`` listed in ``CASES``, the model is built with random weights at the
run's shapes and trained for ``--steps`` micro-steps of the plan's micro-batch (bf16 autocast, AdamW, as
``reasoning_lib.train`` does), with PyTorch SDPA and, when flash-attn is installed, FlashAttention-2 (GPT-2). It
prints tokens/s, MFU (the plan's FLOPs per micro-step over the measured time, against the GPU's peak bf16 rate),
peak GPU memory next to the plan's prediction for one process, and the full run's projected wall time on the plan's
process count (``steps x accumulation x seconds per micro-step``, perfect data-parallel scaling assumed). Then it
runs chapters 1 and 2's paper dry run (``-p dry_run True``) on the GPU with papermill; they load ``gpt2`` from the
hub or its local cache (set ``HF_HUB_CACHE``; offline, a missing ``gpt2`` is reported, not hidden).

Without CUDA (or with ``--quick``) every case runs at tiny shapes for 2 steps, so the whole path is checked in
seconds; its figures are not ones to quote, and the chapter dry runs are skipped (``make test`` runs them on the
CPU). The whole check stays inside ``--budget-s`` (8 minutes): cases that would start after it are skipped, named.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_mfu import flash_unavailable, peak_bf16_flops, time_training  # noqa: E402

from reasoning_lib.resources import paper_plans  # noqa: E402
from reasoning_lib.runtime import resolve_device  # noqa: E402

GB = 1e9


@dataclass
class Case:
    model: torch.nn.Module
    loss: Callable[[], torch.Tensor]  # the loss of one micro-batch at the plan's shapes


def _gpt2(layers, hidden, heads, vocab, length, micro, attention, device):
    from transformers import AutoModelForCausalLM, GPT2Config

    config = GPT2Config(vocab_size=vocab, n_positions=max(length, 128), n_embd=hidden, n_layer=layers, n_head=heads,
                        bos_token_id=vocab - 1, eos_token_id=vocab - 1)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attention).to(device).train()
    model.loss_type = "ForCausalLM"
    x = torch.randint(vocab, (micro, length), device=device)
    return Case(model, lambda: model(input_ids=x, labels=x).loss)


def gpt2_case(plan, quick, attention, device):
    spec = plan.models[0]
    if quick:
        return _gpt2(2, 64, 2, 512, 32, 2, attention, device)
    return _gpt2(spec.num_layers, spec.hidden_size, spec.num_heads, 50257, spec.longest, plan.micro_batch, attention, device)


def coupled_case(plan, quick, attention, device):
    """Chapter 2's coupled stage: emulator and student, both GPT-2s, trained on answer cross-entropy."""
    from transformers import AutoModelForCausalLM, GPT2Config

    from reasoning_lib.implicit_cot import ImplicitCoT, MindReadingStudent, ThoughtEmulator

    spec = plan.models[0]
    layers, hidden, heads, vocab, length, micro = (2, 64, 2, 512, 32, 2) if quick else (
        spec.num_layers, spec.hidden_size, spec.num_heads, 50257, spec.longest, plan.micro_batch)
    config = GPT2Config(vocab_size=vocab, n_positions=max(length, 128), n_embd=hidden, n_layer=layers, n_head=heads,
                        bos_token_id=vocab - 1, eos_token_id=vocab - 1, loss_type="ForCausalLM")
    lm = lambda: AutoModelForCausalLM.from_config(config, attn_implementation=attention)  # noqa: E731
    model = ImplicitCoT(ThoughtEmulator(lm()), MindReadingStudent(lm())).to(device).train()
    x = torch.randint(vocab, (micro, length), device=device)
    sep = torch.full((micro,), length // 3, device=device)
    return Case(model, lambda: model(x, sep, labels=x).loss)


def sedd_case(plan, quick, attention, device):
    from reasoning_lib.sedd import SEDD, SEDDObjective, build_graph, build_noise, get_config

    config = get_config("tiny" if quick else "paper")
    if not quick and plan.models[0].seq_len != config.length:  # DoT: sedd-small on its short canvas
        from dataclasses import replace

        config = replace(config, length=plan.models[0].seq_len)
    states = 46 if quick else 50258
    model = SEDD(config.model_config(states)).to(device).train()
    objective = SEDDObjective(build_graph(config.graph, states), build_noise(config.noise_config()))
    x = torch.randint(states - 1, (2 if quick else plan.micro_batch, config.length), device=device)
    return Case(model, lambda: objective(model, {"input_ids": x}))


def llama_case(plan, quick, attention, device):
    from transformers import AutoModelForCausalLM, LlamaConfig

    spec = plan.models[0]
    layers, hidden, heads, vocab, length, micro = (2, 64, 2, 512, 32, 2) if quick else (
        spec.num_layers, spec.hidden_size, spec.num_heads, spec.vocab_size, spec.seq_len, plan.micro_batch)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, max_position_embeddings=max(length, 128), tie_word_embeddings=True,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").to(device).train()
    x = torch.randint(vocab, (micro, length), device=device)
    return Case(model, lambda: model(input_ids=x, labels=x).loss)


def bert_case(plan, quick, attention, device):
    from transformers import AutoModelForSequenceClassification, BertConfig

    layers, hidden, heads, length, micro = (2, 64, 2, 32, 2) if quick else (12, 768, 12, plan.models[0].longest,
                                                                            plan.micro_batch)
    config = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=4 * hidden, num_labels=2)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa").to(device).train()
    x = torch.randint(config.vocab_size, (micro, length), device=device)
    y = torch.randint(2, (micro,), device=device)
    return Case(model, lambda: model(input_ids=x, labels=y).loss)


def general_distill_case(plan, quick, attention, device):
    """Chapter 7's general distillation step with DIITO: the frozen BERT-base teacher and the 6-block DistilBERT
    student copied from it, both on the micro-batch of the plan, under the library's own objective
    (``distill.general``: MLM + KD + cosine + the interchange-intervention term, three passes of each network)."""
    import numpy as np
    from transformers import AutoModelForMaskedLM, BertConfig

    from reasoning_lib.distill import general
    from reasoning_lib.distill.models import freeze

    config = general.get_config("paper")
    if quick:
        bert = BertConfig(vocab_size=512, hidden_size=64, num_hidden_layers=4, num_attention_heads=2,
                          intermediate_size=128, max_position_embeddings=64)
        layers, length, micro = (0, 2), 32, 2
    else:  # bert-base-uncased's config
        bert, layers, length, micro = BertConfig(), config.student_layers, config.max_length, plan.micro_batch
    teacher = freeze(AutoModelForMaskedLM.from_config(bert, attn_implementation="sdpa")).to(device)
    student = general.build_general_student(teacher, layers, config.student_arch, config.copy_head_transform,
                                            config.freeze_positions, config.dropout).to(device).train()
    objective = general.make_objective(config, "causal", teacher, len(layers))
    special = [0, 100, 101, 102, 103]  # bert-base-uncased's [PAD], [UNK], [CLS], [SEP], [MASK]
    collator = general.MLMCollator(general.masking_probabilities(np.ones(bert.vocab_size), config.mlm_smoothing,
                                                                 special), 0, 103, config.mlm_probability,
                                   config.mask_keep_random)
    ids = lambda: np.array([101, *np.random.randint(104, bert.vocab_size, length - 2), 102])  # noqa: E731
    batch = {k: v.to(device) for k, v in collator([{"input_ids": ids(), "dual_input_ids": ids()}
                                                   for _ in range(micro)]).items()}
    return Case(student, lambda: objective(student, batch))


# plan name -> builder; GPT-2 cases are timed with each attention implementation
CASES = {"ch1_explicit_cot_4x4": gpt2_case, "ch1_explicit_cot_gsm8k": gpt2_case, "ch2_coupled_4x4": coupled_case,
         "ch3_sedd_small_owt": sedd_case, "ch4_dot_4x4": sedd_case, "ch5_capacity_N30000_r17_2M": llama_case,
         "ch7_teacher": bert_case, "ch7_general_causal": general_distill_case}
GPT2_CASES = {gpt2_case, coupled_case}


def time_micro_steps(case: Case, device: torch.device, steps: int, warmup: int) -> tuple[float, int]:
    """(seconds per micro-step, peak bytes allocated): forward + backward + AdamW in bf16 autocast (bench_mfu's clock)."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    seconds = time_training(case, device, warmup, steps)
    return seconds, (torch.cuda.max_memory_allocated(device) if cuda else 0)


def check_case(name, plan, builder, attention, quick, device, steps, warmup, peak_flops) -> str:
    """One markdown row: measured throughput and memory against the plan, and the projected full run."""
    case = builder(plan, quick, attention, device)
    seconds, peak = time_micro_steps(case, device, steps, warmup)
    tokens = (2 if quick else plan.micro_batch) * (32 if quick else plan.seq_len)
    flops = plan.train_flops / (plan.steps * plan.grad_accum * plan.processes)  # per micro-step per process
    mfu = f"{100 * flops / seconds / peak_flops:.1f}%" if (peak_flops and not quick) else "n/a"
    single = plan.with_micro_batch(plan.micro_batch)
    predicted = (single.peak_gpu_bytes - single.gpu_memory().get("ddp_buckets", 0)) / GB  # one process, no DDP
    measured = f"{peak / GB:.1f}" if peak else "n/a"
    hours = plan.steps * plan.grad_accum * seconds / 3600
    projected = "n/a (tiny shapes)" if quick else f"{hours:,.1f} h on {plan.processes} GPUs"
    return (f"| {name} | {attention} | {plan.micro_batch if not quick else 2} x {plan.seq_len if not quick else 32} "
            f"| {1e3 * seconds:.1f} | {tokens / seconds:,.0f} | {mfu} | {measured} | {predicted:.1f} | "
            f"{plan.wall_hours:,.1f} h | {projected} |")


def chapter_dry_runs(device: str, timeout: int) -> list[str]:
    """Chapters 1 and 2 at ``-p preset paper -p dry_run True`` on ``device`` with papermill: a line each."""
    lines = []
    with tempfile.TemporaryDirectory() as out:
        for chapter in ("01_multiplication_baselines", "02_implicit_cot"):
            tic = time.perf_counter()
            command = [sys.executable, "-m", "papermill", str(ROOT / "notebooks" / f"{chapter}.ipynb"),
                       f"{out}/{chapter}.ipynb", "-p", "preset", "paper", "-p", "dry_run", "True", "-p", "device", device,
                       "-p", "output_dir", f"{out}/{chapter}", "--cwd", str(ROOT / "notebooks")]
            if chapter.startswith("02"):
                command += ["-p", "baseline_dir", f"{out}/01_multiplication_baselines"]
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
                status = "ok" if done.returncode == 0 else f"failed: {(done.stderr.strip().splitlines() or ['?'])[-1][:200]}"
            except subprocess.TimeoutExpired:
                status = f"timed out after {timeout} s"
            lines.append(f"- chapter {chapter} paper dry run on {device}: {status} ({time.perf_counter() - tic:.0f} s)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 2 steps (the default without CUDA)")
    parser.add_argument("--steps", type=int, default=None, help="timed micro-steps (30 on CUDA)")
    parser.add_argument("--only", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--attention", nargs="+", default=["sdpa", "flash_attention_2"])
    parser.add_argument("--no-chapters", action="store_true", help="skip the chapters' dry runs")
    parser.add_argument("--budget-s", type=float, default=480.0, help="start no case after this many seconds")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    quick = args.quick or not cuda
    steps, warmup = (args.steps or (2 if quick else 30)), (1 if quick else 3)
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    peak = peak_bf16_flops(name) if cuda else None
    print(f"device: {name}{f', peak bf16 {peak / 1e12:.0f} TFLOP/s' if peak else ''}; torch {torch.__version__}; "
          f"flash-attn {'installed' if importlib.util.find_spec('flash_attn') else 'not installed'}; "
          f"{warmup} warm-up + {steps} timed micro-steps{'; tiny shapes' if quick else ''}\n")
    print("| run | attention | micro x tokens | ms / micro-step | tokens/s | MFU | peak GB | plan GB (1 process) "
          "| plan hours | projected |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    plans, failed, skipped = paper_plans(), False, []
    for run in args.only:
        builder = CASES[run]
        for attention in (args.attention if builder in GPT2_CASES else ["sdpa"]):
            if time.perf_counter() - started > args.budget_s:
                skipped.append(f"{run} ({attention})")
                continue
            reason = flash_unavailable(device) if attention == "flash_attention_2" else None
            if reason:
                print(f"| {run} | {attention} | skipped: {reason} | | | | | | | |", flush=True)
                continue
            try:
                print(check_case(run, plans[run], builder, attention, quick, device, steps, warmup, peak), flush=True)
            except Exception as err:  # noqa: BLE001 - one failing run (OOM, a kernel) must not hide the others
                failed = True
                print(f"| {run} | {attention} | failed: {type(err).__name__}: {str(err)[:120]} | | | | | | | |", flush=True)
            finally:
                if cuda:
                    torch.cuda.empty_cache()
    if skipped:
        print(f"\nskipped past the {args.budget_s:.0f} s budget: {', '.join(skipped)}")
    if cuda and not args.no_chapters:
        left = max(60, int(args.budget_s - (time.perf_counter() - started)))
        lines = chapter_dry_runs("cuda", left // 2)
        print("\n" + "\n".join(lines))
        failed |= any("ok (" not in line for line in lines)
    elif not cuda:
        print("\nchapters' paper dry runs: skipped without CUDA (make test runs them on the CPU)")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
