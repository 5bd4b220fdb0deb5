"""Evaluating saved agents (``python -m macs_exp.evaluate``): every kind of checkpoint a run
leaves, scored exactly as the training loop's evaluator scores it, logged as a ``role=eval``
MLflow run linked to the run that trained it; and the user's mistakes as one-line errors."""

from __future__ import annotations

import json
import logging
import operator
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from conftest import TINY, TINY_MACS
from macs_exp.app import compose_config
from macs_exp.config import to_config
from macs_exp.evaluate import CheckpointError, SavedAgent, eval_config, evaluate_saved
from macs_exp.macs.expert import obtain_expert
from macs_exp.paths import CONF_DIR
from macs_exp.schema import ConfigError
from macs_exp.trainer.run import (
    CONFIG_FILE,
    RUN_FILE,
    agent_for_env,
    evaluation_env,
    item_space,
    rating_data,
    run_experiment,
)
from macs_exp.trainer.trainer import evaluate

CPU = torch.device("cpu")


def evaluate_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "macs_exp.evaluate", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def printed_metrics(proc: subprocess.CompletedProcess[str]) -> dict[str, float]:
    """stdout holds the metrics alone, one sorted ``name value`` line each (logs go to stderr)."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines == sorted(lines)
    return {name: float(value) for name, value in (line.split(" ") for line in lines)}


def in_process(overrides: list[str], checkpoint: Path, agent: str = "algo") -> dict[str, float]:
    """What the training loop's evaluator gives the checkpoint's agent (its settings under the
    key ``agent`` of the config ``overrides`` compose) in this process."""
    config = to_config(compose_config(overrides))
    env, ranking = evaluation_env(config, CPU, rating_data(config))
    try:
        loaded = agent_for_env(operator.attrgetter(agent)(config), env, CPU, config.seed, item_space(env))
        loaded.load(checkpoint)
        return evaluate(loaded, env, config.trainer.eval_seed, env.metadata.get("items_per_page"), ranking)
    finally:
        env.close()


def eval_runs(outputs: Path) -> tuple[MlflowClient, list]:
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("macs")
    return client, client.search_runs([experiment.experiment_id], "tags.role = 'eval'")


def assert_logged(outputs: Path, metric: str, value: float, trained_by: str | None) -> None:
    """One eval run, linked to ``trained_by``, with ``metric`` logged once, at step 0."""
    client, runs = eval_runs(outputs)
    (run,) = runs
    assert run.info.status == "FINISHED"
    assert run.data.tags.get("trained_by_run_id") == trained_by
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, metric)] == [(0, value)]


def saved_untrained(folder: Path, overrides: list[str], name: str = "best_agent.pt") -> Path:
    """An agent saved where a run saves it, beside the config that run would write, untrained."""
    cfg = compose_config(overrides)
    folder.mkdir(parents=True)
    (folder / CONFIG_FILE).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    config = to_config(cfg)
    env, _ = evaluation_env(config, CPU, rating_data(config))
    agent_for_env(config.algo, env, CPU, config.seed, item_space(env)).save(folder / name)
    env.close()
    return folder / name


def composed(checkpoint: Path, *overrides: str) -> tuple[DictConfig, SavedAgent]:
    """What ``python -m macs_exp.evaluate checkpoint=... <overrides>`` evaluates with."""
    args = [f"checkpoint={checkpoint}", *overrides]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        saved = SavedAgent.find(str(checkpoint))
        return eval_config(compose(config_name="evaluate", overrides=args), saved, args), saved


def write_config(folder: Path, overrides: list[str], checkpoint: str) -> Path:
    """A run folder with its config and an (empty) checkpoint file: enough to compose with."""
    folder.mkdir(parents=True)
    (folder / CONFIG_FILE).write_text(OmegaConf.to_yaml(compose_config(overrides), resolve=True))
    (folder / checkpoint).touch()
    return folder / checkpoint


def test_the_agent_comes_from_its_run_and_where_to_evaluate_from_the_command_line(tmp_path: Path) -> None:
    trained = ["env=tiny_ratings", "algo=sac", "algo.net_arch=[32,32]", "algo@macs.algo=td3", "seed=3"]
    checkpoint = write_config(tmp_path / "run", [*trained, "trainer.eval_episodes=5"], "best_agent.pt")
    cfg, _ = composed(checkpoint, "trainer.eval_episodes=7", f"tracking.dir={tmp_path}")
    assert (cfg.algo.name, list(cfg.algo.net_arch), cfg.seed) == ("sac", [32, 32], 3)
    # No env=NAME: the training run's env, as saved.
    assert cfg.env.name == "tiny_ratings"
    assert (cfg.trainer.eval_episodes, cfg.tracking.dir) == (7, str(tmp_path))
    assert cfg.tracking.run_name == "eval-sac-tiny_ratings"
    named, _ = composed(checkpoint, "env=virtual_taobao", "env.num_envs=2")
    assert (named.env.name, named.env.num_envs, named.trainer.eval_episodes) == ("virtual_taobao", 2, 300)
    to_config(named)
    # pi_c's settings are its run's macs.algo.
    pi_c = write_config(tmp_path / "joint", trained, "pi_c.pt")
    assert composed(pi_c)[0].algo.name == "td3"


def test_an_expert_in_the_cache_takes_its_training_run_config(tmp_path: Path) -> None:
    entry = tmp_path / "experts" / "key"
    write_config(entry / "run", ["algo=td3", "mode=baseline"], "best_agent.pt")
    (entry / "expert.pt").touch()
    (entry / "meta.json").write_text(json.dumps({"run_id": "abc"}))
    cfg, saved = composed(entry / "expert.pt")
    assert (cfg.algo.name, cfg.mode.name, saved.trained_by()) == ("td3", "baseline", "abc")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("algo=td3", "algo=td3 cannot be given when evaluating"),
        ("trainer.total_steps=5", "trainer.total_steps=5 cannot be given"),
        ("env.num_envs=2", "env.num_envs=2 changes the env of env=NAME, but none is named"),
    ],
)
def test_overrides_an_evaluation_would_ignore_are_refused(
    tmp_path: Path, override: str, message: str
) -> None:
    checkpoint = write_config(tmp_path / "run", [], "agent.pt")
    with pytest.raises(ConfigError, match=message):
        composed(checkpoint, override)


def test_a_checkpoint_without_its_config_names_the_file_expected(tmp_path: Path) -> None:
    (tmp_path / "agent.pt").touch()
    with pytest.raises(CheckpointError, match=f"expected {tmp_path / CONFIG_FILE}"):
        SavedAgent.find(str(tmp_path / "agent.pt"))


def test_a_reference_policy_evaluates_and_without_its_run_id_is_logged_unlinked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trained = ["env=tiny_ratings", "algo=popular", "mode=baseline", f"data.cache_dir={tmp_path / 'cache'}"]
    checkpoint = saved_untrained(tmp_path / "run", trained)
    cfg, saved = composed(checkpoint, f"tracking.dir={tmp_path / 'outputs'}")
    with caplog.at_level(logging.WARNING, logger="macs_exp"):
        metrics = evaluate_saved(cfg, to_config(cfg), saved)
    assert metrics == in_process(trained, checkpoint)
    assert f"{tmp_path / 'run' / RUN_FILE} names no MLflow run" in caplog.text
    assert_logged(tmp_path / "outputs", "test/precision", metrics["test/precision"], None)


def test_a_missing_checkpoint_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = evaluate_cli(tmp_path, f"checkpoint={tmp_path / 'nope.pt'}")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"error: checkpoint={tmp_path / 'nope.pt'} does not exist; give a saved agent: a run's "
        f"best_agent.pt or agent.pt, its pi_c.pt, or a cached expert's expert.pt"
    ]


def test_an_agent_of_other_dims_is_one_line_naming_its_env_and_exit_2(tmp_path: Path) -> None:
    trained = ["env=tiny_ratings", "mode=baseline", f"data.cache_dir={tmp_path / 'cache'}"]
    checkpoint = saved_untrained(tmp_path / "run", trained)
    proc = evaluate_cli(tmp_path, f"checkpoint={checkpoint}", "env=virtual_taobao", "tracking.enabled=false")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [proc.stderr.splitlines()[-1]]
    assert f"checkpoint={checkpoint} cannot be evaluated on env=virtual_taobao" in errors[0]
    assert "evaluate it on the env it was trained on (env=tiny_ratings" in errors[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "metric"), [("virtual_taobao", "eval/ctr"), ("tiny_ratings", "test/precision")]
)
def test_a_trained_agent_evaluates_as_in_training(tmp_path: Path, env: str, metric: str) -> None:
    outputs = tmp_path / "outputs"
    trained = [f"env={env}", "mode=baseline", *TINY, f"tracking.dir={outputs}", f"data.cache_dir={tmp_path}"]
    result = run_experiment(compose_config(trained), tmp_path / "run")
    checkpoint = tmp_path / "run" / "best_agent.pt"
    proc = evaluate_cli(
        tmp_path,
        f"checkpoint={checkpoint}",
        f"env={env}",
        "trainer.eval_episodes=16",
        f"tracking.dir={outputs}",
    )
    printed = printed_metrics(proc)
    assert printed[metric] == in_process(trained, checkpoint)[metric]
    # The training loop's own evaluation of the best checkpoint, with the same 16 users.
    assert printed[metric] == result.best_eval[metric]
    assert_logged(outputs, metric, printed[metric], result.run_id)


@pytest.mark.slow
def test_pi_c_and_a_cached_expert_load_and_evaluate(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    joint = ["mode=joint", *TINY, *TINY_MACS, f"tracking.dir={outputs}", f"expert.cache_dir={tmp_path}"]
    result = run_experiment(compose_config(joint), tmp_path / "joint")
    expert = obtain_expert(compose_config(joint), None, run_experiment)
    pi_c = tmp_path / "joint" / "pi_c.pt"
    for checkpoint, agent in ((pi_c, "macs.algo"), (expert.path, "expert.algo")):
        proc = evaluate_cli(
            tmp_path, f"checkpoint={checkpoint}", "trainer.eval_episodes=16", f"tracking.dir={outputs}"
        )
        assert printed_metrics(proc)["eval/ctr"] == in_process(joint, checkpoint, agent)["eval/ctr"]
    _, runs = eval_runs(outputs)
    linked = {run.data.params["checkpoint"]: run.data.tags["trained_by_run_id"] for run in runs}
    assert linked == {str(pi_c.resolve()): result.run_id, str(expert.path.resolve()): expert.run_id}
