"""Bad input and faults: each must stop with an error that names the file, setting or value, and lose nothing.

Each test gives the fault, the message it must produce, and checks that no earlier result was lost or
overwritten. Resume after an interruption reproducing the uninterrupted run is checked in
``tests/test_train.py::test_resume_after_interruption_matches_an_uninterrupted_run`` (not repeated here).
"""
import hashlib
import os
from pathlib import Path

import pytest
import torch

from reasoning_lib import checkpoint as ckpt
from reasoning_lib.config import check_type
from reasoning_lib.data import collate, encode_examples, make_splits, read_examples
from reasoning_lib.models import build_model
from reasoning_lib.runtime import resolve_device, seed_everything
from reasoning_lib.tokenization import load_tokenizer
from reasoning_lib.train import TrainConfig, train

CORRUPT_PARAM = "transformer.h.0.attn.c_attn.weight"


@pytest.fixture(scope="module")
def dataset(digit_tokenizer):
    return encode_examples(digit_tokenizer, make_splits(2, 512, 0, 0, seed=0).train, "all")


def _run(tokenizer, dataset, output_dir=None, on_step=None, loss_fn=None, **overrides):
    seed_everything(0)
    model = build_model("tiny", tokenizer=tokenizer, dropout=0.1)
    settings = dict(max_steps=12, batch_size=16, lr=3e-3, warmup_steps=3, log_every=2, checkpoint_every=5,
                    progress=False, device="cpu", tracking="none")
    extra = {"loss_fn": loss_fn} if loss_fn is not None else {}
    return train(model, dataset, TrainConfig(**{**settings, **overrides}), lambda b: collate(b, tokenizer.pad_token_id),
                 output_dir=output_dir, on_step=on_step, **extra)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# ---------------------------------------------------------------- 1. a blow-up never reaches a saved model
class _InfGradient(torch.autograd.Function):
    """Identity forward (a finite loss), infinite backward (a gradient blow-up the loss check cannot see)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


@pytest.mark.parametrize("max_grad_norm", [None, 1.0])  # the norm is checked with and without clipping
def test_an_infinite_gradient_stops_before_the_step_and_keeps_the_last_checkpoint(digit_tokenizer, dataset, tmp_path,
                                                                                   max_grad_norm):
    calls = [0]

    def blow_up_at_step_5(model, batch):
        calls[0] += 1
        loss = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
        return _InfGradient.apply(loss) if calls[0] == 5 else loss

    with pytest.raises(FloatingPointError, match=r"gradient norm became (inf|nan) at step 5 "):
        _run(digit_tokenizer, dataset, tmp_path, loss_fn=blow_up_at_step_5, checkpoint_every=2,
             max_grad_norm=max_grad_norm)
    assert _names(tmp_path / "checkpoints") == ["step-000002", "step-000004"]
    model = build_model("tiny", tokenizer=digit_tokenizer)
    assert ckpt.load_checkpoint(tmp_path / "checkpoints" / "step-000004", model)["step"] == 4
    assert all(torch.isfinite(p).all() for p in model.parameters()), "the kept checkpoint must be intact"


def test_non_finite_weights_are_never_checkpointed(digit_tokenizer, dataset, tmp_path):
    kept = {}

    def corrupt_at_step_4(step, loss):
        if step == 4:  # a checkpoint step: the weights went bad in the update
            kept["step-2"] = _digest(tmp_path / "checkpoints" / "step-000002" / "model.safetensors")
            model = corrupt_at_step_4.model
            dict(model.named_parameters())[CORRUPT_PARAM].data.mul_(float("inf"))

    seed_everything(0)
    model = corrupt_at_step_4.model = build_model("tiny", tokenizer=digit_tokenizer)
    config = TrainConfig(max_steps=6, batch_size=16, checkpoint_every=2, progress=False, device="cpu", tracking="none")
    with pytest.raises(FloatingPointError, match=f"parameter {CORRUPT_PARAM} is not finite after step 4"):
        train(model, dataset, config, lambda b: collate(b, digit_tokenizer.pad_token_id), output_dir=tmp_path,
              on_step=corrupt_at_step_4)
    assert _names(tmp_path / "checkpoints") == ["step-000002"], "no checkpoint (nor temporary one) of the bad weights"
    assert _digest(tmp_path / "checkpoints" / "step-000002" / "model.safetensors") == kept["step-2"]


def test_non_finite_weights_on_the_last_step_are_not_returned(digit_tokenizer, dataset):
    seed_everything(0)
    model = build_model("tiny", tokenizer=digit_tokenizer)

    def corrupt_last(step, loss):
        if step == 3:
            dict(model.named_parameters())[CORRUPT_PARAM].data.fill_(float("nan"))

    config = TrainConfig(max_steps=3, batch_size=8, progress=False, device="cpu")
    with pytest.raises(FloatingPointError, match=f"parameter {CORRUPT_PARAM} is not finite after step 3"):
        train(model, dataset, config, lambda b: collate(b, digit_tokenizer.pad_token_id), on_step=corrupt_last)


def test_the_gradient_norm_is_logged_without_clipping(digit_tokenizer, dataset):
    history = _run(digit_tokenizer, dataset, max_steps=2, max_grad_norm=None).history
    assert history[-1]["grad_norm"] > 0


# ---------------------------------------------------------------- 2-3. settings: absurd values and wrong types
@pytest.mark.parametrize("field,value,message", [
    ("lr", 3e38, r"lr=3e\+38 must be a finite number <= 1000"),
    ("lr", float("inf"), r"lr=inf must be a finite number"),
    ("lr", float("nan"), r"lr=nan must be a finite number"),
    ("weight_decay", float("nan"), r"weight_decay=nan must be a finite number"),
    ("max_grad_norm", float("inf"), r"max_grad_norm=inf must be a finite number > 0 or None"),
])
def test_non_finite_or_absurd_numbers_are_refused_by_name(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(max_steps=10, **{field: value})


@pytest.mark.parametrize("field,value,message", [
    ("seed", "0", r"seed='0' has type str; expected int"),
    ("max_steps", True, r"max_steps=True has type bool; expected int"),
    ("max_steps", 10.0, r"max_steps=10.0 has type float; expected int"),
    ("batch_size", "32", r"batch_size='32' has type str; expected int"),
    ("lr", "1e-3", r"lr='1e-3' has type str; expected a real number"),
    ("max_grad_norm", "1", r"max_grad_norm='1' has type str; expected a real number or None"),
    ("device", 0, r"device=0 has type int; expected str"),
])
def test_wrong_types_are_named_with_the_expected_type(field, value, message):
    overrides = {"max_steps": 10, field: value}
    with pytest.raises(TypeError, match=message):
        TrainConfig(**overrides)


def test_check_type_accepts_what_it_is_given():
    check_type("n", 3, int)
    check_type("x", 3, float)  # an int is a real number
    check_type("x", None, (float, type(None)))
    import numpy
    check_type("n", numpy.int64(3), int)
    with pytest.raises(TypeError, match=r"flag=1 has type int; expected bool"):
        check_type("flag", 1, bool)
    with pytest.raises(TypeError, match=r"n=False has type bool; expected int"):
        check_type("n", False, int)


# ---------------------------------------------------------------- 4. a GPU that does not exist
def test_a_missing_gpu_index_is_named_with_the_number_of_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"device='cuda:7' asks for GPU 7, but this machine has 2 GPU\(s\)"):
        resolve_device("cuda:7")
    with pytest.raises(ValueError, match=r"device='cuda:x': the part after 'cuda:' must be a GPU index"):
        resolve_device("cuda:x")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    monkeypatch.setenv("LOCAL_RANK", "3")
    with pytest.raises(ValueError, match=r"device='cuda' \(LOCAL_RANK=3\) asks for GPU 3, but this machine has 2"):
        resolve_device("cuda")


def test_cuda_without_cuda_gives_the_clear_message(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:7"):
        with pytest.raises(RuntimeError, match=rf"device='{device}' was requested but torch.cuda.is_available\(\) is False"):
            resolve_device(device)


# ---------------------------------------------------------------- 5. checkpoints reach the disk
def test_checkpoints_and_weights_are_fsynced_before_the_rename(monkeypatch, tmp_path):
    synced, real = [], os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    model = torch.nn.Linear(3, 2)
    ckpt.save_checkpoint(tmp_path / "checkpoints", 7, model, {"note": 1})
    tmp = tmp_path / "checkpoints" / ".tmp-step-000007"
    assert {str(tmp / "model.safetensors"), str(tmp / "trainer_state.pt"), str(tmp)} <= set(synced)
    assert str(tmp_path / "checkpoints") in synced, "the rename itself must be made durable"
    synced.clear()
    ckpt.save_weights(tmp_path / "best", model)
    assert synced == [str(tmp_path / "best" / ".model.safetensors.tmp"), str(tmp_path / "best")]


# ---------------------------------------------------------------- 6. corrupt checkpoints
@pytest.fixture
def saved(tmp_path):
    model = torch.nn.Linear(3, 2)
    return ckpt.save_checkpoint(tmp_path / "checkpoints", 5, model, {"note": 1}), model


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("name,damage", [
    ("model.safetensors", _truncate),
    ("model.safetensors", lambda p: p.write_bytes(b"\x00garbage" * 10)),
    ("trainer_state.pt", _truncate),
    ("trainer_state.pt", lambda p: p.write_bytes(b"garbage")),
    ("trainer_state.pt", lambda p: p.unlink()),
])
def test_a_corrupt_checkpoint_file_is_named(saved, name, damage):
    folder, model = saved
    damage(folder / name)
    with pytest.raises(ckpt.CorruptCheckpointError, match=f"checkpoint file {folder / name} "):
        ckpt.load_checkpoint(folder, model)


class _Payload:  # a pickled object: what weights_only loading must refuse
    pass


def test_a_pickled_object_in_the_trainer_state_is_refused_by_name(saved):
    folder, model = saved
    with open(folder / "trainer_state.pt", "wb") as handle:
        torch.save({"step": 5, "payload": _Payload()}, handle)
    with pytest.raises(ckpt.CorruptCheckpointError,
                       match=rf"checkpoint file {folder / 'trainer_state.pt'} .*weights_only"):
        ckpt.load_checkpoint(folder, model)
    assert (folder / "trainer_state.pt").is_file(), "a refused file is left for inspection"


def test_resume_skips_a_corrupt_newest_checkpoint_and_keeps_it(digit_tokenizer, dataset, tmp_path, capsys):
    whole = _run(digit_tokenizer, dataset, tmp_path / "whole")

    def interrupt(step, loss):
        if step == 11:  # after step 10's checkpoint
            raise KeyboardInterrupt

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        _run(digit_tokenizer, dataset, cut, on_step=interrupt)
    assert _names(cut / "checkpoints") == ["step-000005", "step-000010"]
    _truncate(cut / "checkpoints" / "step-000010" / "model.safetensors")
    damaged = _digest(cut / "checkpoints" / "step-000010" / "model.safetensors")
    resumed = _run(digit_tokenizer, dataset, cut)
    out = capsys.readouterr().out
    assert f"skipping corrupt checkpoint {cut / 'checkpoints' / 'step-000010'}" in out
    assert f"kept as {cut / 'checkpoints' / 'corrupt-step-000010'}" in out
    assert f"resuming from {cut / 'checkpoints' / 'step-000005'} (step 5)" in out
    assert _digest(cut / "checkpoints" / "corrupt-step-000010" / "model.safetensors") == damaged, "never deleted"
    assert resumed.steps_trained == 7 and resumed.final_loss == whole.final_loss


def test_reloading_a_finished_run_with_a_corrupt_final_checkpoint_names_the_file(digit_tokenizer, dataset, tmp_path):
    _run(digit_tokenizer, dataset, tmp_path, max_steps=5)
    final = tmp_path / "checkpoints" / "step-000005" / "model.safetensors"
    _truncate(final)
    with pytest.raises(ckpt.CorruptCheckpointError, match=rf"checkpoint file {final} .*finished run"):
        _run(digit_tokenizer, dataset, tmp_path, max_steps=5)
    assert final.is_file() and (tmp_path / "run.json").is_file()


# ---------------------------------------------------------------- 7. text encodings
def test_a_byte_order_mark_is_not_part_of_the_first_question(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffHow many? 2+2||2+2=4 #### 4\n".encode("utf-8"))
    assert read_examples(path)[0].question == "How many? 2+2"


def test_a_file_that_is_not_utf8_is_named_with_line_and_byte(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("1 * 2||x #### 2\n".encode() + "caf\xe9 * 2||x #### 2\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{path}:2: not UTF-8 text \(byte 0xe9 at offset 19\)"):
        read_examples(path)
    assert path.read_bytes().startswith(b"1 * 2"), "the file is only read"


# ---------------------------------------------------------------- 8. a model folder without a tokenizer
def test_a_folder_without_tokenizer_files_is_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(FileNotFoundError, match=rf"tokenizer folder {tmp_path} has none of .*tokenizer.json"):
        load_tokenizer(str(tmp_path))


# ---------------------------------------------------------------- 9. command-line lengths are passed through
def test_capacity_max_steps_zero_is_refused_not_ignored(tmp_path):
    from reasoning_lib.capacity.__main__ import main

    with pytest.raises(ValueError, match=r"max_steps=0"):
        main(["--preset", "tiny", "--size", "0", "--max-steps", "0", "--output-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists(), "refused before anything was written"
