"""The agent protocol: everything the trainer and the augmenters may ask of a recommender.

It assumes no kind of learner. An off-policy actor-critic (DDPG, TD3, SAC) keeps a replay
buffer and takes gradient steps on a schedule; an on-policy learner (REINFORCE) can keep whole
episodes and update when they end; a reference policy learns nothing. Actions may be Box
vectors or discrete item ids: the trainer passes them from ``act``/``explore`` to the env and
back into ``Transitions`` without looking at them.

Units and call order, for each vector step of training (N users stepped together):

1. ``explore(obs)``: ``obs`` is ``(N, obs_dim)`` float32; returns ``(N, ...)`` actions in the
   env's own units. Each call counts N user-steps of collection towards the agent's own update
   schedule (``macs_exp.agents.schedule``): an off-policy agent explores uniformly until
   ``learning_starts`` user-steps have been collected.
2. ``observe(real)``: the real transitions of that vector step (N rows).
3. ``add_extra(extra)``: transitions an augmenter synthesised from that step (any number of
   rows, possibly none); the agent decides how to learn from them (an off-policy agent stores
   them beside the real ones; an on-policy agent may ignore them).
4. ``learn()``: called once per vector step, after 2 and 3; runs the updates the agent's
   schedule says are due and returns one dict of mean losses per update it ran (an empty list
   when none was due). The trainer averages them over its logging window.

``act(obs, deterministic=True)`` is the evaluation policy; ``frozen_policy()`` is a copy of it
that later updates leave unchanged (MACS builds reward distributions against one).

``allowed``, where a caller passes it to ``act``/``explore`` or a policy, is the ``(N, n_items)``
bool mask of the items the env would show from the state ``obs`` was read from (only envs with
an item catalogue have one, ``macs_exp.envs.base.allowed_items``). An agent that chooses items
itself (``algo.action_mapping=knn``) chooses among them; every other agent ignores it. None
means "not known": every item is allowed.

``users``, likewise, is the ``(N,)`` int64 dataset index of the user each row's state belongs to,
where the env serves a dataset's users (``macs_exp.envs.base.slot_users``). Only an agent that
reasons from the user's identity (``algo=pgpr`` walks a knowledge graph from the user's node)
reads it; the others ignore it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from omegaconf import MISSING

from macs_exp.schema import Schema

# What one ``learn`` call returns: each update's mean losses, by name.
Updates = list[dict[str, float]]


class Policy(Protocol):
    """A deterministic policy: a batch of observations to a batch of actions in the env's
    units, among the ``allowed`` items where the env has a catalogue."""

    def __call__(
        self, obs: torch.Tensor, *, allowed: torch.Tensor | None = None, users: torch.Tensor | None = None
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class Transitions:
    """A batch of transitions, one row per user: ``(B, obs_dim)`` observations, ``(B, ...)``
    actions in the env's units, ``(B,)`` float rewards and ``(B,)`` bool episode ends.

    ``next_obs`` is the true next observation, also where the episode ended (never the first
    observation of the replacement user); ``terminated`` stops bootstrapping, ``truncated`` ends
    an episode that a value function should still bootstrap through.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    # Synthesised transitions only: the row of the vector step's real transitions each row was
    # made from, and whether each row's next observation is that real row's own, so that the
    # real trajectory's return continues from it (MACS's twins, the random mask) or not (CTRL's
    # generated next states). An on-policy agent needs both to give a row a return.
    source: torch.Tensor | None = None
    continues_real: bool = False

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    def select(self, rows: torch.Tensor) -> Transitions:
        """The rows picked by a boolean mask or an index tensor."""
        return Transitions(
            self.obs[rows],
            self.actions[rows],
            self.rewards[rows],
            self.next_obs[rows],
            self.terminated[rows],
            self.truncated[rows],
            None if self.source is None else self.source[rows],
            self.continues_real,
        )

    def derived(self, rows: torch.Tensor, *, continues_real: bool, **changes: torch.Tensor) -> Transitions:
        """Synthesised transitions made from the real rows picked by ``rows`` (a boolean mask),
        with ``changes`` to their fields, each row linked to the real row it came from."""
        picked = self.select(rows)
        source = rows.nonzero().squeeze(1) if rows.dtype == torch.bool else rows
        return dataclasses.replace(picked, source=source, continues_real=continues_real, **changes)


@dataclass
class AgentConfig(Schema):
    """What every ``algo`` option has: its name. Subclasses hold the hyperparameters."""

    name: str = MISSING
    # Whether the agent learns at all: reference policies do not, so only plain training
    # (a mode that adds nothing to learn from) has a meaning for them.
    learns: ClassVar[bool] = True
    # Whether it walks the dataset's knowledge graph (``ItemSpace.graph``), which the
    # composition root then builds from the side files (the ``kg`` group).
    needs_graph: ClassVar[bool] = False


@runtime_checkable
class Agent(Protocol):
    name: str

    def act(
        self,
        obs: torch.Tensor,
        deterministic: bool = False,
        allowed: torch.Tensor | None = None,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor: ...

    def explore(
        self, obs: torch.Tensor, allowed: torch.Tensor | None = None, users: torch.Tensor | None = None
    ) -> torch.Tensor: ...

    def observe(self, real: Transitions) -> None: ...

    def add_extra(self, extra: Transitions) -> None: ...

    def learn(self) -> Updates: ...

    def frozen_policy(self) -> Policy: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def save(self, path: str | Path) -> None: ...

    def load(self, path: str | Path) -> None: ...


@runtime_checkable
class Resumable(Protocol):
    """A part of a run (an agent, an augmenter) whose whole training state can be saved and
    restored, so that a killed run resumes as if never stopped (``trainer.resume``). For an
    agent that is ``state_dict`` (the networks) plus what training also needs, such as the
    replay buffer, the update schedule and the random stream. The state holds tensors, plain
    values and containers of them only. Optional: a run with a part that is not resumable
    trains as before but writes no checkpoint."""

    def training_state(self) -> dict[str, Any]: ...

    def load_training_state(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class ReportsMetrics(Protocol):
    """An agent with metrics of its own beyond its losses (PGPR's ``pgpr/walk_fail_rate``):
    the trainer logs them, under their full names, at every logging window."""

    def window_metrics(self) -> dict[str, float]:
        """The metrics since the last call, which restarts them."""
        ...


@runtime_checkable
class Explains(Protocol):
    """An agent that can say why it recommended what it did (PGPR's paths): after a
    deterministic ``act``, one explanation per row, None where it has none."""

    def explanations(self) -> list[str | None]: ...


@runtime_checkable
class SamplesActions(Protocol):
    """An agent whose behaviour policy is a distribution it can draw from with a caller's
    random stream, leaving its own untouched (TPGR): CTRL draws its alternative actions a' from
    it, so that they are what the policy itself might have done."""

    def sample_actions(
        self,
        obs: torch.Tensor,
        allowed: torch.Tensor,
        generator: torch.Generator,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor: ...
