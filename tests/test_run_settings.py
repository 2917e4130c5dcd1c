"""One rule from a preset's global batch to the loop's settings, the run record, best-epoch selection and the
evaluation precision: the shared pieces every full-scale run stands on."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reasoning_lib import baselines
from reasoning_lib.data import collate, encode_examples, make_splits
from reasoning_lib.models import build_model
from reasoning_lib.run_settings import batch_split, num_steps, train_settings
from reasoning_lib.runtime import DistributedContext, seed_everything
from reasoning_lib.train import BatchSampler, TrainConfig, train

WORKER = Path(__file__).with_name("settings_worker.py")


@pytest.mark.parametrize("global_batch,world,cap,expected", [
    (32, 1, None, (32, 1)), (32, 8, None, (4, 1)), (512, 8, 16, (16, 4)), (512, 1, 16, (16, 32)), (48, 2, 10, (8, 3)),
])
def test_the_global_batch_splits_into_micro_batches_and_accumulation(global_batch, world, cap, expected):
    micro, accum = batch_split(global_batch, world, cap)
    assert (micro, accum) == expected and micro * accum * world == global_batch


def test_a_batch_that_does_not_split_over_the_processes_is_refused():
    with pytest.raises(ValueError, match="32 examples does not split over 3 processes"):
        batch_split(32, 3)
    with pytest.raises(ValueError, match="steps or as epochs, not both"):
        num_steps(32, 100, epochs=1, steps=5)
    with pytest.raises(ValueError, match="needs the number of training examples"):
        num_steps(32, None, epochs=1)


def test_steps_and_examples_do_not_depend_on_the_number_of_processes():
    configs = [train_settings(global_batch=32, micro_batch_size=8, num_examples=808_000, epochs=1, world_size=w, lr=5e-5,
                              seed=0) for w in (1, 2, 8)]
    assert {c.max_steps for c in configs} == {808_000 // 32}
    assert [c.batch_size * c.grad_accum_steps * w for c, w in zip(configs, (1, 2, 8))] == [32, 32, 32]
    assert [(c.batch_size, c.grad_accum_steps) for c in configs] == [(8, 4), (8, 2), (4, 1)]


def test_each_step_trains_the_same_examples_on_one_or_two_processes():
    one = BatchSampler(100, 4, seed=3, ctx=DistributedContext(0, 0, 1), grad_accum_steps=2)
    two = [BatchSampler(100, 4, seed=3, ctx=DistributedContext(r, r, 2), grad_accum_steps=1) for r in (0, 1)]
    for step in range(30):  # crosses epoch boundaries (100 examples, 8 per step)
        assert one.indices(step, 0) + one.indices(step, 1) == two[0].indices(step) + two[1].indices(step)


def _torchrun(*args):
    launcher = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    return [launcher, "--standalone", "--nproc_per_node=2", *args]


@pytest.mark.slow
def test_one_and_two_gloo_processes_train_the_same_run_and_a_finished_one_is_reloaded(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {}
    for name, command in (("one", [sys.executable]), ("two", _torchrun())):
        (tmp_path / name).mkdir()
        done = subprocess.run([*command, str(WORKER), str(tmp_path / name), str(tmp_path / name / "run")],
                              capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        runs[name] = json.loads((tmp_path / name / "split.json").read_text())
    assert (runs["one"]["batch_size"], runs["one"]["grad_accum_steps"]) == (4, 4)
    assert (runs["two"]["batch_size"], runs["two"]["grad_accum_steps"]) == (4, 2)
    assert runs["one"]["steps"] == runs["two"]["steps"] == 4
    one, two = load_file(tmp_path / "one" / "weights.safetensors"), load_file(tmp_path / "two" / "weights.safetensors")
    initial = load_file(tmp_path / "one" / "initial.safetensors")
    assert all(torch.equal(initial[k], load_file(tmp_path / "two" / "initial.safetensors")[k]) for k in initial)
    # Adam turns float-order noise in near-zero gradients into full-size steps on a few weights, so the runs are
    # compared by distance: far closer to each other than either is to where both started
    moved = sum(float((one[k] - initial[k]).pow(2).sum()) for k in one) ** 0.5
    apart = sum(float((one[k] - two[k]).pow(2).sum()) for k in one) ** 0.5
    assert moved > 0.1, f"training barely moved the weights ({moved:.3g})"
    assert apart < 0.01 * moved, f"1 and 2 processes trained different runs: {apart:.3g} apart, {moved:.3g} moved"
    # the chapter in one process, after the torchrun stage: the same run, reloaded, zero steps trained
    again = subprocess.run([sys.executable, str(WORKER), str(tmp_path / "two"), str(tmp_path / "two" / "run")],
                           capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr[-4000:]
    assert json.loads((tmp_path / "two" / "split.json").read_text())["steps_trained"] == 0
    reloaded = load_file(tmp_path / "two" / "weights.safetensors")
    assert all(torch.equal(reloaded[k], two[k]) for k in two)


@pytest.fixture(scope="module")
def dataset(digit_tokenizer):
    return encode_examples(digit_tokenizer, make_splits(2, 128, 0, 0, seed=0).train, "all")


def _train(tokenizer, dataset, output_dir, settings=None, validate=None, **overrides):
    seed_everything(0)
    model = build_model("tiny", tokenizer=tokenizer)
    config = TrainConfig(**{"max_steps": 6, "batch_size": 8, "lr": 3e-3, "progress": False, "device": "cpu",
                            "tracking": "none", **overrides})
    return train(model, dataset, config, lambda b: collate(b, tokenizer.pad_token_id), output_dir=output_dir,
                 settings=settings, validate=validate)


def test_a_finished_run_is_reloaded_and_a_changed_setting_is_refused_by_name(digit_tokenizer, dataset, tmp_path):
    first = _train(digit_tokenizer, dataset, tmp_path, settings={"task": "2x2", "dropout": 0.0})
    assert first.steps_trained == 6
    log = (tmp_path / "train_log.jsonl").read_text()
    again = _train(digit_tokenizer, dataset, tmp_path, settings={"task": "2x2", "dropout": 0.0})
    assert again.steps_trained == 0 and again.step == 6
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in first.model.state_dict().items())
    assert (tmp_path / "train_log.jsonl").read_text() == log, "reloading must not touch the log"
    with pytest.raises(ValueError, match=r"run.task: '2x2' -> '3x3'.*run.dropout: 0.0 -> 0.1|run.dropout: 0.0 -> 0.1.*run.task"):
        _train(digit_tokenizer, dataset, tmp_path, settings={"task": "3x3", "dropout": 0.1})
    with pytest.raises(ValueError, match=r"loop.max_steps: 6 -> 9"):
        _train(digit_tokenizer, dataset, tmp_path, settings={"task": "2x2", "dropout": 0.0}, max_steps=9)
    assert json.loads((tmp_path / "run.json").read_text())["identity"]["run"]["task"] == "2x2", "record overwritten"


def test_validation_keeps_the_best_epoch(digit_tokenizer, dataset, tmp_path):
    scores = iter([0.2, 0.9, 0.5])
    seen = {}

    def validate(model):
        score = next(scores)
        seen[score] = {k: v.clone() for k, v in model.state_dict().items()}
        return score

    result = _train(digit_tokenizer, dataset, tmp_path, validate=validate, validate_every=2)
    assert result.best["step"] == 4 and result.best["score"] == 0.9 and result.best["epoch"] == 0.25  # 4 x 8 of 128
    assert [row["valid"] for row in result.validation] == [0.2, 0.9, 0.5]
    weights = result.model.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in seen[0.9].items()), "the returned model is not the best epoch"
    assert any(not torch.equal(weights[k], v) for k, v in seen[0.5].items())
    reloaded = _train(digit_tokenizer, dataset, tmp_path, validate=validate, validate_every=2)
    assert reloaded.steps_trained == 0 and reloaded.best["step"] == 4
    assert all(torch.equal(reloaded.model.state_dict()[k], v) for k, v in seen[0.9].items())


def test_minimised_scores_keep_the_lowest(digit_tokenizer, dataset):
    scores = iter([3.0, 1.0, 2.0])
    result = _train(digit_tokenizer, dataset, None, validate=lambda m: next(scores), validate_every=2, select="min")
    assert result.best["step"] == 4 and result.best["score"] == 1.0


def test_evaluation_runs_in_the_precision_flash_attention_needs(digit_tokenizer, monkeypatch):
    """FlashAttention-2 takes only 16-bit inputs: evaluating a model that uses it in fp32 crashed. A stand-in
    kernel with flash-attn's dtype rule shows the evaluation path now computes in bf16 autocast."""
    from transformers.integrations import sdpa_attention
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    dtypes = []

    def flash_like(module, query, key, value, attention_mask, **kwargs):
        dtypes.append(query.dtype)
        if query.dtype not in (torch.float16, torch.bfloat16):
            raise RuntimeError("FlashAttention only support fp16 and bf16 data type")
        return sdpa_attention.sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "flash_attention_2", flash_like)
    seed_everything(0)
    model = build_model("tiny", tokenizer=digit_tokenizer)
    model.config._attn_implementation = "flash_attention_2"
    config = baselines.get_config("smoke")
    examples = make_splits(2, 0, 0, 3, seed=0).test
    result = baselines.evaluate_baseline("explicit_cot", model, digit_tokenizer, examples, config)
    assert result.num_examples == 3 and dtypes and set(dtypes) == {torch.bfloat16}


@pytest.mark.slow
def test_the_baselines_command_line_is_reproducible_from_its_seed(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    weights = []
    for name in ("a", "b"):
        done = subprocess.run([sys.executable, "-m", "reasoning_lib.baselines", "--preset", "smoke", "--method", "no_cot",
                               "--seed", "0", "--output-dir", str(tmp_path / name)], capture_output=True, text=True,
                              timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        weights.append(load_file(tmp_path / name / "no_cot" / "model" / "model.safetensors"))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0]), "two runs with --seed 0 differ"


def test_the_baselines_command_line_takes_the_chapter_data_options(tmp_path):
    from reasoning_lib.data import write_examples

    import argparse

    parser = argparse.ArgumentParser()
    baselines.add_data_arguments(parser)
    args = parser.parse_args(["--model", "gpt2-medium", "--task", "5x5", "--test-file", "t.txt", "--valid-file", "v.txt"])
    assert baselines.data_overrides(args) == {"task": "5x5", "model": "gpt2-medium", "valid_file": "v.txt",
                                              "test_file": "t.txt"}
    config = baselines.get_config("paper", **baselines.data_overrides(args))
    assert (config.model, config.tokenizer, config.task) == ("gpt2-medium", "gpt2-medium", "5x5")
    wrong = write_examples(tmp_path / "test_bigbench.txt", make_splits(3, 0, 0, 5, seed=1).test)
    with pytest.raises(ValueError, match=r"test_bigbench.txt:1 is a 3x3 problem but the task is 2x2"):
        baselines.prepare_data(baselines.get_config("smoke", test_file=str(wrong)), seed=0)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.txt holds no examples"):
        baselines.prepare_data(baselines.get_config("smoke", test_file=str(empty)), seed=0)


def test_ddp_broadcasts_no_ema_buffers(tmp_path):
    """SEDD's EMA shadows are buffers that every rank updates alike: DDP must not send them from rank 0 each step."""
    import torch.distributed as dist

    from reasoning_lib.sedd import SEDD
    from reasoning_lib.sedd.model import DDiTConfig
    from reasoning_lib.sedd.training import SEDDWithEMA
    from reasoning_lib.tokenization import build_digit_tokenizer
    from reasoning_lib.train import ddp_wrap

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        sedd = SEDD(DDiTConfig(vocab_size=20, hidden_size=16, n_blocks=1, n_heads=2, cond_dim=8, length=6))
        with_ema = ddp_wrap(SEDDWithEMA(sedd, 0.9), torch.device("cpu"))
        plain = ddp_wrap(build_model("tiny", tokenizer=build_digit_tokenizer()), torch.device("cpu"))
        assert with_ema.forward_sync_buffers is False and plain.forward_sync_buffers is True
    finally:
        dist.destroy_process_group()
