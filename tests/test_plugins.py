"""The plug-in architecture: agents and augmenters reach the trainer only through their
protocols, so a discrete on-policy agent without a replay buffer and a new mode run through the
same loop and the same composition root, unchanged."""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from hydra.core.config_store import ConfigStore

from conftest import REPO, TINY
from macs_exp import plugins
from macs_exp.agents import Agent, Policy, Transitions
from macs_exp.agents.schedule import UpdateSchedule
from macs_exp.app import compose_config
from macs_exp.envs.base import BatchedEnv
from macs_exp.reports.runs import mode_order, row_label
from macs_exp.schema import ConfigError
from macs_exp.tracking import NullTracker
from macs_exp.trainer.augmenter import AugmenterContext, ModeConfig
from macs_exp.trainer.config import TrainerConfig
from macs_exp.trainer.run import run_experiment
from macs_exp.trainer.trainer import Trainer


class ChoiceEnv:
    """N users pick one of 3 items per step for 4 steps; item ``t % 3`` earns 1 at step t."""

    def __init__(self, num_envs: int) -> None:
        self.metadata: dict[str, Any] = {}
        self.num_envs = num_envs
        self.single_observation_space = gym.spaces.Box(0.0, 4.0, (1,), np.float32)
        self.single_action_space = gym.spaces.Discrete(3)
        self.t = np.zeros(num_envs, dtype=np.int64)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        self.t[:] = 0
        return self._obs(), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        assert actions.dtype == np.int64 and actions.shape == (self.num_envs,)
        rewards = (actions == self.t % 3).astype(np.float64)
        self.t += 1
        done = self.t == 4
        final = self._obs()
        self.t[done] = 0
        return self._obs(), rewards, done, np.zeros_like(done), {"final_obs": final, "_final_obs": done}

    def _obs(self) -> np.ndarray:
        return self.t[:, None].astype(np.float32)

    def snapshot(self) -> np.ndarray:
        return self.t.copy()

    def restore(self, state: np.ndarray) -> None:
        self.t = state.copy()

    def close(self) -> None:
        pass


class EpisodeLearner:
    """An on-policy agent over discrete items, with no replay buffer: it keeps the transitions
    of the episodes under way and "updates" once per finished episode (REINFORCE's shape)."""

    name = "episodes"

    def __init__(self) -> None:
        self.generator = torch.Generator().manual_seed(0)
        self.running: list[Transitions] = []
        self.finished_episodes = 0
        self.extra_rows = 0
        self.observed_rows = 0
        self._due = 0

    def act(
        self,
        obs: torch.Tensor,
        deterministic: bool = False,
        allowed: torch.Tensor | None = None,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # Item ids of a discrete env without a catalogue or users: both are always None here.
        if deterministic:
            return (obs[:, 0].long() % 3).clone()
        return torch.randint(3, (obs.shape[0],), generator=self.generator)

    def explore(
        self, obs: torch.Tensor, allowed: torch.Tensor | None = None, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.act(obs)

    def observe(self, real: Transitions) -> None:
        self.observed_rows += len(real)
        self._due += int((real.terminated | real.truncated).sum())

    def add_extra(self, extra: Transitions) -> None:
        self.extra_rows += len(extra)

    def learn(self) -> list[dict[str, float]]:
        updates = [{"policy_loss": float(i)} for i in range(self._due)]
        self.finished_episodes += self._due
        self._due = 0
        return updates

    def frozen_policy(self) -> Policy:
        return lambda obs, allowed=None, users=None: self.act(obs, deterministic=True, allowed=allowed)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def save(self, path: str | Path) -> None:
        torch.save({}, path)

    def load(self, path: str | Path) -> None:
        pass


class CountingAugmenter:
    """Records the order of the hooks and adds one twin per real row."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.lengths: list[int] = []
        self.episode_ends = 0

    def start(self, agent: Agent) -> dict[str, float]:
        self.calls.append("start")
        return {"count/started": 1.0}

    def before_step(self, env: BatchedEnv, obs: torch.Tensor, actions: torch.Tensor) -> None:
        self.calls.append("before")

    def after_step(self, real: Transitions) -> list[Transitions]:
        self.calls.append("after")
        return [real]

    def episodes_ended(
        self, agent: Agent, returns: np.ndarray, lengths: np.ndarray, steps: int
    ) -> dict[str, float]:
        self.calls.append("ended")
        self.lengths += lengths.tolist()
        self.episode_ends += len(returns)
        return {}

    def metrics(self) -> dict[str, float]:
        return {"count/episode_ends": float(self.episode_ends)}

    def queries_per_step(self) -> int:
        return 0

    def finish(self) -> dict[str, str]:
        self.calls.append("finish")
        return {"count/finished": "yes"}


def trainer_cfg(total_steps: int) -> TrainerConfig:
    return TrainerConfig(
        total_steps=total_steps,
        budget="user_steps",
        eval_every=total_steps,
        eval_episodes=2,
        eval_seed=0,
        log_every=8,
        progress="none",
        torch_threads=1,
    )


def test_a_discrete_on_policy_agent_without_a_buffer_trains_through_the_same_loop(tmp_path: Path) -> None:
    agent, augmenter = EpisodeLearner(), CountingAugmenter()
    trainer = Trainer(
        agent=agent,
        env=ChoiceEnv(2),
        eval_env=ChoiceEnv(2),
        cfg=trainer_cfg(24),
        tracker=NullTracker(),
        seed=0,
        checkpoint_dir=tmp_path,
        augmenter=augmenter,
    )
    result = trainer.train()
    assert isinstance(agent, Agent) and not hasattr(agent, "buffer")
    # 12 vector steps of 2 users: 6 episodes of 4 steps, one update each.
    assert (agent.observed_rows, agent.extra_rows, agent.finished_episodes) == (24, 24, 6)
    assert augmenter.calls[:4] == ["start", "before", "after", "before"]
    assert augmenter.calls.count("ended") == 3 and augmenter.lengths == [4] * 6
    assert augmenter.calls[-1] == "finish" and result.env_steps == 24
    assert result.history["count/started"] == [(0, 1.0)]
    assert result.history["count/episode_ends"] == [(8, 2.0), (16, 4.0), (24, 6.0)]
    # The window's mean over its updates: episodes end at steps 8, 16, 24, two at a time.
    assert result.history["train/policy_loss"] == [(8, 0.5), (16, 0.5), (24, 0.5)]
    # The deterministic policy picks the rewarded item at every step.
    assert result.final_eval["eval/episode_reward"] == 4.0 and result.key_metric == "eval/episode_reward"


@dataclass
class CountingConfig(ModeConfig):
    pass


@pytest.fixture
def counting_mode() -> Any:
    """A mode added the way a new one is: its module registers the factory and the schema, and
    its YAML (here a ConfigStore entry) is the option."""
    built: list[CountingAugmenter] = []

    def counting(context: AugmenterContext) -> CountingAugmenter:
        assert context.cfg.mode.name == "counting" and context.seed == 3
        built.append(CountingAugmenter())
        return built[-1]

    plugins.mode("counting", CountingConfig, suffix="-C", order=50)(counting)
    ConfigStore.instance().store(group="mode", name="counting", node=CountingConfig(name="counting"))
    yield built
    del plugins.MODES["counting"]


def test_a_new_mode_is_one_registered_factory(counting_mode: list[CountingAugmenter], tmp_path: Path) -> None:
    cfg = compose_config(["mode=counting", "seed=3", "tracking.enabled=false", *TINY])
    result = run_experiment(cfg, tmp_path / "run")
    (augmenter,) = counting_mode
    assert augmenter.calls[0] == "start" and augmenter.calls.count("before") == 400
    assert result.history["count/started"] == [(0, 1.0)]
    # The reports learn the new mode's row name and position from the mode itself.
    assert row_label("sac", "counting") == "SAC-C"
    assert mode_order() == ["baseline", "expert", "joint", "ctrl", "counting", "random_mask"]


def test_every_shipped_option_is_a_registered_plug_in() -> None:
    plugins.discover()
    options = {
        group: sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml")) for group in ("algo", "mode")
    }
    # Every YAML option has its plug-in and every plug-in its YAML option.
    assert options["algo"] == sorted(plugins.AGENTS)
    assert options["mode"] == sorted(plugins.MODES)
    assert {"ddpg", "popular", "random", "sac", "td3"} <= set(options["algo"])
    assert [row_label("ddpg", m) for m in mode_order()][:3] == ["DDPG", "DDPG-E", "DDPG-J"]
    assert row_label("ddpg", "random_mask") == "DDPG-RM" and row_label("ddpg", "ctrl") == "DDPG-CTRL"
    assert row_label("popular", "baseline") == "Popular" and row_label("td3", "old_mode") == "TD3-OLD_MODE"


def test_the_trainer_knows_no_mode_and_imports_nothing_of_macs() -> None:
    source = (REPO / "src" / "macs_exp" / "trainer" / "trainer.py").read_text()
    tree = ast.parse(source)
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and m.startswith("macs_exp.macs")]
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    plugins.discover()
    assert not strings & set(plugins.MODES), "the trainer names a mode"


def test_schedule_is_sb3s_per_step_and_catches_up_over_a_window() -> None:
    # The trainer's use: one call per vector step of 4 users, an update every 2nd vector step.
    per_step = UpdateSchedule(learning_starts=8, train_freq=2, gradient_steps=-1)
    due = []
    for _ in range(6):
        warm = per_step.warming_up()
        per_step.record(4)
        due.append((warm, per_step.due()))
    assert due == [
        (True, (0, 0)),
        # Collected at random, but 8 user-steps are in: the first update, as in SB3;
        # gradient_steps=-1 makes it 4 users x train_freq 2 gradient steps.
        (True, (1, 8)),
        (False, (0, 8)),  # vector step 3 is odd
        (False, (1, 8)),
        (False, (0, 8)),
        (False, (1, 8)),
    ]
    # Stage 2's use: a window of 5 vector steps closes, then it asks once; the steps collected
    # before learning_starts are never made up for.
    window = UpdateSchedule(learning_starts=3, train_freq=1, gradient_steps=2)
    for _ in range(2):
        window.record(1)
    assert window.due() == (0, 0)
    for _ in range(5):
        window.record(1)
    assert window.due() == (5, 2)
    assert window.due() == (0, 2)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["expert.algo.tau=0"], r"^expert\.algo\.tau=0\.0 is invalid: it must be in \(0, 1\]$"),
        (
            ["algo@macs.algo=sac", "macs.algo.ent_coef=often"],
            r"^macs\.algo\.ent_coef=often is invalid: it must be 'auto', 'auto_<initial value>' or a number",
        ),
        (
            ["mode=random_mask", "mode.mask_prob=2"],
            r"^mode\.mask_prob=2\.0 is invalid: it must be in \[0, 1\]$",
        ),
        (
            ["trainer.progress=loud"],
            r"^trainer\.progress=loud is invalid: it must be one of auto, bar, log, none$",
        ),
        (["env.num_envs=0"], r"^env\.num_envs=0 is invalid: it must be at least 1$"),
    ],
)
def test_nested_schemas_are_checked_by_their_own_rules_under_their_full_key(
    overrides: list[str], message: str, tmp_path: Path
) -> None:
    cfg = compose_config([*overrides, "tracking.enabled=false"])
    with pytest.raises(ConfigError, match=message):
        run_experiment(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("algo.batch_size=0", "error: algo.batch_size=0 is invalid: it must be at least 1"),
        ("macs.algo.gamma=2", "error: macs.algo.gamma=2.0 is invalid: it must be in [0, 1]"),
    ],
)
def test_cli_prints_one_line_without_a_traceback_and_exits_2(
    override: str, line: str, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "macs_exp", override],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [line]
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


def test_a_reference_agent_needs_no_schedule_or_buffer_in_the_loop(tmp_path: Path) -> None:
    trainer_only = [o for o in TINY if o.startswith("trainer.")]
    cfg = compose_config(["algo=random", "mode=baseline", "tracking.enabled=false", *trainer_only])
    result = run_experiment(cfg, tmp_path / "run")
    assert "train/critic_loss" not in result.history and result.steps == 400


@pytest.mark.slow
def test_a_sweep_job_with_a_bad_value_logs_the_message_alone(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "macs_exp", "-m", "algo.batch_size=0", "trainer.total_steps=10"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr  # the sweep reports a job that did not finish
    output = proc.stdout + proc.stderr
    assert "job 0 failed: algo.batch_size=0 is invalid: it must be at least 1" in output
    assert "Traceback" not in output
    (traceback_file,) = (tmp_path / "outputs" / "mlartifacts").rglob("traceback.txt")
    assert "algo.batch_size=0 is invalid" in traceback_file.read_text()
