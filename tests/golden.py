"""Golden metric histories: what every (algo, mode, env) logged before a refactor.

``tests/test_golden.py`` trains each configuration below and compares its full metric
histories, value for value, with ``tests/fixtures/golden_histories.json``. Regenerate the
fixture only for an intended change of behaviour, and say which in the commit:

    .venv/bin/python tests/golden.py tests/fixtures/golden_histories.json

Timing metrics (``perf/*``) differ from run to run and are left out.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from macs_exp.app import compose_config
from macs_exp.trainer.process import configure_torch
from macs_exp.trainer.run import run_experiment

ALGOS = ("ddpg", "sac", "td3")
MODES = ("baseline", "expert", "joint", "random_mask")
ENVS = ("virtual_taobao", "tiny_ratings")
# TPGR chooses items, so it runs on the rating env only, with its own settings in place of the
# off-policy agents' replay keys.
ITEM_ALGOS = {"tpgr": ["algo.batch_episodes=4"]}

# Small enough for the suite, large enough to cross warm-up, several updates, logging windows,
# evaluations and (with a zero threshold) more than one stage-2 run, with 2 users per batch so
# that stage 2 catches up over a window of vector steps.
BUDGET = [
    "trainer.total_steps=240",
    "trainer.eval_every=120",
    "trainer.eval_episodes=8",
    "trainer.log_every=80",
    "trainer.progress=none",
    "env.num_envs=2",
    "algo.learning_starts=40",
    "algo.batch_size=16",
    "algo.buffer_size=5000",
    "macs.stage2_steps=40",
    "macs.threshold_frac=0",
    "macs.temperature_frac=0.05",
    "macs.threshold_window=2",
    "macs.algo.learning_starts=10",
    "macs.algo.batch_size=8",
    "macs.algo.buffer_size=5000",
    "expert.total_steps=80",
    "expert.algo.batch_size=16",
    "expert.algo.buffer_size=5000",
    "tracking.enabled=false",
]


def configurations() -> list[tuple[str, str, str]]:
    """Every (algo, mode, env) the fixture holds."""
    cases = [(a, m, e) for e in ENVS for a in ALGOS for m in MODES]
    return cases + [(a, m, "tiny_ratings") for a in ITEM_ALGOS for m in MODES]


def budget(algo: str) -> list[str]:
    if algo not in ITEM_ALGOS:
        return BUDGET
    return [o for o in BUDGET if not o.startswith("algo.")] + ITEM_ALGOS[algo]


def key(algo: str, mode: str, env: str) -> str:
    return f"{algo}/{mode}/{env}"


def histories(algo: str, mode: str, env: str, workdir: Path) -> dict[str, list[list[float]]]:
    """The run's metric histories, ``{metric: [[user_step, value], ...]}``, timing left out."""
    configure_torch(1)
    overrides = [f"algo={algo}", f"mode={mode}", f"env={env}", *budget(algo)]
    overrides += [f"expert.cache_dir={workdir / 'experts'}", f"data.cache_dir={workdir / 'cache'}"]
    result = run_experiment(compose_config(overrides), workdir / key(algo, mode, env).replace("/", "_"))
    return {
        name: [[float(step), float(value)] for step, value in points]
        for name, points in sorted(result.history.items())
        if not name.startswith("perf/")
    }


def record(path: Path) -> None:
    golden: dict[str, dict[str, list[list[float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for algo, mode, env in configurations():
            golden[key(algo, mode, env)] = histories(algo, mode, env, Path(tmp))
    path.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    record(Path(sys.argv[1]))
