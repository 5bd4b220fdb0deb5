"""Evaluates a saved agent: ``python -m macs_exp.evaluate checkpoint=PATH [env=NAME] [...]``,
installed as the ``macs-exp-evaluate`` script.

Any checkpoint a run leaves is accepted: a recommender's ``best_agent.pt`` or ``agent.pt``, its
pi_c's ``pi_c.pt``, or a cached expert's ``expert.pt``. The agent is rebuilt from the config its
training run saved, so that its algo settings (net_arch, action_mapping...) need not be
repeated, and scored by the training loop's own evaluator in the env the training loop
evaluates in (``macs_exp.trainer.run.evaluation_env``): the numbers compare with the run's own.

It evaluates with the training run's config as saved, except for what this command owns
(``OWN_KEYS``, from its own defaults and command line) and, if the command line names one with
``env=NAME``, the env. Whether it does is read from the task overrides Hydra records
(``HydraConfig``), so that the env group's default is never taken for a choice. ``env.*`` keys
change the env named; without ``env=NAME`` they are refused, as is every other override this
command would otherwise silently ignore.
"""

from __future__ import annotations

import json
import logging
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from macs_exp.agents import Agent
from macs_exp.app import register_resolvers
from macs_exp.config import Config, register_schemas, to_config
from macs_exp.macs.augment import PI_C_FILE
from macs_exp.macs.expert import EXPERT_FILE, META_FILE, RUN_DIR
from macs_exp.paths import CONF_DIR
from macs_exp.schema import ConfigError, UserError
from macs_exp.tracking import tracked_run
from macs_exp.tracking.tags import ROLE_EVAL
from macs_exp.trainer.process import configure_torch
from macs_exp.trainer.run import (
    CONFIG_FILE,
    RUN_FILE,
    agent_for_env,
    evaluation_env,
    item_space,
    knowledge_graph,
    rating_data,
    run_tags,
    torch_device,
)
from macs_exp.trainer.signals import sigterm_raises
from macs_exp.trainer.trainer import evaluate

log = logging.getLogger("macs_exp")

register_schemas()
register_resolvers()

# The keys of the evaluation's config that come from this command, not from the training run.
OWN_KEYS = ("tracking", "device", "trainer.eval_episodes", "trainer.eval_seed", "trainer.torch_threads")


class CheckpointError(UserError):
    """A checkpoint that cannot be evaluated as asked: missing, without its training run's
    config, or made for another env."""


@dataclass(frozen=True)
class SavedAgent:
    """A checkpoint, the config its training run saved, and where that run left its MLflow id."""

    path: Path
    # The training run's config as saved (resolved, untyped), and the key of the agent's algo
    # settings in it.
    config: DictConfig
    config_file: Path
    algo_key: str
    # A JSON file whose ``run_id`` is the MLflow run that trained the agent.
    run_file: Path

    @classmethod
    def find(cls, checkpoint: str) -> SavedAgent:
        """Tells the kinds of checkpoint apart by their file names, which the runs fix."""
        path = Path(checkpoint)
        if not path.is_file():
            raise CheckpointError(
                f"checkpoint={checkpoint} does not exist; give a saved agent: a run's best_agent.pt or "
                f"agent.pt, its {PI_C_FILE}, or a cached expert's {EXPERT_FILE}"
            )
        folder = path.parent
        # pi_c is saved in its recommender's run folder, its settings under macs.algo.
        config_file, algo_key, run_file = {
            PI_C_FILE: (folder / CONFIG_FILE, "macs.algo", folder / RUN_FILE),
            EXPERT_FILE: (folder / RUN_DIR / CONFIG_FILE, "algo", folder / META_FILE),
        }.get(path.name, (folder / CONFIG_FILE, "algo", folder / RUN_FILE))
        if not config_file.is_file():
            raise CheckpointError(
                f"checkpoint={checkpoint} has no training config: expected {config_file}, which its run "
                f"wrote; keep the checkpoint where its run saved it"
            )
        config = OmegaConf.load(config_file)
        assert isinstance(config, DictConfig)
        return cls(path, config, config_file, algo_key, run_file)

    def typed_config(self) -> DictConfig:
        """The training run's config, typed as ``python -m macs_exp`` composed it: its options
        (named by their ``name`` keys) composed again, its saved values merged over them."""
        options = {"algo": "algo", "mode": "mode", "env": "env"}
        options |= {"algo@macs.algo": "macs.algo", "algo@expert.algo": "expert.algo"}
        try:
            choices = [
                f"{option}={OmegaConf.select(self.config, key).name}" for option, key in options.items()
            ]
            typed = OmegaConf.merge(hydra.compose(config_name="config", overrides=choices), self.config)
        except (HydraException, OmegaConfBaseException, AttributeError) as err:
            raise CheckpointError(
                f"{self.config_file} (the config of checkpoint={self.path}) does not fit this version's "
                f"config tree: {err}"
            ) from None
        assert isinstance(typed, DictConfig)
        return typed

    def trained_by(self) -> str | None:
        """The MLflow run that trained the agent, if its run recorded one."""
        try:
            run_id = json.loads(self.run_file.read_text()).get("run_id")
        except (OSError, ValueError):
            return None
        return str(run_id) if run_id else None

    def load(self, agent: Agent, env_name: str) -> None:
        """Loads the checkpoint into ``agent``, made for ``env_name``: a file that does not fit
        it (another env's dims) is the user's to fix."""
        try:
            agent.load(self.path)
        except (ValueError, RuntimeError, pickle.UnpicklingError) as err:
            raise CheckpointError(
                f"checkpoint={self.path} cannot be evaluated on env={env_name}: {err}; evaluate it on "
                f"the env it was trained on (env={self.config.env.name}, the default without env=)"
            ) from None


def eval_config(cfg: DictConfig, saved: SavedAgent, overrides: list[str]) -> DictConfig:
    """The training run's config with this command's own keys and, under ``algo``, the settings
    of the agent evaluated (pi_c's are the run's ``macs.algo``). Runs inside the Hydra app (or an
    ``initialize_config_dir`` block), which composes the training run's options again."""
    env_named = _env_named(overrides)
    config = saved.typed_config()
    config.algo = OmegaConf.select(config, saved.algo_key)
    for key in OWN_KEYS:
        OmegaConf.update(config, key, OmegaConf.select(cfg, key), merge=False)
    if env_named:
        config.env = cfg.env
    if config.tracking.run_name is None:
        config.tracking.run_name = f"eval-{config.algo.name}-{config.env.name}"
    return config


def _env_named(overrides: list[str]) -> bool:
    """Whether the command line names the env (``env=NAME``). Refuses the overrides that would
    be ignored: what the training run's config decides, and ``env.*`` keys without ``env=``."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    accepted = ("checkpoint", "env", "hydra", *OWN_KEYS)
    for override in parsed:
        key = override.key_or_group
        if not any(key == k or key.startswith((f"{k}.", f"{k}/")) for k in accepted):
            raise ConfigError(
                f"{override.input_line} cannot be given when evaluating: the agent's settings come from "
                f"its training run's config; give only checkpoint, env=NAME (and env.* keys), "
                f"{', '.join(OWN_KEYS)}"
            )
    named = any(override.key_or_group == "env" for override in parsed)
    changed = [override.input_line for override in parsed if override.key_or_group.startswith("env.")]
    if changed and not named:
        raise ConfigError(
            f"{changed[0]} changes the env of env=NAME, but none is named: without it the training run's "
            f"env is used as saved; add env=NAME"
        )
    return named


def evaluate_saved(cfg: DictConfig, config: Config, saved: SavedAgent) -> dict[str, float]:
    """Evaluates the saved agent once and logs the metrics at step 0 to an MLflow run tagged
    ``role=eval`` and, if its training run is known, ``trained_by_run_id``."""
    device = torch_device(config.device)
    data = rating_data(config)
    env, ranking = evaluation_env(config, device, data)
    try:
        agent = agent_for_env(
            config.algo, env, device, config.seed, item_space(env, knowledge_graph(config, data))
        )
        saved.load(agent, config.env.name)
        tags = {**run_tags(cfg), "role": ROLE_EVAL}
        trained_by = saved.trained_by()
        if trained_by:
            tags["trained_by_run_id"] = trained_by
        else:
            log.warning(
                "%s names no MLflow run: the evaluation is not linked to its training run", saved.run_file
            )
        params = {
            "checkpoint": str(saved.path.resolve()),
            "env.name": config.env.name,
            "trainer.eval_episodes": str(config.trainer.eval_episodes),
            "trainer.eval_seed": str(config.trainer.eval_seed),
        }
        with tracked_run(config.tracking, params, tags, OmegaConf.to_yaml(cfg, resolve=True)) as tracker:
            metrics = evaluate(
                agent, env, config.trainer.eval_seed, env.metadata.get("items_per_page"), ranking
            )
            tracker.log_metrics(metrics, 0)
        if tracker.run_id:
            log.info("MLflow run %s (make ui to browse)", tracker.run_id)
    finally:
        env.close()
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")
def _main(cfg: DictConfig) -> None:
    try:
        saved = SavedAgent.find(cfg.checkpoint)
        raw = eval_config(cfg, saved, list(HydraConfig.get().overrides.task))
        config = to_config(raw)
        configure_torch(config.trainer.torch_threads)
        with sigterm_raises():
            metrics = evaluate_saved(raw, config, saved)
    except UserError as err:
        # As the main app: a mistake the user can fix is its message alone, with no traceback.
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    for name in sorted(metrics):
        print(name, metrics[name])


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
