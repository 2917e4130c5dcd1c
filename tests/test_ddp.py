import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("ddp_worker.py")


def torchrun(*args: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=2 ARGS`` with one thread per process (2 cores)."""
    launcher = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([launcher, "--standalone", "--nproc_per_node=2", *args], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.mark.slow
def test_two_cpu_processes_end_with_identical_weights(tmp_path):
    run = torchrun(str(WORKER), str(tmp_path))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    init0, init1 = load_file(tmp_path / "init0.safetensors"), load_file(tmp_path / "init1.safetensors")
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert any(not torch.equal(init0[k], init1[k]) for k in init0), "ranks should start from different weights"
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), f"{name} differs between ranks: are gradients all-reduced?"
    assert any(not torch.equal(rank0[k], init0[k]) for k in rank0), "training did not change the weights"


@pytest.mark.slow
def test_distillation_trainer_runs_under_torchrun(tmp_path):
    # DIITO makes several forward passes per step (source, base, counterfactual) through the DDP-wrapped student
    run = torchrun("-m", "reasoning_lib.distill", "--preset", "smoke", "--method", "diito", "--output-dir", str(tmp_path))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "diito student on 256 examples" in run.stdout
    assert (tmp_path / "diito-256" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "teacher" / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_implicit_cot_stages_run_under_torchrun(tmp_path):
    teacher = subprocess.run([sys.executable, "-m", "reasoning_lib.baselines", "--preset", "smoke", "--method", "explicit_cot",
                              "--output-dir", str(tmp_path / "01")], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert teacher.returncode == 0, teacher.stderr[-4000:]
    for stage in ("student", "emulator", "coupled"):  # the emulator's last block feeds no loss: DDP must cope
        run = torchrun("-m", "reasoning_lib.implicit_cot", "--preset", "smoke", "--stage", stage,
                       "--baseline-dir", str(tmp_path / "01"), "--output-dir", str(tmp_path / "02"))
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
        assert f"{stage}: trained 16 steps of 16" in run.stdout  # 512 problems, global batch 32
    assert (tmp_path / "02" / "coupled" / "final" / "student" / "modules.safetensors").is_file()


# (command-line arguments, a line the run prints, a file it must leave in its output folder)
TRAINERS = {
    "baselines": (["-m", "reasoning_lib.baselines", "--preset", "smoke", "--method", "no_cot"],
                  "no_cot: trained 16 steps; accuracy", "no_cot/model/model.safetensors"),
    "sedd": (["-m", "reasoning_lib.sedd", "--preset", "smoke"], "absorb: 20 steps of 20", "model_absorb/model/model.safetensors"),
    "dot": (["-m", "reasoning_lib.dot", "--preset", "smoke", "--variant", "dot_mp"], "dot_mp: 20 steps of 20",
            "dot_mp/model/model.safetensors"),
    "capacity": (["-m", "reasoning_lib.capacity", "--preset", "smoke", "--size", "0"], "30 steps",
                 "size-*/model/model.safetensors"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINERS)
def test_trainer_runs_under_torchrun(tmp_path, name):
    args, printed, saved = TRAINERS[name]
    run = torchrun(*args, "--output-dir", str(tmp_path))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert printed in run.stdout
    assert list(tmp_path.glob(saved)), f"{name} under torchrun left no {saved} in {tmp_path}"
