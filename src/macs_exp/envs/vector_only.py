"""Single-env entry points of the ids that exist only as batched envs: they say how to make one.

Without a single-env entry point ``gym.make`` would fail with "entry_point is not specified",
which does not say that ``gym.make_vec`` works. These entry points raise an error that shows
the ``gym.make_vec`` call instead, its keyword arguments read off the vector entry point's
signature, so that the hint stays in step with the env's constructor.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NoReturn

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator

from macs_exp.envs import RATING_ID, SESSION_ID, SYNTHETIC_ID


class VectorOnlyEnvError(gym.error.Error):
    """``gym.make`` of an id that has only a vector entry point."""


def _make_vec_call(env_id: str) -> str:
    """The ``gym.make_vec`` call for ``env_id``: required arguments as ``<type>``, the others at
    their defaults."""
    entry_point = gym.spec(env_id).vector_entry_point
    assert isinstance(entry_point, str)  # envs/__init__.py registers strings only
    kwargs = [
        f"{name}={f'<{param.annotation}>' if param.default is param.empty else repr(param.default)}"
        for name, param in inspect.signature(load_env_creator(entry_point)).parameters.items()
        if name != "num_envs"
    ]
    return (
        f"gym.make_vec({env_id!r}, num_envs=N, vectorization_mode='vector_entry_point', {', '.join(kwargs)})"
    )


def _refusal(env_id: str, note: str = "") -> Callable[..., NoReturn]:
    def refuse(**kwargs: Any) -> NoReturn:
        raise VectorOnlyEnvError(
            f"{env_id} is a batched (vector-only) env: use {_make_vec_call(env_id)}{note}"
        )

    return refuse


synthetic = _refusal(SYNTHETIC_ID)
session = _refusal(SESSION_ID)
rating = _refusal(
    RATING_ID,
    "; data from macs_exp.data.load_rating_data(env_cfg, data_cfg), and with split='test', "
    "num_envs=None serves every evaluation user",
)
