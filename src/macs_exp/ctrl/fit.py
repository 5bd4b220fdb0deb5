"""Fitting CTRL's causal model to the run's real transitions: the store they are kept in, and the
BiCoGAN's losses and updates."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from macs_exp.ctrl.config import CtrlConfig
from macs_exp.ctrl.model import CausalModel


class TransitionStore:
    """The latest ``capacity`` real (context, outcome, reward) rows, in a ring."""

    def __init__(self, capacity: int, context_dim: int, outcome_dim: int) -> None:
        self.context = torch.zeros(capacity, context_dim)
        self.outcome = torch.zeros(capacity, outcome_dim)
        self.reward = torch.zeros(capacity)
        self.size = 0
        self.position = 0

    def add(self, context: torch.Tensor, outcome: torch.Tensor, reward: torch.Tensor) -> None:
        capacity = len(self.reward)
        for start in range(0, len(reward), capacity):
            chunk = slice(start, start + capacity)
            rows = (torch.arange(len(reward[chunk])) + self.position) % capacity
            self.context[rows] = context[chunk].float()
            self.outcome[rows] = outcome[chunk].float()
            self.reward[rows] = reward[chunk].float()
            self.position = int(rows[-1] + 1) % capacity
            self.size = min(self.size + len(rows), capacity)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        index = torch.randint(self.size, (batch_size,), generator=generator)
        return self.context[index], self.outcome[index], self.reward[index]

    def state(self) -> dict[str, Any]:
        return {
            "context": self.context[: self.size].clone(),
            "outcome": self.outcome[: self.size].clone(),
            "reward": self.reward[: self.size].clone(),
            "position": self.position,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.size = len(state["reward"])
        self.context[: self.size] = state["context"]
        self.outcome[: self.size] = state["outcome"]
        self.reward[: self.size] = state["reward"]
        self.position = int(state["position"])


@dataclass
class Optimisers:
    """Adam for G and E together, for D, and for the two reward regressors."""

    generator: torch.optim.Adam
    discriminator: torch.optim.Adam
    rewards: torch.optim.Adam

    @classmethod
    def of(cls, model: CausalModel, cfg: CtrlConfig) -> Optimisers:
        betas = (cfg.betas[0], cfg.betas[1])
        ge = [*model.mean.parameters(), *model.noise.parameters(), *model.encoder.parameters()]
        heads = [*model.reward_head.parameters(), *model.reference.parameters()]
        return cls(
            torch.optim.Adam(ge, lr=cfg.learning_rate, betas=betas),
            torch.optim.Adam(model.discriminator.parameters(), lr=cfg.disc_learning_rate, betas=betas),
            torch.optim.Adam(heads, lr=cfg.learning_rate, betas=betas),
        )

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k).state_dict() for k in ("generator", "discriminator", "rewards")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            getattr(self, key).load_state_dict(value)


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def _update(optimiser: torch.optim.Adam, loss: torch.Tensor, max_norm: float) -> None:
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for group in optimiser.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimiser.step()


def pretrain_step(
    model: CausalModel, opt: Optimisers, c: torch.Tensor, y: torch.Tensor, cfg: CtrlConfig
) -> None:
    """G by regression on the outcome with u = 0: the mean mechanism first, so that the
    adversarial game starts from a generator that already fits the data's centre."""
    u = torch.zeros(len(c), model.latent_dim)
    out = model.logits(c, u)
    loss = F.binary_cross_entropy_with_logits(out, y) if model.binary else F.mse_loss(out, y)
    _update(opt.generator, loss, cfg.max_grad_norm)


def adversarial_step(
    model: CausalModel,
    opt: Optimisers,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    cfg: CtrlConfig,
    generator: torch.Generator,
) -> dict[str, float]:
    """One BiCoGAN update of D, then of G and E, then of the reward regressors; the losses."""
    c, y, r = batch
    prior = torch.randn(len(c), model.latent_dim, generator=generator)
    fake = model.generate(c, prior)
    abducted = model.encode(c, y)
    d_loss = _bce(model.discriminate(c, y, abducted.detach()), 1.0) + _bce(
        model.discriminate(c, fake.detach(), prior), 0.0
    )
    _update(opt.discriminator, d_loss, cfg.max_grad_norm)
    # G and E play against D with the labels swapped (BiGAN); the reconstruction ties a real
    # transition's abducted noise back to its outcome, the cycle the prior's noise to itself.
    g_loss = _bce(model.discriminate(c, fake, prior), 1.0) + cfg.reconstruction_weight * F.mse_loss(
        model.generate(c, abducted), y
    )
    e_loss = _bce(model.discriminate(c, y, abducted), 0.0) + cfg.cycle_weight * F.mse_loss(
        model.encode(c, fake), prior
    )
    _update(opt.generator, g_loss + e_loss, cfg.max_grad_norm)
    reward_loss = F.mse_loss(model.predict_reward(c, y), r) + F.mse_loss(model.reference_reward(c), r)
    _update(opt.rewards, reward_loss, cfg.max_grad_norm)
    losses = {"g_loss": g_loss, "d_loss": d_loss, "e_loss": e_loss, "reward_loss": reward_loss}
    return {key: float(value.detach()) for key, value in losses.items()}


def fit(
    model: CausalModel,
    opt: Optimisers,
    store: TransitionStore,
    cfg: CtrlConfig,
    generator: torch.Generator,
    *,
    first: bool,
) -> dict[str, float]:
    """One fit on the store: on the first, the standardisation and the pretraining, then
    ``fit_steps`` adversarial updates. Returns the mean losses over the adversarial updates."""
    model.train()
    if first:
        model.fit_statistics(store.context[: store.size], store.outcome[: store.size])
    for _ in range(cfg.pretrain_steps if first else 0):
        c, y, _ = store.sample(cfg.batch_size, generator)
        pretrain_step(model, opt, *model.normalise(c, y), cfg)
    sums: dict[str, float] = defaultdict(float)
    for _ in range(cfg.fit_steps):
        c, y, r = store.sample(cfg.batch_size, generator)
        for key, value in adversarial_step(model, opt, (*model.normalise(c, y), r), cfg, generator).items():
            sums[key] += value
    model.eval()
    return {key: value / cfg.fit_steps for key, value in sums.items()}
