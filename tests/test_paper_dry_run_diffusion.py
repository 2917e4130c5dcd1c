"""The paper dry run of chapter 4 (Diffusion of Thoughts) on a CPU, at the real shapes.

sedd-small's config and GPT-2's real byte-level BPE come from a local cache in the hub's exact layout, so
``"louaaron/sedd-small"`` and ``"gpt2"`` resolve as on a machine with internet (random init: the dry run never
needs the weights); the test problems are the published 4x4 BIG-bench file. DoT is first trained by a 2-process
gloo ``torchrun`` at the published global batch, cut down as ``dot.presets.DRY_RUN`` says; the chapter then runs
with papermill, reloads that run without training a step, trains DoT-MP, and evaluates, draws and writes its
metrics (the answer-only control is left out: it trains and samples exactly as DoT does). The canvases of every published file (4x4, 5x5, GSM8K) are checked in
``tests/test_dot_paper.py``."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import papermill
import pytest

from hub_layout import add_gpt2, add_sedd_small, gpt2_tokenizer

ROOT = Path(__file__).resolve().parents[1]
CH4 = "04_diffusion_of_thoughts"
PUBLISHED = ROOT.parent / "shared" / "data" / "implicit_cot"


@pytest.fixture(scope="module")
def dot_book(tmp_path_factory):
    gpt2_tokenizer()  # skip the module when ../shared is absent
    test_file = str(PUBLISHED / "4_by_4_mult" / "test_bigbench.txt")
    book = tmp_path_factory.mktemp("dot_book")
    cache = book / "hub"
    add_gpt2(cache)
    add_sedd_small(cache)
    (book / "notebooks").mkdir()
    out = book / "outputs" / CH4
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launcher = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    command = [launcher, "--standalone", "--nproc_per_node=2", "-m", "reasoning_lib.dot", "--preset", "paper",
               "--dry-run", "--variant", "dot", "--task", "4x4", "--test-file", test_file, "--output-dir", str(out)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=1200, env=env, cwd=ROOT)
    assert run.returncode == 0, f"{' '.join(command)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    record_before = (out / "dot" / "run.json").read_text()
    previous = os.environ.get("HF_HUB_CACHE")
    os.environ["HF_HUB_CACHE"] = str(cache)  # the papermill kernel inherits it
    try:
        papermill.execute_notebook(
            str(ROOT / "notebooks" / f"{CH4}.ipynb"), str(book / "notebooks" / f"{CH4}.ipynb"),
            cwd=str(book / "notebooks"), kernel_name="python3", progress_bar=False, execution_timeout=1800,
            parameters={"preset": "paper", "dry_run": True, "task": "4x4", "test_file": test_file,
                        "output_dir": str(out), "baselines_dir": str(book / "outputs"),
                        "answer_only": False})  # the control trains like DoT: one sedd-small run less in CI
    finally:
        os.environ.pop("HF_HUB_CACHE") if previous is None else os.environ.__setitem__("HF_HUB_CACHE", previous)
    yield book, out, run.stdout, record_before
    shutil.rmtree(book, ignore_errors=True)  # sedd-small checkpoints: several GB that pytest would keep


@pytest.mark.slow
@pytest.mark.notebook
def test_torchrun_trains_dot_at_the_published_shapes_with_its_plan(dot_book):
    _, out, printed, _ = dot_book
    assert "resource plan of ch4_dot_4x4" in printed, printed[-2000:]
    assert "dot: 2 steps of 2" in printed, printed[-2000:]
    record = json.loads((out / "dot" / "run.json").read_text())
    assert record["finished"] and record["identity"]["loop"]["global_batch"] == 16
    assert record["identity"]["loop"]["num_examples"] == 64 and record["examples_seen"] == 32


@pytest.mark.slow
@pytest.mark.notebook
def test_chapter_4_reloads_the_torchrun_run_and_evaluates_every_variant(dot_book):
    _, out, _, record_before = dot_book
    assert (out / "dot" / "run.json").read_text() == record_before, "the chapter retrained or rewrote the torchrun run"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["preset"] == "paper" and metrics["dry_run"] is True and metrics["task"] == "4x4"
    assert metrics["num_test"] == 2
    for variant in ("dot", "dot_mp"):
        assert 0 <= metrics[f"{variant}.accuracy"] <= 1 and metrics[f"{variant}.throughput"] > 0
    assert set(metrics["accuracy_vs_steps"]) == {"1", "4"}
    for name in ("accuracy_vs_throughput", "accuracy_vs_steps", "self_consistency"):
        assert (out / f"{name}.json").is_file(), name


CH3 = "03_discrete_diffusion"


def _web_documents(path: Path, count: int = 40, reviews_per_document: int = 50) -> Path:
    """OpenWebText's layout (one ``{"text": ...}`` per line), with generated reviews as the documents' text."""
    from reasoning_lib.data import reviews

    texts = [r.text for r in reviews.make_reviews(count * reviews_per_document, seed=0)]
    lines = [json.dumps({"text": ". ".join(texts[i:i + reviews_per_document]) + "."})
             for i in range(0, len(texts), reviews_per_document)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def sedd_book(tmp_path_factory):
    """SEDD small (random init) trained by a 2-process torchrun on web-text documents tokenised into token files
    with GPT-2's real BPE, then chapter 3 at ``paper`` with ``dry_run``, judged by a local GPT-2."""
    gpt2_tokenizer()  # skip the module when ../shared is absent
    book = tmp_path_factory.mktemp("sedd_book")
    cache = book / "hub"
    judge = add_gpt2(cache)
    documents = _web_documents(book / "owt.jsonl")
    (book / "notebooks").mkdir()
    out, data_dir = book / "outputs" / CH3, book / "data"
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launcher = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    command = [launcher, "--standalone", "--nproc_per_node=2", "-m", "reasoning_lib.sedd", "--preset", "paper",
               "--dry-run", "--data-files", str(documents), "--data-dir", str(data_dir), "--output-dir", str(out)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=1200, env=env, cwd=ROOT)
    assert run.returncode == 0, f"{' '.join(command)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    record_before = (out / "model_absorb" / "run.json").read_text()
    previous = os.environ.get("HF_HUB_CACHE")
    os.environ["HF_HUB_CACHE"] = str(cache)
    try:
        papermill.execute_notebook(
            str(ROOT / "notebooks" / f"{CH3}.ipynb"), str(book / "notebooks" / f"{CH3}.ipynb"),
            cwd=str(book / "notebooks"), kernel_name="python3", progress_bar=False, execution_timeout=1800,
            parameters={"preset": "paper", "dry_run": True, "data_files": str(documents), "data_dir": str(data_dir),
                        "judge": str(judge), "output_dir": str(out)})
    finally:
        os.environ.pop("HF_HUB_CACHE") if previous is None else os.environ.__setitem__("HF_HUB_CACHE", previous)
    yield out, data_dir, run.stdout, record_before
    shutil.rmtree(book, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.notebook
def test_torchrun_trains_sedd_small_on_the_token_file_with_its_plan(sedd_book):
    out, data_dir, printed, _ = sedd_book
    assert "resource plan of ch3_sedd_small_owt" in printed, printed[-2000:]
    assert "absorb: 2 steps of 2" in printed, printed[-2000:]
    record = json.loads((out / "model_absorb" / "run.json").read_text())
    assert record["finished"] and record["identity"]["loop"]["global_batch"] == 4
    assert record["identity"]["run"]["length"] == 1024 and record["identity"]["run"]["hidden_size"] == 768
    assert sorted(p.name for p in data_dir.rglob("*.bin")) == ["held_out.bin", "train.bin"]


@pytest.mark.slow
@pytest.mark.notebook
def test_chapter_3_reloads_the_run_and_evaluates_it_as_the_paper_does(sedd_book):
    out, _, _, record_before = sedd_book
    assert (out / "model_absorb" / "run.json").read_text() == record_before, "the chapter retrained the torchrun run"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["preset"] == "paper" and metrics["dry_run"] is True and metrics["graphs"] == ["absorb"]
    assert metrics["absorb.elbo_real_tokens"] == 2 * 1024, "packed web text has no padding: every position counts"
    low, high = metrics["absorb.elbo_perplexity_interval"]
    assert low <= metrics["absorb.elbo_perplexity"] <= high
    assert metrics["quality_measure"].startswith("generative perplexity under")
    assert set(metrics["quality"]) == {"absorb · euler", "absorb · analytic"}
    assert all(value > 1 for curve in metrics["quality"].values() for value in curve.values())
    assert [row["step"] for row in metrics["absorb.elbo_curve"]] == [1, 2], "the EMA's bound during training"
