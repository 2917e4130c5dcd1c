import json

import pytest
import torch
from safetensors.torch import load_file

from reasoning_lib.checkpoint import list_checkpoints
from reasoning_lib.data import collate, encode_examples, make_splits
from reasoning_lib.models import build_model
from reasoning_lib.runtime import seed_everything
from reasoning_lib.train import TrainConfig, lr_multiplier, train


@pytest.fixture(scope="module")
def dataset(digit_tokenizer):
    return encode_examples(digit_tokenizer, make_splits(2, 512, 0, 0, seed=0).train, "all")


def _run(tokenizer, dataset, output_dir=None, on_step=None, dropout=0.1, **overrides):
    seed_everything(0)
    model = build_model("tiny", tokenizer=tokenizer, dropout=dropout)
    settings = dict(max_steps=12, batch_size=16, lr=3e-3, warmup_steps=3, log_every=2, checkpoint_every=5,
                    progress=False, device="cpu")
    config = TrainConfig(**{**settings, **overrides})
    return train(model, dataset, config, lambda b: collate(b, tokenizer.pad_token_id), output_dir=output_dir,
                 on_step=on_step)


def test_loss_falls(digit_tokenizer, dataset):
    history = _run(digit_tokenizer, dataset, max_steps=60, log_every=10, dropout=0.0).history
    assert history[-1]["loss"] < 0.6 * history[0]["loss"], [round(h["loss"], 3) for h in history]


def test_resume_after_interruption_matches_an_uninterrupted_run(digit_tokenizer, dataset, tmp_path):
    whole = _run(digit_tokenizer, dataset, output_dir=tmp_path / "whole")

    def interrupt(step, loss):
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(digit_tokenizer, dataset, output_dir=tmp_path / "cut", on_step=interrupt)
    assert [p.name for p in list_checkpoints(tmp_path / "cut" / "checkpoints")] == ["step-000005"]
    resumed = _run(digit_tokenizer, dataset, output_dir=tmp_path / "cut")
    assert resumed.final_loss == whole.final_loss
    assert [h["step"] for h in resumed.history] == [h["step"] for h in whole.history], "log lost or repeated steps"
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), f"{name} differs after resume (RNG or data order?)"


def test_checkpoints_are_safetensors_and_old_ones_are_pruned(digit_tokenizer, dataset, tmp_path):
    _run(digit_tokenizer, dataset, output_dir=tmp_path, keep_checkpoints=2)
    found = list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in found] == ["step-000010", "step-000012"]
    assert "transformer.h.0.attn.c_attn.weight" in load_file(found[-1] / "model.safetensors")
    state = torch.load(found[-1] / "trainer_state.pt", weights_only=True)
    assert state["step"] == 12 and "optimizer" in state and "rng" in state
    lines = (tmp_path / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 4, 6, 8, 10, 12]


def test_resume_with_other_settings_is_refused(digit_tokenizer, dataset, tmp_path):
    _run(digit_tokenizer, dataset, output_dir=tmp_path, max_steps=5)
    with pytest.raises(ValueError, match=r"other settings .*loop.lr: 0.003 -> 0.0001"):
        _run(digit_tokenizer, dataset, output_dir=tmp_path, lr=1e-4)


def test_a_checkpoint_that_does_not_fit_is_refused(digit_tokenizer, dataset, tmp_path):
    _run(digit_tokenizer, dataset, output_dir=tmp_path, max_steps=5)
    model = build_model("mini", tokenizer=digit_tokenizer)  # same settings, another model: reloading must refuse
    config = TrainConfig(max_steps=5, batch_size=16, lr=3e-3, warmup_steps=3, log_every=2, checkpoint_every=5,
                         progress=False, device="cpu")
    with pytest.raises(ValueError, match="does not fit this model"):
        train(model, dataset, config, lambda b: collate(b, digit_tokenizer.pad_token_id), output_dir=tmp_path)


def test_nan_loss_stops_with_the_step(digit_tokenizer, dataset):
    def nan_at_step_4(model, batch, calls=[0]):
        calls[0] += 1
        loss = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
        return loss * float("nan") if calls[0] == 4 else loss

    seed_everything(0)
    model = build_model("tiny", tokenizer=digit_tokenizer)
    config = TrainConfig(max_steps=10, batch_size=8, progress=False, device="cpu")
    with pytest.raises(FloatingPointError, match="at step 4"):
        train(model, dataset, config, lambda b: collate(b, digit_tokenizer.pad_token_id), loss_fn=nan_at_step_4)


def test_gradient_accumulation_matches_a_bigger_batch(digit_tokenizer, dataset):
    # Same examples per optimizer step and equal-length sequences: the same gradients up to float rounding
    # (which Adam's normalisation magnifies a little), and the same logged loss.
    one = _run(digit_tokenizer, dataset, max_steps=4, batch_size=16, dropout=0.0, max_grad_norm=None)
    two = _run(digit_tokenizer, dataset, max_steps=4, batch_size=8, grad_accum_steps=2, dropout=0.0, max_grad_norm=None)
    for name, tensor in one.model.state_dict().items():
        assert torch.allclose(tensor, two.model.state_dict()[name], atol=1e-4), f"{name}: accumulation differs from one big batch"
    assert [h["loss"] for h in one.history] == pytest.approx([h["loss"] for h in two.history], rel=1e-5)


def test_lr_schedules():
    config = TrainConfig(max_steps=110, warmup_steps=10, schedule="cosine")
    assert lr_multiplier(0, config) == pytest.approx(0.1)
    assert lr_multiplier(9, config) == pytest.approx(1.0)
    assert lr_multiplier(60, config) == pytest.approx(0.5)
    assert lr_multiplier(110, config) == pytest.approx(0.0)
    assert lr_multiplier(50, TrainConfig(max_steps=110, warmup_steps=10)) == 1.0


@pytest.mark.parametrize("field,value,message", [
    ("schedule", "step", "schedule='step' is not allowed"),
    ("max_steps", 0, "max_steps=0 must be > 0"),
    ("precision", "fp16", "precision='fp16'"),
])
def test_bad_config_values_are_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{"max_steps": 10, field: value})
