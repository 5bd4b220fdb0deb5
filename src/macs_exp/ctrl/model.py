"""CTRL's structural causal model: y = G(c, u), learned as a bidirectional conditional GAN.

The context c is the state and the action's features (the raw action, or the features of the
item the env shows for it); the outcome y is what the step changes:

- **generic** (every env without a known outcome rule): y = s' - s, and
  G(c, u) = mu(c) + h(c, u), where every outcome coordinate has its own scalar noise u_j and
  h_j is increasing in it (``MonotoneBranch``; CTRL's identifiability needs the monotonicity);
- **binary outcome** (the rating env, whose step either accepts the item, shifting it into the
  state, or leaves the state as it was): y is the acceptance bit, and
  G(c, u) = sigma((mu(c) + h(c, u)) / temperature) with a scalar u. The next state is then one
  of the env's two known modes, so showing the discriminator the gate instead of the 330-wide
  state is the same information (CTRL.md section 6).

The encoder E(c, y) -> u abducts the noise of a real transition; the discriminator D(c, y, u)
tells real tuples (c, y, E(c, y)) from generated ones (c, G(c, u), u) with u ~ N(0, I). A
counterfactual is G(c', E(c, y)) for another action's context c'. Inputs and generic outcomes
are standardised with the statistics of the first fit's data.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from torch.nn import functional as F

from macs_exp.agents.networks import MLP

_SLOPE = 0.1


class MonotoneBranch(nn.Module):
    """h(c, u): one scalar noise per outcome coordinate, h_j(c, u_j), each a small network whose
    path from u_j goes through positive (softplus) weights and increasing activations, so that
    h_j is strictly increasing in u_j whatever the context: the SCM of CTRL's identifiability
    result, s'_j = f_j(s, a, u_j) with f_j monotone in u_j. With ``uses_context`` the context
    enters each layer as a bias (heteroscedastic noise); without, h(u) is additive noise."""

    def __init__(self, context_dim: int, dim: int, net_arch: list[int], *, uses_context: bool) -> None:
        super().__init__()
        widths = [1, *net_arch, 1]
        # softplus(raw) starts near 1 / fan-in: positive weights cannot cancel, so the usual
        # zero-mean initialisation would grow the branch's output by the width at every layer.
        self.raw_weights = nn.ParameterList(
            nn.Parameter(0.1 * torch.randn(dim, b, a) - math.log(a)) for a, b in itertools.pairwise(widths)
        )
        self.dim = dim
        self.widths = list(net_arch)
        self.context_bias = nn.Linear(context_dim, dim * sum(net_arch)) if uses_context else None
        self.bias = nn.Parameter(torch.zeros(dim, sum(net_arch)))

    def forward(self, context: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        bias = self.bias.expand(len(u), -1, -1)
        if self.context_bias is not None:
            bias = bias + self.context_bias(context).view(len(u), self.dim, -1)
        x = u.unsqueeze(2)
        *hidden, last = self.raw_weights
        for weight, b in zip(hidden, bias.split(self.widths, dim=2), strict=True):
            x = F.leaky_relu(torch.einsum("bdi,doi->bdo", x, F.softplus(weight)) + b, _SLOPE)
        return torch.einsum("bdi,doi->bdo", x, F.softplus(last)).squeeze(2)


class Standardiser(nn.Module):
    """(x - mean) / std with statistics fixed once (``fit``), kept in the state dict."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, x: torch.Tensor) -> None:
        self.mean.copy_(x.mean(0))
        # A floor of 0.1: a column nearly constant in the fitted data (a rare one-hot category)
        # would otherwise scale a later 1 to hundreds.
        self.std.copy_(x.std(0).clamp(min=0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


class CausalModel(nn.Module):
    """G, E, D, and two reward regressors: ``reward_head`` R(c, y) for the envs without a known
    reward rule, and ``reference`` R(c), which ignores the SCM (the gate's model-free yardstick)."""

    def __init__(
        self,
        context_dim: int,
        outcome_dim: int,
        net_arch: list[int],
        noise_arch: list[int],
        *,
        binary: bool,
        temperature: float,
        noise_context: bool,
    ) -> None:
        super().__init__()
        if binary and outcome_dim != 1:
            raise ValueError("a binary-outcome model has one outcome (the acceptance bit)")
        self.binary = binary
        self.temperature = temperature
        # One noise coordinate per outcome coordinate (``MonotoneBranch``).
        self.latent_dim = latent_dim = outcome_dim
        self.context_norm = Standardiser(context_dim)
        self.outcome_norm = Standardiser(outcome_dim)
        self.mean = MLP(context_dim, outcome_dim, net_arch)
        self.noise = MonotoneBranch(context_dim, outcome_dim, noise_arch, uses_context=noise_context)
        self.encoder = MLP(context_dim + outcome_dim, latent_dim, net_arch)
        self.discriminator = MLP(context_dim + outcome_dim + latent_dim, 1, net_arch)
        self.reward_head = MLP(context_dim + outcome_dim, 1, net_arch)
        self.reference = MLP(context_dim, 1, net_arch)

    def fit_statistics(self, context: torch.Tensor, outcome: torch.Tensor) -> None:
        self.context_norm.fit(context)
        if not self.binary:
            self.outcome_norm.fit(outcome)

    # Everything below works on standardised contexts and outcomes (``normalise``).
    def normalise(self, context: torch.Tensor, outcome: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.context_norm(context), outcome if self.binary else self.outcome_norm(outcome)

    def logits(self, c: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.mean(c) + self.noise(c, u)

    def generate(self, c: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        out = self.logits(c, u)
        return torch.sigmoid(out / self.temperature) if self.binary else out

    def encode(self, c: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.encoder(torch.cat((c, y), dim=1))

    def discriminate(self, c: torch.Tensor, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.discriminator(torch.cat((c, y, u), dim=1)).squeeze(1)

    def predict_reward(self, c: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.reward_head(torch.cat((c, y), dim=1)).squeeze(1)

    def reference_reward(self, c: torch.Tensor) -> torch.Tensor:
        return self.reference(c).squeeze(1)

    @torch.no_grad()
    def counterfactual(
        self,
        context: torch.Tensor,
        outcome: torch.Tensor,
        alt_context: torch.Tensor,
        *,
        use_noise: bool = True,
    ) -> torch.Tensor:
        """Abduction, action, prediction: u = E(c, y), then G(c', u), in the outcome's own units;
        on a binary outcome the gate's logit l / temperature instead (accepted where positive), which
        ranks pairs where the saturated gate would tie. ``use_noise=False`` predicts with u = 0,
        the prior's mean, which ignores what the real transition says about u."""
        c, y = self.normalise(context, outcome)
        u = self.encode(c, y) if use_noise else torch.zeros(len(c), self.latent_dim, device=c.device)
        logits = self.logits(self.context_norm(alt_context), u)
        return logits / self.temperature if self.binary else self.outcome_norm.inverse(logits)

    @torch.no_grad()
    def counterfactual_reward(self, alt_context: torch.Tensor, cf_outcome: torch.Tensor) -> torch.Tensor:
        """The learned reward head's reward of an outcome (raw units) under context c'."""
        c, y = self.normalise(alt_context, cf_outcome)
        return self.predict_reward(c, y)
