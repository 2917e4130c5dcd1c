"""The mind-reading student and the thought emulator (Deng et al. 2023, "Implicit Chain of Thought Reasoning via Knowledge Distillation", §3).

* ``MindReadingStudent``: a GPT-2 reading `` {x} E {ans} E``; before block l the stream at the separator is
  replaced by g_l(z_l), an MLP of the teacher's (or emulator's) layer-l state. Loss: answer cross-entropy.
* ``ThoughtEmulator``: a GPT-2 reading `` {x} E`` that predicts z_l at its own separator: ẑ_l = f_l([u_l; m_l])
  from the stream u_l entering block l and a mixture vector m_l; an LSTM plus attention over earlier layers
  refines ẑ_l into the vector written back before block l runs.

Both keep their GPT-2 in eval mode (dropout off) even while training, as the reference does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .injection import at_separator


def _mlp(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, out_features))


class _FrozenDropout(nn.Module):
    """Base: ``train()`` switches the extra modules but keeps ``self.lm`` in eval mode."""

    lm: nn.Module

    def train(self, mode: bool = True):
        super().train(mode)
        self.lm.eval()
        return self

    @property
    def num_layers(self) -> int:
        return self.lm.config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        return self.lm.config.hidden_size


class MindReadingStudent(_FrozenDropout):
    """GPT-2 + one reader MLP g_l (H → 4H → H) per layer."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm
        self.readers = nn.ModuleList(_mlp(self.hidden_size, 4 * self.hidden_size, self.hidden_size) for _ in range(self.num_layers))
        self.train()

    def check_states(self, states: torch.Tensor) -> None:
        expected = (self.num_layers, self.hidden_size)
        if states.dim() != 3 or tuple(states.shape[1:]) != expected:
            raise ValueError(
                f"the student has {expected[0]} layers of width {expected[1]} but got states of shape "
                f"{tuple(states.shape)}: teacher/emulator and student must share num_hidden_layers and hidden_size"
            )

    def injecting(self, sep: torch.Tensor, states: torch.Tensor):
        """Context manager: substitute g_l(states[:, l]) at ``sep`` (B,) before every block."""
        self.check_states(states)
        return at_separator(self.lm, sep, lambda layer, _: self.readers[layer](states[:, layer]))

    def forward(self, input_ids: torch.Tensor, sep: torch.Tensor, states: torch.Tensor, labels: torch.Tensor | None = None):
        """HF causal-LM output for ``input_ids`` (B, T) with ``states`` (B, L, H) substituted at ``sep`` (B,)."""
        with self.injecting(sep, states):
            return self.lm(input_ids=input_ids, labels=labels)


@dataclass
class EmulatorOutput:
    states: torch.Tensor  # (B, L, H): the predictions ẑ_l
    mixture_logits: torch.Tensor | None  # (B, L, M) when mixture_size > 1


class ThoughtEmulator(_FrozenDropout):
    """GPT-2 + predictors f_l (2H → 4H → H), a mixture table W (M × H), an LSTM and layer attention."""

    has_unused_parameters = True  # the last block's output (and ln_f) feed no prediction: DDP must not wait for them

    def __init__(self, lm: nn.Module, mixture_size: int = 1, softmax_temperature: float = 0.05):
        super().__init__()
        if mixture_size < 1:
            raise ValueError(f"mixture_size={mixture_size} must be >= 1")
        self.lm, self.mixture_size, self.softmax_temperature = lm, mixture_size, softmax_temperature
        hidden = self.hidden_size
        self.predictors = nn.ModuleList(_mlp(2 * hidden, 4 * hidden, hidden) for _ in range(self.num_layers))
        self.mixture = nn.Embedding(mixture_size, hidden)  # W
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.key = nn.Linear(hidden, hidden)  # W_k
        self.query = nn.Linear(hidden, hidden)  # W_q
        self.out = nn.Linear(2 * hidden, hidden)  # W_o
        self.train()

    def _mixture_vector(self, u: torch.Tensor, layer: int, targets: torch.Tensor | None, logits: list) -> torch.Tensor:
        if self.mixture_size == 1:
            return self.mixture.weight[0].expand_as(u)
        scores = u @ self.mixture.weight.T  # (B, M)
        logits.append(scores)
        if targets is not None:  # teacher forcing on the component (training with supervision)
            return self.mixture(targets[:, layer])
        return F.softmax(scores / self.softmax_temperature, dim=-1) @ self.mixture.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        sep: torch.Tensor,
        mixture_targets: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> EmulatorOutput:
        """Emulated states for ``input_ids`` (B, T) whose separator is at ``sep`` (B,); tokens after the last
        separator (a ``nocot`` batch's answers) are dropped, since the emulator reads the question only."""
        width = int(sep.max()) + 1
        input_ids = input_ids[:, :width]
        attention_mask = attention_mask[:, :width] if attention_mask is not None else None
        position_ids = position_ids[:, :width] if position_ids is not None else None
        predictions, keys, logits = [], [], []
        carry = {"context": None, "lstm": None}

        def rewrite(layer: int, u: torch.Tensor) -> torch.Tensor:  # u: (B, H) entering block `layer`
            z = self.predictors[layer](torch.cat([u, self._mixture_vector(u, layer, mixture_targets, logits)], dim=-1))
            predictions.append(z)
            context = carry["context"] if carry["context"] is not None else torch.zeros_like(z)
            o, carry["lstm"] = self.lstm((z + context)[:, None], carry["lstm"])
            o = o[:, 0]  # (B, H)
            if keys:  # attend over the keys of the earlier layers only
                earlier = torch.stack(keys, dim=1)  # (B, l, H)
                weights = F.softmax((earlier @ self.query(o)[:, :, None]).squeeze(-1), dim=-1)  # (B, l)
                context = (weights[:, :, None] * earlier).sum(dim=1)
            else:
                context = torch.zeros_like(o)
            keys.append(self.key(o))
            carry["context"] = context
            return self.out(torch.cat([o, context], dim=-1))

        with at_separator(self.lm, sep, rewrite):
            self.lm.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        mixture_logits = torch.stack(logits, dim=1) if logits else None
        return EmulatorOutput(torch.stack(predictions, dim=1), mixture_logits)


def emulator_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """½‖ẑ − z*‖² summed over H and layers, averaged over the batch; both (B, L, H)."""
    if predicted.shape != target.shape:
        raise ValueError(f"emulated states {tuple(predicted.shape)} and teacher states {tuple(target.shape)} differ")
    return 0.5 * (predicted - target).pow(2).sum(dim=(1, 2)).mean()


def mixture_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Token classification of the mixture component: −log softmax(u Wᵀ)[c*], summed over layers, batch mean."""
    per_layer = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(targets.shape)
    return per_layer.sum(dim=1).mean()


class ImplicitCoT(nn.Module):
    """Emulator + student, coupled: the student reads the emulator's predictions (Deng et al. 2023, §3, "couple
    and optimize"; reference ``src/train_coupled_emulator_and_student.py``)."""

    has_unused_parameters = True  # the emulator's last block and ln_f feed no loss

    def __init__(self, emulator: ThoughtEmulator, student: MindReadingStudent, fix_emulator: bool = False):
        super().__init__()
        if (emulator.num_layers, emulator.hidden_size) != (student.num_layers, student.hidden_size):
            raise ValueError(
                f"emulator ({emulator.num_layers} layers x {emulator.hidden_size}) and student "
                f"({student.num_layers} layers x {student.hidden_size}) do not fit together"
            )
        self.emulator, self.student = emulator, student
        self.emulator.requires_grad_(not fix_emulator)

    def forward(self, input_ids: torch.Tensor, sep: torch.Tensor, labels: torch.Tensor | None = None):
        states = self.emulator(input_ids, sep).states
        return self.student(input_ids, sep, states, labels=labels)
