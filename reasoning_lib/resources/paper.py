"""Resource plans of every paper-scale run of the book, built from the chapters' own ``paper`` presets.

Shapes come from the presets' models (built on PyTorch's meta device, so parameters are counted exactly and nothing
is allocated or downloaded): GPT-2 small/medium (Deng et al. 2023), SEDD small (Lou et al. 2024), the capacity
Llamas (Allen-Zhu & Li 2024, sized by ``capacity.sizing``) and BERT base (Wu et al. 2022). Sequence lengths come from
the data formats (``multiplication_tokens``) or are measured constants (GSM8K, SST-2). ``batch_size`` is read as the
published global batch; ``micro_batch_size`` (per process) where the preset has it, else the largest power of two
that fits the GPU (the plan then says the preset should set it). Chapter 8 trains nothing new at 4x4 and GSM8K: it
reuses the chapter 1, 2 and 4 plans of each task and adds the same runs at 3x3 and 5x5 (``chapter_runs``).
"""
from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache

import torch

from .. import baselines
from ..capacity import presets as capacity_presets
from ..capacity.sizing import llama_config_for_budget
from ..data.multiplication import make_example, parse_task
from ..distill import presets as distill_presets
from ..distill.general import general_distill_plans
from ..dot import presets as dot_presets
from ..dot.data import thoughts
from ..frontier import presets as frontier_presets
from ..implicit_cot import presets as implicit_presets
from ..sedd import training as sedd_training
from .activations import DROPOUT_MASK_BYTES, LAYER_COEFFICIENTS, LOGIT_BYTES
from .plan import DEFAULT_GPU, DEFAULT_MFU, GB, GPUS, ModelSpec, ResourcePlan, fitting_micro_batch, micro_batch_for

GPT2_VOCAB = 50257
GPT2_SHAPES = {"gpt2": (12, 768, 12), "small": (12, 768, 12), "gpt2-medium": (24, 1024, 16), "medium": (24, 1024, 16)}
BERT_BASE = {"num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "vocab_size": 30522}
# Processes per run. 8 GPUs where the book's commands use 8 (chapters 1-3); 4 for DoT (the reference's ngpus 4 at
# global batch 256). Small runs take one GPU: a <= 16M-parameter Llama at 32 x 512 tokens a step (chapters 5-6;
# the sizes run side by side, one GPU each) and BERT on SST-2 (chapter 7, minutes).
PROCESSES = {"ch1": 8, "ch2": 8, "ch3": 8, "ch4": 4, "ch5": 1, "ch6": 1, "ch7": 1}
# GPT-2 tokens (mean, max) per GSM8K format, measured on the 6,973-line formula-format GSM8K train file; GSM8K-Aug
# adds GPT-4-written problems of the same kind, taken to have the same lengths.
GSM8K_TOKENS = {"only": (57, 214), "nocot": (62, 219), "cot": (83, 250), "all": (88, 255)}
GSM8K_AUG_EXAMPLES = 385_620  # lines of the GSM8K-Aug train file (about 385k; the exact count is not checked here)
GSM8K_THOUGHTS = 4.2  # DoT-MP rows per GSM8K example: ≈3.2 equations + the answer
SST2_TRAIN, SST2_TOKENS = 67_349, (13, 66)  # GLUE SST-2 train sentences; BERT tokens (mean, max), approximate
# Host bytes of the in-RAM pipelines (measured with tracemalloc / RSS on 20k 4x4 examples): Python lists of ids cost
# 36 B per id (8 B slot + 28 B int object: GPT-2 ids exceed 256, so none is interned) + 8 B per label slot, and
# ~420 B per encoded sequence; the Example text ~380 B (multiplication) or ~550 B (GSM8K); a DoT canvas is an
# int64 row + a bool row, stacked (2x while stacking) + ~300 B of row views.
LIST_BYTES_PER_TOKEN, LIST_BYTES_PER_SEQUENCE = 44, 420
TEXT_BYTES = {"multiplication": 380, "gsm8k": 550, "sst2": 200}
CANVAS_BYTES_PER_TOKEN, CANVAS_BYTES_PER_ROW = 2 * (8 + 1), 300
PAGE_CACHE_WINDOW_BYTES = 1 * GB  # a memory-mapped corpus: resident pages per process, evictable
CAPACITY_WORLD_BYTES = 0.5 * GB  # profiles, tokenizer and pre-tokenised pieces of 10k people (QAs are drawn per step)
TASKS = {"ch1": ("4x4", "gsm8k"), "ch2": ("4x4", "gsm8k"), "ch4": ("4x4", "gsm8k")}


def multiplication_tokens(n_digits: int, fmt: str) -> int:
    """GPT-2 tokens of one ``n_digits`` multiplication in ``fmt`` (all examples of a size have the same length).

    Each piece (question, CoT, answer) is tokenised as `` {text} ``: one token per space-separated symbol, one for
    the trailing space, one for the E after it, and one more for ``####`` (GPT-2 splits it in two)."""
    example = _example(f"{n_digits}x{n_digits}")
    pieces = {"only": [example.question], "nocot": [example.question, example.answer],
              "cot": [example.question, example.cot], "all": [example.question, example.cot, example.answer]}[fmt]
    return sum(len(piece.split()) + 2 + piece.count("####") for piece in pieces)


def task_tokens(task: str, fmt: str) -> tuple[int, int]:
    """(mean, max) GPT-2 tokens of ``task`` in ``fmt``."""
    if task == "gsm8k":
        return GSM8K_TOKENS[fmt]
    tokens = multiplication_tokens(parse_task(task), fmt)
    return tokens, tokens


def num_examples(task: str, num_train: int) -> int:
    return min(num_train, GSM8K_AUG_EXAMPLES) if task == "gsm8k" else num_train


# ---------------------------------------------------------------------- networks (on the meta device)
def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@lru_cache(maxsize=None)
def _gpt2_counts(model: str, mixture: int = 0) -> tuple[int, int, int, int]:
    """(LM, position table, token table, wrapper extras) parameter counts of GPT-2 ``model``; ``mixture`` > 0
    also builds the implicit-CoT emulator (mixture components), else the student."""
    from transformers import AutoModelForCausalLM, GPT2Config

    from ..implicit_cot.modules import MindReadingStudent, ThoughtEmulator

    layers, hidden, heads = GPT2_SHAPES[model]
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(GPT2Config(vocab_size=GPT2_VOCAB, n_positions=1024, n_embd=hidden,
                                                         n_layer=layers, n_head=heads), attn_implementation="sdpa")
        wrapper = ThoughtEmulator(lm, mixture) if mixture else MindReadingStudent(lm)
    total = _count(lm)
    return total, lm.transformer.wpe.weight.numel(), lm.transformer.wte.weight.numel(), _count(wrapper) - total


def gpt2_spec(name: str, model: str, task: str, fmt: str, trainable: bool = True, dropout: float = 0.0,
              role: str = "lm", mixture: int = 1) -> ModelSpec:
    """GPT-2 ``model`` reading ``task`` in ``fmt``: ``role`` 'lm' (baseline or teacher), 'student' or 'emulator'."""
    layers, hidden, heads = GPT2_SHAPES[model]
    lm, wpe, wte, extra = _gpt2_counts(model, mixture if role == "emulator" else 0)
    mean, longest = task_tokens(task, fmt)
    emulator = role == "emulator"  # the base model only: no LM head, the token table is a lookup
    mixture_head = layers * mixture if emulator and mixture > 1 else 0  # (B, M) scores at every layer
    return ModelSpec(
        name=name, parameters=lm + (extra if role != "lm" else 0), flops_parameters=lm - wpe - (wte if emulator else 0),
        num_layers=layers, hidden_size=hidden, num_heads=heads, seq_len=mean, max_seq_len=longest,
        vocab_size=0 if emulator else GPT2_VOCAB, trainable=trainable,
        layer_coefficient=LAYER_COEFFICIENTS["gpt2"] + (DROPOUT_MASK_BYTES if dropout else 0),
        extra_bytes_per_sequence=int(mixture_head * LOGIT_BYTES["lm"]),
    )


@lru_cache(maxsize=None)
def _ddit_counts(hidden: int, blocks: int, heads: int, cond: int, length: int) -> tuple[int, int]:
    """(all parameters, N): N leaves out the input table, the noise embedder and the per-sequence adaLN layers."""
    from ..sedd.model import SEDD, DDiTConfig

    with torch.device("meta"):
        model = SEDD(DDiTConfig(vocab_size=GPT2_VOCAB + 1, hidden_size=hidden, n_blocks=blocks, n_heads=heads,
                                cond_dim=cond, length=length))
    per_sequence = [model.vocab_embed, model.sigma_map, model.output_layer.adaLN_modulation,
                    *(block.adaLN_modulation for block in model.blocks)]
    return _count(model), _count(model) - sum(_count(m) for m in per_sequence)


def ddit_spec(name: str, config: sedd_training.SEDDRunConfig) -> ModelSpec:
    """The DDiT of a SEDD run config on GPT-2 tokens + the absorbing mask (score over every state)."""
    total, flops = _ddit_counts(config.hidden_size, config.n_blocks, config.n_heads, config.cond_dim, config.length)
    return ModelSpec(name=name, parameters=total, flops_parameters=flops, num_layers=config.n_blocks,
                     hidden_size=config.hidden_size, num_heads=config.n_heads, seq_len=config.length,
                     vocab_size=GPT2_VOCAB + 1, logit_bytes=LOGIT_BYTES["sedd"], ema=True,
                     layer_coefficient=LAYER_COEFFICIENTS["ddit"] + (DROPOUT_MASK_BYTES if config.dropout else 0))


def llama_spec(name: str, config: capacity_presets.CapacityConfig, budget: int) -> ModelSpec:
    """The capacity Llama of ``budget`` parameters (``capacity.sizing``); its input table is a lookup."""
    from transformers import AutoModelForCausalLM

    llama = llama_config_for_budget(budget, config.num_hidden_layers, vocab_size=config.vocab_size, mode=config.sizing)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(llama, attn_implementation="sdpa")
    total = _count(model)
    return ModelSpec(name=name, parameters=total, flops_parameters=total - model.model.embed_tokens.weight.numel(),
                     num_layers=llama.num_hidden_layers, hidden_size=llama.hidden_size,
                     num_heads=llama.num_attention_heads, seq_len=config.max_seq_len, vocab_size=llama.vocab_size,
                     layer_coefficient=LAYER_COEFFICIENTS["llama"])


@lru_cache(maxsize=None)
def _bert_counts(layers: int) -> tuple[int, int]:
    """(all parameters, N) of a BERT-base classifier with ``layers`` blocks; N leaves out the embedding tables."""
    from transformers import AutoModelForSequenceClassification, BertConfig

    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(BertConfig(**{**BERT_BASE, "num_hidden_layers": layers}),
                                                               attn_implementation="sdpa")
    embeddings = model.bert.embeddings
    tables = sum(m.weight.numel() for m in (embeddings.word_embeddings, embeddings.position_embeddings,
                                            embeddings.token_type_embeddings))
    return _count(model), _count(model) - tables


def bert_spec(name: str, layers: int, trainable: bool, passes: int, dropout: float) -> ModelSpec:
    total, flops = _bert_counts(layers)
    return ModelSpec(name=name, parameters=total, flops_parameters=flops, num_layers=layers, hidden_size=768,
                     num_heads=12, seq_len=SST2_TOKENS[0], max_seq_len=SST2_TOKENS[1], trainable=trainable,
                     passes=passes, layer_coefficient=LAYER_COEFFICIENTS["bert"] + (DROPOUT_MASK_BYTES if dropout else 0))


# ---------------------------------------------------------------------- host memory
def listed_host_bytes(task: str, examples: int, formats: tuple[str, ...]) -> int:
    """Encoded sequences held as Python lists of ids (one per format per example) plus the example texts."""
    tokens = sum(task_tokens(task, fmt)[0] for fmt in formats)
    text = TEXT_BYTES["gsm8k" if task == "gsm8k" else "multiplication"]
    return int(examples * (tokens * LIST_BYTES_PER_TOKEN + len(formats) * LIST_BYTES_PER_SEQUENCE + text))


LISTS = "Python lists of token ids"


# ---------------------------------------------------------------------- plans
def make_plan(name: str, config, models: list[ModelSpec], processes: int, steps: int, data_bytes: float,
              representation: str, notes: tuple[str, ...] = ()) -> ResourcePlan:
    """A plan at the preset's global ``batch_size``, cut as the loop cuts it: the preset's ``micro_batch_size`` caps
    the micro-batch; without one, the largest power of two (halving the per-process share) that fits the GPU."""
    cap = getattr(config, "micro_batch_size", None)
    plan = ResourcePlan(name=name, models=tuple(models), global_batch=config.batch_size, processes=processes,
                        micro_batch=micro_batch_for(config.batch_size, processes, cap), steps=steps,
                        data_bytes=int(data_bytes), host_representation=representation,
                        micro_batch_from_preset=cap is not None, notes=notes)
    if cap is None:
        fit = fitting_micro_batch(plan, GPUS[plan.gpu].memory_bytes)
        plan = plan.with_micro_batch(fit) if fit else plan
    return plan


def ceil_div(a: float, b: float) -> int:
    return int(math.ceil(a / b))


def baseline_plans(task: str, chapter: str, model: str | None = None) -> list[ResourcePlan]:
    """Chapter 1: no CoT and explicit CoT (the implicit-CoT teacher) fine-tuned from GPT-2."""
    config = baselines.get_config("paper", task=task, **({"model": model} if model else {}))
    n = num_examples(task, config.num_train)
    steps = ceil_div(n * config.num_epochs, config.batch_size)
    suffix = f"_{task}" + (f"_{model}" if model else "")
    plans = []
    for method, fmt in (("no_cot", "nocot"), ("explicit_cot", "all")):
        if model and method == "no_cot":
            continue
        spec = gpt2_spec(f"GPT-2 {config.model}", config.model, task, fmt, dropout=config.dropout)
        plans.append(make_plan(f"{chapter}_{method}{suffix}", config, [spec], PROCESSES["ch1"], steps,
                               listed_host_bytes(task, n, (fmt,)), LISTS))
    return plans


def implicit_plans(task: str, chapter: str, model: str | None = None) -> list[ResourcePlan]:
    """Chapter 2's three stages; the frozen explicit-CoT teacher stays in memory for the first two."""
    config = implicit_presets.get_config("paper", task=task, model=model)
    base = config.baseline
    n = num_examples(task, base.num_train)
    steps = ceil_div(n * config.stage_epochs, config.batch_size)
    teacher = gpt2_spec("teacher (frozen)", base.model, task, "cot", trainable=False)
    student = gpt2_spec("student", base.model, task, "nocot", role="student")
    emulator = gpt2_spec("emulator", base.model, task, "only", role="emulator", mixture=config.mixture_size)
    host = listed_host_bytes(task, n, ("nocot", "cot"))  # every stage encodes (nocot, cot) pairs
    suffix = f"_{task}" + (f"_{model}" if model else "")
    return [make_plan(f"{chapter}_{stage}{suffix}", config, models, PROCESSES["ch2"], steps, host, LISTS)
            for stage, models in (("student", [student, teacher]), ("emulator", [emulator, teacher]),
                                  ("coupled", [student, emulator]))]


def sedd_plan() -> ResourcePlan:
    """Chapter 3: SEDD small on OpenWebText, 1024-token blocks, EMA."""
    config = sedd_training.get_config("paper")
    tokens = config.num_sequences * config.length
    notes = (f"host: sedd.corpus tokenises OpenWebText once (rank 0, resumable) into a memory-mapped uint16 token "
             f"file, {tokens / 1e9:.1f}B tokens used ({2 * tokens / GB:.1f} GB on disk) shared by every process "
             f"through the page cache; blocks are read per batch, never held as an int64 tensor "
             f"({8 * tokens / GB:.0f} GB per process)",)
    return make_plan("ch3_sedd_small_owt", config, [ddit_spec("SEDD small", config)], PROCESSES["ch3"],
                     config.max_steps, PAGE_CACHE_WINDOW_BYTES, "memory-mapped uint16 tokens (page-cache window)", notes)


def dot_plans(task: str, chapter: str) -> list[ResourcePlan]:
    """Chapter 4: DoT and DoT-MP fine-tuning SEDD small on ``length``-token canvases."""
    config = dot_presets.get_config("paper", task=task)
    n = num_examples(task, config.num_train)
    per_example = GSM8K_THOUGHTS if task == "gsm8k" else len(thoughts(_example(task)))  # DoT-MP rows per example
    plans = []
    for variant, rows in (("dot", n), ("dot_mp", n * (per_example if config.mp_pairs == "all" else 1))):
        host = rows * (config.length * CANVAS_BYTES_PER_TOKEN + CANVAS_BYTES_PER_ROW) + n * TEXT_BYTES[
            "gsm8k" if task == "gsm8k" else "multiplication"]
        notes = (f"{rows:,.0f} training canvases",)
        plans.append(make_plan(f"{chapter}_{variant}_{task}", config, [ddit_spec("SEDD small", config.sedd_config())],
                               PROCESSES["ch4"], config.max_steps, host, "int64 + bool canvas tensors", notes))
    return plans


def _example(task: str):
    """One multiplication problem of ``task`` (all have the same number of partial products)."""
    n = parse_task(task)
    return make_example(10 ** (n - 1) + 1, 10 ** n - 1, n)


CAPACITY_WORLD_PEOPLE = 10_000  # CAPACITY_WORLD_BYTES is for this many people; it grows with N


def capacity_host_bytes(config: capacity_presets.CapacityConfig) -> int:
    """One capacity run's host data: the world (profiles, tokenizer, pieces, split masks: linear in N) and the
    shared loop's permutation of one stream chunk (8 bytes a sequence; ``capacity.stream``), held twice while
    the next chunk-epoch's permutation is built."""
    world = CAPACITY_WORLD_BYTES * max(1.0, config.num_people / CAPACITY_WORLD_PEOPLE)
    chunk = math.ceil(config.stream_chunk / config.batch_size) * config.batch_size
    return int(world + 2 * 8 * chunk)


def capacity_plans() -> list[ResourcePlan]:
    """Chapter 5: one Llama per parameter budget and world (N, R) of the paper sweep; chapter 6: the 1-hop + 2-hop
    model. Names follow ``capacity.presets.plan_name`` (``ch5_capacity_N10000_r17_0.5M``, ``ch6_multihop_10M``)."""
    sweep = capacity_presets.SWEEPS["paper"]
    specs: dict[int, ModelSpec] = {}
    plans = []
    representation = "generated QAs (whole, per chunk-epoch), world in RAM"
    for world in range(len(sweep.worlds)):
        config = sweep.world_config(world)
        for size, budget in enumerate(config.model_sizes):
            if budget not in specs:  # the same shapes on every world (one vocabulary)
                specs[budget] = llama_spec(f"Llama {budget / 1e6:g}M budget", config, budget)
            spec = specs[budget]
            note = (f"one of the {len(sweep.runs)} runs of the chapter-5 sweep ({len(sweep.worlds)} worlds x "
                    f"{len(config.model_sizes)} sizes)",)
            plans.append(make_plan(capacity_presets.plan_name(config, size), config, [spec], PROCESSES["ch5"],
                                   config.max_steps, capacity_host_bytes(config), representation, note))
    config = capacity_presets.MULTIHOP_PRESETS["paper"]
    for size, budget in enumerate(config.model_sizes):
        spec = llama_spec(f"Llama {budget / 1e6:g}M budget", config, budget)
        plans.append(make_plan(capacity_presets.plan_name(config, size, multihop=True), config, [spec], PROCESSES["ch6"],
                               config.max_steps, capacity_host_bytes(config), representation))
    return plans


PROBE_ANSWER_CLASSES = 20_000  # distinct 2-hop answers of the 10k-person world: ≈10k names, ≈10k birth dates, pools


def probe_plans() -> list[ResourcePlan]:
    """Chapter 6: linear probes on the multi-hop Llama's hidden states, one plan per target (the bridge entity over
    the N people, fitted twice: the trained model and the untrained control; the answer over its distinct strings).

    Memory is the probes' own bounded estimate (``probes.probe_memory``: the cuts the fit uses under
    ``ProbeConfig.memory_bytes``), entered as the plan's activations, so the plan's peak is that estimate plus the
    Llama's weights and the margin. A "step" is one L-BFGS evaluation of one cut over the train rows; the row
    batch is the micro-batch and the cut's parameters stand for the network (6 FLOPs per parameter and row:
    logits, their recomputation per class chunk, the gradient)."""
    from ..capacity.probing import GROUPS
    from ..probes import ProbeConfig, probe_memory
    from .activations import ActivationFit

    config = capacity_presets.MULTIHOP_PRESETS["paper"]
    probe = ProbeConfig(penalties=config.probe_penalties, max_iter=config.probe_max_iter)
    plans = []
    for budget in config.model_sizes:
        llama = llama_spec(f"Llama {budget / 1e6:g}M budget", config, budget)
        states, dim = llama.num_layers + 1, llama.hidden_size  # 'last'/'mean' pooling: one state wide
        for target, classes, fits in (("bridge", config.num_people, 2), ("answer", PROBE_ANSWER_CLASSES, 1)):
            memory = probe_memory(config.probe_rows, dim, classes, states, num_positions=len(GROUPS),
                                  num_penalties=len(probe.penalties), cv_folds=probe.cv_folds,
                                  eval_fraction=probe.eval_fraction, memory_bytes=probe.memory_bytes,
                                  history_size=probe.history_size, max_iter=probe.max_iter)
            cut = max((memory.cv, memory.refit), key=lambda layout: layout.problems())
            train = int((1 - probe.eval_fraction) * config.probe_rows)
            micro = min(cut.row_batch, train)
            parameters = cut.problems() * (dim + 1) * classes
            cells = states * len(GROUPS)
            problem_fits = fits * cells * (probe.cv_folds * len(probe.penalties) + 1)  # CV fits, then the refit
            evaluations = math.ceil(1.25 * probe.max_iter)  # L-BFGS's max_eval: iterations plus line search
            steps = ceil_div(problem_fits * evaluations, cut.problems())
            # the plan counts 16 bytes a parameter (weights, grads, AdamW); the estimate holds the L-BFGS state
            intercept = memory.working + 4 * llama.parameters - 16 * parameters
            spec = ModelSpec(name=f"linear probes ({target}, {classes:,} classes, {cut.problems()} per cut)",
                             parameters=parameters, flops_parameters=parameters, num_layers=1, hidden_size=dim,
                             num_heads=1, seq_len=1, activation_fit=ActivationFit(0.0, intercept, {}))
            notes = (f"probes.probe_memory: {memory.working / GB:.1f} GB working set under memory_bytes="
                     f"{probe.memory_bytes / GB:.0f} GB (cross-validation cut {memory.cv}, refit cut {memory.refit}); "
                     f"never an (N, C) logit tensor: a plain fit would hold {4 * train * classes / GB:.1f} GB of "
                     f"logits per cell and penalty", "the fit runs in fp32 (no autocast): at the fp32 peak rather "
                     "than the bf16 one the hours are several times these")
            plans.append(ResourcePlan(
                name=f"ch6_probes_{target}_{budget / 1e6:g}M", models=(spec,),
                global_batch=micro * ceil_div(train, micro), micro_batch=micro, processes=PROCESSES["ch6"], steps=steps, data_bytes=memory.host,
                host_representation="float32 hidden-state features (N, S, P, D) + the fitted probes", notes=notes))
    return plans


def distill_plans() -> list[ResourcePlan]:
    """Chapter 7: the BERT-base teacher fine-tuned on SST-2, then KD and DIITO students at each training size."""
    config = distill_presets.get_config("paper")
    teacher_layers = BERT_BASE["num_hidden_layers"]
    host = lambda n: n * (SST2_TOKENS[0] * LIST_BYTES_PER_TOKEN + LIST_BYTES_PER_SEQUENCE + TEXT_BYTES["sst2"])
    teacher_steps = ceil_div(SST2_TRAIN * config.teacher_epochs, config.batch_size)
    plans = [make_plan("ch7_teacher", config, [bert_spec("BERT base", teacher_layers, True, 1, config.dropout)],
                       PROCESSES["ch7"], teacher_steps, host(SST2_TRAIN), LISTS)]
    for method in ("kd", "diito"):
        passes = 3 if method == "diito" else 1  # base, source and intervened runs of both networks
        for size in config.train_sizes:
            steps = max(config.min_student_steps, ceil_div(size * config.student_epochs, config.batch_size))
            models = [bert_spec(f"student ({len(config.student_layers)} layers)", len(config.student_layers), True,
                                passes, config.dropout), bert_spec("teacher (frozen)", teacher_layers, False, passes, 0)]
            plans.append(make_plan(f"ch7_{method}_{size}", config, models, PROCESSES["ch7"], steps, host(size), LISTS))
    return plans


@lru_cache(maxsize=None)
def _paper_plans() -> tuple[ResourcePlan, ...]:
    plans = []
    for task in TASKS["ch1"]:
        plans += baseline_plans(task, "ch1")
    plans += baseline_plans("4x4", "ch1", model="gpt2-medium")
    for task in TASKS["ch2"]:
        plans += implicit_plans(task, "ch2")
    plans += implicit_plans("4x4", "ch2", model="gpt2-medium")
    plans.append(sedd_plan())
    for task in TASKS["ch4"]:
        plans += dot_plans(task, "ch4")
    plans += capacity_plans() + distill_plans() + general_distill_plans()
    plans += probe_plans()
    for task in frontier_presets.get_config("paper").tasks:  # chapter 8: the tasks chapters 1, 2 and 4 do not run
        if task not in TASKS["ch1"]:
            plans += baseline_plans(task, "ch8") + implicit_plans(task, "ch8") + dot_plans(task, "ch8")
    return tuple(plans)


def paper_plans(gpu: str = DEFAULT_GPU, mfu: float = DEFAULT_MFU, launch_floor: bool = True) -> dict[str, ResourcePlan]:
    """Name -> plan of every paper-scale training run, on ``gpu`` at ``mfu`` (micro-batches chosen for the H100)."""
    return {p.name: replace(p, gpu=gpu, mfu=mfu, launch_floor=launch_floor) for p in _paper_plans()}


def chapter_runs() -> dict[str, list[str]]:
    """Chapter -> the plans it trains; chapter 8 reuses chapters 1, 2 and 4's per task and adds 3x3 and 5x5."""
    names = [p.name for p in _paper_plans()]
    runs = {c: [n for n in names if n.startswith(c + "_")] for c in ("ch1", "ch2", "ch3", "ch4", "ch5", "ch6", "ch7")}
    reused = [n for c in ("ch1", "ch2", "ch4") for n in runs[c] if "medium" not in n]
    runs["ch8"] = reused + [n for n in names if n.startswith("ch8_")]
    return runs


def presets_needing_micro_batch(plans: dict[str, ResourcePlan]) -> dict[str, int]:
    """Plans whose preset sets no ``micro_batch_size`` and whose full per-process batch does not fit: the value chosen."""
    return {name: p.micro_batch for name, p in plans.items()
            if not p.micro_batch_from_preset and p.micro_batch < p.global_batch // p.processes}


__all__ = ["GSM8K_TOKENS", "PROCESSES", "chapter_runs", "multiplication_tokens", "paper_plans",
           "presets_needing_micro_batch", "task_tokens"]
