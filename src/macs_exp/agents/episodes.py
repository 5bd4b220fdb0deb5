"""Whole episodes for an on-policy learner (TPGR's REINFORCE), and the synthesised transitions
attached to their steps.

The trainer hands over one vector step at a time and slots finish their episodes at different
steps (``env.candidates=rated``), so every real row keeps its slot's episode id and step; a
batch is the rows of the episodes that have ended. A synthesised row (``Transitions.source``)
is attached to the real row it was made from and leaves with that row's episode.

Everything is kept as tensors chunked per vector step, so that ``state`` / ``load_state`` give
``trainer.resume`` the episodes that were still running.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# The fields of a real row and of a synthesised one.
REAL = ("obs", "item", "allowed", "logp", "reward", "episode", "t", "row")
EXTRA = ("obs", "item", "reward", "next_obs", "terminated", "source", "continues", "logp")


@dataclass(frozen=True)
class EpisodeBatch:
    """The rows of finished episodes: real ones (with their discounted return ``ret`` and the
    return from the next step on, ``next_ret``) and the synthesised ones attached to them
    (with ``at``, the position of their source row among the real ones)."""

    real: dict[str, torch.Tensor]
    extra: dict[str, torch.Tensor]
    episodes: int


def _cat(chunks: list[dict[str, torch.Tensor]], keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([c[k] for c in chunks]) for k in keys} if chunks else {}


class Episodes:
    """Rows of the ``n_slots`` slots' episodes until they are taken as a batch."""

    def __init__(self, n_slots: int, gamma: float) -> None:
        self.gamma = gamma
        self.real: list[dict[str, torch.Tensor]] = []
        self.extra: list[dict[str, torch.Tensor]] = []
        self.episode = torch.arange(n_slots)
        self.t = torch.zeros(n_slots, dtype=torch.int64)
        self.next_episode = n_slots
        self.next_row = 0
        self.finished: list[int] = []
        self._last_rows = torch.zeros(0, dtype=torch.int64)

    def add_real(self, step: dict[str, torch.Tensor], done: torch.Tensor) -> None:
        """One vector step's rows (``obs``, ``item``, ``allowed``, ``logp``, ``reward``), one per
        slot, and which slots' episodes ended with it."""
        n = len(done)
        rows = torch.arange(self.next_row, self.next_row + n)
        self.next_row += n
        self._last_rows = rows
        self.real.append({**step, "episode": self.episode.clone(), "t": self.t.clone(), "row": rows})
        self.t += 1
        if done.any():
            self.finished.extend(self.episode[done].tolist())
            count = int(done.sum())
            self.episode[done] = torch.arange(self.next_episode, self.next_episode + count)
            self.next_episode += count
            self.t[done] = 0

    def add_extra(self, rows: dict[str, torch.Tensor], source: torch.Tensor) -> None:
        """Synthesised rows made from the last vector step's real rows ``source`` (slot indices)."""
        self.extra.append({**rows, "source": self._last_rows[source]})

    @property
    def n_finished(self) -> int:
        return len(self.finished)

    def take(self) -> EpisodeBatch:
        """The finished episodes' rows, removed from the store, with their returns."""
        real, extra = _cat(self.real, REAL), _cat(self.extra, EXTRA)
        done = torch.isin(real["episode"], torch.tensor(self.finished, dtype=torch.int64))
        self.real = [{k: v[~done] for k, v in real.items()}]
        batch_real = {k: v[done] for k, v in real.items()}
        episodes = len(self.finished)
        self.finished = []
        batch_real["ret"], batch_real["next_ret"] = self._returns(batch_real)
        batch_extra: dict[str, torch.Tensor] = {}
        if extra:
            attached = torch.isin(extra["source"], batch_real["row"])
            self.extra = [{k: v[~attached] for k, v in extra.items()}]
            batch_extra = {k: v[attached] for k, v in extra.items()}
            position = torch.searchsorted(batch_real["row"], batch_extra["source"])
            batch_extra["at"] = position
        return EpisodeBatch(batch_real, batch_extra, episodes)

    def _returns(self, rows: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """G_t = sum_k gamma^k r_{t+k} within each episode, and G_{t+1} (0 after the last step)."""
        _, episode = torch.unique(rows["episode"], return_inverse=True)
        t = rows["t"]
        grid = torch.zeros(int(episode.max()) + 1 if len(t) else 0, int(t.max()) + 2 if len(t) else 1)
        grid[episode, t] = rows["reward"].float()
        for col in range(grid.shape[1] - 2, -1, -1):
            grid[:, col] += self.gamma * grid[:, col + 1]
        return grid[episode, t], grid[episode, t + 1]

    def state(self) -> dict[str, Any]:
        return {
            "real": _cat(self.real, REAL),
            "extra": _cat(self.extra, EXTRA),
            "episode": self.episode,
            "t": self.t,
            "counters": [self.next_episode, self.next_row],
            "finished": list(self.finished),
            "last_rows": self._last_rows,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.real = [state["real"]] if state["real"] else []
        self.extra = [state["extra"]] if state["extra"] else []
        self.episode, self.t = state["episode"].clone(), state["t"].clone()
        self.next_episode, self.next_row = (int(v) for v in state["counters"])
        self.finished = [int(v) for v in state["finished"]]
        self._last_rows = state["last_rows"].clone()
