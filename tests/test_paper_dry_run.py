"""The paper dry run: chapters 1, 2 and 8 at their ``paper`` presets on a CPU, at the real shapes.

GPT-2 small (random init) comes from a local cache in the hub's exact layout with GPT-2's real byte-level BPE,
so ``"gpt2"`` resolves as on a machine with internet; the data are the published 4x4 valid and BIG-bench test
files. Every stage is first trained data-parallel by a 2-process gloo ``torchrun``, as a researcher on a GPU box
would; the chapters then run with papermill and must reload every model without training a step, evaluate, draw
and write their metrics. Chapter 8 measures the autoregressive methods on the same runs, and trains and measures
DoT from sedd-small's config (its dry run also cuts DoT's global batch: see ``dot.presets.DRY_RUN``)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import papermill
import pytest
import yaml

from hub_layout import add_gpt2, add_sedd_small, gpt2_tokenizer

ROOT = Path(__file__).resolve().parents[1]
CH1, CH2, CH8 = "01_multiplication_baselines", "02_implicit_cot", "08_reasoning_frontier"
PUBLISHED = ROOT.parent / "shared" / "data" / "implicit_cot"
AUTOREGRESSIVE = ["no_cot", "explicit_cot", "implicit_cot"]
# fine-tuning sedd-small (random init at its config) on 128-token canvases; DoT-MP at these shapes is in
# tests/test_paper_dry_run_diffusion.py (chapter 4), so the capstone's dry run measures DoT only
DIFFUSION = ["dot"]


def _run(command: list[str], env: dict, timeout: int = 1200) -> subprocess.CompletedProcess:
    run = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert run.returncode == 0, f"{' '.join(command)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    return run


@pytest.fixture(scope="module")
def paper_book(tmp_path_factory):
    """A book copy whose chapters 1 and 2 ran at ``paper`` with ``dry_run``, after torchrun trained their stages."""
    gpt2_tokenizer()  # skip the module when ../shared is absent
    files = {"test_file": str(PUBLISHED / "4_by_4_mult" / "test_bigbench.txt"),
             "valid_file": str(PUBLISHED / "4_by_4_mult" / "valid.txt")}
    options = ["--test-file", files["test_file"], "--valid-file", files["valid_file"]]
    book = tmp_path_factory.mktemp("paper_book")
    cache = book / "hub"
    add_gpt2(cache)
    add_sedd_small(cache)
    for name in ("_toc.yml", "book"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, book / name)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    (book / "_config.yml").write_text(yaml.safe_dump(config))
    (book / "notebooks").mkdir()
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out1, out2 = book / "outputs" / CH1, book / "outputs" / CH2
    launcher = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    torchrun = [launcher, "--standalone", "--nproc_per_node=2", "-m"]
    printed = {}
    for method in ("no_cot", "explicit_cot"):
        printed[method] = _run(torchrun + ["reasoning_lib.baselines", "--preset", "paper", "--dry-run", "--method", method,
                                           "--output-dir", str(out1), *options], env).stdout
    for stage in ("student", "emulator", "coupled"):
        printed[stage] = _run(torchrun + ["reasoning_lib.implicit_cot", "--preset", "paper", "--dry-run", "--stage", stage,
                                          "--baseline-dir", str(out1), "--output-dir", str(out2), *options], env).stdout
    previous = os.environ.get("HF_HUB_CACHE")
    os.environ["HF_HUB_CACHE"] = str(cache)  # the papermill kernels inherit it
    try:
        ch8 = {"tasks": ["4x4"], "methods": AUTOREGRESSIVE + DIFFUSION, "data_dir": str(PUBLISHED), "reuse_dirs": f"{out1},{out2}"}
        for name, parameters in ((CH1, files), (CH2, {"baseline_dir": str(out1), **files}), (CH8, ch8)):
            papermill.execute_notebook(
                str(ROOT / "notebooks" / f"{name}.ipynb"), str(book / "notebooks" / f"{name}.ipynb"),
                cwd=str(book / "notebooks"), kernel_name="python3", progress_bar=False,
                parameters={"preset": "paper", "dry_run": True, "output_dir": str(book / "outputs" / name), **parameters},
                execution_timeout=1800,  # a silent kernel fails the test instead of hanging CI
            )
    finally:
        os.environ.pop("HF_HUB_CACHE") if previous is None else os.environ.__setitem__("HF_HUB_CACHE", previous)
    yield book, printed
    shutil.rmtree(book, ignore_errors=True)  # GPT-2-sized checkpoints: tens of GB that pytest would keep


@pytest.mark.slow
@pytest.mark.notebook
def test_torchrun_stages_train_the_published_global_batch(paper_book):
    book, printed = paper_book
    # 64 dry-run problems, global batch 32 (4 per process x 4 accumulation steps on 2 processes): 2 steps
    assert "explicit_cot: trained 2 steps" in printed["explicit_cot"], printed["explicit_cot"][-1500:]
    assert "resource plan of ch1_explicit_cot_4x4" in printed["explicit_cot"]
    assert "global 32 = 2 processes x micro 8 x accum 2" in printed["explicit_cot"], "the plan is re-cut for the launch"
    assert "resource plan of ch2_student_4x4" in printed["student"]
    for stage in ("student", "emulator", "coupled"):
        assert f"{stage}: trained 2 steps of 2" in printed[stage], printed[stage][-1500:]
    record = json.loads((book / "outputs" / CH2 / "student" / "run.json").read_text())
    assert record["finished"] and record["identity"]["loop"]["global_batch"] == 32
    assert record["identity"]["loop"]["num_examples"] == 64 and record["examples_seen"] == 64
    assert record["best"]["epoch"] == 1.0, "the paper keeps the best epoch on valid"


@pytest.mark.slow
@pytest.mark.notebook
def test_chapters_reload_the_torchrun_models_without_training(paper_book):
    book, _ = paper_book
    ch1 = json.loads((book / "outputs" / CH1 / "metrics.json").read_text())
    ch2 = json.loads((book / "outputs" / CH2 / "metrics.json").read_text())
    for metrics in (ch1, ch2):
        assert metrics["preset"] == "paper" and metrics["dry_run"] is True and metrics["task"] == "4x4"
        assert metrics["test_set"].startswith("test_bigbench.txt (sha256 "), metrics["test_set"]
        for method in ("no_cot", "explicit_cot"):
            assert 0 <= metrics[f"{method}.accuracy"] <= 1 and metrics[f"{method}.throughput"] > 0
    assert ch1["no_cot.steps_trained_now"] == ch1["explicit_cot.steps_trained_now"] == 0
    assert [ch2[f"{s}.steps_trained_now"] for s in ("student", "emulator", "coupled")] == [0, 0, 0]
    assert 0 <= ch2["implicit_cot.accuracy"] <= 1 and len(ch2["emulator.state_mse_per_layer"]) == 12  # GPT-2 small
    assert not (book / "outputs" / CH2 / "baselines").exists(), "chapter 2 should reuse chapter 1's torchrun models"
    assert (book / "outputs" / CH1 / "accuracy_vs_throughput.json").is_file()


@pytest.mark.slow
@pytest.mark.notebook
def test_the_capstone_measures_the_chapters_runs_on_the_published_test_set(paper_book):
    book, _ = paper_book
    metrics = json.loads((book / "outputs" / CH8 / "metrics.json").read_text())
    assert metrics["dry_run"] is True and metrics["tasks"] == ["4x4"]
    assert metrics["4x4.test_set"].startswith("test_bigbench.txt (sha256 ")
    for method in AUTOREGRESSIVE:
        assert 0 <= metrics[f"4x4.{method}.accuracy"] <= 1 and metrics[f"4x4.{method}.examples_per_s"] > 0
        result = json.loads((book / "outputs" / CH8 / "results" / "4x4" / method / "metrics.json").read_text())
        assert result["adopted_runs"], f"{method}: the capstone should adopt chapters 1 and 2's finished runs"
    assert metrics["4x4.implicit_cot.parameters"] > 300e6, "emulator + student at GPT-2 small's shapes"
    for method in DIFFUSION:
        assert 0 <= metrics[f"4x4.{method}.accuracy"] <= 1
        assert metrics[f"4x4.{method}.parameters"] > 160e6, "sedd-small's shapes"
