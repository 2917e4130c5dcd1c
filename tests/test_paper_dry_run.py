"""The paper dry run of chapters 1, 2, 4 and 8 on a CPU, at the real shapes, as one book.

GPT-2 small and sedd-small (random init at their hub configs) come from a local cache in the hub's exact layout
with GPT-2's real byte-level BPE, so ``"gpt2"`` and ``"louaaron/sedd-small"`` resolve as on a machine with
internet; the data are the published 4x4 valid and BIG-bench test files. Every stage of chapters 1 and 2, and
chapter 4's DoT, is first trained data-parallel by a 2-process gloo ``torchrun``; the chapters then run with
papermill and must reload every model without training a step, evaluate, draw and write their metrics. Chapter 4
also trains DoT-MP (its answer-only control trains and samples exactly as DoT does, so it is left out); the
capstone adopts the finished runs of chapters 1, 2 and 4 and measures them on the same test set."""
import json
import shutil

import pytest

from dry_run import ROOT, run_chapter, torchrun
from hub_layout import add_gpt2, add_sedd_small, gpt2_tokenizer

CH1, CH2 = "01_multiplication_baselines", "02_implicit_cot"
CH4, CH8 = "04_diffusion_of_thoughts", "08_reasoning_frontier"
PUBLISHED = ROOT.parent / "shared" / "data" / "implicit_cot"
AUTOREGRESSIVE = ["no_cot", "explicit_cot", "implicit_cot"]


@pytest.fixture(scope="module")
def paper_book(tmp_path_factory):
    """A book whose chapters 1, 2, 4 and 8 ran at ``paper`` with ``dry_run``, after torchrun trained their runs."""
    gpt2_tokenizer()  # skip the module when ../shared is absent
    files = {"test_file": str(PUBLISHED / "4_by_4_mult" / "test_bigbench.txt"),
             "valid_file": str(PUBLISHED / "4_by_4_mult" / "valid.txt")}
    options = ["--test-file", files["test_file"], "--valid-file", files["valid_file"]]
    book = tmp_path_factory.mktemp("paper_book")
    cache = book / "hub"
    add_gpt2(cache)
    add_sedd_small(cache)
    out = {name: book / "outputs" / name for name in (CH1, CH2, CH4, CH8)}
    printed = {}
    for method in ("no_cot", "explicit_cot"):
        printed[method] = torchrun("reasoning_lib.baselines", ["--preset", "paper", "--dry-run", "--method", method,
                                                               "--output-dir", out[CH1], *options], cache)
    for stage in ("student", "emulator", "coupled"):
        printed[stage] = torchrun("reasoning_lib.implicit_cot", [
            "--preset", "paper", "--dry-run", "--stage", stage, "--baseline-dir", out[CH1], "--output-dir", out[CH2],
            *options], cache)
    printed["dot"] = torchrun("reasoning_lib.dot", ["--preset", "paper", "--dry-run", "--variant", "dot", "--task",
                                                    "4x4", "--test-file", files["test_file"], "--output-dir", out[CH4]],
                              cache)
    records = {"dot": (out[CH4] / "dot" / "run.json").read_text()}
    run_chapter(CH1, book, cache, output_dir=str(out[CH1]), **files)
    run_chapter(CH2, book, cache, output_dir=str(out[CH2]), baseline_dir=str(out[CH1]), **files)
    run_chapter(CH4, book, cache, output_dir=str(out[CH4]), task="4x4", test_file=files["test_file"],
                baselines_dir=str(book / "outputs"), answer_only=False)
    run_chapter(CH8, book, cache, output_dir=str(out[CH8]), tasks=["4x4"], methods=AUTOREGRESSIVE + ["dot"],
                data_dir=str(PUBLISHED), reuse_dirs=",".join(str(out[c]) for c in (CH1, CH2, CH4)))
    yield book, out, printed, records
    shutil.rmtree(book, ignore_errors=True)  # GPT-2- and SEDD-sized checkpoints: GBs that pytest would keep


@pytest.mark.slow
@pytest.mark.notebook
def test_torchrun_stages_train_the_published_global_batch(paper_book):
    _, out, printed, _ = paper_book
    # 64 dry-run problems, global batch 32 (4 per process x 4 accumulation steps on 2 processes): 2 steps
    assert "explicit_cot: trained 2 steps" in printed["explicit_cot"], printed["explicit_cot"][-1500:]
    assert "resource plan of ch1_explicit_cot_4x4" in printed["explicit_cot"]
    assert "global 32 = 2 processes x micro 8 x accum 2" in printed["explicit_cot"], "the plan is re-cut for the launch"
    assert "resource plan of ch2_student_4x4" in printed["student"]
    for stage in ("student", "emulator", "coupled"):
        assert f"{stage}: trained 2 steps of 2" in printed[stage], printed[stage][-1500:]
    record = json.loads((out[CH2] / "student" / "run.json").read_text())
    assert record["finished"] and record["identity"]["loop"]["global_batch"] == 32
    assert record["identity"]["loop"]["num_examples"] == 64 and record["examples_seen"] == 64
    assert record["best"]["epoch"] == 1.0, "the paper keeps the best epoch on valid"


@pytest.mark.slow
@pytest.mark.notebook
def test_torchrun_trains_dot_at_the_published_shapes_with_its_plan(paper_book):
    _, out, printed, _ = paper_book
    assert "resource plan of ch4_dot_4x4" in printed["dot"], printed["dot"][-2000:]
    assert "dot: 2 steps of 2" in printed["dot"], printed["dot"][-2000:]
    record = json.loads((out[CH4] / "dot" / "run.json").read_text())
    assert record["finished"] and record["identity"]["loop"]["global_batch"] == 16
    assert record["identity"]["loop"]["num_examples"] == 64 and record["examples_seen"] == 32


@pytest.mark.slow
@pytest.mark.notebook
def test_chapters_reload_the_torchrun_models_without_training(paper_book):
    book, out, _, _ = paper_book
    ch1 = json.loads((out[CH1] / "metrics.json").read_text())
    ch2 = json.loads((out[CH2] / "metrics.json").read_text())
    for metrics in (ch1, ch2):
        assert metrics["preset"] == "paper" and metrics["dry_run"] is True and metrics["task"] == "4x4"
        assert metrics["test_set"].startswith("test_bigbench.txt (sha256 "), metrics["test_set"]
        for method in ("no_cot", "explicit_cot"):
            assert 0 <= metrics[f"{method}.accuracy"] <= 1 and metrics[f"{method}.throughput"] > 0
    assert ch1["no_cot.steps_trained_now"] == ch1["explicit_cot.steps_trained_now"] == 0
    assert [ch2[f"{s}.steps_trained_now"] for s in ("student", "emulator", "coupled")] == [0, 0, 0]
    assert 0 <= ch2["implicit_cot.accuracy"] <= 1 and len(ch2["emulator.state_mse_per_layer"]) == 12  # GPT-2 small
    assert not (out[CH2] / "baselines").exists(), "chapter 2 should reuse chapter 1's torchrun models"
    assert (out[CH1] / "accuracy_vs_throughput.json").is_file()


@pytest.mark.slow
@pytest.mark.notebook
def test_chapter_4_reloads_the_torchrun_run_and_evaluates_every_variant(paper_book):
    _, out, _, records = paper_book
    assert (out[CH4] / "dot" / "run.json").read_text() == records["dot"], "the chapter retrained or rewrote the run"
    metrics = json.loads((out[CH4] / "metrics.json").read_text())
    assert metrics["preset"] == "paper" and metrics["dry_run"] is True and metrics["task"] == "4x4"
    assert metrics["num_test"] == 2
    for variant in ("dot", "dot_mp"):
        assert 0 <= metrics[f"{variant}.accuracy"] <= 1 and metrics[f"{variant}.throughput"] > 0
    assert set(metrics["accuracy_vs_steps"]) == {"1", "4"}
    for name in ("accuracy_vs_throughput", "accuracy_vs_steps", "self_consistency"):
        assert (out[CH4] / f"{name}.json").is_file(), name


@pytest.mark.slow
@pytest.mark.notebook
def test_the_capstone_measures_the_chapters_runs_on_the_published_test_set(paper_book):
    _, out, _, _ = paper_book
    metrics = json.loads((out[CH8] / "metrics.json").read_text())
    assert metrics["dry_run"] is True and metrics["tasks"] == ["4x4"]
    assert metrics["4x4.test_set"].startswith("test_bigbench.txt (sha256 ")
    for method in AUTOREGRESSIVE + ["dot"]:
        assert 0 <= metrics[f"4x4.{method}.accuracy"] <= 1 and metrics[f"4x4.{method}.examples_per_s"] > 0
        result = json.loads((out[CH8] / "results" / "4x4" / method / "metrics.json").read_text())
        assert result["adopted_runs"], f"{method}: the capstone should adopt the chapters' finished runs"
    assert metrics["4x4.implicit_cot.parameters"] > 300e6, "emulator + student at GPT-2 small's shapes"
    assert metrics["4x4.dot.parameters"] > 160e6, "sedd-small's shapes"
