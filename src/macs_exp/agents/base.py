"""The machinery every off-policy actor-critic shares: its hyperparameter schema, a replay
buffer, SB3's update schedule, acting, learning and checkpoints.

Subclasses define the networks, ``_policy`` and ``_train_step``. The networks and the buffer
work in [-1, 1]; actions going in and out of the agent are in the env's units.

``action_mapping=knn`` (Wolpertinger, ``macs_exp.agents.knn``) turns the policy's output into a
proto-action: the agent acts with the feature vector of the best of its k nearest allowed items,
so the buffer and the critic only ever see actions that exist. ``argmax`` passes the policy's
output to the env unchanged.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import torch
from omegaconf import MISSING
from torch import nn
from torch.optim.adam import adam

from macs_exp.agents.buffer import Batch, ReplayBuffer
from macs_exp.agents.items import ItemSpace
from macs_exp.agents.knn import KnnMapping, Values
from macs_exp.agents.networks import QEnsemble
from macs_exp.agents.protocol import AgentConfig, Policy, Transitions
from macs_exp.agents.saved import load_agent, save_agent
from macs_exp.agents.schedule import UpdateSchedule
from macs_exp.schema import ConfigError, Rules, check

ACTION_MAPPINGS = ("argmax", "knn")


@dataclass
class OffPolicyConfig(AgentConfig):
    """Hyperparameters shared by the off-policy actor-critic agents (SB3 names)."""

    # SB3's single ``learning_rate`` drives the critic (and SAC's entropy coefficient);
    # the paper trains the actor with its own, smaller rate.
    learning_rate: float = MISSING
    actor_learning_rate: float = MISSING
    buffer_size: int = MISSING
    learning_starts: int = MISSING
    batch_size: int = MISSING
    tau: float = MISSING
    gamma: float = MISSING
    # Counted in vector steps, as SB3 does; ``gradient_steps=-1`` means one gradient step
    # per user-step collected since the last update.
    train_freq: int = MISSING
    gradient_steps: int = MISSING
    net_arch: list[int] = MISSING
    # argmax: the policy's output is the action; knn: it is a proto-action mapped to the best of
    # its knn_k nearest allowed items (needs an env with an item catalogue).
    action_mapping: str = MISSING
    knn_k: int = MISSING

    def rules(self) -> Rules:
        return {
            "learning_rate": (self.learning_rate > 0, "positive"),
            "actor_learning_rate": (self.actor_learning_rate > 0, "positive"),
            "buffer_size": (self.buffer_size >= 1, "at least 1"),
            "batch_size": (self.batch_size >= 1, "at least 1"),
            "learning_starts": (self.learning_starts >= 0, "0 or more"),
            "tau": (0 < self.tau <= 1, "in (0, 1]"),
            "gamma": (0 <= self.gamma <= 1, "in [0, 1]"),
            "train_freq": (self.train_freq >= 1, "at least 1"),
            "gradient_steps": (self.gradient_steps >= 1 or self.gradient_steps == -1, "at least 1, or -1"),
            "net_arch": (all(w >= 1 for w in self.net_arch), "a list of positive layer widths"),
            "action_mapping": (self.action_mapping in ACTION_MAPPINGS, f"one of {ACTION_MAPPINGS}"),
            "knn_k": (self.knn_k >= 1, "at least 1"),
        }


class DivergenceError(RuntimeError):
    """A loss became NaN or infinite: training cannot meaningfully continue."""


def add_finite(sums: dict[str, float], losses: dict[str, torch.Tensor], diverged: str) -> None:
    """Adds one update's ``losses`` to ``sums``; a NaN or infinite one raises ``DivergenceError``
    with ``diverged``, formatted with the loss's ``key`` and ``value``."""
    for key, loss in losses.items():
        value = float(loss.detach())
        if not math.isfinite(value):
            raise DivergenceError(diverged.format(key=key, value=value))
        sums[key] = sums.get(key, 0.0) + value


class OffPolicyAgent:
    """Shared plumbing of DDPG, TD3 and SAC (see the module docstring)."""

    name: str
    actor: nn.Module
    critic: QEnsemble
    critic_target: QEnsemble

    def __init__(
        self,
        cfg: OffPolicyConfig,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
        device: torch.device | str,
        seed: int,
        items: ItemSpace | None = None,
    ) -> None:
        if not isinstance(action_space, gym.spaces.Box) or not isinstance(observation_space, gym.spaces.Box):
            raise TypeError("these agents need Box observation and action spaces")
        if not (action_space.is_bounded("both")):
            raise ValueError("the action space must be bounded on both sides")
        check(cfg, "algo")
        self.cfg = cfg
        self.device = torch.device(device)
        self.obs_dim = int(observation_space.shape[0])
        self.act_dim = int(action_space.shape[0])
        low = torch.as_tensor(action_space.low, dtype=torch.float32, device=self.device)
        high = torch.as_tensor(action_space.high, dtype=torch.float32, device=self.device)
        self._act_center = (high + low) / 2
        self._act_scale = (high - low) / 2
        # One private stream for noise and minibatches; network initialisation uses the
        # global stream, seeded here so that construction is reproducible on its own.
        torch.manual_seed(seed)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.buffer = ReplayBuffer(cfg.buffer_size, self.obs_dim, self.act_dim, self.device)
        self.schedule = UpdateSchedule(cfg.learning_starts, cfg.train_freq, cfg.gradient_steps)
        self.n_updates = 0
        self.mapping = self._mapping(cfg, items)

    def _mapping(self, cfg: OffPolicyConfig, items: ItemSpace | None) -> KnnMapping | None:
        if cfg.action_mapping == "argmax":
            return None
        if items is None:
            raise ConfigError(
                "algo.action_mapping=knn needs an env with an item catalogue (env.id=MACS/Rating-v0); "
                "this env has none: keep algo.action_mapping=argmax"
            )
        return KnnMapping(items, cfg.knn_k, self._act_center, self._act_scale)

    # --- acting -------------------------------------------------------------------------
    @torch.no_grad()
    def act(
        self,
        obs: torch.Tensor,
        deterministic: bool = False,
        allowed: torch.Tensor | None = None,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor:
        obs = obs.to(self.device, torch.float32)
        return self._emit(obs, self._policy(obs, deterministic), allowed)

    def _emit(self, obs: torch.Tensor, scaled: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        """The action the env gets for the policy's output ``scaled`` (network units): under knn,
        the best nearby ``allowed`` item's own feature vector, bit for bit, so that the env shows it."""
        proto = self._act_center + self._act_scale * scaled
        if self.mapping is None:
            return proto
        choice = self.mapping.best(self._values(self.critic), obs, proto, allowed)
        return self.mapping.features[choice.items]

    @staticmethod
    def _values(critic: QEnsemble) -> Values:
        """The pessimistic value over the critic ensemble, as the targets use."""
        return lambda obs, actions: critic(obs, actions).min(dim=-2).values

    def _target_values(self, next_obs: torch.Tensor, next_actions: torch.Tensor) -> torch.Tensor:
        """The target critics' value of the next states (B,) under the target policy's
        ``next_actions`` (network units). Under knn, Wolpertinger's target: the best of the k
        items nearest to the proto-action, among all items (a replayed state's allowed items
        are not stored, so already shown or seen items may be counted; see docs/macs.md)."""
        values = self._values(self.critic_target)
        if self.mapping is None:
            return values(next_obs, next_actions)
        proto = self._act_center + self._act_scale * next_actions
        return self.mapping.best(values, next_obs, proto, None).values

    def _policy(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        raise NotImplementedError

    def explore(
        self, obs: torch.Tensor, allowed: torch.Tensor | None = None, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Uniform actions over the action space until ``learning_starts`` user-steps have been
        collected (under knn: uniform allowed items, not the untrained critic's pick, which would
        leave items it happens to undervalue untried), then the exploring policy; counts the
        step towards the schedule."""
        n = obs.shape[0]
        warming_up = self.schedule.warming_up()
        self.schedule.record(n)
        if not warming_up:
            return self.act(obs, allowed=allowed)
        if self.mapping is not None:
            return self.mapping.features[self.mapping.uniform(n, allowed, self.generator)]
        u = torch.rand((n, self.act_dim), generator=self.generator, device=self.device)
        return self._act_center + self._act_scale * (2 * u - 1)

    def frozen_policy(self) -> Policy:
        """The current deterministic policy, unaffected by later updates (MACS stores one to
        build reward distributions). Copies the actor (and under knn the critic that picks the
        item), never the replay buffer."""
        frozen = copy.copy(self)
        frozen.actor = copy.deepcopy(self.actor).requires_grad_(False)
        if self.mapping is not None:
            frozen.critic = copy.deepcopy(self.critic).requires_grad_(False)
        return functools.partial(frozen.act, deterministic=True)

    # --- learning -----------------------------------------------------------------------
    def observe(self, real: Transitions) -> None:
        self.store(real)

    def add_extra(self, extra: Transitions) -> None:
        """Synthesised transitions share the replay buffer with the real ones."""
        self.store(extra)

    def store(self, batch: Transitions) -> None:
        scaled = (batch.actions.to(self.device) - self._act_center) / self._act_scale
        self.buffer.add(
            batch.obs.to(self.device),
            scaled,
            batch.rewards.to(self.device),
            batch.next_obs.to(self.device),
            batch.terminated.to(self.device),
        )

    def learn(self) -> list[dict[str, float]]:
        updates, grad_steps = self.schedule.due()
        return [self.update(grad_steps) for _ in range(updates)]

    def update(self, gradient_steps: int) -> dict[str, float]:
        """Runs ``gradient_steps`` updates; returns the mean of each loss over them."""
        sums: dict[str, float] = {}
        for _ in range(gradient_steps):
            batch = self.buffer.sample(self.cfg.batch_size, self.generator)
            losses = self._train_step(batch)
            self.n_updates += 1
            add_finite(sums, losses, self.diverged())
        return {k: v / gradient_steps for k, v in sums.items()}

    def diverged(self) -> str:
        """The message of a loss that became NaN or infinite, with ``{key}`` and ``{value}`` to fill."""
        return (
            f"{self.name}: {{key}} became {{value}} at update {self.n_updates}. Lower the learning "
            "rates (algo.learning_rate, algo.actor_learning_rate) or check the env's rewards."
        )

    def _train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _wire(self) -> None:
        """Builds what refers to the networks' parameters (target updates, parameter lists):
        once they exist, and again on a seed stack (``macs_exp.agents.stack``)."""

    def member_tensors(self) -> tuple[str, ...]:
        """Attributes holding learned tensors outside ``modules()`` (SAC's entropy coefficient),
        which a seed stack stacks like the networks."""
        return ()

    # --- persistence --------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module | Adam]:
        """Everything with a state_dict that a checkpoint must restore, keyed by attribute name
        (a seed stack replaces each attribute with its stacked counterpart)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Copies, not the live tensors: in a seed stack those are views of every member's
        storage, which ``torch.save`` would write whole."""
        state: dict[str, Any] = {k: _copies(m.state_dict()) for k, m in self.modules().items()}
        state["n_updates"] = self.n_updates
        state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, module in self.modules().items():
            module.load_state_dict(state[key])
        self.n_updates = int(state["n_updates"])
        self.generator.set_state(state["generator"])

    def training_state(self) -> dict[str, Any]:
        """Everything ``trainer.resume`` needs beyond ``state_dict``: the buffer's filled part
        and the update schedule (the random stream is in ``state_dict``)."""
        return {"model": self.state_dict(), "buffer": self.buffer.state(), "schedule": self.schedule.state()}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["model"])
        self.buffer.load_state(state["buffer"])
        self.schedule.load_state(state["schedule"])

    def save(self, path: str | Path) -> None:
        save_agent(path, self.name, {"obs_dim": self.obs_dim, "act_dim": self.act_dim}, self.state_dict())

    def load(self, path: str | Path) -> None:
        sizes = {"obs_dim": self.obs_dim, "act_dim": self.act_dim}
        self.load_state_dict(load_agent(path, self.name, sizes, self.device))


def _copies(state: Any) -> Any:
    """``state`` with every tensor in it cloned (dicts and lists followed)."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return type(state)((k, _copies(v)) for k, v in state.items())
    if isinstance(state, list):
        return [_copies(v) for v in state]
    return state


class Adam:
    """Adam (no weight decay) on torch's fused kernel, without ``torch.optim``'s per-call
    bookkeeping (hooks, profiling scopes, parameter grouping), which for networks this small
    costs more than the arithmetic. Same update as ``torch.optim.Adam(fused=True)``."""

    def __init__(
        self, params: Any, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.params: list[torch.Tensor] = list(params)
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        # Every parameter has a gradient here: the caller has just run backward on its loss.
        grads = cast(list[torch.Tensor], [p.grad for p in self.params])
        adam(
            self.params,
            grads,
            self.exp_avg,
            self.exp_avg_sq,
            [],
            self.steps,
            fused=True,
            amsgrad=False,
            beta1=self.betas[0],
            beta2=self.betas[1],
            lr=self.lr,
            weight_decay=0.0,
            eps=self.eps,
            maximize=False,
        )

    def state_dict(self) -> dict[str, list[torch.Tensor]]:
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "steps": self.steps}

    @classmethod
    def stacked(cls, members: list[Adam], params: list[torch.Tensor]) -> Adam:
        """One optimiser for ``params``, the stacks of the ``members``' parameters: its moments
        are the stacks of theirs, and theirs become views of its slices. The step counts are
        shared (the members of a stack always step together)."""
        first = members[0]
        stack = cls(params, first.lr, first.betas, first.eps)
        for mine, key in ((stack.exp_avg, "exp_avg"), (stack.exp_avg_sq, "exp_avg_sq")):
            for i, moment in enumerate(mine):
                moment.copy_(torch.stack([getattr(m, key)[i] for m in members]))
            for k, member in enumerate(members):
                setattr(member, key, [moment[k] for moment in mine])
        stack.steps = first.steps
        for member in members:
            member.steps = stack.steps
        return stack

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, list[torch.Tensor]]) -> None:
        for key, mine in self.state_dict().items():
            for dst, src in zip(mine, state[key], strict=True):
                dst.copy_(src)


class SoftUpdate:
    """Polyak averaging ``target <- (1 - tau) target + tau source`` in one fused call."""

    def __init__(self, target: nn.Module, source: nn.Module, tau: float) -> None:
        self.target: list[torch.Tensor] = list(target.parameters())
        self.source: list[torch.Tensor] = list(source.parameters())
        self.tau = tau

    @torch.no_grad()
    def __call__(self) -> None:
        torch._foreach_lerp_(self.target, self.source, self.tau)
