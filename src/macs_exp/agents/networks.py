"""Networks shared by every agent.

The critics are an ensemble evaluated with one batched matmul per layer: twin critics
(TD3, SAC) cost one forward pass instead of two, which matters when the update loop,
not the arithmetic, is the bottleneck.

Seed-parallel training (``macs_exp.agents.stack``) goes one step further: ``stack_members``
turns the networks of K agents, one per seed, into one network whose parameters carry a leading
member dimension and whose forward pass takes ``(K, batch, ...)`` inputs in one batched matmul
per layer. The members' own networks keep working on views of the stacked parameters.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

# One random stream, or one per member of a stacked network (``stack_members``).
Generators = torch.Generator | Sequence[torch.Generator]


def randn(shape: Sequence[int], generator: Generators | None, device: torch.device) -> torch.Tensor:
    """Standard normal noise of ``shape``. With one generator per member, member k's slice
    (``shape[1:]``) comes from the k-th: exactly what that member's agent alone would draw."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(tuple(shape), generator=generator, device=device)
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g, device=device) for g in generator])


def stack_members(modules: Sequence[nn.Module]) -> tuple[nn.Module, dict[int, torch.Tensor]]:
    """One network for ``modules`` (K networks of one architecture): each parameter becomes the
    stack of theirs along a new first dimension, and theirs become views of its slices, so that
    an update of the stack is an update of each (and nothing is copied back). Returns the stack
    and, for each of the first module's parameters (by ``id``), its stacked counterpart."""
    stacked = copy.deepcopy(modules[0])
    originals = [dict(m.named_parameters()) for m in modules]
    counterparts: dict[int, torch.Tensor] = {}
    for name, param in stacked.named_parameters():
        param.data = torch.stack([own[name].detach() for own in originals])
        for k, own in enumerate(originals):
            own[name].data = param.data[k]
        counterparts[id(originals[0][name])] = param
    for module in stacked.modules():
        if isinstance(module, MLP | QEnsemble):
            module.members = len(modules)
    return stacked, counterparts


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
        # Set by ``stack_members``: the number of members, whose weights are (K, out, in).
        self.members: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.members is not None:
            return self._forward_members(x)
        *hidden, last = self._linears
        for layer in hidden:
            x = F.relu(F.linear(x, layer.weight, layer.bias))
        return F.linear(x, last.weight, last.bias)

    def _forward_members(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` is (K, batch, in). One member takes the single network's own kernels, so that a
        stack of one computes exactly what its agent alone would."""
        *hidden, last = self._linears
        if self.members == 1:
            y = x[0]
            for layer in hidden:
                y = F.relu(F.linear(y, layer.weight[0], layer.bias[0]))
            return F.linear(y, last.weight[0], last.bias[0]).unsqueeze(0)
        for layer in hidden:
            x = F.relu(torch.baddbmm(layer.bias.unsqueeze(1), x, layer.weight.transpose(1, 2)))
        return torch.baddbmm(last.bias.unsqueeze(1), x, last.weight.transpose(1, 2))


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
        # Set by ``stack_members``: the number of seed members, each an ensemble of n_critics;
        # inputs are then (K, batch, ...) and the output (K, n_critics, batch).
        self.members: int | None = None

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, actions], dim=-1)
        n, members = self.n_critics, self.members
        if members is None:
            x = x.expand(n, -1, -1)
        else:
            # Every (member, critic) pair is one matrix of the batched matmul.
            x = x.unsqueeze(1).expand(-1, n, -1, -1).reshape(members * n, x.shape[1], x.shape[2])
        *hidden, last = self._members
        for layer in hidden:
            x = F.relu(torch.baddbmm(_flat(layer.bias), x, _flat(layer.weight)))
        q = torch.baddbmm(_flat(last.bias), x, _flat(last.weight)).squeeze(-1)
        return q if members is None else q.view(members, n, -1)


def _flat(t: torch.Tensor) -> torch.Tensor:
    """A member-stacked ensemble parameter (K, n, ...) as (K * n, ...); unstacked ones unchanged."""
    return t.flatten(0, 1) if t.dim() == 4 else t


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
        self, obs: torch.Tensor, deterministic: bool = False, generator: Generators | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the squashed action and its log-probability."""
        mean, log_std = self.trunk(obs).chunk(2, dim=-1)
        log_std = log_std.clamp(self.log_std_min, self.log_std_max)
        std = log_std.exp()
        pre_tanh = mean if deterministic else mean + std * randn(mean.shape, generator, mean.device)
        action = torch.tanh(pre_tanh)
        # log N(pre_tanh; mean, std) minus the log-det of tanh, written in its stable form.
        normal_log_prob = -0.5 * ((pre_tanh - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
        log_det = 2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))
        return action, (normal_log_prob - log_det).sum(-1)
