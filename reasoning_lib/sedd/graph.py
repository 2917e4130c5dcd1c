"""Forward processes over N token states: absorbing (to a mask state) and uniform.

Lou, Meng & Ermon 2024 ("Discrete Diffusion Modeling by Estimating the Ratios of the Data Distribution"),
with the conventions of the reference ``graph_lib.py`` (louaaron/Score-Entropy-Discrete-Diffusion): column i
of the rate matrix Q is the rate *out of* state i, so column i of exp(sigma Q) is the distribution of x_t
given x_0 = i; row i ("transposed") holds the rates *into* i, which the reverse process uses. ``sigma``
arguments broadcast against the token tensor ``x`` ([B, n]): pass ``sigma[:, None]`` for one noise level per
sequence. All arithmetic is fp32.

Score entropy exponentiates log-scores only where they enter the loss: an entry that is discarded after
``exp`` would still overflow (log-score > ~88 in fp32) and turn its zero gradient into inf * 0 = NaN.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import check_choice

GRAPH_TYPES = ("absorb", "uniform")


def _expm1_safe(sigma: torch.Tensor) -> torch.Tensor:
    return torch.where(sigma < 0.5, torch.expm1(sigma), torch.exp(sigma) - 1)


def _k(a: torch.Tensor) -> torch.Tensor:
    """K(a) = a (log a - 1), the constant that makes score entropy zero at the true ratio."""
    return a * (torch.log(a) - 1)


def sample_categorical(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """argmax_j p_j / E_j with E_j ~ Exp(1) (Gumbel-max): p need not be normalised; p_j <= 0 is never chosen."""
    uniform = torch.rand(probs.shape, generator=generator, device=probs.device if generator is None else "cpu")
    exponential = (1e-10 - torch.log(uniform + 1e-10)).to(probs.device)
    return (probs / exponential).argmax(dim=-1)


class Graph:
    """Shared interface; ``num_states`` counts every state (the mask included for absorb)."""

    absorbing: bool

    def __init__(self, num_states: int):
        if num_states < 2:
            raise ValueError(f"num_states={num_states} must be at least 2")
        self.num_states = num_states

    def transp_rate(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def transition(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def transp_transition(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample_transition(self, x0: torch.Tensor, sigma: torch.Tensor, fixed: torch.Tensor | None = None,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def staggered_score(self, score: torch.Tensor, dsigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample_limit(self, shape, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def score_entropy(self, log_score: torch.Tensor, sigma: torch.Tensor, x_t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reverse_rate(self, x: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """R_y = transp_rate(x)_y s_y for y != x, and R_x = -sum_{y != x} R_y."""
        rate = self.transp_rate(x) * score
        rate = rate.scatter(-1, x[..., None], 0.0)
        return rate.scatter(-1, x[..., None], -rate.sum(dim=-1, keepdim=True))

    def _corrupt(self, x0, moved, replacement, fixed):
        if fixed is not None:
            moved = moved & ~fixed
        return torch.where(moved, replacement, x0)


class Uniform(Graph):
    """Q = (1/N) 1 1^T - I: a token jumps to a uniformly drawn state (possibly itself)."""

    absorbing = False

    def transp_rate(self, x):
        rate = torch.full((*x.shape, self.num_states), 1.0 / self.num_states, device=x.device)
        return rate.scatter(-1, x[..., None], 1.0 / self.num_states - 1)

    def transition(self, x, sigma):
        stay = torch.exp(-sigma.float())[..., None]
        return (1 - stay) / self.num_states + stay * F.one_hot(x, self.num_states).float()

    transp_transition = transition  # Q is symmetric

    def sample_transition(self, x0, sigma, fixed=None, generator=None):
        moved = torch.rand(x0.shape, generator=generator).to(x0.device) < -torch.expm1(-sigma.float())
        replacement = torch.randint(self.num_states, x0.shape, generator=generator).to(x0.device)
        return self._corrupt(x0, moved, replacement, fixed)

    def staggered_score(self, score, dsigma):
        grow = torch.exp(dsigma.float())[..., None]
        return grow * score + (1 - grow) / self.num_states * score.sum(dim=-1, keepdim=True)

    def sample_limit(self, shape, device=None, generator=None):
        return torch.randint(self.num_states, tuple(shape), generator=generator).to(device)

    def score_entropy(self, log_score, sigma, x_t, x0):
        n = self.num_states
        log_score = log_score.float()
        esigm1 = _expm1_safe(sigma.float()).expand_as(x_t)
        ratio = 1 - n / (esigm1 + n)  # r = (e^sigma - 1) / (e^sigma - 1 + N)
        # Every position counts here, but the y = x_t entry is outside the sum: zero it before exp, not after.
        off_diagonal = log_score.scatter(-1, x_t[..., None], 0.0)
        others = torch.ones_like(log_score).scatter(-1, x_t[..., None], 0.0)  # y != x_t
        positive = (off_diagonal.exp() * others).sum(-1) / n
        summed = (off_diagonal * others).sum(-1) / n
        unchanged = x_t == x0
        negative = torch.where(unchanged, ratio * summed, summed + log_score.gather(-1, x0[..., None])[..., 0] / esigm1)
        constant = torch.where(
            unchanged, (n - 1) / n * ratio * (torch.log(ratio) - 1), ((-torch.log(ratio) - 1) / ratio - (n - 2)) / n
        )
        return positive - negative + constant


class Absorbing(Graph):
    """Every real token jumps to the mask state M = N - 1 at rate 1; M never leaves."""

    absorbing = True

    @property
    def mask(self) -> int:
        return self.num_states - 1

    def transp_rate(self, x):
        rows = -F.one_hot(x, self.num_states).float()
        into_mask = torch.ones(self.num_states, device=x.device).index_fill(0, torch.tensor([self.mask], device=x.device), 0.0)
        return torch.where((x == self.mask)[..., None], into_mask, rows)

    def transition(self, x, sigma):
        stay = torch.exp(-sigma.float())[..., None].expand(*x.shape, 1)
        out = F.one_hot(x, self.num_states).float() * stay
        out[..., self.mask] += 1 - stay[..., 0]  # x = M: stay + (1 - stay) = 1
        return out

    def transp_transition(self, x, sigma):
        stay = torch.exp(-sigma.float())[..., None].expand(*x.shape, 1)
        out = F.one_hot(x, self.num_states).float() * stay
        from_any = (1 - stay).expand(*x.shape, self.num_states).clone()
        from_any[..., self.mask] = 1.0
        return torch.where((x == self.mask)[..., None], from_any, out)

    def sample_transition(self, x0, sigma, fixed=None, generator=None):
        moved = torch.rand(x0.shape, generator=generator).to(x0.device) < -torch.expm1(-sigma.float())
        return self._corrupt(x0, moved, torch.full_like(x0, self.mask), fixed)

    def staggered_score(self, score, dsigma):
        grow = torch.exp(dsigma.float())[..., None]
        extra = (1 - grow[..., 0]) * score.sum(dim=-1)
        out = score * grow
        out[..., self.mask] += extra
        return out

    def sample_limit(self, shape, device=None, generator=None):
        return torch.full(tuple(shape), self.mask, dtype=torch.long, device=device)

    def score_entropy(self, log_score, sigma, x_t, x0):
        """Zero where x_t is a real token (no rate leaves it toward another real one); computed, and
        exponentiated, only at the masked positions, whose rows are gathered first as the reference does."""
        masked = x_t == self.mask
        rows = log_score[masked].float()  # [M, N]
        ratio = 1 / _expm1_safe(sigma.float()).expand_as(x_t)[masked]  # the only non-zero true ratio, at y = x0
        positive = rows[:, : self.mask].exp().sum(-1)
        negative = ratio * rows.gather(-1, x0[masked][:, None])[:, 0]
        out = torch.zeros(x_t.shape, dtype=rows.dtype, device=rows.device)
        return out.masked_scatter(masked, positive - negative + _k(ratio))


def build_graph(graph_type: str, num_states: int) -> Graph:
    """``'absorb'`` (``num_states`` includes the mask, the last id) or ``'uniform'``."""
    check_choice("graph type", graph_type, GRAPH_TYPES)
    return Absorbing(num_states) if graph_type == "absorb" else Uniform(num_states)
