"""Settings of the capstone (chapter 8): which tasks, which methods, and how every method is measured.

Each method trains with its own chapter's preset for the task (``implicit_cot.get_config`` for the three
autoregressive methods, ``dot.get_config`` for the diffusion ones), so a ``tiny`` capstone shows the models of
chapters 2 and 4, and ``paper`` the published settings. What the capstone adds is one test set and one
measurement for all of them (``harness.measure``).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import check_choice, check_positive, from_preset

# method -> the trained model it uses; the *_sc methods vote over samples of the DoT / DoT-MP models.
METHODS = {"no_cot": "no_cot", "explicit_cot": "explicit_cot", "implicit_cot": "implicit_cot",
           "dot": "dot", "dot_mp": "dot_mp", "dot_sc": "dot", "dot_mp_sc": "dot_mp"}
PRESET_NAMES = ("smoke", "tiny", "paper")


@dataclass(frozen=True)
class FrontierConfig:
    """The sweep (tasks x methods) and the measurement protocol shared by every method."""

    method_preset: str = "tiny"  # the chapters' preset each method trains with
    tasks: tuple[str, ...] = ("2x2",)
    methods: tuple[str, ...] = tuple(METHODS)
    sc_samples: int = 5  # self-consistency: majority vote over this many DoT samples per question
    eval_batch_size: int = 64  # batched mode
    throughput_examples: int = 51  # batch-1 timing over the first test problems (the first is a warm-up)

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "methods", tuple(self.methods))
        check_choice("method_preset", self.method_preset, PRESET_NAMES)
        for method in self.methods:
            check_choice("method", method, METHODS)
        if not self.tasks or not self.methods:
            raise ValueError("tasks and methods must be non-empty")
        for name in ("sc_samples", "eval_batch_size"):
            check_positive(name, getattr(self, name))
        if self.throughput_examples < 2:
            raise ValueError("throughput_examples must be at least 2 (the first is a warm-up)")


PRESETS = {
    "smoke": FrontierConfig(method_preset="smoke", sc_samples=2, eval_batch_size=16, throughput_examples=3),
    # 2x2, chapters 2 and 4's shared split (7,000 training, 500 test problems): their tiny models. Trained from
    # scratch that is about 75 minutes on 2 cores (33 for the autoregressive ones, 13 per DoT variant); the
    # sweep copies finished runs from chapters 2 and 4 when their metrics say they used the same preset and task.
    "tiny": FrontierConfig(),
    # The published settings: 3x3 to 5x5 multiplication (808k problems) and GSM8K (GSM8K-Aug train file);
    # DoT fine-tunes sedd-small, the autoregressive methods fine-tune GPT-2 small. Needs GPUs and the hub.
    "paper": FrontierConfig(method_preset="paper", tasks=("3x3", "4x4", "5x5", "gsm8k"), sc_samples=20,
                            eval_batch_size=128, throughput_examples=101),
}


def get_config(preset: str, **overrides) -> FrontierConfig:
    """The named preset with ``overrides`` applied (a wrong name or value raises, naming it)."""
    return from_preset(PRESETS, preset, **overrides)
