import math

import pytest

from reasoning_lib import baselines
from reasoning_lib.chapter import read_metrics, resolve_output_dir, write_metrics
from reasoning_lib.data import parse_operands, read_examples, write_examples
from reasoning_lib.data.multiplication import make_splits


def test_presets_and_overrides_are_validated():
    assert baselines.get_config("paper").model == "gpt2"
    assert baselines.get_config("tiny", task="4x4").task == "4x4"
    with pytest.raises(ValueError, match="preset='huge' is not allowed"):
        baselines.get_config("huge")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['steps'\]"):
        baselines.get_config("tiny", steps=3)
    with pytest.raises(ValueError, match="task='3x4'"):
        baselines.get_config("tiny", task="3x4")
    with pytest.raises(ValueError, match="method='cot'"):
        baselines.train_baseline("cot", [], baselines.get_config("smoke"), "unused")


def test_paper_preset_matches_the_published_setting():
    config = baselines.get_config("paper")
    train = config.train_config(seed=0, device="cpu")
    assert (config.task, config.num_train, config.batch_size, config.lr) == ("4x4", 808_000, 32, 5e-5)
    assert train.max_steps == 808_000 // 32 and train.schedule == "constant" and train.warmup_steps == 0
    # the global batch of 32 is split over the processes: the same steps and examples on 1 or 8 GPUs
    on_eight = config.train_config(seed=0, device="cpu", world_size=8)
    assert (on_eight.max_steps, on_eight.batch_size, on_eight.grad_accum_steps) == (808_000 // 32, 4, 1)
    assert train.validate_every == 808_000 // 32, "the paper keeps the best epoch on valid"


def test_prepare_data_writes_the_splits_and_excludes_a_given_test_file(tmp_path):
    test = make_splits(2, 0, 0, 40, seed=99).test
    test_file = write_examples(tmp_path / "test_bigbench.txt", test)
    config = baselines.get_config("smoke", num_train=2000, test_file=str(test_file))
    splits = baselines.prepare_data(config, seed=0, data_dir=tmp_path / "data")
    assert splits.test == test[: config.num_test]
    train_pairs = {parse_operands(e.question) for e in splits.train}
    assert not train_pairs & {parse_operands(e.question) for e in test}
    assert read_examples(tmp_path / "data" / "train.txt") == splits.train


def test_metrics_round_trip_and_relative_output_dirs_start_at_the_book_root(tmp_path, monkeypatch):
    (tmp_path / "_toc.yml").write_text("root: intro\n")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    out = resolve_output_dir("outputs/ch1")
    assert out == tmp_path / "outputs" / "ch1" and out.is_dir()
    write_metrics(out, {"no_cot.accuracy": 0.25, "kd.iia_on_flips": float("nan"), "by_size": {"500": float("inf")}})
    assert read_metrics(out) == {"no_cot.accuracy": 0.25, "kd.iia_on_flips": None, "by_size": {"500": None}}
    with pytest.raises(FileNotFoundError, match="has that chapter been run"):
        read_metrics(tmp_path)


def test_metrics_carry_a_wilson_interval_beside_every_accuracy(tmp_path):
    write_metrics(tmp_path, {"4x4.dot.accuracy": 0.5, "gsm8k.dot.accuracy": 0.25, "4x4.dot.throughput": 3.0},
                  num_test={"4x4.": 100, "gsm8k.": 8})
    metrics = read_metrics(tmp_path)
    low, high = metrics["4x4.dot.accuracy_interval"]
    assert 0.40 < low < 0.5 < high < 0.60 and metrics["4x4.dot.accuracy_n"] == 100
    assert metrics["gsm8k.dot.accuracy_n"] == 8 and "4x4.dot.throughput_interval" not in metrics
    with pytest.raises(ValueError, match="no test count for 'kd.accuracy'"):
        write_metrics(tmp_path, {"kd.accuracy": 0.9}, num_test={"4x4.": 100})
    write_metrics(tmp_path, {"kd.accuracy": 0.9, "kd.accuracy_interval": [0.1, 0.2]}, num_test=10)
    assert read_metrics(tmp_path)["kd.accuracy_interval"] == [0.1, 0.2], "a chapter's own interval is kept"


@pytest.mark.slow
def test_explicit_cot_learns_two_digit_multiplication_and_no_cot_lags(tmp_path):
    # 2x2 has only 8,100 problems: 6,000 of them, 6 epochs = 563 steps of 64.
    config = baselines.get_config("smoke", num_train=6000, num_epochs=6, batch_size=64, lr=2e-3, warmup_steps=30,
                                  num_test=100)
    splits = baselines.prepare_data(config, seed=0)
    accuracy = {}
    for method in ("explicit_cot", "no_cot"):
        model, tokenizer, result = baselines.train_baseline(method, splits.train, config, tmp_path / method, device="cpu")
        assert result.history[-1]["loss"] < result.history[0]["loss"]
        accuracy[method] = baselines.evaluate_baseline(method, model, tokenizer, splits.test, config).accuracy
    assert accuracy["explicit_cot"] >= 0.9, accuracy
    assert accuracy["explicit_cot"] > accuracy["no_cot"] + 0.2, accuracy
    assert (tmp_path / "explicit_cot" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "explicit_cot" / "model" / "tokenizer.json").is_file()


def test_trained_with_recognises_a_finished_run_of_the_same_settings(tmp_path):
    config = baselines.get_config("smoke", num_train=64)
    splits = baselines.prepare_data(config, seed=0)
    assert not baselines.trained_with(tmp_path / "no_cot", config)
    baselines.train_baseline("no_cot", splits.train, config, tmp_path / "no_cot", device="cpu")
    assert baselines.trained_with(tmp_path / "no_cot", config)
    assert not baselines.trained_with(tmp_path / "no_cot", baselines.get_config("smoke", num_train=64, lr=5e-4))


def test_gsm8k_task_reads_formula_files_and_needs_a_text_tokenizer(shared_file, tmp_path):
    test_file = shared_file("gsm8k/test.txt")
    valid_file = shared_file("gsm8k/valid.txt")
    train_file = shared_file("gsm8k/train_no_aug_formula.txt")
    with pytest.raises(ValueError, match="BPE tokenizer"):
        baselines.get_config("tiny", task="gsm8k")
    with pytest.raises(ValueError, match="for task='gsm8k'"):
        baselines.get_config("tiny", train_file=str(train_file))
    config = baselines.get_config("paper", task="gsm8k", train_file=str(train_file), valid_file=str(valid_file),
                                  test_file=str(test_file))
    assert config.num_epochs == 15  # the GSM8K teacher setting
    splits = baselines.prepare_data(config, seed=0, data_dir=tmp_path)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (6973, 500, 1319)
    assert splits.test[0].answer.startswith("####") and "<<" in splits.train[0].cot
    assert config.train_config(0, "cpu", num_examples=len(splits.train)).max_steps == math.ceil(6973 * 15 / 32)
    assert read_examples(tmp_path / "test.txt") == splits.test
