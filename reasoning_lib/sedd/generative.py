"""Sample quality of a SEDD model: generative perplexity and quality against network evaluations (Lou, Meng &
Ermon 2024, §5.2, Fig. 2-3).

Generative perplexity is the perplexity of unconditional samples under a larger autoregressive model (GPT-2
large in the paper). As in the reference's ``run_train.py``, the sample's token ids are fed unchanged to the
causal LM, so both must share one tokenizer (GPT-2's at paper scale); every token after the first is scored,
end-of-text included, with no BOS prepended; each sample gets exp(mean NLL over its tokens), and the figure is
the mean of those per-sample perplexities. Here it comes with a standard error over samples and the pooled
exp(mean NLL over all tokens) beside it.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..config import check_positive
from .sampling import sample

PAPER_CAUSAL_LM = "gpt2-large"  # the paper's judge (hub id; needs the hub or its cache)


@dataclass
class GenerativePerplexity:
    """Per-sample perplexities under the causal LM, their mean (the paper's figure), its SE and the pooled value."""

    per_sample: list[float] = field(repr=False)
    perplexity: float  # mean over samples of exp(mean NLL of the sample)
    stderr: float  # SE of that mean over samples (NaN for one sample)
    pooled_perplexity: float  # exp(mean NLL over every scored token of every sample)
    num_samples: int
    tokens_scored: int

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """perplexity -/+ z SE."""
        return self.perplexity - z * self.stderr, self.perplexity + z * self.stderr


def load_causal_lm(name_or_path: str | os.PathLike, device: str | torch.device = "cpu"):
    """A causal LM by hub id (``gpt2-large``, needs the hub or its cache) or local folder, in eval mode."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path))
    except OSError as err:
        raise FileNotFoundError(f"could not load the causal LM {str(name_or_path)!r} ({err}); with HF_HUB_OFFLINE=1 "
                                "pass a local folder written by save_pretrained") from None
    return model.to(device).eval()


def _check_samples(samples: torch.Tensor, lm, vocab_size: int | None) -> None:
    if samples.ndim != 2 or samples.shape[1] < 2 or len(samples) == 0:
        raise ValueError(f"samples must be a non-empty [N, n] tensor of ids with n >= 2, got {tuple(samples.shape)}")
    lm_vocab = lm.config.vocab_size
    if vocab_size is not None and vocab_size != lm_vocab:
        raise ValueError(f"the samples' vocabulary has {vocab_size} tokens but the causal LM's has {lm_vocab}: "
                         "generative perplexity needs the causal LM's tokenizer (GPT-2's for gpt2-large)")
    top, bottom = int(samples.max()), int(samples.min())
    if top >= lm_vocab or bottom < 0:
        raise ValueError(f"sample ids span [{bottom}, {top}] but the causal LM's vocabulary is [0, {lm_vocab}): a mask "
                         "state left in the samples (sample with denoise=True) or ids of another tokenizer")
    limit = getattr(lm.config, "max_position_embeddings", None)
    if limit is not None and samples.shape[1] > limit:
        raise ValueError(f"samples of {samples.shape[1]} tokens exceed the causal LM's {limit} positions")


@torch.no_grad()
def sample_nll(samples: torch.Tensor, causal_lm, batch_size: int = 8) -> torch.Tensor:
    """[N, n - 1] NLL (nats, fp32) of each token after the first given the ones before it."""
    device = next(causal_lm.parameters()).device
    rows = []
    for start in range(0, len(samples), batch_size):
        ids = samples[start:start + batch_size].to(device)
        logits = causal_lm(input_ids=ids).logits[:, :-1].float()
        rows.append(F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").cpu())
    return torch.cat(rows)


def generative_perplexity(samples_ids: torch.Tensor, causal_lm, batch_size: int = 8,
                          vocab_size: int | None = None) -> GenerativePerplexity:
    """Generative perplexity of ``samples_ids`` [N, n] under ``causal_lm`` (a model, a hub id or a folder).

    ``vocab_size``: the SEDD's token vocabulary (its states less the mask), refused when it differs from the
    causal LM's; ids outside the causal LM's vocabulary (masks left) are refused in any case."""
    check_positive("batch_size", batch_size)
    lm = load_causal_lm(causal_lm) if isinstance(causal_lm, (str, os.PathLike)) else causal_lm.eval()
    _check_samples(samples_ids, lm, vocab_size)
    nll = sample_nll(samples_ids, lm, batch_size).double()
    per_sample = nll.mean(-1).exp()
    n = len(per_sample)
    stderr = float(per_sample.std() / math.sqrt(n)) if n > 1 else math.nan
    return GenerativePerplexity(per_sample=per_sample.tolist(), perplexity=float(per_sample.mean()), stderr=stderr,
                                pooled_perplexity=float(nll.mean().exp()), num_samples=n, tokens_scored=nll.numel())


def quality_vs_steps(model, graph, noise, step_counts: Sequence[int], predictors: Sequence[str] = ("euler", "analytic"),
                     *, num_samples: int, length: int | None = None, measure: Callable[[torch.Tensor], float],
                     batch_size: int | None = None, seed: int = 0, **sample_kwargs) -> dict[str, dict[int, float]]:
    """{predictor: {NFE: measure(samples)}}: ``num_samples`` unconditional samples per step count and predictor.

    ``measure`` maps [num_samples, length] ids to a number: e.g. ``lambda s: generative_perplexity(s, lm).perplexity``
    at paper scale, ``lambda s: well_formed_fraction(tokenizer, s)`` on reviews. Each (predictor, steps) starts
    from the same seed; ``batch_size`` bounds the samples drawn at once (default: all)."""
    check_positive("num_samples", num_samples)
    length = length or model.config.length
    batch = batch_size or num_samples
    quality: dict[str, dict[int, float]] = {}
    for predictor in predictors:
        quality[predictor] = {}
        for steps in step_counts:
            gen = torch.Generator().manual_seed(seed)
            parts, nfe = [], None
            for start in range(0, num_samples, batch):
                out = sample(model, graph, noise, min(batch, num_samples - start), length, steps, predictor,
                             generator=gen, **sample_kwargs)
                parts.append(out.tokens.cpu())
                nfe = out.nfe
            quality[predictor][nfe] = float(measure(torch.cat(parts)))
    return quality
