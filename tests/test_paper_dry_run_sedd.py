"""The paper dry run of chapter 3 (score-entropy discrete diffusion) on a CPU, at the real shapes.

SEDD small (random init) is trained by a 2-process gloo ``torchrun`` on web-text documents in OpenWebText's
layout, tokenised into token files with GPT-2's real BPE; chapter 3 then runs at ``paper`` with ``dry_run``,
reloads that run and evaluates it as the paper does, judged by a local GPT-2 (random init at its hub config)."""
import json
import shutil
from pathlib import Path

import pytest

from dry_run import run_chapter, torchrun
from hub_layout import add_gpt2, gpt2_tokenizer

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
    gpt2_tokenizer()  # skip the module when ../shared is absent
    book = tmp_path_factory.mktemp("sedd_book")
    cache = book / "hub"
    judge = add_gpt2(cache)
    documents = _web_documents(book / "owt.jsonl")
    out, data_dir = book / "outputs" / CH3, book / "data"
    printed = torchrun("reasoning_lib.sedd", ["--preset", "paper", "--dry-run", "--data-files", documents,
                                              "--data-dir", data_dir, "--output-dir", out], cache)
    record_before = (out / "model_absorb" / "run.json").read_text()
    run_chapter(CH3, book, cache, data_files=str(documents), data_dir=str(data_dir), judge=str(judge),
                output_dir=str(out))
    yield out, data_dir, printed, record_before
    shutil.rmtree(book, ignore_errors=True)  # sedd-small checkpoints: GBs that pytest would keep


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
