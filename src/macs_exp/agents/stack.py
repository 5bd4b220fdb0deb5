"""Seed stacks: the agents of several seeds, updated together.

Seed-parallel training (``trainer.parallel_seeds``) runs K copies of one configuration that
differ only in their seed. Each seed keeps its own agent, built exactly as a single run builds
it (so its initial weights, random stream, replay buffer and update schedule are that run's);
``SeedStack`` then moves the K agents' learned tensors into stacked ones with a leading member
dimension and leaves each agent working on views of its slice. One update of the stack is one
batched forward and backward pass for all seeds, which is where a small actor-critic spends its
time in Python and kernel-launch overhead rather than arithmetic.

Nothing is shared between the members but the compute: each member samples its own buffer with
its own generator, draws its own noise from it, and its losses are reduced on its own slice
(the algorithms' ``_train_step`` reduces from the last dimension, so the same lines serve one
agent and a stack). A NaN in one member stays in its slice.

Agents that cannot be stacked (other algorithms, ``action_mapping=knn``) are updated one after
another by ``Separate``: the seeds still run in one process, without the batched update.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any, Protocol, cast

import torch
from torch import nn

from macs_exp.agents.base import Adam, DivergenceError, OffPolicyAgent
from macs_exp.agents.buffer import Batch, ReplayBuffer
from macs_exp.agents.networks import stack_members
from macs_exp.agents.protocol import Agent, Updates


class Learner(Protocol):
    def learn(self, live: Sequence[int]) -> dict[int, Updates | Exception]:
        """Runs the updates due for the members ``live`` (indices); returns each one's updates,
        or the exception its update raised (the others are not stopped by it)."""
        ...


def seed_learner(agents: Sequence[Agent]) -> Learner:
    """A ``SeedStack`` for agents it can stack, else ``Separate``."""
    if _stackable(agents):
        return SeedStack(cast(list[OffPolicyAgent], list(agents)))
    return Separate(agents)


def _stackable(agents: Sequence[Agent]) -> bool:
    first = agents[0]
    return (
        isinstance(first, OffPolicyAgent)
        and all(type(a) is type(first) for a in agents)
        and all(cast(OffPolicyAgent, a).mapping is None for a in agents)
    )


class Separate:
    """Agents updated one after another."""

    def __init__(self, agents: Sequence[Agent]) -> None:
        self.agents = list(agents)

    def learn(self, live: Sequence[int]) -> dict[int, Updates | Exception]:
        outcome: dict[int, Updates | Exception] = {}
        for k in live:
            try:
                outcome[k] = self.agents[k].learn()
            except Exception as err:
                outcome[k] = err
        return outcome


class SeedStack:
    """K off-policy agents of one algorithm and configuration, updated as one (module doc)."""

    def __init__(self, members: list[OffPolicyAgent]) -> None:
        self.members = members
        self.twin = _stacked_twin(members)

    def learn(self, live: Sequence[int]) -> dict[int, Updates | Exception]:
        """Every live member's schedule says the same (they collect the same user-steps); members
        no longer live (finished or failed) are updated too, harmlessly, as nothing reads them."""
        due = {k: self.members[k].schedule.due() for k in live}
        plans = set(due.values())
        if len(plans) > 1:
            raise RuntimeError(f"the seeds of a stack are out of step (updates, gradient steps): {due}")
        updates, gradient_steps = plans.pop() if plans else (0, 0)
        outcome: dict[int, Updates | Exception] = {k: [] for k in live}
        for _ in range(updates):
            for k, result in enumerate(self._update(gradient_steps)):
                done = outcome.get(k)
                if isinstance(done, list):
                    outcome[k] = result if isinstance(result, Exception) else [*done, result]
        return outcome

    def _update(self, gradient_steps: int) -> list[dict[str, float] | DivergenceError]:
        """``gradient_steps`` batched updates; each member's mean losses, or the error of its
        first loss that was not finite (what its agent alone would have raised)."""
        twin, members = self.twin, self.members
        sums: list[dict[str, float]] = [{} for _ in members]
        failed: dict[int, DivergenceError] = {}
        for _ in range(gradient_steps):
            losses = twin._train_step(twin.buffer.sample(twin.cfg.batch_size, twin.generator))
            twin.n_updates += 1
            for member in members:
                member.n_updates = twin.n_updates
            shape = (len(members),)
            rows = torch.stack([torch.broadcast_to(v.detach(), shape) for v in losses.values()]).T.tolist()
            for k, row in enumerate(rows):
                for key, value in zip(losses, row, strict=True):
                    if not math.isfinite(value) and k not in failed:
                        failed[k] = DivergenceError(members[k].diverged().format(key=key, value=value))
                    sums[k][key] = sums[k].get(key, 0.0) + value
        return [
            failed.get(k) or {key: v / gradient_steps for key, v in sums[k].items()}
            for k in range(len(members))
        ]


class MemberBuffers:
    """The members' own replay buffers, sampled together: member k's rows from its buffer with
    its generator, stacked into ``(K, batch, width)``."""

    def __init__(self, buffers: list[ReplayBuffer]) -> None:
        self.buffers = buffers

    def sample(self, batch_size: int, generators: Sequence[torch.Generator]) -> Batch:
        rows = [b.sample_rows(batch_size, g) for b, g in zip(self.buffers, generators, strict=True)]
        return self.buffers[0].split(torch.stack(rows))


def _stacked_twin(members: list[OffPolicyAgent]) -> OffPolicyAgent:
    """An agent of the members' class whose networks, learned tensors and optimisers are the
    stacks of theirs (theirs become views), whose generator is theirs, one per member, and whose
    buffer samples theirs: its ``_train_step`` updates every member at once."""
    first = members[0]
    twin = copy.copy(first)
    counterparts: dict[int, torch.Tensor] = {}
    optimisers: list[str] = []
    for name, module in first.modules().items():
        if isinstance(module, nn.Module):
            stacked, pairs = stack_members([cast(nn.Module, m.modules()[name]) for m in members])
            counterparts.update(pairs)
            setattr(twin, name, stacked)
        else:
            optimisers.append(name)
    for name in first.member_tensors():
        own: list[torch.Tensor] = [getattr(m, name) for m in members]
        stacked_tensor = torch.stack([t.detach() for t in own]).requires_grad_(own[0].requires_grad)
        for k, tensor in enumerate(own):
            tensor.data = stacked_tensor.data[k]
        counterparts[id(own[0])] = stacked_tensor
        setattr(twin, name, stacked_tensor)
    for name in optimisers:
        adams = [cast(Adam, m.modules()[name]) for m in members]
        setattr(twin, name, Adam.stacked(adams, [counterparts[id(p)] for p in adams[0].params]))
    # The twin's stream and buffer are the members', one each (``randn`` and ``_train_step`` take
    # either); their types differ from a single agent's, hence the casts.
    twin.generator = cast(Any, [m.generator for m in members])
    twin.buffer = cast(Any, MemberBuffers([m.buffer for m in members]))
    twin._wire()
    return twin
