"""Noise schedules: total noise sigma_bar(t) and its rate sigma(t) = d sigma_bar / dt, for t in [0, 1].

Nothing here is learned (the reference keeps a dummy parameter only so DDP accepts the module).
"""
from __future__ import annotations

import math

import torch

from ..config import check_choice, check_positive

NOISE_TYPES = ("loglinear", "geometric")


class LogLinearNoise:
    """sigma_bar(t) = -log(1 - (1 - eps) t): a token is masked with probability (1 - eps) t.

    The reference fixes eps = 1e-3 and ignores the config's sigma_min/sigma_max for this schedule."""

    def __init__(self, eps: float = 1e-3):
        check_positive("eps", eps)
        self.eps = eps

    def total(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.log1p(-(1 - self.eps) * t)

    def rate(self, t: torch.Tensor) -> torch.Tensor:
        return (1 - self.eps) / (1 - (1 - self.eps) * t)

    def __call__(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.total(t), self.rate(t)

    def config(self) -> dict:
        return {"type": "loglinear", "sigma_min": 1e-4, "sigma_max": 20}


class GeometricNoise:
    """sigma_bar(t) = sigma_min^(1 - t) * sigma_max^t (for the uniform graph)."""

    def __init__(self, sigma_min: float = 1e-3, sigma_max: float = 1.0):
        check_positive("sigma_min", sigma_min)
        if sigma_max <= sigma_min:
            raise ValueError(f"sigma_max={sigma_max} must exceed sigma_min={sigma_min}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def total(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min ** (1 - t) * self.sigma_max**t

    def rate(self, t: torch.Tensor) -> torch.Tensor:
        return self.total(t) * (math.log(self.sigma_max) - math.log(self.sigma_min))

    def __call__(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.total(t), self.rate(t)

    def config(self) -> dict:
        return {"type": "geometric", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


def build_noise(config: dict) -> LogLinearNoise | GeometricNoise:
    """A schedule from the reference's ``noise`` config (``{"type", "sigma_min", "sigma_max"}``)."""
    check_choice("noise type", config.get("type"), NOISE_TYPES)
    if config["type"] == "loglinear":
        return LogLinearNoise()
    return GeometricNoise(config.get("sigma_min", 1e-3), config.get("sigma_max", 1.0))
