"""Faults around a run folder: two writers, a longer run's checkpoints, another run's data, tasks out of range.

Each test gives the fault, the message it must produce, and checks that nothing already there was changed.
"""
import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from reasoning_lib import baselines, run_lock
from reasoning_lib.data import collate, encode_examples, make_splits
from reasoning_lib.data.multiplication import parse_task
from reasoning_lib.models import build_model
from reasoning_lib.runtime import seed_everything
from reasoning_lib.train import TrainConfig, train


@pytest.fixture(scope="module")
def dataset(digit_tokenizer):
    return encode_examples(digit_tokenizer, make_splits(2, 256, 0, 0, seed=0).train, "all")


def _run(tokenizer, dataset, output_dir, **overrides):
    seed_everything(0)
    model = build_model("tiny", tokenizer=tokenizer, dropout=0.0)
    settings = dict(max_steps=6, batch_size=16, lr=3e-3, warmup_steps=2, log_every=2, checkpoint_every=3,
                    progress=False, device="cpu", tracking="none")
    return train(model, dataset, TrainConfig(**{**settings, **overrides}), lambda b: collate(b, tokenizer.pad_token_id),
                 output_dir=output_dir)


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _live_process() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_second_writer_is_refused_naming_the_first_and_nothing_is_written(digit_tokenizer, dataset, tmp_path):
    other = _live_process()
    try:
        (tmp_path / run_lock.LOCK).write_text(json.dumps({"pid": other.pid, "host": socket.gethostname()}))
        before = _snapshot(tmp_path)
        with pytest.raises(run_lock.RunLockedError, match=rf"being trained by process {other.pid} on {socket.gethostname()}"):
            _run(digit_tokenizer, dataset, tmp_path)
        assert _snapshot(tmp_path) == before  # no log, record, config or checkpoint of the refused run
    finally:
        other.kill()
        other.wait()


def test_a_lock_from_a_process_that_died_is_taken_over_and_released(digit_tokenizer, dataset, tmp_path, capsys):
    dead = _live_process()
    dead.kill()
    dead.wait()
    (tmp_path / run_lock.LOCK).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    result = _run(digit_tokenizer, dataset, tmp_path)
    assert result.steps_trained == 6
    assert f"taking over the lock of process {dead.pid}" in capsys.readouterr().out
    assert not (tmp_path / run_lock.LOCK).exists()  # released when training ends


def test_a_lock_from_another_host_is_refused_with_the_file_to_delete(tmp_path):
    (tmp_path / run_lock.LOCK).write_text(json.dumps({"pid": 1, "host": "gpu-node-7"}))
    with pytest.raises(run_lock.RunLockedError, match=rf"process 1 on gpu-node-7.*delete {tmp_path / run_lock.LOCK}"):
        run_lock.acquire(tmp_path)


def test_the_lock_is_released_when_training_fails(digit_tokenizer, dataset, tmp_path):
    seen = []

    def failing_loss(model, batch):
        seen.append(run_lock.LOCK in os.listdir(tmp_path))
        if len(seen) == 2:
            raise RuntimeError("out of memory (simulated)")
        return model(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels")}).loss

    model = build_model("tiny", tokenizer=digit_tokenizer, dropout=0.0)
    config = TrainConfig(max_steps=6, batch_size=16, lr=3e-3, progress=False, device="cpu", tracking="none")
    with pytest.raises(RuntimeError, match="simulated"):
        train(model, dataset, config, lambda b: collate(b, digit_tokenizer.pad_token_id), failing_loss, tmp_path)
    assert seen == [True, True]  # held while training
    assert not (tmp_path / run_lock.LOCK).exists()


def test_reloading_a_finished_run_writes_nothing(digit_tokenizer, dataset, tmp_path):
    _run(digit_tokenizer, dataset, tmp_path)
    before = _snapshot(tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    again = _run(digit_tokenizer, dataset, tmp_path)
    assert again.steps_trained == 0
    assert _snapshot(tmp_path) == before  # no lock file, no rewritten train_config.json (a read-only copy reloads)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == stamps


def test_checkpoints_of_a_longer_run_are_refused_not_returned(digit_tokenizer, dataset, tmp_path):
    _run(digit_tokenizer, dataset, tmp_path, max_steps=6)
    (tmp_path / "run.json").unlink()  # a folder from before run records: only its checkpoints tell the length
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"checkpoint of step 6, past max_steps=3"):
        _run(digit_tokenizer, dataset, tmp_path, max_steps=3)
    assert _snapshot(tmp_path) == before


def test_a_shorter_run_in_a_recorded_folder_is_refused_by_its_settings(digit_tokenizer, dataset, tmp_path):
    _run(digit_tokenizer, dataset, tmp_path, max_steps=6)
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"max_steps: 6 -> 3"):
        _run(digit_tokenizer, dataset, tmp_path, max_steps=3)
    assert _snapshot(tmp_path) == before


def test_data_of_another_run_is_not_overwritten(tmp_path):
    config = baselines.get_config("smoke")
    baselines.prepare_data(config, seed=0, data_dir=tmp_path)
    before = _snapshot(tmp_path)
    baselines.prepare_data(config, seed=0, data_dir=tmp_path)  # the same settings: the same files, kept
    assert _snapshot(tmp_path) == before
    with pytest.raises(ValueError, match=rf"{tmp_path / 'train.txt'} holds other train problems"):
        baselines.prepare_data(config, seed=1, data_dir=tmp_path)
    assert _snapshot(tmp_path) == before


def test_tasks_of_ten_digits_and_more_are_generated(tmp_path):
    splits = make_splits(12, 4, 1, 2, seed=0)
    assert [len(side.split()) for side in splits.test[0].question.split("*")] == [12, 12]
    assert len({e.question for e in splits.train + splits.valid + splits.test}) == 7


@pytest.mark.parametrize("task", ["0x0", "21x21"])
def test_tasks_out_of_range_are_refused_with_the_range(task):
    with pytest.raises(ValueError, match=rf"task='{task}': operands must have 1 to 20 digits"):
        parse_task(task)


def test_an_unreadable_lock_is_not_silently_broken(tmp_path):
    (tmp_path / run_lock.LOCK).write_text("{half written")
    with pytest.raises(run_lock.RunLockedError, match=r"process \? on \?"):
        run_lock.acquire(tmp_path)
    assert os.path.exists(tmp_path / run_lock.LOCK)


# ---------------------------------------------------------------- local model folders: the real cause, not "the hub"
def test_a_model_folder_without_weights_says_what_it_holds(digit_tokenizer, tmp_path, monkeypatch):
    from reasoning_lib.models import build_model as build

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    build("tiny", tokenizer=digit_tokenizer).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=rf"model folder {tmp_path} could not be loaded \(it holds config.json") as err:
        build(str(tmp_path))
    assert "HF_HUB_OFFLINE" not in str(err.value)


def test_a_model_folder_with_a_broken_config_is_named(digit_tokenizer, tmp_path, monkeypatch):
    from reasoning_lib.models import build_model as build

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    build("tiny", tokenizer=digit_tokenizer).save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "n_layer": ')
    with pytest.raises(FileNotFoundError, match=rf"model folder {tmp_path} could not be loaded") as err:
        build(str(tmp_path))
    assert "HF_HUB_OFFLINE" not in str(err.value)


def test_a_tokenizer_folder_with_a_broken_file_is_named(digit_tokenizer, tmp_path, monkeypatch):
    from reasoning_lib.tokenization import load_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    digit_tokenizer.save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(FileNotFoundError, match=rf"tokenizer folder {tmp_path} could not be loaded") as err:
        load_tokenizer(str(tmp_path))
    assert "HF_HUB_OFFLINE" not in str(err.value)


def _sedd_folder(tmp_path):
    from reasoning_lib.sedd.loading import save_model
    from reasoning_lib.sedd.model import SEDD, DDiTConfig

    model = SEDD(DDiTConfig(vocab_size=11, hidden_size=32, cond_dim=16, n_heads=2, n_blocks=1))
    save_model(model, tmp_path, "absorb", {"type": "loglinear"})
    return tmp_path / "config.json"


def test_a_sedd_config_without_an_entry_names_the_entry_and_the_folder(tmp_path):
    from reasoning_lib.sedd.loading import load_model

    path = _sedd_folder(tmp_path)
    cfg = json.loads(path.read_text())
    del cfg["model"]
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=rf"the SEDD config of {tmp_path} has no 'model' entry"):
        load_model(tmp_path)


def test_a_sedd_config_that_is_not_json_is_named_with_its_line(tmp_path):
    from reasoning_lib.sedd.loading import build_random, load_model

    path = _sedd_folder(tmp_path)
    path.write_text('{\n  "tokens": 10,\n  "graph": {"type": "absorb"\n}')
    for load in (load_model, build_random):
        with pytest.raises(ValueError, match=rf"{path}:4: not valid JSON"):
            load(tmp_path)


# ---------------------------------------------------------------- data settings that would leak or be ignored
def test_an_empty_test_file_is_refused_not_replaced_by_generated_problems(tmp_path):
    empty = tmp_path / "test.txt"
    empty.write_text("\n")
    with pytest.raises(ValueError, match=rf"{empty} holds no examples"):
        baselines.prepare_data(baselines.get_config("smoke", test_file=str(empty)), seed=0)


def test_a_test_file_of_another_task_is_refused_with_its_line(tmp_path):
    from reasoning_lib.data import write_examples

    wrong = write_examples(tmp_path / "test.txt", make_splits(3, 0, 0, 4, seed=0).test)
    with pytest.raises(ValueError, match=rf"{wrong}:1 is a 3x3 problem but the task is 2x2"):
        baselines.prepare_data(baselines.get_config("smoke", test_file=str(wrong)), seed=0)


def test_a_negative_validation_size_is_refused():
    with pytest.raises(ValueError, match="num_valid"):
        baselines.get_config("smoke", num_valid=-1)


# ---------------------------------------------------------------- symbols the tokenizer lacks
def test_a_symbol_the_tokenizer_lacks_is_named_with_its_file_and_line(digit_tokenizer, tmp_path):
    from reasoning_lib.data import read_examples
    from reasoning_lib.dot import data as dot_data
    from reasoning_lib.dot.data import Layout

    path = tmp_path / "train.txt"
    path.write_text("1 2 * 3 4||3 6 0 + 0 4 8 #### 3 0 5 0\n5 6 * 7 8||5 3 4 + 0 0 x 4 #### 5 3 6 4\n")
    examples = read_examples(path)
    with pytest.raises(ValueError, match=rf"{path}:2: the cot '5 3 4 \+ 0 0 x 4' holds symbols the tokenizer does not know \('x'\)"):
        encode_examples(digit_tokenizer, examples, "all")
    with pytest.raises(ValueError, match=rf"{path}:2: the cot"):
        dot_tokenizer = dot_data.build_tokenizer("digits", True)
        dot_data.encode_examples(dot_tokenizer, Layout.for_tokenizer(dot_tokenizer, 48), examples, "dot")
    assert len(encode_examples(digit_tokenizer, examples[:1], "all")) == 1  # the good line alone encodes
