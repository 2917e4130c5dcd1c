import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config

from reasoning_lib.data import encode_examples
from reasoning_lib.data.multiplication import make_splits
from reasoning_lib.resources import (
    ModelSpec, ResourceError, ResourcePlan, chapter_runs, check_fits, estimate_activation_bytes, fitting_micro_batch,
    measure_activation_bytes, multiplication_tokens, paper_plans, presets_needing_micro_batch,
)
from reasoning_lib.resources.__main__ import main
from reasoning_lib.resources.activations import LAYER_COEFFICIENTS, LOGIT_SAVED_BYTES
from reasoning_lib.resources.paper import CAPACITY_WORLD_BYTES, PROCESSES
from reasoning_lib.resources.plan import GB, HOST_BOUND_BYTES, micro_batch_for
from reasoning_lib.train import causal_lm_loss

GPT2_TOKENIZER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gpt2_tokenizer"


@pytest.fixture(scope="module")
def plans():
    return paper_plans()


def _spec(**overrides) -> ModelSpec:
    fields = dict(name="gpt2", parameters=124_000_000, flops_parameters=123_000_000, num_layers=12, hidden_size=768,
                  num_heads=12, seq_len=100, vocab_size=50257)
    return ModelSpec(**{**fields, **overrides})


def _plan(models=None, **overrides) -> ResourcePlan:
    fields = dict(name="toy", models=tuple(models or [_spec()]), global_batch=64, micro_batch=8, processes=8,
                  steps=1000, data_bytes=GB, launch_floor=False)
    return ResourcePlan(**{**fields, **overrides})


# ---------------------------------------------------------------------- every paper run
def test_every_paper_plan_fits_an_80gb_gpu_and_64gb_per_node(plans):
    for name, plan in plans.items():
        check_fits(plan)  # raises ResourceError, naming the plan and the knobs, if not
        assert plan.peak_gpu_bytes < 80 * GB and plan.host_bytes <= HOST_BOUND_BYTES, name
        documented = 4 if name.startswith(("ch4_", "ch8_dot")) else PROCESSES.get(name.split("_")[0], 8)
        assert plan.processes == documented, name


def test_the_runs_of_every_chapter_are_planned_once(plans):
    runs = chapter_runs()
    assert sorted(runs) == [f"ch{i}" for i in range(1, 9)] and all(runs.values())
    assert len(plans) == len(set(plans)) and all(n in plans for names in runs.values() for n in names)
    assert {"ch1_no_cot_4x4", "ch1_explicit_cot_gsm8k", "ch2_coupled_4x4", "ch3_sedd_small_owt", "ch4_dot_mp_4x4",
            "ch5_capacity_N30000_r17_2M", "ch6_multihop_10M", "ch7_teacher", "ch7_diito_67349"} <= set(plans)
    assert len(runs["ch5"]) == 50  # one Llama per parameter budget and world of the sweep (5 budgets x 10 worlds)
    # chapter 8 reuses chapters 1, 2 and 4 at 4x4 and GSM8K and adds only 3x3 and 5x5
    assert "ch2_student_gsm8k" in runs["ch8"] and "ch8_dot_mp_5x5" in runs["ch8"]
    assert not any(n.startswith("ch8_") and ("4x4" in n or "gsm8k" in n) for n in plans)


def test_capacity_plans_cover_the_paper_sweep_in_bounded_host_memory(plans):
    from reasoning_lib.capacity.presets import MULTIHOP_PRESETS, SWEEPS, plan_name

    sweep = SWEEPS["paper"]
    wanted = {plan_name(sweep.world_config(w), s) for w, s in sweep.runs}
    assert {n for n in plans if n.startswith("ch5_")} == wanted, "one plan per (world, size) run, named as it announces"
    assert "ch5_capacity_N10000_r4_0.5M" in wanted and "ch6_multihop_10M" in plans
    configs = {plan_name(sweep.world_config(w), s): sweep.world_config(w) for w, s in sweep.runs}
    configs[plan_name(MULTIHOP_PRESETS["paper"], 0, multihop=True)] = MULTIHOP_PRESETS["paper"]
    for name, config in configs.items():
        plan = plans[name]
        check_fits(plan)
        # the world (0.5 GB per 10k people, generous) plus one stream chunk's permutation, twice while the next is
        # built: not 8 bytes x the 3.2e8 sequences of the run (2.6 GB)
        stream = plan.data_bytes - CAPACITY_WORLD_BYTES * max(1.0, config.num_people / 10_000)
        assert 0 < stream <= 2 * 8 * (config.stream_chunk + config.batch_size) < 20e6, name
        assert plan.data_bytes < 2 * GB and plan.host_bytes <= HOST_BOUND_BYTES, name
        assert plan.steps == 10_000_000 and plan.seq_len == 512 and plan.processes == 1, name
    largest = plans["ch5_capacity_N30000_r17_2M"]
    assert largest.data_bytes > plans["ch5_capacity_N10000_r17_2M"].data_bytes, "the world grows with N"
    assert 2.9e6 < largest.trainable_parameters < 3.2e6  # the 2M budget's real count, 3,040,048 at V = 3000


def test_paper_plans_follow_the_presets(plans):
    sedd, dot_mp, coupled = plans["ch3_sedd_small_owt"], plans["ch4_dot_mp_4x4"], plans["ch2_coupled_4x4"]
    assert (sedd.global_batch, sedd.seq_len, sedd.steps, sedd.processes) == (512, 1024, 400_000, 8)
    assert 165e6 < sedd.trainable_parameters < 175e6  # SEDD small with its untied 50258-state output
    assert plans["ch1_explicit_cot_4x4"].steps == -(-808_000 // 32)  # one epoch at the global batch
    assert plans["ch1_explicit_cot_4x4"].trainable_parameters == 124_439_808  # GPT-2 small exactly
    assert plans["ch2_student_4x4"].frozen_parameters == 124_439_808  # the teacher stays in memory
    assert coupled.frozen_parameters == 0 and len(coupled.models) == 2
    assert plans["ch7_diito_67349"].models[0].passes == 3 and plans["ch7_kd_67349"].models[0].passes == 1
    assert dot_mp.data_bytes > 4 * plans["ch4_dot_4x4"].data_bytes  # one canvas per thought (4 products + answer)
    assert sedd.data_bytes <= 2 * GB and "int64" in " ".join(sedd.notes)  # memory-mapped, not 8B tokens in RAM
    for plan in plans.values():
        assert plan.tokens_per_step == plan.global_batch * plan.seq_len
        assert plan.micro_batch * plan.grad_accum * plan.processes == plan.global_batch


def test_micro_batches_follow_the_loops_rule():
    settings = pytest.importorskip("reasoning_lib.run_settings")
    for global_batch, processes, cap in [(32, 8, 32), (512, 8, 16), (256, 4, 64), (96, 4, 5), (32, 1, None)]:
        assert micro_batch_for(global_batch, processes, cap) == settings.batch_split(global_batch, processes, cap)[0]


@pytest.mark.parametrize("n_digits", [3, 4, 5])
def test_multiplication_token_counts_match_gpt2(n_digits):
    if not GPT2_TOKENIZER.is_dir():
        pytest.skip(f"{GPT2_TOKENIZER} not present (../shared is optional)")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE.from_file(str(GPT2_TOKENIZER / "vocab.json"), str(GPT2_TOKENIZER / "merges.txt")))
    core.pre_tokenizer, core.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    examples = make_splits(n_digits, 20, 0, 0, seed=1).train
    for fmt in ("only", "nocot", "cot", "all"):
        lengths = {len(e.input_ids) for e in encode_examples(tokenizer, examples, fmt)}
        assert lengths == {multiplication_tokens(n_digits, fmt)}, fmt
    assert multiplication_tokens(4, "all") == 71 and multiplication_tokens(5, "all") == 103


# ---------------------------------------------------------------------- check_fits
def test_an_oversized_plan_names_the_knobs_and_a_micro_batch_that_fits(plans):
    plan = plans["ch3_sedd_small_owt"].with_micro_batch(64)  # the whole per-process share of 512 over 8 GPUs
    with pytest.raises(ResourceError) as err:
        check_fits(plan)
    message = str(err.value)
    fit = fitting_micro_batch(plan, 80 * GB)
    fitted = plan.with_micro_batch(fit)
    assert fit is not None and fit < 64 and plan.global_batch % (8 * fit) == 0
    check_fits(fitted)
    assert "ch3_sedd_small_owt" in message and f"micro_batch_size=64 needs {plan.peak_gpu_bytes / GB:.0f} GB" in message
    assert f"micro_batch_size={fit} with grad_accum={fitted.grad_accum} fits ({fitted.peak_gpu_bytes / GB:.0f} GB)" in message
    assert "processes=8" in message and "80 GB" in message


def test_a_plan_that_fits_nowhere_says_so_and_host_overruns_are_named():
    with pytest.raises(ResourceError, match=r"micro_batch_size=1 needs 4 GB .* optimizer state alone take \d GB.*FSDP"):
        check_fits(_plan(micro_batch=1, global_batch=8), gpu_bytes=2 * GB)
    with pytest.raises(ResourceError, match=r"micro_batch_size=8 needs .*; even micro_batch_size=1 needs \d+ GB"):
        check_fits(_plan(), gpu_bytes=2 * GB)
    with pytest.raises(ResourceError, match=r"host: .* per node \(8 processes .* memory-map the tokens"):
        check_fits(_plan(data_bytes=10 * GB))
    check_fits(_plan(data_bytes=GB))
    with pytest.raises(ValueError, match="multiple of processes"):
        _plan(global_batch=60)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_check_fits_on_cuda_needs_cuda():
    with pytest.raises(RuntimeError, match="use_cuda=True"):
        check_fits(_plan(), use_cuda=True)


def test_a_preset_without_micro_batch_size_gets_the_largest_power_of_two_that_fits(plans):
    from types import SimpleNamespace

    from reasoning_lib.resources.paper import make_plan

    sedd = plans["ch3_sedd_small_owt"]  # 512 sequences of 1024 tokens over 8 GPUs: 64 each do not fit
    plan = make_plan("old_sedd", SimpleNamespace(batch_size=512), list(sedd.models), 8, 1000, GB, "test")
    assert not plan.micro_batch_from_preset and plan.micro_batch in (1, 2, 4, 8, 16, 32)
    assert plan.peak_gpu_bytes <= 80 * GB < plan.with_micro_batch(2 * plan.micro_batch).peak_gpu_bytes
    assert presets_needing_micro_batch({"old_sedd": plan}) == {"old_sedd": plan.micro_batch}


def test_presets_without_a_micro_batch_are_reported():
    chosen = _plan(micro_batch=2, micro_batch_from_preset=False)
    full = _plan(micro_batch=8, micro_batch_from_preset=False)
    assert presets_needing_micro_batch({"a": chosen, "b": full, "c": _plan(micro_batch=2)}) == {"a": 2}


# ---------------------------------------------------------------------- formulas
def test_flops_are_6n_per_trained_token_and_2n_per_frozen_token():
    spec = _spec()
    plain = _plan([spec], attention_flops=False)
    assert plain.train_flops == 6 * spec.flops_parameters * plain.tokens_per_step * plain.steps
    with_attention = _plan([spec])
    attention = 12 * spec.num_layers * spec.hidden_size * spec.seq_len
    assert with_attention.train_flops == (6 * spec.flops_parameters + attention) * plain.tokens_per_step * plain.steps
    teacher = _spec(name="teacher", trainable=False, seq_len=50)
    both = _plan([spec, teacher], attention_flops=False)
    assert both.train_flops - plain.train_flops == 2 * teacher.flops_parameters * 50 * 64 * 1000
    assert both.frozen_parameters == teacher.parameters and both.trainable_parameters == spec.parameters


def test_hours_follow_the_gpu_peak_and_mfu():
    plan = _plan()
    assert plan.wall_hours == pytest.approx(plan.train_flops / (8 * 989e12 * 0.35) / 3600)
    assert _plan(gpu="H200").wall_hours == pytest.approx(plan.wall_hours)
    assert _plan(gpu="A100 80GB").wall_hours == pytest.approx(plan.wall_hours * 989 / 312)
    assert _plan(mfu=0.7).wall_hours == pytest.approx(plan.wall_hours / 2)
    assert plan.gpu_hours == pytest.approx(8 * plan.wall_hours)
    tiny = _plan(launch_floor=True, steps=10_000_000, micro_batch=1, global_batch=8)
    assert tiny.latency_bound and tiny.wall_hours == tiny.launch_hours > tiny.compute_hours


def test_gpu_memory_parts_and_growth_with_the_micro_batch():
    spec = _spec()
    memory = _plan([spec]).gpu_memory()
    assert memory["weights"] == 4 * spec.parameters and memory["grads"] == 4 * spec.parameters
    assert memory["optimizer"] == 8 * spec.parameters and memory["ddp_buckets"] == 4 * spec.parameters
    assert _plan([spec], processes=1).gpu_memory()["ddp_buckets"] == 0
    assert _plan([_spec(ema=True)]).gpu_memory()["ema"] == 4 * spec.parameters
    peaks = [_plan([spec], micro_batch=m).peak_gpu_bytes for m in (1, 2, 4, 8)]
    assert peaks == sorted(peaks) and len(set(peaks)) == 4
    activations = [spec.activation_bytes(m) for m in (1, 2, 4)]
    assert activations[2] - activations[1] == 2 * (activations[1] - activations[0])  # linear in the micro-batch


def test_a_measured_fit_replaces_the_estimate():
    from reasoning_lib.resources import ActivationFit

    fit = ActivationFit(slope=1e6, intercept=5e5, measured={1: 1_500_000, 2: 2_500_000})
    assert _spec(activation_fit=fit).activation_bytes(8) == fit(8) == 8_500_000


def test_flash_attention_drops_the_quadratic_term():
    flash = estimate_activation_bytes(12, 768, 12, 1024, 4, 50257, flash=True)
    full = estimate_activation_bytes(12, 768, 12, 1024, 4, 50257, flash=False)
    assert full - flash == pytest.approx(12 * 5 * 12 * 1024**2 * 4)
    assert flash == 12 * 1024 * 4 * 768 * 34 + 4 * 1024 * 50257 * 14


# ---------------------------------------------------------------------- measured activations
@pytest.fixture(scope="module")
def small_gpt2_fit():
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=512, n_positions=64, n_embd=128, n_layer=2, n_head=4, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")

    def make_batch(b):
        ids = torch.randint(512, (b, 64))
        return {"input_ids": ids, "labels": ids}

    return model, measure_activation_bytes(model, make_batch, causal_lm_loss, micro_batches=(1, 2, 4))


def test_measured_activations_grow_linearly_with_the_micro_batch(small_gpt2_fit):
    _, fit = small_gpt2_fit
    m = fit.measured
    assert m[4] - m[2] == pytest.approx(2 * (m[2] - m[1]), rel=0.02)
    assert fit.slope > 0 and fit(8) == pytest.approx(m[4] + 4 * fit.slope, rel=0.02)


def test_measured_activations_agree_with_the_estimate(small_gpt2_fit):
    model, fit = small_gpt2_fit
    korthikanti = estimate_activation_bytes(2, 128, 4, 64, 1, 512)  # eq. (1): 34 bytes per s·b·h
    assert 0.5 < fit.slope / korthikanti < 2.0, (fit.slope, korthikanti)  # within a factor of 2
    calibrated = estimate_activation_bytes(2, 128, 4, 64, 1, 512, layer_coefficient=LAYER_COEFFICIENTS["gpt2"],
                                           logit_bytes=LOGIT_SAVED_BYTES["lm"])
    assert fit.slope == pytest.approx(calibrated, rel=0.2)
    # the intercept is autocast's bf16 copy of every matmul weight (all but the position table and LayerNorms)
    matmul_weights = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "wpe" not in n)
    assert fit.intercept == pytest.approx(2 * matmul_weights, rel=0.15)


# ---------------------------------------------------------------------- output and CLI
def test_a_plan_prints_and_serialises(plans):
    plan = plans["ch2_student_4x4"]
    text = str(plan)
    assert text.startswith("### ch2_student_4x4") and "teacher (frozen)" in text and "GPU peak" in text
    data = json.loads(json.dumps(plan.to_dict()))
    for key in ("processes", "micro_batch", "grad_accum", "global_batch", "seq_len", "trainable_parameters",
                "frozen_parameters", "tokens_per_step", "steps", "train_flops", "gpu_memory", "peak_gpu_bytes",
                "host_bytes", "wall_hours", "gpu_hours"):
        assert key in data, key
    assert set(data["gpu_memory"]) == {"weights", "ema", "grads", "ddp_buckets", "optimizer", "activations", "margin"}


def test_cli_prints_a_row_per_plan(plans, capsys):
    main([])
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0] for line in lines if line.strip()}
    assert set(plans) <= rows
    sedd = next(line for line in lines if line.startswith("ch3_sedd_small_owt"))
    assert "524,288" in sedd and "400,000" in sedd


def test_cli_markdown_detail_and_gpu(plans, capsys):
    main(["--markdown"])
    out = capsys.readouterr().out
    assert out.startswith("| run | params (M) |") and sum(l.startswith("| ch") for l in out.splitlines()) == len(plans)
    main(["--run", "ch3_sedd_small_owt", "--gpu", "A100 80GB", "--mfu", "0.5"])
    detail = capsys.readouterr().out
    a100 = paper_plans("A100 80GB", 0.5)["ch3_sedd_small_owt"]
    assert "GPU ema" in detail and "8 x A100 80GB" in detail and "MFU 50%" in detail and f"{a100.wall_hours:,.2f} h" in detail
    with pytest.raises(SystemExit):
        main(["--run", "no_such_run"])
    assert "ch3_sedd_small_owt" in capsys.readouterr().err


def test_a_trainer_prints_its_plan_recut_for_the_launch_and_a_gpu_refuses_what_does_not_fit(monkeypatch, capsys):
    from reasoning_lib.resources import runs as announcing
    from reasoning_lib.resources import run_name

    assert run_name("ch1", "explicit_cot", "4x4") == "ch1_explicit_cot_4x4"
    assert run_name("ch2", "student", "5x5", "gpt2-medium") == "ch8_student_5x5_gpt2-medium"
    plan = announcing.announce("ch1_explicit_cot_4x4", "cpu", processes=2, micro_batch=8)
    assert (plan.processes, plan.micro_batch, plan.grad_accum) == (2, 8, 2)
    assert "global 32 = 2 processes x micro 8 x accum 2" in capsys.readouterr().out
    assert announcing.announce("ch1_no_such_run", "cpu", 1, 1) is None
    assert "no paper plan named 'ch1_no_such_run'" in capsys.readouterr().out
    asked = []
    monkeypatch.setattr(announcing, "check_fits", lambda p, use_cuda: asked.append((p.name, use_cuda)))
    announcing.announce("ch3_sedd_small_owt", "cuda:0", processes=8, micro_batch=16, is_main=False)
    assert asked == [("ch3_sedd_small_owt", True)], "on a GPU the plan is checked against the device's memory"


def test_probe_plans_carry_the_probes_own_bounded_estimate(plans):
    from reasoning_lib.capacity.presets import MULTIHOP_PRESETS
    from reasoning_lib.probes import ProbeConfig, probe_memory
    from reasoning_lib.resources.paper import PROBE_ANSWER_CLASSES
    from reasoning_lib.resources.plan import ALLOCATOR_SLACK, CUDA_CONTEXT_BYTES

    config, probe = MULTIHOP_PRESETS["paper"], ProbeConfig()
    llama = plans["ch6_multihop_10M"].models[0]
    assert {"ch6_probes_bridge_10M", "ch6_probes_answer_10M"} <= set(chapter_runs()["ch6"])
    for target, classes in (("bridge", config.num_people), ("answer", PROBE_ANSWER_CLASSES)):
        plan = plans[f"ch6_probes_{target}_10M"]
        memory = probe_memory(config.probe_rows, llama.hidden_size, classes, llama.num_layers + 1, num_positions=4,
                              num_penalties=len(config.probe_penalties), max_iter=config.probe_max_iter)
        assert memory.working <= probe.memory_bytes
        device = memory.working + 4 * llama.parameters  # the probes' working set and the probed Llama's weights
        assert plan.peak_gpu_bytes == pytest.approx(CUDA_CONTEXT_BYTES + (1 + ALLOCATOR_SLACK) * device, rel=1e-9)
        assert plan.micro_batch == memory.cv.row_batch and plan.data_bytes == memory.host
        assert plan.models[0].parameters == memory.cv.problems() * (llama.hidden_size + 1) * classes
        check_fits(plan)
    # what the unbounded fit held at its floor of one cell: the (N, C) logits of its four penalties, over the cap
    assert 4 * len(config.probe_penalties) * plans["ch6_probes_answer_10M"].global_batch * PROBE_ANSWER_CLASSES \
        > probe.memory_bytes
