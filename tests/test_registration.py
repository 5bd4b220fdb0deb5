"""The MACS/* gymnasium ids: registered by ``import macs_exp``; the batched-only ones explain
``gym.make_vec`` when ``gym.make`` is tried."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from macs_exp.envs import RATING_ID, SESSION_ID, SYNTHETIC_ID
from macs_exp.envs.rating import RatingVecEnv
from macs_exp.envs.session import SessionVecEnv
from macs_exp.envs.synthetic import SyntheticVecEnv
from macs_exp.envs.vector_only import VectorOnlyEnvError
from test_rating_env import make_data

SYNTHETIC_CALL = (
    "gym.make_vec('MACS/Synthetic-v0', num_envs=N, vectorization_mode='vector_entry_point', device='cpu', "
    "essential_dim=4, trivial_dim=4, step_size=0.5, sharpness=8.0, episode_length=10)"
)
SESSION_CALL = (
    "gym.make_vec('MACS/Session-v0', num_envs=N, vectorization_mode='vector_entry_point', device='cpu', "
    "item_dim=4, history=10, recent=3, sharpness=8.0, engage_clicks=1, episode_length=10)"
)
RATING_CALL = (
    "gym.make_vec('MACS/Rating-v0', num_envs=N, vectorization_mode='vector_entry_point', data=<RatingData>, "
    "split='train', episode_length=10, state_size=10, reward='binary', device='cpu', users=None, "
    "candidates='catalog', state='items', train_reward='logged')"
)
MESSAGES = {
    SYNTHETIC_ID: f"MACS/Synthetic-v0 is a batched (vector-only) env: use {SYNTHETIC_CALL}",
    SESSION_ID: f"MACS/Session-v0 is a batched (vector-only) env: use {SESSION_CALL}",
    RATING_ID: f"MACS/Rating-v0 is a batched (vector-only) env: use {RATING_CALL}; data from "
    "macs_exp.data.load_rating_data(env_cfg, data_cfg), and with split='test', num_envs=None serves "
    "every evaluation user",
}


def fresh_python(code: str) -> list[str]:
    """The output lines of ``code`` run by a new interpreter, where nothing is imported yet."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout.splitlines()


def test_import_macs_exp_registers_every_id_without_loading_torch() -> None:
    lines = fresh_python(
        "import sys, gymnasium as gym, macs_exp\n"
        "print(sorted(i for i in gym.registry if i.startswith('MACS/')), 'torch' in sys.modules)\n"
        "env = gym.make('MACS/VirtualTaobao-v0')\n"
        "print(type(env.unwrapped).__name__, env.reset(seed=0)[0].shape)\n"
    )
    assert lines == [
        "['MACS/Rating-v0', 'MACS/Session-v0', 'MACS/Synthetic-v0', 'MACS/VirtualTaobao-v0'] False",
        "VirtualTaobaoEnv (91,)",
    ]


def test_gym_make_imports_macs_exp_itself_with_a_module_prefix() -> None:
    lines = fresh_python(
        "import gymnasium as gym\n"
        "print(type(gym.make('macs_exp:MACS/VirtualTaobao-v0').unwrapped).__name__)\n"
    )
    assert lines == ["VirtualTaobaoEnv"]


@pytest.mark.parametrize("env_id", [SYNTHETIC_ID, SESSION_ID, RATING_ID])
def test_gym_make_of_a_vector_only_id_shows_the_make_vec_call(env_id: str) -> None:
    with pytest.raises(VectorOnlyEnvError) as made:
        gym.make(env_id)
    assert str(made.value) == MESSAGES[env_id]
    assert isinstance(made.value, gym.error.Error)
    # Sync vectorisation makes single envs, so it is refused the same way.
    with pytest.raises(VectorOnlyEnvError) as synced:
        gym.make_vec(env_id, num_envs=2, vectorization_mode="sync")
    assert str(synced.value) == MESSAGES[env_id]


def test_the_make_vec_calls_shown_work() -> None:
    data = make_data(
        train=[[(0, 5), (1, 2)], [(2, 4)]], test=[[(3, 5)], [(4, 1)]], features=np.eye(20, dtype=np.float32)
    )
    names = {"gym": gym, "N": 2, "data": data}
    synthetic = eval(SYNTHETIC_CALL, names)
    session = eval(SESSION_CALL, names)
    rating = eval(RATING_CALL.replace("<RatingData>", "data"), names)
    assert isinstance(synthetic, SyntheticVecEnv) and synthetic.num_envs == 2
    assert isinstance(session, SessionVecEnv) and session.reset(seed=0)[0].shape == (2, 44)
    assert isinstance(rating, RatingVecEnv) and rating.num_envs == 2
    assert rating.reset(seed=0)[0].shape == (2, 200)
