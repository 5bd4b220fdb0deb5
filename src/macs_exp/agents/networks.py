"""Networks shared by every agent.

The critics are an ensemble evaluated with one batched matmul per layer: twin critics
(TD3, SAC) cost one forward pass instead of two, which matters when the update loop,
not the arithmetic, is the bottleneck.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from torch.nn import functional as F


class MLP(nn.Module):
    """Linear layers with ReLU between them.

    The forward pass calls the layers' functions directly instead of going through
    ``nn.Sequential`` and each child's ``__call__``: at these sizes the per-module dispatch
    costs about as much as the matmuls.
    """

    def __init__(self, in_dim: int, out_dim: int, net_arch: list[int]) -> None:
        super().__init__()
        dims = [in_dim, *net_arch, out_dim]
        # The same modules as a typed list, for the forward pass.
        self._linears = [nn.Linear(a, b) for a, b in itertools.pairwise(dims)]
        self.layers = nn.ModuleList(self._linears)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *hidden, last = self._linears
        for layer in hidden:
            x = F.relu(F.linear(x, layer.weight, layer.bias))
        return F.linear(x, last.weight, last.bias)


class EnsembleLinear(nn.Module):
    """``n`` independent linear layers applied to ``(n, batch, in)`` inputs at once."""

    def __init__(self, n: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim))
        # Same initialisation as nn.Linear, member by member.
        bound = 1.0 / math.sqrt(in_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class QEnsemble(nn.Module):
    """``n_critics`` Q(s, a) networks; returns ``(n_critics, batch)``."""

    def __init__(self, obs_dim: int, act_dim: int, net_arch: list[int], n_critics: int) -> None:
        super().__init__()
        self.n_critics = n_critics
        dims = [obs_dim + act_dim, *net_arch, 1]
        self._members = [EnsembleLinear(n_critics, a, b) for a, b in itertools.pairwise(dims)]
        self.layers = nn.ModuleList(self._members)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, actions], dim=-1).expand(self.n_critics, -1, -1)
        *hidden, last = self._members
        for layer in hidden:
            x = F.relu(torch.baddbmm(layer.bias, x, layer.weight))
        return torch.baddbmm(last.bias, x, last.weight).squeeze(-1)


class DeterministicActor(nn.Module):
    """Maps observations to actions in [-1, 1] (the agent rescales to the env's bounds)."""

    def __init__(self, obs_dim: int, act_dim: int, net_arch: list[int]) -> None:
        super().__init__()
        self.net = MLP(obs_dim, act_dim, net_arch)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))


class SquashedGaussianActor(nn.Module):
    """tanh-squashed diagonal Gaussian policy, as SAC uses."""

    def __init__(
        self, obs_dim: int, act_dim: int, net_arch: list[int], log_std_min: float, log_std_max: float
    ) -> None:
        super().__init__()
        self.trunk = MLP(obs_dim, 2 * act_dim, net_arch)
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max

    def forward(
        self, obs: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the squashed action and its log-probability."""
        mean, log_std = self.trunk(obs).chunk(2, dim=-1)
        log_std = log_std.clamp(self.log_std_min, self.log_std_max)
        std = log_std.exp()
        if deterministic:
            pre_tanh = mean
        else:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            pre_tanh = mean + std * noise
        action = torch.tanh(pre_tanh)
        # log N(pre_tanh; mean, std) minus the log-det of tanh, written in its stable form.
        normal_log_prob = -0.5 * ((pre_tanh - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
        log_det = 2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))
        return action, (normal_log_prob - log_det).sum(-1)
