"""The paper dry run of chapter 7 (causal distillation, Wu et al. 2022) on a CPU, at BERT base's shapes.

``bert-base-uncased`` (random init at the hub's config, with a 30,522-entry WordPiece vocabulary at the real
special-token ids) comes from a local cache in the hub's exact layout, so the library loads it as on a machine with
internet. GLUE is written as local files with the hub's columns (``<dir>/<task>/<split>.tsv``) and WikiText-103 as a
local ``wiki.train.tokens`` in its own layout (headings, paragraphs, blank lines). A 2-process gloo ``torchrun``
first trains what a researcher would launch: the task-specific teacher and the KD and DIITO students on SST-2, and
the two general distillations (standard and causal, then their GLUE fine-tuning); the chapter then runs with
papermill at ``paper`` with ``dry_run`` and ``general``, must reload every one of those runs without a training step,
train the smaller training-set sizes itself, and write its metrics."""
import json
import os
import random
import shutil
from pathlib import Path

import pytest

from dry_run import run_chapter, torchrun
from hub_layout import ENGLISH_WORDS, add_bert_base

CH7 = "07_causal_distillation"
METHODS, GENERAL_METHODS = ("kd", "diito"), ("standard", "causal")
# the hub's GLUE columns per task and its dev split's name
GLUE_COLUMNS = {"cola": ("sentence",), "sst2": ("sentence",), "mrpc": ("sentence1", "sentence2"),
                "qqp": ("question1", "question2"), "stsb": ("sentence1", "sentence2"),
                "mnli": ("premise", "hypothesis"), "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2")}
CLASSES = {"stsb": None, "mnli": 3}
DEV = {"mnli": "validation_matched"}


def _sst2_rows(n: int, seed: int, phrases: bool) -> list[tuple[str, int]]:
    """SST-2's kind of rows from the generated reviews: short phrases (its train split) or whole sentences (its dev
    split), labelled by their sentiment; a few hold a bare quote, as GLUE's files do."""
    from reasoning_lib.data import reviews

    rows = []
    for i, review in enumerate(reviews.make_reviews(n, seed)):
        words = review.text.split()
        first = next(k for k, word in enumerate(words) if word in reviews.CONNECTIVES)
        text, label = (" ".join(words[:first]), int(review.clause_sentiments[0] > 0)) if phrases else \
            (review.text, review.label)  # a phrase: the first clause, with its own sentiment
        rows.append((text + (' "' if i % 7 == 3 else ""), label))
    return rows


def _glue_dir(root: Path, seed: int = 0) -> Path:
    """Every GLUE task of the paper's table as ``<root>/<task>/{train,<dev split>}.tsv`` with the hub's columns."""
    rng = random.Random(seed)
    words = list(ENGLISH_WORDS)

    def sentence():
        return " ".join(rng.choice(words) for _ in range(rng.randint(4, 12)))

    for task, fields in GLUE_COLUMNS.items():
        (root / task).mkdir(parents=True)
        for split, n in (("train", 100 if task == "sst2" else 24), (DEV.get(task, "validation"), 12)):
            if task == "sst2":
                train = split == "train"
                rows = [(text, str(label)) for text, label in _sst2_rows(n, seed + (not train), phrases=train)]
            else:
                classes = CLASSES.get(task, 2)
                rows = [(*(sentence() for _ in fields), f"{rng.uniform(0, 5):.2f}" if classes is None
                         else str(rng.randrange(classes))) for _ in range(n)]
            lines = ["\t".join((*fields, "label", "idx"))] + ["\t".join((*row, str(i))) for i, row in enumerate(rows)]
            (root / task / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def _wikitext(path: Path, articles: int = 6, seed: int = 0) -> Path:
    """``wiki.train.tokens`` as WikiText-103 lays it out: `` = Title = `` headings, `` = = Section = = ``, paragraphs
    of space-separated tokens (``@-@``, ``<unk>``), blank lines. The first paragraph is long enough for a 512-token
    chunk, the others are short."""
    rng = random.Random(seed)
    words = list(ENGLISH_WORDS)

    def paragraph(n_words: int) -> str:
        out = []
        while len(out) < n_words:
            sentence = [rng.choice(words) for _ in range(rng.randint(6, 14))]
            if rng.random() < 0.3:
                sentence.insert(rng.randrange(len(sentence)), rng.choice(["<unk>", "@-@", ","]))
            out += [*sentence, "."]
        return " " + " ".join(out).capitalize() + " "

    lines = []
    for a in range(articles):
        lines += ["", f" = {rng.choice(words).title()} {rng.choice(words).title()} = ", ""]
        for s in range(2):
            words_in = 560 if a == s == 0 else rng.randint(12, 40)
            lines += [f" = = {rng.choice(words).title()} = = ", "", paragraph(words_in), ""]
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _records(out: Path) -> dict[str, str]:
    """Every run record under ``out`` (the loop's ``run.json``, the chapter's ``run_config.json``), by path."""
    return {str(p.relative_to(out)): p.read_text() for name in ("run.json", "run_config.json") for p in out.rglob(name)}


@pytest.fixture(scope="module")
def distill_book(tmp_path_factory):
    """A book copy whose chapter 7 ran at ``paper`` with ``dry_run`` and ``general`` after torchrun trained its runs."""
    book = tmp_path_factory.mktemp("distill_book")
    cache = book / "hub"
    add_bert_base(cache)
    glue_dir = _glue_dir(book / "glue")
    corpus = _wikitext(book / "wikitext-103" / "wiki.train.tokens")
    out = book / "outputs" / CH7
    previous = os.environ.get("HF_DATASETS_CACHE")
    os.environ["HF_DATASETS_CACHE"] = str(book / "datasets")  # datasets caches the local csv files: here, not in ~
    try:  # a failure also removes the book: its BERT-base checkpoints take about 15 GB
        common = ["--preset", "paper", "--dry-run", "--output-dir", out, "--glue-dir", glue_dir]
        printed = {}
        for method in ("diito", "kd"):  # the first also fine-tunes the teacher; the second reloads it
            printed[method] = torchrun("reasoning_lib.distill", ["--method", method, *common], cache)
        for method in GENERAL_METHODS:
            printed[method] = torchrun("reasoning_lib.distill.general_main", ["--method", method, "--glue", "all",
                                                                              "--data-files", corpus, *common], cache)
        before = _records(out)
        run_chapter(CH7, book, cache, general=True, general_data_files=str(corpus), glue_dir=str(glue_dir),
                    output_dir=str(out))
        metrics = json.loads((out / "metrics.json").read_text())
    except BaseException:
        shutil.rmtree(book, ignore_errors=True)
        raise
    finally:
        if previous is None:
            os.environ.pop("HF_DATASETS_CACHE")
        else:
            os.environ["HF_DATASETS_CACHE"] = previous
    yield {"out": out, "printed": printed, "before": before, "after": _records(out), "metrics": metrics}
    shutil.rmtree(book, ignore_errors=True)  # BERT-base checkpoints: about 15 GB that pytest would keep


@pytest.mark.slow
@pytest.mark.notebook
def test_torchrun_trains_the_task_specific_runs_at_the_published_global_batch(distill_book):
    out, printed = distill_book["out"], distill_book["printed"]
    diito, kd = printed["diito"], printed["kd"]
    for name in ("ch7_teacher", "ch7_diito_67349"):  # a dry run prints the plan of the full run it stands for
        assert f"resource plan of {name}" in diito, diito[-2000:]
    assert "global 32 = 2 processes x micro 4 (chosen to fit: the preset sets none) x accum 4" in diito, \
        "the plan is re-cut for the launch"
    # 64 training sentences at the published global batch of 32: 2 steps each
    assert "teacher: trained 2 steps of 2 (global batch 32)" in diito and "diito-64: trained 2 steps of 2" in diito
    assert "teacher: trained 0 steps of 2" in kd, "the second launch reloads the teacher"
    assert "kd-64: trained 2 steps of 2 (global batch 32)" in kd, kd[-2000:]
    for run in ("teacher", "kd-64", "diito-64"):
        record = json.loads((out / run / "run.json").read_text())
        loop = record["identity"]["loop"]
        assert record["finished"] and (loop["global_batch"], loop["num_examples"]) == (32, 64), record
        assert record["examples_seen"] == 64
    teacher = json.loads((out / "teacher" / "model" / "config.json").read_text())
    student = json.loads((out / "diito-64" / "model" / "config.json").read_text())
    assert (teacher["num_hidden_layers"], teacher["hidden_size"], teacher["vocab_size"]) == (12, 768, 30522)
    assert (student["num_hidden_layers"], student["hidden_size"]) == (6, 768)


@pytest.mark.slow
@pytest.mark.notebook
def test_torchrun_distils_bert_base_on_wikitext_and_fine_tunes_on_glue(distill_book):
    from reasoning_lib.distill.glue import GLUE_TASKS, get_glue_config

    out, printed = distill_book["out"], distill_book["printed"]
    tasks = get_glue_config("paper", dry_run=True).tasks
    for method in GENERAL_METHODS:
        text = printed[method]
        assert f"resource plan of ch7_general_{method}" in text, text[-2000:]
        assert "global 240 = 2 processes x micro 2 x accum 60" in text, "the paper's plan, re-cut for the launch"
        assert f"{method}: trained 2 steps of 2 (global batch 4)" in text, text[-2000:]
        record = json.loads((out / f"general-{method}" / "run.json").read_text())
        run = record["identity"]["run"]
        assert record["finished"] and record["identity"]["loop"]["global_batch"] == 4
        assert (run["teacher"], run["max_length"], run["student_layers"]) == ("bert-base-uncased", 512,
                                                                              [0, 2, 4, 7, 9, 11])
        for task in tasks:
            scores = json.loads((out / f"general-{method}" / "glue" / task / "glue_metrics.json").read_text())
            assert 0 <= abs(scores[GLUE_TASKS[task].metric]) <= 1, (task, scores)
    student = json.loads((out / "general-causal" / "model" / "config.json").read_text())
    assert (student["model_type"], student["n_layers"], student["dim"], student["vocab_size"]) == \
        ("distilbert", 6, 768, 30522)


@pytest.mark.slow
@pytest.mark.notebook
def test_chapter_7_reloads_every_torchrun_run_without_training(distill_book):
    before, after, metrics = distill_book["before"], distill_book["after"], distill_book["metrics"]
    assert before and all(after[path] == text for path, text in before.items()), \
        f"the chapter rewrote a torchrun run: {[p for p, t in before.items() if after.get(p) != t]}"
    assert metrics["preset"] == "paper" and metrics["dry_run"] is True and metrics["task"] == "sst2"
    assert [metrics[f"{name}.steps_trained_now"] for name in ("teacher", *METHODS)] == [0, 0, 0]
    assert [metrics[f"general.{m}.steps_trained_now"] for m in GENERAL_METHODS] == [0, 0]
    # the 32-example students are the chapter's own: 32 examples at the global batch of 32, one step each
    assert [metrics[f"{m}-32.steps_trained_now"] for m in METHODS] == [1, 1]
    assert {"kd-32/run.json", "diito-32/run.json"} <= set(after) - set(before)


@pytest.mark.slow
@pytest.mark.notebook
def test_chapter_7_reports_accuracies_glue_scores_and_bert_base_sizes(distill_book):
    from reasoning_lib.distill.glue import GLUE_TASKS, get_glue_config

    metrics = distill_book["metrics"]
    assert (metrics["num_train"], metrics["num_test"], metrics["eval_pairs"]) == (64, 8, 4)
    for name in ("teacher", *METHODS):
        low, high = metrics[f"{name}.accuracy_interval"]
        assert 0 <= low <= metrics[f"{name}.accuracy"] <= high <= 1
    for method in METHODS:
        assert 0 <= metrics[f"{method}.iia"] <= 1
        sizes = (metrics["accuracy_vs_train_size"][method], metrics["iia_vs_train_size"][method])
        assert set(sizes[0]) == set(sizes[1]) == {"32", "64"}
        assert metrics["accuracy_vs_train_size"][method]["64"] == metrics[f"{method}.accuracy"]
    # BERT base (110M with its classifier or MLM head) and the 6-block students (67M)
    assert 109e6 < metrics["teacher.parameters"] < 111e6 and 109e6 < metrics["general.teacher.parameters"] < 111e6
    for name in (*METHODS, *(f"general.{m}" for m in GENERAL_METHODS)):
        assert 66e6 < metrics[f"{name}.parameters"] < 68e6, (name, metrics[f"{name}.parameters"])
    assert metrics["general.corpus_longest"] == 512, "WikiText's long paragraphs are cut at the paper's 512 tokens"
    tasks = get_glue_config("paper", dry_run=True).tasks
    for method in GENERAL_METHODS:
        scores = metrics[f"general.{method}.glue"]
        assert set(scores) == set(tasks)
        headline = [100 * scores[t][GLUE_TASKS[t].metric] for t in tasks]
        assert metrics[f"general.{method}.glue_average"] == pytest.approx(sum(headline) / len(headline), abs=0.01)
