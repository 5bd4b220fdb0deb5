from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from macs_exp.agents.sac import SACConfig
from macs_exp.agents.td3 import DDPGConfig, TD3Config
from macs_exp.app import compose_config
from macs_exp.config import to_config
from macs_exp.schema import ConfigError


def test_defaults_are_the_papers_settings() -> None:
    cfg = compose_config()
    assert (cfg.algo.name, cfg.mode.name, cfg.env.name) == ("ddpg", "joint", "virtual_taobao")
    for algo in ("ddpg", "sac", "td3"):
        a = compose_config([f"algo={algo}"]).algo
        assert a.actor_learning_rate == 1e-4
        assert a.learning_rate == 1e-3
        assert a.gamma == 0.95
        assert a.tau == 0.001
        assert list(a.net_arch) == [128, 128]
        assert a.buffer_size == 1_000_000


@pytest.mark.parametrize(("algo", "schema"), [("ddpg", DDPGConfig), ("td3", TD3Config), ("sac", SACConfig)])
def test_algo_groups_are_typed_by_their_schema(algo: str, schema: type) -> None:
    assert isinstance(OmegaConf.to_object(compose_config([f"algo={algo}"]).algo), schema)


@pytest.mark.parametrize(
    "override",
    [
        "algo.batch_size=128",
        "algo.learning_starts=5",
        "algo.train_freq=4",
        "algo.gradient_steps=-1",
        "algo.policy_delay=3",
        "algo.target_policy_noise=0.1",
        "algo.target_noise_clip=0.3",
        "algo.action_noise=0.2",
        "algo.net_arch=[64,64]",
    ],
)
def test_sb3_hyperparameters_can_be_overridden(override: str) -> None:
    key, value = override.split("=")
    cfg = compose_config(["algo=td3", override])
    assert str(OmegaConf.select(cfg, key)).replace(" ", "") == value


def test_sac_entropy_settings_can_be_overridden() -> None:
    cfg = compose_config(["algo=sac", "algo.ent_coef=0.05", "algo.target_entropy=-3"])
    assert (cfg.algo.ent_coef, cfg.algo.target_entropy) == ("0.05", "-3")


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("trainer.totl_steps=5", "totl_steps"),
        ("algo.batchsize=5", "batchsize"),
        ("algo.ent_coef=0.1", "ent_coef"),  # a SAC key on DDPG
        ("trainer.total_steps=many", "total_steps"),
        ("sed=1", "sed"),
    ],
)
def test_typos_and_wrong_types_fail_naming_the_key(override: str, named: str) -> None:
    with pytest.raises(ConfigCompositionException) as err:
        compose_config([override])
    assert named in str(err.value) + str(err.value.__cause__)


def test_unknown_group_option_lists_the_choices() -> None:
    with pytest.raises(Exception, match="nope") as err:
        compose_config(["algo=nope"])
    listed = str(err.value).split("Available options in 'algo':")[1]
    options = listed.split("Config search path")[0].split()
    # ... and no schema, which is not runnable.
    assert options == ["ddpg", "pgpr", "popular", "random", "sac", "td3", "tpgr"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["algo=nope"], "nope"), (["trainer.totl_steps=5"], "totl_steps")],
)
def test_cli_rejects_bad_config_before_any_work(args: list[str], expected: str, tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "macs_exp", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert expected in proc.stderr
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("key", "value"), [("candidates", "everything"), ("state", "lstm"), ("train_reward", "predicted")]
)
def test_rating_env_options_are_checked_naming_the_key(key: str, value: str) -> None:
    env = to_config(compose_config(["env=ml100k"])).env
    assert (env.candidates, env.state, env.train_reward) == ("catalog", "items", "logged")
    with pytest.raises(ConfigError, match=rf"env\.{key}={value} is invalid: it must be one of"):
        to_config(compose_config(["env=ml100k", f"env.{key}={value}"]))
