"""Seed-parallel training: several seeds in one process, each recorded as its own single run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import TINY, TINY_CTRL, TINY_MACS
from macs_exp.agents import Agent, Transitions, make_agent
from macs_exp.agents.base import OffPolicyAgent
from macs_exp.agents.stack import SeedStack, Separate, seed_learner
from macs_exp.app import compose_config
from macs_exp.config import to_config
from macs_exp.schema import ConfigError
from macs_exp.tracking.tags import GROUP_SEEDS_TAG, GROUP_TAG
from macs_exp.trainer.parallel import SeedsFailed, run_seeds
from macs_exp.trainer.result import TrainResult
from macs_exp.trainer.run import run_experiment
from macs_exp.trainer.seeds import seed_config, seed_list
from test_run import artifact_paths

OBS, ACT = 12, 3


def agent(algo: str, seed: int) -> OffPolicyAgent:
    cfg = to_config(compose_config([f"algo={algo}", "algo.learning_starts=8", "algo.batch_size=16"])).algo
    space = gym.spaces.Box(-1, 1, (OBS,), np.float32), gym.spaces.Box(-1, 1, (ACT,), np.float32)
    made = make_agent(cfg, *space, "cpu", seed, None)
    assert isinstance(made, OffPolicyAgent)
    return made


def collect(member: Agent, rng: np.random.Generator) -> None:
    """One vector step of 2 users, with rewards from the seed's own stream."""
    obs = torch.from_numpy(rng.standard_normal((2, OBS)).astype(np.float32))
    actions = member.explore(obs)
    rewards = torch.from_numpy(rng.standard_normal(2).astype(np.float32))
    done = torch.zeros(2, dtype=torch.bool)
    member.observe(Transitions(obs, actions, rewards, 0.9 * obs, done, done))


Losses = list[list[dict[str, float]]]


def train_apart_and_stacked(algo: str, k: int, steps: int) -> tuple[Losses, Losses, list[OffPolicyAgent]]:
    """The losses of k agents trained alone, and of k more of the same seeds trained as a stack."""
    alone, stacked = [agent(algo, s) for s in range(k)], [agent(algo, s) for s in range(k)]
    streams = [np.random.default_rng(s) for s in range(k)], [np.random.default_rng(s) for s in range(k)]
    apart_losses: Losses = [[] for _ in range(k)]
    stack_losses: Losses = [[] for _ in range(k)]
    learner = None
    for _ in range(steps):
        for i in range(k):
            collect(alone[i], streams[0][i])
            collect(stacked[i], streams[1][i])
            apart_losses[i] += alone[i].learn()
        learner = learner or seed_learner(stacked)
        for i, updates in learner.learn(range(k)).items():
            assert isinstance(updates, list)
            stack_losses[i] += updates
    assert isinstance(learner, SeedStack)
    for one, other in zip(alone, stacked, strict=True):
        for a, b in zip(one.actor.parameters(), other.actor.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    return apart_losses, stack_losses, stacked


@pytest.mark.parametrize("algo", ["ddpg", "td3", "sac"])
def test_a_stack_of_one_is_its_agent_alone_to_the_bit(algo: str) -> None:
    apart, stacked, _ = train_apart_and_stacked(algo, 1, 40)
    assert len(apart[0]) == 37
    assert apart == stacked


@pytest.mark.parametrize("algo", ["ddpg", "td3", "sac"])
def test_each_member_of_a_stack_learns_as_its_agent_alone(algo: str) -> None:
    apart, stacked, members = train_apart_and_stacked(algo, 3, 40)
    for mine, theirs in zip(apart, stacked, strict=True):
        assert len(mine) == len(theirs) == 37
        for a, b in zip(mine, theirs, strict=True):
            assert a.keys() == b.keys()
            np.testing.assert_allclose([a[k] for k in a], [b[k] for k in a], rtol=1e-4, atol=1e-5)
    # The seeds stay apart: their losses differ.
    assert apart[0][-1]["critic_loss"] != apart[1][-1]["critic_loss"]
    # A member's saved agent holds its own weights only, in a single agent's layout.
    state = members[1].state_dict()
    first = next(iter(state["actor"].values()))
    assert first.untyped_storage().nbytes() == first.numel() * first.element_size()


def test_agents_that_cannot_stack_learn_one_after_another() -> None:
    class Plain:
        def __init__(self) -> None:
            self.calls = 0

        def learn(self) -> list[dict[str, float]]:
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("boom")
            return [{"loss": float(self.calls)}]

    plain = [Plain(), Plain()]
    learner = seed_learner(plain)  # type: ignore[arg-type]
    assert isinstance(learner, Separate)
    assert learner.learn([0, 1]) == {0: [{"loss": 1.0}], 1: [{"loss": 1.0}]}
    assert learner.learn([1])[1].args == ("boom",)  # type: ignore[union-attr]


def test_seeds_and_parallel_seeds_name_the_runs_seeds() -> None:
    assert seed_list(compose_config(["seed=3", "trainer.parallel_seeds=3"])) == [3, 4, 5]
    assert seed_list(compose_config(["seeds=[7,2]"])) == [7, 2]
    one = seed_config(compose_config(["seeds=[7,2]", "trainer.parallel_seeds=2"]), 2)
    single = compose_config(["seed=2"])
    assert (one.seed, one.seeds, one.trainer.parallel_seeds) == (2, None, 1)
    assert one == single
    for bad in (["seeds=[1,1]"], ["seeds=[]"], ["seeds=[0,1]", "trainer.parallel_seeds=3"]):
        with pytest.raises(ConfigError, match="seeds"):
            to_config(compose_config(bad))
    with pytest.raises(ConfigError, match=r"trainer\.parallel_seeds"):
        run_seeds(compose_config(["trainer.parallel_seeds=0", "tracking.enabled=false"]), "unused")


def test_a_group_resumes_from_its_folder_only(tmp_path: Path) -> None:
    (tmp_path / "group" / "seed_0").mkdir(parents=True)
    cfg = compose_config(["seeds=[0,1]", f"trainer.resume={tmp_path / 'group'}"])
    assert seed_config(cfg, 0).trainer.resume == str(tmp_path / "group" / "seed_0")
    with pytest.raises(ConfigError, match=r"trainer\.resume=.*holds seed_1/ for seed 1"):
        seed_config(cfg, 1)
    with pytest.raises(ConfigError, match="run ids name one seed each"):
        seed_config(compose_config(["seeds=[0,1]", "trainer.resume=0123abcd"]), 0)


def without_timing(result: TrainResult) -> dict[str, list[tuple[int, float]]]:
    return {k: v for k, v in result.history.items() if not k.startswith("perf/")}


JOINT = ["algo=td3", "mode=joint", *TINY, *TINY_MACS, "tracking.enabled=false"]


def test_a_group_of_one_seed_has_the_single_runs_history(tmp_path: Path) -> None:
    single = run_experiment(compose_config([*JOINT, "seed=1"]), tmp_path / "single")
    (grouped,) = run_seeds(compose_config([*JOINT, "seeds=[1]"]), tmp_path / "group")
    assert without_timing(single)["macs/stage2_runs"][-1][1] >= 2
    assert without_timing(grouped) == without_timing(single)
    assert (tmp_path / "group" / "seed_1" / "agent.pt").is_file()


def test_each_seed_of_a_group_is_deterministic(tmp_path: Path) -> None:
    cfg = compose_config([*JOINT, "trainer.parallel_seeds=2"])
    first = run_seeds(cfg, tmp_path / "a")
    again = run_seeds(cfg, tmp_path / "b")
    assert [without_timing(r) for r in first] == [without_timing(r) for r in again]
    assert first[0].history["eval/episode_reward"] != first[1].history["eval/episode_reward"]
    # The evaluations of each seed are those of its single run up to the batched updates'
    # rounding: at step 0, before any update, exactly.
    single = run_experiment(compose_config([*JOINT, "seed=1"]), tmp_path / "single")
    assert first[1].history["eval/ctr"][0] == single.history["eval/ctr"][0]


def client_for(outputs: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow.db'}")


def runs_by_seed(outputs: Path) -> dict[str, Any]:
    client = client_for(outputs)
    experiment = client.get_experiment_by_name("macs")
    runs = client.search_runs([experiment.experiment_id])
    return {(r.data.tags["seed"], r.data.tags.get(GROUP_TAG) is not None): r for r in runs}


def test_each_seed_is_logged_as_its_single_run(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    common = ["algo=sac", "mode=baseline", *TINY, f"tracking.dir={outputs}"]
    run_seeds(compose_config([*common, "seeds=[4,5]"]), tmp_path / "group")
    run_experiment(compose_config([*common, "seed=5"]), tmp_path / "single")
    runs = runs_by_seed(outputs)
    single, grouped, other = runs[("5", False)], runs[("5", True)], runs[("4", True)]
    assert grouped.info.status == other.info.status == "FINISHED"
    assert grouped.data.params == single.data.params
    assert grouped.data.tags[GROUP_TAG] == other.data.tags[GROUP_TAG]
    assert grouped.data.tags[GROUP_SEEDS_TAG] == "4,5"
    linking = {GROUP_TAG, GROUP_SEEDS_TAG, "run_dir", "pid"}
    same = {k: v for k, v in single.data.tags.items() if k not in linking}
    assert {k: v for k, v in grouped.data.tags.items() if k not in linking} == same
    assert grouped.data.tags["mlflow.runName"] == "sac-baseline-virtual_taobao-s5"
    assert grouped.data.tags["run_dir"].endswith("seed_5")
    assert grouped.data.metrics.keys() == single.data.metrics.keys()
    client = client_for(outputs)
    assert artifact_paths(client, grouped.info.run_id) == artifact_paths(client, single.info.run_id)
    steps = [m.step for m in client.get_metric_history(grouped.info.run_id, "eval/ctr")]
    assert steps == [m.step for m in client.get_metric_history(single.info.run_id, "eval/ctr")]


def test_a_nan_in_one_seed_fails_that_seed_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = OffPolicyAgent.store

    def poisoned(self: OffPolicyAgent, batch: Transitions) -> None:
        if self.generator.initial_seed() == 1 and self.n_updates >= 50:
            batch = Transitions(
                batch.obs,
                batch.actions,
                torch.full_like(batch.rewards, float("nan")),
                batch.next_obs,
                batch.terminated,
                batch.truncated,
            )
        original(self, batch)

    monkeypatch.setattr(OffPolicyAgent, "store", poisoned)
    outputs = tmp_path / "outputs"
    cfg = compose_config(["algo=td3", "mode=baseline", *TINY, f"tracking.dir={outputs}", "seeds=[0,1]"])
    with pytest.raises(SeedsFailed, match=r"1 of 2 seeds failed \(seed 1: DivergenceError: td3: critic_loss"):
        run_seeds(cfg, tmp_path / "group")
    runs = runs_by_seed(outputs)
    healthy, failed = runs[("0", True)], runs[("1", True)]
    assert healthy.info.status == "FINISHED"
    assert failed.info.status == "FAILED"
    client = client_for(outputs)
    traceback_file = client.download_artifacts(failed.info.run_id, "traceback.txt", str(tmp_path))
    assert "critic_loss became nan" in Path(traceback_file).read_text()
    # The healthy seed trained to the end, its evaluations all finite.
    history = client.get_metric_history(healthy.info.run_id, "eval/ctr")
    assert [m.step for m in history] == [0, 200, 400]
    assert all(np.isfinite(m.value) for m in history)


def test_item_choosing_agents_train_seed_parallel_as_alone(tmp_path: Path) -> None:
    tpgr = ["algo=tpgr", "algo.batch_episodes=4", "env=tiny_ratings", "trainer.total_steps=240"]
    tpgr += ["trainer.eval_every=120", "trainer.progress=none", "tracking.enabled=false", "mode=baseline"]
    grouped = run_seeds(compose_config([*tpgr, "seeds=[0,1]"]), tmp_path / "group")
    for seed, result in zip((0, 1), grouped, strict=True):
        alone = run_experiment(compose_config([*tpgr, f"seed={seed}"]), tmp_path / f"alone{seed}")
        assert without_timing(result) == without_timing(alone)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["expert", "random_mask", "ctrl"])
def test_every_mode_trains_seed_parallel(mode: str, tmp_path: Path) -> None:
    overrides = ["algo=ddpg", f"mode={mode}", *TINY, *TINY_MACS, "tracking.enabled=false"]
    overrides += [f"expert.cache_dir={tmp_path / 'experts'}", "seeds=[0,1]"]
    overrides += TINY_CTRL if mode == "ctrl" else []
    results = run_seeds(compose_config(overrides), tmp_path / "group")
    assert [r.steps for r in results] == [400, 400]
    extra = "cf/transitions" if mode != "ctrl" else "ctrl/fits"
    assert all(r.history[extra][-1][1] > 0 for r in results)
