"""The paper dry run of chapters 5 (knowledge capacity) and 6 (multi-hop probes) on a CPU, at the real shapes.

The world is the paper sweep's N = 10k people with 17 relations (faker pools, 200 years of dates, the 3,000-token
BPE), the models the reference-sized Llamas: the sweep's smallest and largest budgets (0.5M and 2M, trained by
2-process gloo ``torchrun``s; the chapter collects what was trained) and chapter 6's 10M 1-hop + 2-hop model,
all at 512-token sequences and the global batch of 32. The chapters then run with papermill at ``paper`` with
``dry_run``: chapter 5 collects the runs, chapter 6 reloads its model and probes it at the real class counts."""
import json
import shutil

import pytest

from dry_run import run_chapter, torchrun

CH5, CH6 = "05_knowledge_capacity", "06_probing_multihop"
SIZES = {0: "P500000-L4", 4: "P2000000-L4"}  # the sweep's smallest and largest budgets


@pytest.fixture(scope="module")
def capacity_book(tmp_path_factory):
    book = tmp_path_factory.mktemp("capacity_book")
    cache = book / "hub"  # nothing is loaded from the hub: the world, tokenizer and models are generated
    out5, out6 = book / "outputs" / CH5, book / "outputs" / CH6
    printed = {}
    for size in SIZES:
        printed[size] = torchrun("reasoning_lib.capacity", ["--preset", "paper", "--dry-run", "--size", size,
                                                            "--output-dir", out5], cache)
    printed["multihop"] = torchrun("reasoning_lib.capacity", ["--preset", "paper", "--dry-run", "--multihop",
                                                              "--output-dir", out6], cache)
    records = {path: path.read_text() for out in (out5, out6) for path in out.glob("size-*/run.json")}
    run_chapter(CH5, book, cache, output_dir=str(out5), train_missing=False)
    run_chapter(CH6, book, cache, output_dir=str(out6))
    yield out5, out6, printed, records
    shutil.rmtree(book, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.notebook
def test_torchrun_trains_the_capacity_llamas_at_the_published_shapes(capacity_book):
    out5, out6, printed, _ = capacity_book
    for size, budget in ((0, "0.5M"), (4, "2M")):
        assert f"resource plan of ch5_capacity_N10000_r17_{budget}" in printed[size], printed[size][-2000:]
        assert "global 32 = 2 processes x micro 16" in printed[size]
    assert "resource plan of ch6_multihop_10M" in printed["multihop"], printed["multihop"][-2000:]
    for folder in [out5 / f"size-{label}" for label in SIZES.values()] + [out6 / "size-P10000000-L4-h12"]:
        record = json.loads((folder / "run.json").read_text())
        assert record["finished"] and record["identity"]["loop"]["global_batch"] == 32, folder
        run = record["identity"]["run"]
        assert (run["num_people"], run["num_relations"], run["max_seq_len"]) == (10_000, 17, 512)
        steps = [json.loads(line)["step"] for line in (folder / "capacity_log.jsonl").read_text().splitlines()]
        assert steps == [1, 2], f"{folder}: capacity is evaluated at every checkpoint of the run"


@pytest.mark.slow
@pytest.mark.notebook
def test_chapter_5_collects_the_runs_and_reports_both_entropy_conventions(capacity_book):
    out5, _, _, records = capacity_book
    assert all(path.read_text() == text for path, text in records.items()), "a chapter retrained or rewrote a run"
    metrics = json.loads((out5 / "metrics.json").read_text())
    assert metrics["preset"] == "paper" and metrics["dry_run"] is True and metrics["worlds"] == ["N10000-r17"]
    runs = [f"N10000-r17/{label}" for label in SIZES.values()]
    assert sorted(metrics["parameters"]) == sorted(runs), "only the trained sizes are collected"
    assert 0.4e6 < metrics["parameters"][runs[0]] < 0.5e6 and 2.9e6 < metrics["parameters"][runs[1]] < 3.1e6
    for run in runs:
        assert set(metrics["capacity_bits_by_support"][run]) == {"generating", "observed"}
        assert metrics["converged"][run] is False, "2 steps cannot meet the fixed convergence window"
    for name in ("capacity_vs_params", "capacity_over_steps", "loss_curves"):
        assert (out5 / f"{name}.json").is_file(), name


@pytest.mark.slow
@pytest.mark.notebook
def test_chapter_6_probes_the_10m_model_at_the_real_class_counts(capacity_book):
    _, out6, _, _ = capacity_book
    metrics = json.loads((out6 / "metrics.json").read_text())
    assert metrics["preset"] == "paper" and metrics["dry_run"] is True and metrics["num_people"] == 10_000
    accuracy = metrics["probe_accuracy"]
    assert len(accuracy) == 5, "embeddings + 4 layers"
    assert all(0 <= value <= 1 for row in accuracy for value in row)
    assert {"bridge entity", "answer"} <= set(metrics["probe_grids"])
    assert (out6 / "probe_heatmap.json").is_file()
