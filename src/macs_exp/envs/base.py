"""The batched-environment contract shared by every env the trainer runs.

Envs step N users at once (``num_envs``) and reset finished users in the same step
(gymnasium's ``AutoresetMode.SAME_STEP``): the observation returned for a finished user is
already the first observation of its replacement, and the true last observation of the
finished episode is in ``info["final_obs"]`` (a dense ``(N, obs_dim)`` array, rows valid
where ``info["_final_obs"]`` is True). A dense array instead of gymnasium's object array
keeps the hot path vectorised.

``snapshot()`` / ``restore()`` capture and reinstate the complete state, random generator
included, so that "what if another action had been taken here" can be asked without
disturbing the real trajectory.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np


@runtime_checkable
class BatchedEnv(Protocol):
    num_envs: int
    single_observation_space: gym.spaces.Box
    single_action_space: gym.spaces.Box
    metadata: dict[str, Any]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]: ...

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]: ...

    def snapshot(self) -> Any: ...

    def restore(self, state: Any) -> None: ...

    def close(self) -> None: ...
