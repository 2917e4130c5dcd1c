"""From a preset's published budget to the shared loop's settings: one rule for every chapter.

A preset states what a paper states: the *global* batch (examples per optimizer step, summed over all
processes) and the run's length, in epochs over the data actually loaded or in optimizer steps. How that batch
is cut into per-process micro-batches (at most ``micro_batch_size`` examples, what fits in memory) and
gradient-accumulation steps follows from the world size. So the optimizer steps, the examples seen and the
effective batch are the same on 1, 2 or 8 processes, and a run trained under ``torchrun`` is the same run as
one trained by the chapter in one process (``train.train`` then reloads it instead of training again).
"""
from __future__ import annotations

import math

from .config import check_positive
from .runtime import launch_info
from .train import TrainConfig


def batch_split(global_batch: int, world_size: int, micro_batch_size: int | None = None) -> tuple[int, int]:
    """(micro-batch per process, accumulation steps) with micro x accumulation x world_size == global_batch.

    The micro-batch is the largest divisor of the per-process share that is at most ``micro_batch_size``."""
    check_positive("global_batch", global_batch)
    check_positive("world_size", world_size)
    if global_batch % world_size:
        raise ValueError(f"the global batch of {global_batch} examples does not split over {world_size} processes: "
                         f"choose a process count that divides it (e.g. {_divisors(global_batch)[:6]})")
    share = global_batch // world_size
    cap = share if micro_batch_size is None else micro_batch_size
    check_positive("micro_batch_size", cap)
    micro = max(d for d in _divisors(share) if d <= cap)
    return micro, share // micro


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def num_steps(global_batch: int, num_examples: int | None = None, epochs: float | None = None,
              steps: int | None = None) -> int:
    """Optimizer steps of a run given either ``steps`` or ``epochs`` over ``num_examples`` examples."""
    if (steps is None) == (epochs is None):
        raise ValueError(f"give the run's length as steps or as epochs, not both or neither (steps={steps}, epochs={epochs})")
    if steps is not None:
        check_positive("steps", steps)
        return int(steps)
    if not num_examples:
        raise ValueError("a length in epochs needs the number of training examples actually loaded (num_examples)")
    check_positive("epochs", epochs)
    return max(1, math.ceil(num_examples * epochs / global_batch))


def train_settings(*, global_batch: int, lr: float, seed: int, device: str = "auto", micro_batch_size: int | None = None,
                   num_examples: int | None = None, epochs: float | None = None, steps: int | None = None,
                   world_size: int | None = None, warmup_steps: int = 0, min_steps: int = 1, **optimizer) -> TrainConfig:
    """The shared loop's :class:`TrainConfig` for a run of ``global_batch`` examples per step.

    ``world_size`` defaults to the ``torchrun`` launch's; ``optimizer`` passes other TrainConfig fields (schedule,
    weight_decay, max_grad_norm, …). Logging and checkpoint cadence follow from the length, the same for all."""
    world = launch_info().world_size if world_size is None else world_size
    micro, accum = batch_split(global_batch, world, micro_batch_size)
    total = max(min_steps, num_steps(global_batch, num_examples, epochs, steps))
    return TrainConfig(
        max_steps=total, batch_size=micro, grad_accum_steps=accum, lr=lr, seed=seed, device=device,
        warmup_steps=min(warmup_steps, total - 1), log_every=max(1, min(25, total // 20)),
        checkpoint_every=max(50, min(2000, total // 10)), **optimizer,
    )


__all__ = ["batch_split", "num_steps", "train_settings"]
