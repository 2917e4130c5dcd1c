"""The capstone harness: one scoring rule, one clock, runs adopted only from matching chapters, no test leak."""
import json
from pathlib import Path

import nbformat
import pytest

from reasoning_lib import dot, frontier
from reasoning_lib.data import make_splits
from reasoning_lib.frontier.methods import diffusion_config, train_diffusion

ROOT = Path(__file__).resolve().parents[1]


def test_scoring_is_exact_on_digits_and_numeric_on_plain_numbers():
    assert frontier.answer_correct("0 1 2 3", "0 1 2 3")
    assert frontier.answer_correct(" 0  1 2 3 ", "0 1 2 3")
    assert not frontier.answer_correct("0 1 2", "0 1 2 0")  # a missing padding zero is wrong
    assert not frontier.answer_correct("1 2 3", "0 1 2 3")
    assert frontier.answer_correct("1,000", "1000") and frontier.answer_correct("72", "72")
    assert not frontier.answer_correct("71", "72")
    assert not frontier.answer_correct(None, "72")
    assert not frontier.answer_correct("7 2", "72")  # a number must be written as one


def test_measure_counts_right_answers_and_times_both_modes():
    problems = make_splits(2, 0, 0, 10, seed=3).test
    golds = {p.question: p.answer.split("####")[-1].strip() for p in problems}
    calls = []

    def answer(batch):
        calls.append(len(batch))
        return [golds[p.question] if i % 2 == 0 else None for p in batch for i in [problems.index(p)]]

    method = frontier.TrainedMethod("fake", answer, parameters=1, train_sequences=1)
    result = frontier.measure(method, problems, batch_size=4, throughput_examples=5)
    assert result["accuracy"] == pytest.approx(0.5)
    assert result["examples_per_s"] > 0 and result["examples_per_s_batched"] > 0
    assert calls == [4, 4, 2, 1, 1, 1, 1, 1]  # three batches, then a warm-up and four timed single problems
    with pytest.raises(ValueError, match="at least 2"):
        frontier.measure(method, problems[:1], 4, 5)


def _chapter_run(folder: Path, preset: str, task: str) -> None:
    (folder / "metrics.json").parent.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps({"preset": preset, "task": task}))
    run = folder / "dot"
    for step in ("step-000010", "step-000020"):
        (run / "checkpoints" / step).mkdir(parents=True)
    (run / "train_config.json").write_text("{}")


def test_adopts_only_runs_of_the_same_preset_and_task(tmp_path):
    other, same = tmp_path / "chapter_other", tmp_path / "chapter_same"
    _chapter_run(other, "tiny", "3x3")
    _chapter_run(same, "tiny", "2x2")
    runs = tmp_path / "runs"
    assert frontier.adopt_runs(runs, "dot_sc", [other], "tiny", "2x2") == []
    assert frontier.adopt_runs(runs, "dot_sc", [other, same], "tiny", "2x2") == [str(same / "dot")]
    assert sorted(p.name for p in (runs / "dot" / "checkpoints").iterdir()) == ["step-000020"]  # the newest only
    assert frontier.adopt_runs(runs, "dot", [same], "tiny", "2x2") == []  # never overwrites a run


def test_refuses_a_diffusion_training_split_holding_a_test_problem(tmp_path):
    config = diffusion_config("smoke", "2x2", {}, num_train=256, num_test=8)
    _, _, splits = dot.prepare_data(config, 0)
    with pytest.raises(ValueError, match="test problems are in DoT's training split"):
        train_diffusion("dot", config, splits.train[:3], tmp_path, 0, "cpu", 1)


def test_config_names_wrong_methods_and_tasks():
    with pytest.raises(ValueError, match="method"):
        frontier.get_config("tiny", methods=("cot_magic",))
    with pytest.raises(ValueError, match="preset"):
        frontier.get_config("huge")
    with pytest.raises(ValueError, match="method"):
        frontier.run_one("cot_magic", "2x2", "smoke")


def test_one_run_end_to_end_writes_its_metrics(tmp_path):
    metrics = frontier.run_one("no_cot", "2x2", "smoke", tmp_path, device="cpu")
    saved = json.loads((tmp_path / "results" / "2x2" / "no_cot" / "metrics.json").read_text())
    assert saved["method"] == "no_cot" and saved["num_test"] == 16 and 0 <= saved["accuracy"] <= 1
    assert metrics["parameters"] > 0 and metrics["train_sequences"] == 512
    rows = frontier.collect(tmp_path, frontier.get_config("smoke", methods=("no_cot",)))
    assert [r["method"] for r in rows] == ["no_cot"]
    with pytest.raises(FileNotFoundError, match="2x2/dot"):
        frontier.collect(tmp_path, frontier.get_config("smoke", methods=("no_cot", "dot")))


def test_figure_has_one_dropdown_entry_per_task_and_shows_the_first():
    rows = [{"task": t, "method": m, "accuracy": 0.5, "examples_per_s": 10.0, "examples_per_s_batched": 100.0,
             "parameters": 1000, "train_sequences": 5000} for t in ("2x2", "3x3") for m in ("no_cot", "dot_sc")]
    fig = frontier.frontier_figure(rows)
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["2x2", "3x3"]
    assert [t.visible for t in fig.data] == [True, True, False, False]
    assert fig.layout.updatemenus[0].buttons[1].args[0]["visible"] == [False, False, True, True]
    assert fig.layout.xaxis.type == "log"


def test_the_sweep_runner_notebook_has_one_parameters_cell_and_no_outputs():
    runner = frontier.runner_notebook()
    assert runner == ROOT / "notebooks" / "frontier" / "run_method.ipynb"
    cells = nbformat.read(runner, as_version=4).cells
    assert sum("parameters" in c.metadata.get("tags", []) for c in cells) == 1
    assert all(not c.get("outputs") for c in cells if c.cell_type == "code")


def test_each_task_of_a_sweep_finds_its_own_published_files(tmp_path):
    for folder, names in (("4_by_4_mult", ("test_bigbench.txt", "valid.txt")), ("gsm8k", ("test.txt", "valid.txt"))):
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / name).write_text("")
    four = frontier.data_files("4x4", None, None, None, data_dir=str(tmp_path))
    assert four == {"test_file": str(tmp_path / "4_by_4_mult" / "test_bigbench.txt"),
                    "valid_file": str(tmp_path / "4_by_4_mult" / "valid.txt")}
    assert frontier.data_files("3x3", None, None, None, data_dir=str(tmp_path)) == {}, "no published 3x3 files"
    gsm8k = frontier.data_files("gsm8k", "aug.txt", None, None, data_dir=str(tmp_path))
    assert gsm8k == {"test_file": str(tmp_path / "gsm8k" / "test.txt"), "valid_file": str(tmp_path / "gsm8k" / "valid.txt"),
                     "train_file": "aug.txt"}
    assert frontier.data_files("4x4", None, None, "gsm8k_test.txt") == {}, "a GSM8K file never becomes 4x4's test set"
