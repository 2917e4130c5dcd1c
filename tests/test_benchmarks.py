"""benchmarks/: the MFU arithmetic, run_all.py's RESULTS.md section, and bench_mfu.py's CPU quick path."""
import datetime as dt
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mfu():
    return _load("bench_mfu")


@pytest.fixture(scope="module")
def run_all():
    return _load("run_all")


def test_flops_per_token_formula(mfu):
    # 6 N + 12 L H Q T = 6 * 1000 + 12 * 2 * 4 * 8 * 16 = 6000 + 12288
    assert mfu.flops_per_token(1000, n_layers=2, n_heads=4, head_dim=8, seq_len=16) == 18_288


def test_flops_parameters_gpt2_by_hand(mfu):
    from transformers import AutoModelForCausalLM, GPT2Config

    config = GPT2Config(vocab_size=100, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    # token table 100*16 (tied to the output: counted once); position table 32*16 left out;
    # block: ln_1 32 + c_attn 16*48+48 + attn c_proj 16*16+16 + ln_2 32 + c_fc 16*64+64 + mlp c_proj 64*16+16 = 3280;
    # ln_f 32.
    assert mfu.gpt2_flops_parameters(model) == 1600 + 3280 + 32 == 4912
    assert mfu.flops_per_token(4912, 1, 2, 8, 32) == 6 * 4912 + 12 * 1 * 2 * 8 * 32 == 35_616


def test_flops_parameters_sedd_by_hand(mfu):
    from reasoning_lib.sedd import SEDD
    from reasoning_lib.sedd.model import DDiTConfig

    model = SEDD(DDiTConfig(vocab_size=10, hidden_size=8, n_blocks=1, n_heads=2, cond_dim=4, length=16))
    # block without adaLN: norm1 8 + qkv 8*24 + out 8*8 + norm2 8 + mlp (8*32+32) + (32*8+8) = 824;
    # final layer without adaLN: norm 8 + linear 8*10+10 = 98. Input table and sigma embedder left out.
    assert mfu.sedd_flops_parameters(model) == 824 + 98


def test_peak_flops_table(mfu):
    assert mfu.peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert mfu.peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert mfu.peak_bf16_flops("NVIDIA H200") == 989e12
    assert mfu.peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert mfu.peak_bf16_flops("NVIDIA GeForce RTX 4090") is None


HAND_WRITTEN = "# Benchmark results\n\nIntro paragraph.\n\n## bench_x.py (2026-01-01)\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"


def test_section_inserted_after_title_then_replaced(run_all, tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(HAND_WRITTEN)
    first = f"{run_all.BEGIN}\nfirst run\n{run_all.END}"
    run_all.write_section(path, first)
    text = path.read_text()
    assert text.startswith("# Benchmark results\n\n" + first + "\n\n")
    assert text.count(run_all.BEGIN) == 1
    assert text.endswith("Intro paragraph.\n\n## bench_x.py (2026-01-01)\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")

    second = f"{run_all.BEGIN}\nsecond run\nwith two lines\n{run_all.END}"
    run_all.write_section(path, second)
    assert path.read_text() == text.replace(first, second)
    run_all.write_section(path, second)  # idempotent
    assert path.read_text() == text.replace(first, second)


def test_section_replaced_where_it_stands(run_all):
    text = f"# T\n\nabove\n\n{run_all.BEGIN}\nold\n{run_all.END}\n\nbelow\n"
    new = f"{run_all.BEGIN}\nnew\n{run_all.END}"
    assert run_all.replace_section(text, new) == f"# T\n\nabove\n\n{new}\n\nbelow\n"
    with pytest.raises(ValueError, match="one run_all marker"):
        run_all.replace_section(f"# T\n{run_all.BEGIN}\nno end\n", new)


def test_section_without_title_or_file(run_all, tmp_path):
    section = f"{run_all.BEGIN}\nx\n{run_all.END}"
    assert run_all.replace_section("no title\n", section) == section + "\n\nno title\n"
    path = tmp_path / "new.md"
    run_all.write_section(path, section)
    assert path.read_text() == f"# Benchmark results\n\n{section}\n"


def test_failures_and_timeouts_are_recorded(run_all, tmp_path):
    good, bad, slow = (tmp_path / f"bench_{n}.py" for n in ("good", "bad", "slow"))
    good.write_text("print('ok line')\nprint('| a |')\n")
    bad.write_text("import sys\nprint('partial')\nsys.exit('boom')\n")
    slow.write_text("import time\ntime.sleep(30)\n")
    outcomes = [run_all.run_benchmark(p.stem, p, [], timeout=t) for p, t in ((good, 60), (bad, 60), (slow, 1))]
    assert [o.ok for o in outcomes] == [True, False, False]
    assert outcomes[1].status == "failed (exit status 1)" and "boom" in outcomes[1].stderr
    assert outcomes[2].status.startswith("timed out after 1 s")
    for outcome in outcomes:  # render_section names them relative to the repository
        outcome.command[1] = str(BENCHMARKS / Path(outcome.command[1]).name)
    section = run_all.render_section(outcomes, {"device": "CPU only"}, quick=True,
                                     when=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    assert section.startswith(run_all.BEGIN) and section.endswith(run_all.END)
    assert "ok line\n\n| a |" in section  # a blank line before the table
    assert "bench_bad.py: failed (exit status 1)" in section and "boom" in section
    assert "bench_slow.py: timed out after 1 s" in section
    assert "1 of 3 benchmarks ran" in section


def test_bench_mfu_quick_on_cpu_prints_a_table():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(BENCHMARKS / "bench_mfu.py"), "--quick", "--device", "cpu"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("| model | attention |") for line in lines)
    rows = [line for line in lines if line.startswith("| GPT-2") or line.startswith("| SEDD")]
    assert len(rows) == 4
    assert sum("n/a (no CUDA)" in row for row in rows) == 2  # the two SDPA rows were timed
    assert sum("skipped" in row for row in rows) == 2  # flash-attn needs CUDA


def test_gpu_check_quick_on_cpu_checks_every_paper_model_against_its_plan():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_check.py"), "--quick", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    gpu_check = _load("gpu_check")
    rows = {line.split("|")[1].strip(): line for line in done.stdout.splitlines()
            if line.startswith("| ch") and "sdpa" in line}
    assert set(rows) == set(gpu_check.CASES), f"a paper model was not timed: {sorted(set(gpu_check.CASES) - set(rows))}"
    for name, row in rows.items():
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert float(cells[3]) > 0 and float(cells[7]) > 0, f"{name}: no time or no planned memory: {row}"
    assert "chapters' paper dry runs: skipped without CUDA" in done.stdout
