"""What a training run costs: parameters, tokens, FLOPs, GPU memory per process, host memory and hours.

FLOPs follow Kaplan et al. 2020 ("Scaling Laws for Neural Language Models", §2.1): a trained network costs 6·N
FLOPs per token (forward 2·N, backward 4·N) and a frozen one, run forward only, 2·N; N counts the parameters that
multiply every token (lookup-only embedding tables are left out). Attention adds 12·L·h·s per trained token (PaLM,
Chowdhery et al. 2022, appendix B; 4·L·h·s forward only). Wall time = FLOPs / (processes × peak bf16 FLOP/s × MFU).

When the micro-batches are small the GPU waits on the CPU instead: a transformer layer's forward and backward are
~70 kernels, each dispatched by eager PyTorch in 10-15 µs, and the loop reads the loss (a device sync) after every
micro-batch, so a micro-step takes at least ``LAUNCH_SECONDS`` per layer (a rough figure for HF modules, not
measured here: replace it by a measured step time); the wall time is the larger of the two bounds.

GPU memory per process is what our loop (``reasoning_lib.train``) holds: fp32 weights (bf16 autocast keeps the master
weights in fp32), an fp32 EMA copy where the run keeps one, fp32 gradients, DDP's gradient buckets (another fp32
copy, since the loop does not ask for ``gradient_as_bucket_view``), AdamW's two fp32 moments, the activations of one
micro-batch (``activations.py``), and a margin for the CUDA context and the caching allocator's fragmentation.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from ..config import check_positive, check_range
from .activations import LOGIT_BYTES, ActivationFit, estimate_activation_bytes

GB = 1e9


@dataclass(frozen=True)
class GPU:
    """A GPU model: memory and peak dense bf16 tensor-core throughput (no sparsity)."""

    name: str
    memory_bytes: float
    peak_bf16_flops: float


GPUS = {gpu.name: gpu for gpu in (GPU("H100 80GB", 80 * GB, 989e12), GPU("H200", 141 * GB, 989e12),
                                  GPU("A100 80GB", 80 * GB, 312e12))}
DEFAULT_GPU, DEFAULT_MFU = "H100 80GB", 0.35
CUDA_CONTEXT_BYTES = 1.0 * GB  # CUDA context, cuBLAS workspaces, NCCL buffers: outside PyTorch's allocator
ALLOCATOR_SLACK = 0.10  # fragmentation of PyTorch's caching allocator, as a fraction of what is allocated
HOST_BOUND_BYTES = 64 * GB  # per node
# Per process besides the data: Python, torch and transformers (~0.4 GB), the CUDA libraries and context (~1 GB),
# the models as loaded on the CPU before .to(cuda) (~1 GB for two GPT-2 small).
HOST_RUNTIME_BYTES = 2.5 * GB
GPUS_PER_NODE = 8
LAUNCH_SECONDS = 1e-3  # per transformer layer, forward + backward, when kernel dispatch bounds it (a third: forward)
STEP_OVERHEAD_SECONDS = 3e-3  # per optimizer step: clipping, fused AdamW, the loss's device sync


class ResourceError(RuntimeError):
    """A plan does not fit the GPU or host memory; the message names the knobs that would make it fit."""


@dataclass(frozen=True)
class ModelSpec:
    """One network held in memory during a run: its size, shape and what one micro-step does with it."""

    name: str
    parameters: int  # all parameters in memory
    flops_parameters: int  # N of 6·N: parameters that multiply every token (no lookup tables)
    num_layers: int
    hidden_size: int
    num_heads: int
    seq_len: int  # tokens per sequence, on average (FLOPs)
    vocab_size: int = 0  # width of the per-token output (logits or scores); 0 for a classifier or a base model
    max_seq_len: int | None = None  # the longest micro-batch is padded to this (memory); default seq_len
    trainable: bool = True
    passes: int = 1  # forward (+ backward) passes per sequence and micro-step (DIITO's student and teacher: 3)
    layer_coefficient: float = 64.0  # bytes per s·b·h per layer kept for backward (activations.LAYER_COEFFICIENTS)
    logit_bytes: float = LOGIT_BYTES["lm"]
    extra_bytes_per_sequence: int = 0  # activations outside the layers and logits (e.g. a mixture head)
    ema: bool = False  # the run keeps an fp32 EMA copy of this model's weights
    activation_fit: ActivationFit | None = None  # a measurement (measure_activation_bytes) replaces the estimate

    def __post_init__(self):
        for name in ("parameters", "num_layers", "hidden_size", "num_heads", "seq_len", "passes"):
            check_positive(name, getattr(self, name))

    @property
    def longest(self) -> int:
        return self.max_seq_len or self.seq_len

    def activation_bytes(self, micro_batch: int) -> int:
        """Bytes of one micro-batch of ``micro_batch`` sequences at the peak (start of backward)."""
        s = self.longest
        if not self.trainable:  # no graph, one pass at a time: a transient bf16 output and fp32 hidden states
            return micro_batch * s * (2 * self.vocab_size + 4 * self.hidden_size * (self.num_layers + 1))
        b = micro_batch * self.passes  # every pass keeps its graph until the one backward
        if self.activation_fit is not None:
            fit = self.activation_fit
            return int(fit.intercept + fit.slope * b)
        layers = estimate_activation_bytes(self.num_layers, self.hidden_size, self.num_heads, s, b, self.vocab_size,
                                           flash=True, layer_coefficient=self.layer_coefficient,
                                           logit_bytes=self.logit_bytes)
        return layers + b * self.extra_bytes_per_sequence + 2 * self.parameters  # + autocast's bf16 weight copies

    def flops_per_sequence(self, attention: bool = True) -> float:
        """Training FLOPs of one sequence: (6·N + 12·L·h·s)·s trained, a third of it forward only; × passes."""
        dense, attn = 2 * self.flops_parameters, 4 * self.num_layers * self.hidden_size * self.seq_len
        per_token = (dense + (attn if attention else 0)) * (3 if self.trainable else 1)
        return per_token * self.seq_len * self.passes


@dataclass(frozen=True)
class ResourcePlan:
    """One run: its networks, batch layout over processes, steps and data; every cost is a derived property."""

    name: str
    models: tuple[ModelSpec, ...]
    global_batch: int  # sequences per optimizer step over all processes
    micro_batch: int  # sequences per process and forward pass
    processes: int  # GPUs, one process each
    steps: int  # optimizer steps
    data_bytes: int  # per process: the training set as the data pipeline holds it in RAM
    host_representation: str = ""
    gpu: str = DEFAULT_GPU
    mfu: float = DEFAULT_MFU
    micro_batch_from_preset: bool = True  # False: the preset sets none, the value was chosen to fit
    attention_flops: bool = True
    launch_floor: bool = True  # bound the time by kernel dispatch as well as by FLOPs
    notes: tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("global_batch", "micro_batch", "processes", "steps"):
            check_positive(name, getattr(self, name))
        check_range("mfu", self.mfu, 1e-3, 1.0)
        if self.gpu not in GPUS:
            raise ValueError(f"gpu={self.gpu!r} is not known; choose one of {sorted(GPUS)}")
        if self.global_batch % (self.processes * self.micro_batch):
            raise ValueError(f"{self.name}: global batch {self.global_batch} is not a multiple of processes "
                             f"({self.processes}) x micro_batch_size ({self.micro_batch})")
        if not any(m.trainable for m in self.models):
            raise ValueError(f"{self.name}: no trainable model among {[m.name for m in self.models]}")

    # ------------------------------------------------------------------ batch and compute
    @property
    def grad_accum(self) -> int:
        return self.global_batch // (self.processes * self.micro_batch)

    @property
    def seq_len(self) -> int:
        """Sequence length of the (first) trained network."""
        return next(m for m in self.models if m.trainable).seq_len

    @property
    def trainable_parameters(self) -> int:
        return sum(m.parameters for m in self.models if m.trainable)

    @property
    def frozen_parameters(self) -> int:
        return sum(m.parameters for m in self.models if not m.trainable)

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len

    @property
    def train_flops(self) -> float:
        per_step = sum(m.flops_per_sequence(self.attention_flops) for m in self.models) * self.global_batch
        return per_step * self.steps

    @property
    def peak_flops(self) -> float:
        return GPUS[self.gpu].peak_bf16_flops

    @property
    def compute_hours(self) -> float:
        """FLOPs / (processes × peak × MFU)."""
        return self.train_flops / (self.processes * self.peak_flops * self.mfu) / 3600

    @property
    def launch_hours(self) -> float:
        """The kernel-dispatch floor: per micro-step LAUNCH_SECONDS per layer pass, plus the optimizer step."""
        layers = sum(m.passes * m.num_layers * (1 if m.trainable else 1 / 3) for m in self.models)
        return self.steps * (self.grad_accum * layers * LAUNCH_SECONDS + STEP_OVERHEAD_SECONDS) / 3600

    @property
    def latency_bound(self) -> bool:
        return self.launch_floor and self.launch_hours > self.compute_hours

    @property
    def wall_hours(self) -> float:
        return max(self.compute_hours, self.launch_hours if self.launch_floor else 0.0)

    @property
    def gpu_hours(self) -> float:
        return self.wall_hours * self.processes

    # ------------------------------------------------------------------ memory
    def gpu_memory(self) -> dict[str, float]:
        """Bytes per process: weights, ema, grads, ddp_buckets, optimizer, activations, margin."""
        trainable = self.trainable_parameters
        parts = {
            "weights": 4 * (trainable + self.frozen_parameters),
            "ema": 4 * sum(m.parameters for m in self.models if m.trainable and m.ema),
            "grads": 4 * trainable,
            "ddp_buckets": 4 * trainable if self.processes > 1 else 0,
            "optimizer": 8 * trainable,  # AdamW exp_avg and exp_avg_sq in fp32
            "activations": sum(m.activation_bytes(self.micro_batch) for m in self.models),
        }
        parts["margin"] = CUDA_CONTEXT_BYTES + ALLOCATOR_SLACK * sum(parts.values())
        return parts

    @property
    def peak_gpu_bytes(self) -> float:
        return sum(self.gpu_memory().values())

    @property
    def processes_per_node(self) -> int:
        return min(self.processes, GPUS_PER_NODE)

    @property
    def host_bytes(self) -> float:
        """Host memory per node: each process's data plus its runtime (``HOST_RUNTIME_BYTES``)."""
        return self.processes_per_node * (self.data_bytes + HOST_RUNTIME_BYTES)

    def with_micro_batch(self, micro_batch: int) -> ResourcePlan:
        return replace(self, micro_batch=micro_batch)

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict:
        """Every input and derived number (bytes, FLOPs, hours), JSON-ready."""
        models = [{k: v for k, v in asdict(m).items() if k != "activation_fit"} for m in self.models]
        return {
            "name": self.name, "gpu": self.gpu, "mfu": self.mfu, "processes": self.processes,
            "micro_batch": self.micro_batch, "micro_batch_from_preset": self.micro_batch_from_preset,
            "grad_accum": self.grad_accum, "global_batch": self.global_batch, "seq_len": self.seq_len,
            "trainable_parameters": self.trainable_parameters, "frozen_parameters": self.frozen_parameters,
            "tokens_per_step": self.tokens_per_step, "steps": self.steps, "train_flops": self.train_flops,
            "gpu_memory": self.gpu_memory(), "peak_gpu_bytes": self.peak_gpu_bytes, "data_bytes": self.data_bytes,
            "host_bytes": self.host_bytes, "host_representation": self.host_representation,
            "compute_hours": self.compute_hours, "launch_hours": self.launch_hours, "wall_hours": self.wall_hours,
            "gpu_hours": self.gpu_hours, "latency_bound": self.latency_bound,
            "models": models, "notes": list(self.notes),
        }

    def to_markdown(self) -> str:
        """A two-column table of the plan, then its notes."""
        memory = self.gpu_memory()
        micro = f"{self.micro_batch}" + ("" if self.micro_batch_from_preset else " (chosen to fit: the preset sets none)")
        rows = [
            ("models", "; ".join(_describe(m) for m in self.models)),
            ("parameters", f"{self.trainable_parameters / 1e6:.1f}M trained + {self.frozen_parameters / 1e6:.1f}M "
                           "frozen"),
            ("batch", f"global {self.global_batch} = {self.processes} processes x micro {micro} x accum "
                      f"{self.grad_accum}"),
            ("tokens", f"{self.tokens_per_step:,} per step x {self.steps:,} steps = "
                       f"{self.tokens_per_step * self.steps:.3g}"),
            ("compute", f"{self.train_flops / 1e15:,.1f} PFLOP"),
            *((f"GPU {k}", f"{v / GB:.2f} GB") for k, v in memory.items() if v),
            ("GPU peak", f"{self.peak_gpu_bytes / GB:.1f} GB per process (of {GPUS[self.gpu].memory_bytes / GB:.0f} "
                         "GB)"),
            ("host", f"{self.data_bytes / GB:.2f} GB data per process ({self.host_representation}); "
                     f"{self.host_bytes / GB:.1f} GB per node with the runtime"),
            ("time", f"{self.wall_hours:,.2f} h on {self.processes} x {self.gpu} = {self.gpu_hours:,.1f} GPU-h "
                     f"(FLOPs at MFU {self.mfu:.0%}: {self.compute_hours:,.2f} h; kernel-launch floor: "
                     f"{self.launch_hours:,.2f} h)"),
        ]
        notes = list(self.notes) + (["launch-bound: the micro-batches are too small for the GPU to reach the MFU; "
                                     "the time is the kernel-dispatch floor"] if self.latency_bound else [])
        lines = [f"### {self.name}", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
        return "\n".join(lines + ([""] + [f"- {n}" for n in notes] if notes else []))

    __str__ = to_markdown


def _describe(model: ModelSpec) -> str:
    longest = f" (max {model.longest})" if model.longest != model.seq_len else ""
    return (f"{model.name} {model.parameters / 1e6:.1f}M{'' if model.trainable else ' frozen'}, {model.seq_len} "
            f"tokens{longest}" + (f", {model.passes} passes" if model.passes > 1 else ""))

def fitting_micro_batch(plan: ResourcePlan, gpu_bytes: float) -> int | None:
    """The largest micro-batch, halving from the plan's, that divides the global batch and fits ``gpu_bytes``."""
    micro = plan.micro_batch
    while micro >= 1:
        divides = plan.global_batch % (plan.processes * micro) == 0
        if divides and plan.with_micro_batch(micro).peak_gpu_bytes <= gpu_bytes:
            return micro
        micro //= 2
    return None


def gpu_memory_bytes(gpu: str, use_cuda: bool = False) -> float:
    """Memory of the named GPU, or with ``use_cuda`` the total memory of CUDA device 0."""
    if use_cuda:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("use_cuda=True but torch.cuda.is_available() is False")
        return float(torch.cuda.get_device_properties(0).total_memory)
    return GPUS[gpu].memory_bytes


def check_fits(plan: ResourcePlan, gpu_bytes: float | None = None, host_bytes: float | None = None,
               use_cuda: bool = False) -> None:
    """Raise :class:`ResourceError` when ``plan`` needs more GPU memory per process than ``gpu_bytes`` (default: its
    GPU's, or CUDA device 0's with ``use_cuda``) or more host memory per node than ``host_bytes`` (default 64 GB)."""
    gpu_limit = gpu_memory_bytes(plan.gpu, use_cuda) if gpu_bytes is None else gpu_bytes
    host_limit = HOST_BOUND_BYTES if host_bytes is None else host_bytes
    problems = []
    if plan.peak_gpu_bytes > gpu_limit:
        problems.append(_gpu_advice(plan, gpu_limit))
    if plan.host_bytes > host_limit:
        problems.append(
            f"host: {plan.host_bytes / GB:.1f} GB per node ({plan.processes_per_node} processes x "
            f"({plan.data_bytes / GB:.1f} GB of data as {plan.host_representation} + {HOST_RUNTIME_BYTES / GB:.0f} GB "
            f"runtime)) is more than {host_limit / GB:.0f} GB; memory-map the tokens (uint16) or run fewer "
            f"processes per node")
    if problems:
        raise ResourceError(f"{plan.name} does not fit: " + "; ".join(problems))


def _gpu_advice(plan: ResourcePlan, gpu_bytes: float) -> str:
    need = (f"micro_batch_size={plan.micro_batch} needs {plan.peak_gpu_bytes / GB:.0f} GB per GPU, more than "
            f"{gpu_bytes / GB:.0f} GB")
    fit = fitting_micro_batch(plan, gpu_bytes)
    processes = (f"(processes={plan.processes}: more processes only shorten grad_accum, the memory per GPU depends "
                 f"on micro_batch_size)")
    if fit is None:
        smallest = plan.with_micro_batch(1)
        static = sum(v for k, v in smallest.gpu_memory().items() if k not in ("activations", "margin"))
        even = "" if plan.micro_batch == 1 else f"; even micro_batch_size=1 needs {smallest.peak_gpu_bytes / GB:.0f} GB"
        return (f"{need}{even}: weights, gradients and optimizer state alone take {static / GB:.0f} GB, so shard "
                f"them (FSDP/ZeRO) or use a larger GPU (H200: {GPUS['H200'].memory_bytes / GB:.0f} GB) {processes}")
    fitted = plan.with_micro_batch(fit)
    return (f"{need}; micro_batch_size={fit} with grad_accum={fitted.grad_accum} fits "
            f"({fitted.peak_gpu_bytes / GB:.0f} GB) at the same global batch {plan.global_batch} {processes}")


def micro_batch_for(global_batch: int, processes: int, cap: int | None = None) -> int:
    """The loop's rule: the largest divisor of the per-process share (global / processes) that is at most ``cap``."""
    if global_batch % processes:
        raise ValueError(f"global batch {global_batch} does not split over {processes} processes")
    share = global_batch // processes
    return max(d for d in range(1, share + 1) if share % d == 0 and d <= (cap or share))
