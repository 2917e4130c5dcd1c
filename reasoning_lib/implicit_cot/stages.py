"""The three training stages and the inference path of implicit CoT, on the shared training loop.

Stage 1a trains the mind-reading student on teacher states, stage 1b the thought emulator, stage 2 couples
them on answer cross-entropy alone (Deng et al. 2023, §3; reference ``src/train_mind_reading_student.py``,
``src/train_thought_emulator.py``, ``src/train_coupled_emulator_and_student.py`` and ``src/generate.py``).
Every stage saves its modules (``persist.save_stage``) and resumes from its own checkpoints, so a long run
can stop after any stage.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data import Example, collate, data_digest, encode_examples
from ..evaluate import EvalResult, decode_generated, evaluate_generator, greedy_generate, prompt_batch
from ..models import build_model
from ..runtime import autocast, launch_info, model_precision, resolve_device
from ..train import TrainConfig, TrainResult, train
from .modules import ImplicitCoT, MindReadingStudent, ThoughtEmulator, emulator_loss, mixture_loss
from .persist import load_stage, save_stage
from .states import diagonal_positions, teacher_states


def encode_pairs(tokenizer: PreTrainedTokenizerBase, examples: list[Example]) -> list[tuple]:
    """Each example as (``nocot`` sequence, ``cot`` sequence); both share the prefix up to the separator."""
    return list(zip(encode_examples(tokenizer, examples, "nocot"), encode_examples(tokenizer, examples, "cot")))


def collate_pairs(batch: list[tuple], pad_token_id: int) -> dict[str, torch.Tensor]:
    """nocot ``input_ids``/``labels``/``sep`` (B, T) plus ``cot_input_ids`` (B, T') and ``cot_end`` (B,)."""
    nocot = collate([pair[0] for pair in batch], pad_token_id)
    cot = collate([pair[1] for pair in batch], pad_token_id)
    return {**nocot, "cot_input_ids": cot["input_ids"], "cot_end": torch.tensor([pair[1].cot_end for pair in batch])}


def check_fits(teacher: PreTrainedModel, lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Teacher, student/emulator and tokenizer must agree on vocabulary, depth and width."""
    if teacher.config.vocab_size < len(tokenizer) or lm.config.vocab_size < len(tokenizer):
        raise ValueError(
            f"tokenizer has {len(tokenizer)} tokens but the teacher's vocabulary is {teacher.config.vocab_size} "
            f"and the student's {lm.config.vocab_size}: was the teacher trained with another tokenizer?"
        )
    shapes = {name: (m.config.num_hidden_layers, m.config.hidden_size) for name, m in (("teacher", teacher), ("student", lm))}
    if shapes["teacher"] != shapes["student"]:
        raise ValueError(f"teacher and student must have the same (layers, hidden size); got {shapes}")


def _teacher_batch_states(teacher, batch: dict, delta) -> torch.Tensor:
    return teacher_states(teacher, batch["cot_input_ids"], batch["sep"], batch["cot_end"], delta)


def fingerprint(*modules: torch.nn.Module) -> str:
    """A short hash of some of every parameter's values: tells a stage that the model it builds on changed."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode() + tensor.detach().float().flatten()[:16].cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _run_stage(module, tokenizer, examples, train_config: TrainConfig, loss_fn: Callable, output_dir: Path,
               settings: dict, validate: Callable | None = None) -> TrainResult:
    dataset = encode_pairs(tokenizer, examples)
    settings = {**settings, "train_data": data_digest(examples)}
    return train(module, dataset, train_config, lambda b: collate_pairs(b, tokenizer.pad_token_id), loss_fn, output_dir,
                 settings=settings, validate=validate if train_config.validate_every else None)


def _save_if_trained(result: TrainResult, folders: dict, tokenizer) -> None:
    if launch_info().is_main and (result.steps_trained or not all((f / "implicit_cot.json").is_file() for f in folders)):
        for folder, module in folders.items():
            save_stage(module, folder, tokenizer)


def train_student(
    teacher: PreTrainedModel, tokenizer, examples: list[Example], model: str, train_config: TrainConfig,
    output_dir: str | Path, delta: str | int = "dynamic", valid_examples: list[Example] | None = None,
    pretrained: bool = True,
) -> tuple[MindReadingStudent, TrainResult]:
    """Stage 1a: a fresh student learns to answer from the teacher's diagonal states. With validation
    (``train_config.validate_every``) the epoch of best accuracy on ``valid_examples`` is kept."""
    student = MindReadingStudent(build_model(model, tokenizer=tokenizer, pretrained=pretrained))
    check_fits(teacher, student.lm, tokenizer)
    teacher.to(resolve_device(train_config.device)).requires_grad_(False)

    def loss_fn(wrapped, batch):
        return wrapped(batch["input_ids"], batch["sep"], _teacher_batch_states(teacher, batch, delta), labels=batch["labels"]).loss

    def validate(module):
        return evaluate_with_teacher_states(teacher, module, tokenizer, valid_examples, delta, batch_size=64).accuracy

    settings = {"stage": "student", "model": model, "pretrained": pretrained, "delta": delta, "teacher": fingerprint(teacher)}
    result = _run_stage(student, tokenizer, examples, train_config, loss_fn, Path(output_dir), settings,
                        _needs(valid_examples, validate, train_config))
    _save_if_trained(result, {Path(output_dir) / "final": student}, tokenizer)
    return student, result


def _needs(valid_examples, validate, train_config: TrainConfig):
    if not train_config.validate_every:
        return None
    if not valid_examples:
        raise ValueError("this stage validates each epoch (select_best): pass valid_examples (the valid split)")
    return validate


def mixture_targets(batch: dict, num_layers: int, delta, offset: int = 0) -> torch.Tensor:
    """Supervised mixture components (B, L): the teacher's CoT token at each layer's diagonal position."""
    positions = diagonal_positions(batch["sep"], batch["cot_end"], num_layers, delta)
    return batch["cot_input_ids"].gather(1, positions) + offset


def train_emulator(
    teacher: PreTrainedModel, tokenizer, examples: list[Example], model: str, train_config: TrainConfig,
    output_dir: str | Path, delta: str | int = "dynamic", mixture_size: int = 1, mixture_weight: float = 1.0,
    valid_examples: list[Example] | None = None, pretrained: bool = True,
) -> tuple[ThoughtEmulator, TrainResult]:
    """Stage 1b: a fresh emulator learns to predict the teacher's states from the question alone. With validation
    the epoch of lowest state error on ``valid_examples`` is kept."""
    emulator = ThoughtEmulator(build_model(model, tokenizer=tokenizer, pretrained=pretrained), mixture_size=mixture_size)
    check_fits(teacher, emulator.lm, tokenizer)
    if mixture_size > 1 and mixture_size < len(tokenizer):
        raise ValueError(f"a supervised mixture needs one component per token: mixture_size={mixture_size} < {len(tokenizer)}")
    teacher.to(resolve_device(train_config.device)).requires_grad_(False)

    def loss_fn(wrapped, batch):
        targets = mixture_targets(batch, emulator.num_layers, delta) if mixture_size > 1 else None
        out = wrapped(batch["input_ids"], batch["sep"], mixture_targets=targets)
        loss = emulator_loss(out.states, _teacher_batch_states(teacher, batch, delta))
        if targets is not None:
            loss = loss + mixture_weight * mixture_loss(out.mixture_logits, targets)
        return loss

    def validate(module):
        return sum(state_mse_per_layer(module, teacher, tokenizer, valid_examples, delta))

    settings = {"stage": "emulator", "model": model, "pretrained": pretrained, "delta": delta,
                "mixture_size": mixture_size, "mixture_weight": mixture_weight, "teacher": fingerprint(teacher)}
    result = _run_stage(emulator, tokenizer, examples, replace(train_config, select="min"), loss_fn, Path(output_dir),
                        settings, _needs(valid_examples, validate, train_config))
    _save_if_trained(result, {Path(output_dir) / "final": emulator}, tokenizer)
    return emulator, result


def train_coupled(
    emulator: ThoughtEmulator, student: MindReadingStudent, tokenizer, examples: list[Example],
    train_config: TrainConfig, output_dir: str | Path, fix_emulator: bool = False,
    valid_examples: list[Example] | None = None,
) -> tuple[ImplicitCoT, TrainResult]:
    """Stage 2: the student reads the emulator's predictions; both trained on answer cross-entropy only. With
    validation the epoch of best accuracy on ``valid_examples`` is kept."""
    settings = {"stage": "coupled", "fix_emulator": fix_emulator, "start": fingerprint(emulator, student)}
    coupled = ImplicitCoT(emulator, student, fix_emulator=fix_emulator)

    def loss_fn(wrapped, batch):
        return wrapped(batch["input_ids"], batch["sep"], labels=batch["labels"]).loss

    def validate(module):
        return evaluate_implicit(module.emulator, module.student, tokenizer, valid_examples, batch_size=64).accuracy

    result = _run_stage(coupled, tokenizer, examples, train_config, loss_fn, Path(output_dir), settings,
                        _needs(valid_examples, validate, train_config))
    final = Path(output_dir) / "final"
    _save_if_trained(result, {final / "emulator": coupled.emulator, final / "student": coupled.student}, tokenizer)
    return coupled, result


def load_coupled(path: str | Path) -> ImplicitCoT:
    """Reload the output of ``train_coupled`` (``path/final/{emulator,student}``)."""
    path = Path(path) / "final"
    return ImplicitCoT(load_stage(path / "emulator"), load_stage(path / "student")).eval()


def _student_answers(student: MindReadingStudent, tokenizer, batch: dict, states: torch.Tensor,
                     max_new_tokens: int, use_cache: bool = True) -> list[str]:
    """Greedy answers for left-padded prompts ``batch`` (separator = last prompt token), ``states`` (B, L, H) injected."""
    input_ids = batch["input_ids"]
    sep = torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, device=input_ids.device)
    with student.injecting(sep, states):
        tokens = greedy_generate(student.lm, **batch, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id, num_separators=1,
                                 max_new_tokens=max_new_tokens, use_cache=use_cache)
    return decode_generated(tokenizer, tokens, 1)


@torch.no_grad()
def generate_implicit(
    emulator: ThoughtEmulator, student: MindReadingStudent, tokenizer, examples: list[Example],
    max_new_tokens: int = 128, use_cache: bool = True,
) -> list[str]:
    """Implicit-CoT inference (reference ``src/generate.py``): emulate the states from `` {x} E``, then let the
    student answer."""
    batch = prompt_batch(tokenizer, examples, next(student.parameters()).device)
    mask = batch["attention_mask"]
    sep = torch.full((mask.shape[0],), mask.shape[1] - 1, device=mask.device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    states = emulator(batch["input_ids"], sep, attention_mask=mask, position_ids=positions).states
    return _student_answers(student, tokenizer, batch, states, max_new_tokens, use_cache)


@torch.no_grad()
def generate_with_teacher_states(
    teacher: PreTrainedModel, student: MindReadingStudent, tokenizer, examples: list[Example],
    delta: str | int = "dynamic", max_new_tokens: int = 128,
) -> list[str]:
    """The mind-reading student answering from the teacher's states on the gold CoT (an upper bound)."""
    device = next(student.parameters()).device
    encoded = encode_examples(tokenizer, examples, "cot")
    cot = collate(encoded, tokenizer.pad_token_id)
    cot_end = torch.tensor([e.cot_end for e in encoded], device=device)
    states = teacher_states(teacher.to(device), cot["input_ids"].to(device), cot["sep"].to(device), cot_end, delta)
    return _student_answers(student, tokenizer, prompt_batch(tokenizer, examples, device), states, max_new_tokens)


def evaluate_implicit(
    emulator: ThoughtEmulator, student: MindReadingStudent, tokenizer, examples: list[Example],
    batch_size: int = 1, max_new_tokens: int = 128,
) -> EvalResult:
    """Accuracy and throughput with the emulator inside the timed region, as the reference ``src/generate.py``
    times it (batch size 1 in Deng et al. 2023, Table 2)."""
    emulator.eval()
    student.eval()
    return evaluate_generator(
        lambda chunk: generate_implicit(emulator, student, tokenizer, chunk, max_new_tokens),
        examples, batch_size, next(student.parameters()).device, precision=model_precision(student.lm),
    )


def evaluate_with_teacher_states(
    teacher: PreTrainedModel, student: MindReadingStudent, tokenizer, examples: list[Example],
    delta: str | int = "dynamic", batch_size: int = 64, max_new_tokens: int = 128,
) -> EvalResult:
    """Accuracy of the mind-reading student when it reads the teacher's states on the gold CoT."""
    student.eval()
    return evaluate_generator(
        lambda chunk: generate_with_teacher_states(teacher, student, tokenizer, chunk, delta, max_new_tokens),
        examples, batch_size, next(student.parameters()).device, precision=model_precision(student.lm),
    )


@torch.no_grad()
def state_mse_per_layer(
    emulator: ThoughtEmulator, teacher: PreTrainedModel, tokenizer, examples: list[Example],
    delta: str | int = "dynamic", batch_size: int = 64,
) -> list[float]:
    """Mean squared error per layer between emulated and (normalised) teacher states, averaged over H and examples."""
    device = next(emulator.parameters()).device
    emulator.eval()
    teacher.to(device)
    totals = torch.zeros(emulator.num_layers, device=device)
    pairs = encode_pairs(tokenizer, examples)
    for start in range(0, len(pairs), batch_size):
        batch = {k: v.to(device) for k, v in collate_pairs(pairs[start : start + batch_size], tokenizer.pad_token_id).items()}
        with autocast(device, model_precision(emulator.lm)):
            target = _teacher_batch_states(teacher, batch, delta)
            predicted = emulator(batch["input_ids"], batch["sep"]).states
        totals += (predicted.float() - target.float()).pow(2).mean(dim=2).sum(dim=0)
    return (totals / len(examples)).tolist()
