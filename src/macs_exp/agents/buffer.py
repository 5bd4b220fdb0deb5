"""A preallocated replay buffer for batched transitions.

All fields of a transition live side by side in one ``(capacity, width)`` tensor, so that a
minibatch is a single gather rather than one per field. ``torch.empty`` leaves untouched
pages unallocated, so a 1e6 buffer costs memory only as it fills.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Batch:
    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    dones: torch.Tensor


class ReplayBuffer:
    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device) -> None:
        if capacity <= 0:
            raise ValueError(f"buffer_size must be positive, got {capacity}")
        self.capacity = capacity
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        self._cols = _columns(obs_dim, act_dim)
        self.data = torch.empty(capacity, self._cols["width"], device=device)
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        next_obs: torch.Tensor,
        dones: torch.Tensor,
    ) -> None:
        """Stores a batch of transitions (first dimension = batch), overwriting the oldest."""
        rows = torch.cat([obs, actions, rewards.reshape(-1, 1), next_obs, dones.reshape(-1, 1)], dim=1).to(
            self.data.dtype
        )
        n = rows.shape[0]
        if n > self.capacity:
            rows, n = rows[-self.capacity :], self.capacity
        first = min(n, self.capacity - self.pos)
        self.data[self.pos : self.pos + first] = rows[:first]
        if first < n:
            self.data[: n - first] = rows[first:]
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        return self.split(self.sample_rows(batch_size, generator))

    def sample_rows(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """``batch_size`` stored rows drawn uniformly with replacement, as one tensor."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        idx = torch.randint(self.size, (batch_size,), generator=generator, device=generator.device)
        return self.data[idx.to(self.data.device)]

    def split(self, rows: torch.Tensor) -> Batch:
        """Rows (``(..., width)``: one buffer's, or a seed stack's ``(K, batch, width)``) as fields."""
        c = self._cols
        return Batch(
            obs=rows[..., : c["act"]],
            actions=rows[..., c["act"] : c["rew"]],
            rewards=rows[..., c["rew"]],
            next_obs=rows[..., c["next"] : c["done"]],
            dones=rows[..., c["done"]],
        )

    def state(self) -> dict[str, torch.Tensor | int]:
        """The filled rows only (a buffer fills from row 0), with the write position."""
        return {"rows": self.data[: self.size].clone(), "pos": self.pos}

    def load_state(self, state: dict[str, torch.Tensor | int]) -> None:
        rows, pos = state["rows"], state["pos"]
        assert isinstance(rows, torch.Tensor) and isinstance(pos, int)
        if rows.shape[0] > self.capacity or rows.shape[1] != self.data.shape[1]:
            raise ValueError(
                f"a saved buffer of {tuple(rows.shape)} does not fit this one of {tuple(self.data.shape)}"
            )
        self.data[: rows.shape[0]] = rows.to(self.data.device)
        self.size, self.pos = rows.shape[0], pos


def _columns(obs_dim: int, act_dim: int) -> dict[str, int]:
    act = obs_dim
    rew = act + act_dim
    nxt = rew + 1
    done = nxt + obs_dim
    return {"act": act, "rew": rew, "next": nxt, "done": done, "width": done + 1}
