"""Where code runs: device choice, seeding, and the ``torchrun`` process group."""
from __future__ import annotations

import os
import random
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .config import check_choice, check_type

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto") -> torch.device:
    """``'auto'`` picks CUDA when available (the local rank's GPU under torchrun), else the CPU.

    A GPU index this machine does not have is refused by name, before torch fails deep inside a kernel call."""
    check_type("device", device, str)
    kind, _, index = device.partition(":")
    check_choice("device", kind, DEVICES)
    if device == "auto":
        kind = device = "cuda" if torch.cuda.is_available() else "cpu"
    if kind != "cuda":
        return torch.device(device)
    if not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was requested but torch.cuda.is_available() is False")
    where = repr(device)
    if index:
        if not index.isdigit():
            raise ValueError(f"device={device!r}: the part after 'cuda:' must be a GPU index (an integer), e.g. 'cuda:0'")
    else:  # under torchrun each process takes its local rank's GPU
        index = os.environ.get("LOCAL_RANK", "0")
        where = f"{device!r} (LOCAL_RANK={index})"
    count = torch.cuda.device_count()
    if int(index) >= count:
        raise ValueError(f"device={where} asks for GPU {index}, but this machine has {count} GPU(s): "
                         f"use one of cuda:0 .. cuda:{count - 1}, or device='auto'")
    return torch.device(f"cuda:{int(index)}")


def uses_bf16(device: torch.device, precision: str = "auto") -> bool:
    """Whether a run computes in bf16: asked for, or ``'auto'`` on CUDA (fp32 on the CPU)."""
    return precision == "bf16" or (precision == "auto" and torch.device(device).type == "cuda")


def autocast(device: torch.device | str, precision: str = "auto"):
    """The autocast context a run trains in; evaluation uses the same one, so the attention kernel training
    chose (FlashAttention-2 takes only 16-bit inputs) also runs at test time."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16) if uses_bf16(device, precision) else nullcontext()


def model_precision(model: torch.nn.Module) -> str:
    """``'bf16'`` for a model whose attention needs 16-bit inputs (FlashAttention-2), else ``'auto'``."""
    config = getattr(model, "config", None)
    return "bf16" if getattr(config, "_attn_implementation", None) == "flash_attention_2" else "auto"


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (CPU and every GPU)."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy
    except ImportError:  # numpy is optional for the library
        return
    numpy.random.seed(seed % 2**32)


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a ``torchrun`` launch (world_size 1 when launched plainly)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launch_info() -> DistributedContext:
    """Rank and world size as ``torchrun`` set them in the environment (before the process group exists)."""
    env = os.environ
    return DistributedContext(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the process group that ``torchrun`` set up (NCCL on GPU, gloo on CPU); a no-op otherwise."""
    if launch_info().world_size == 1:
        return DistributedContext()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistributedContext(dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_world_size())
