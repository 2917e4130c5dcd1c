"""Implicit chain of thought via knowledge distillation (Deng et al. 2023, arXiv 2311.01460).

``states`` reads the teacher's diagonal; ``injection`` rewrites the stream at the separator; ``modules``
holds the mind-reading student and the thought emulator; ``stages`` trains them and runs inference;
``persist`` saves and loads each stage.
"""
from .modules import EmulatorOutput, ImplicitCoT, MindReadingStudent, ThoughtEmulator, emulator_loss, mixture_loss
from .persist import load_stage, save_stage
from .states import diagonal_positions, normalise, teacher_states
from .stages import (
    check_fits, collate_pairs, encode_pairs, evaluate_implicit, evaluate_with_teacher_states, generate_implicit, generate_with_teacher_states,
    load_coupled, state_mse_per_layer, train_coupled, train_emulator, train_student,
)

__all__ = [
    "EmulatorOutput", "ImplicitCoT", "MindReadingStudent", "ThoughtEmulator", "emulator_loss", "mixture_loss",
    "load_stage", "save_stage", "diagonal_positions", "normalise", "teacher_states", "check_fits", "collate_pairs",
    "encode_pairs", "evaluate_implicit", "evaluate_with_teacher_states", "generate_implicit", "generate_with_teacher_states", "load_coupled",
    "state_mse_per_layer", "train_coupled", "train_emulator", "train_student",
]
from .released import (  # noqa: E402  (the authors' released checkpoints, reference layout)
    evaluate_released, load_released_emulator, load_released_pair, load_released_student, released_tokenizer,
    save_in_released_layout,
)

__all__ += ["evaluate_released", "load_released_emulator", "load_released_pair", "load_released_student", "released_tokenizer", "save_in_released_layout"]
