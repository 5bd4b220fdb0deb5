"""The results ledger: one CSV row per finished run, the record a long study is resumed from.

``tracking.ledger=<path>`` (``make paper`` sets ``docs/results/runs.csv``) makes every run that
finishes append its row, and makes every run whose config is already in the ledger skip itself:
a study run in pieces, across machines and sessions, and committed as it goes, reruns nothing.

A row says which config ran (``config_hash``), on which commit, with which seed, how long it
took and what it measured: the final value of every metric but the per-update losses, a few
params the reports group runs by, and the key metric's curve (with the env steps at each of its
points), so that the results page and its figures can be drawn from the ledger alone.

The hash covers the resolved config minus what cannot change a result: where and how the run is
recorded (``tracking``), how it is shown and checkpointed, how many seeds share its process and
threads, the device, the caches, and the folder a dataset lives in (only its name counts, so
``data/ml-100k`` and ``../shared/data/ml-100k`` are one config).
"""

from __future__ import annotations

import calendar
import contextlib
import csv
import dataclasses
import fcntl
import hashlib
import io
import json
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from omegaconf import DictConfig, OmegaConf

from macs_exp.schema import ConfigError

COLUMNS = (
    "config_hash",
    "experiment",
    "algo",
    "mode",
    "env",
    "seed",
    "commit",
    "finished_at",
    "wall_time_s",
    "seeds_in_process",
    "run_id",
    "params",
    "metrics",
    "curves",
    "same_as",
)
# Keys that do not change what a run measures (module doc); a key names a subtree too.
UNHASHED = (
    "tracking",
    "seeds",
    "device",
    "trainer.progress",
    "trainer.resume",
    "trainer.parallel_seeds",
    "trainer.torch_threads",
    "trainer.checkpoint_every",
    "trainer.log_every",
    "data.cache_dir",
    "expert.cache_dir",
)
# Keys added to the config after runs were recorded, each with the value every earlier run had
# implicitly: at that value a key is left out of the hash, so that adding an option keeps the
# ledger's rows found; set otherwise, it counts like any key.
LATER_KEYS: dict[str, Any] = {"trainer.eval_at_start": True, "expert.eval_every": None}
# Paths of which only the last part names what was read.
FOLDER_KEYS = ("env.data_dir",)
# The params reports group and label runs by (macs_exp.reports): kept in each row.
ROW_PARAMS = (
    "trainer.budget",
    "trainer.total_steps",
    "macs.replay",
    "macs.algo.net_arch",
    "macs.threshold_frac",
    "env.candidates",
    "env.data_dir",
)
# Per-update losses are many, noisy and read by no report.
UNKEPT_PREFIXES = ("train/",)
ENV_STEPS = "perf/env_steps"
# How a row writes its finish time: UTC, to the second.
STAMP = "%Y-%m-%dT%H:%M:%SZ"


def stamp_seconds(stamp: str) -> int:
    """A :data:`STAMP` time as seconds since the epoch."""
    return calendar.timegm(time.strptime(stamp, STAMP))


def config_hash(cfg: DictConfig) -> str:
    """16 hex digits of the SHA-256 of the resolved config, without the ``UNHASHED`` keys and
    the ``LATER_KEYS`` at their earlier value."""
    tree = _tree(cfg)
    for key in UNHASHED:
        _drop(tree, key.split("."))
    for key, earlier in LATER_KEYS.items():
        if _get(tree, key) == earlier:
            _drop(tree, key.split("."))
    for key in FOLDER_KEYS:
        value = _get(tree, key)
        if isinstance(value, str):
            _set(tree, key, Path(value).name)
    text = json.dumps(tree, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _tree(cfg: DictConfig) -> dict[str, Any]:
    tree = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(tree, dict)
    return {str(k): v for k, v in tree.items()}


def _drop(tree: dict[str, Any], parts: list[str]) -> None:
    node: Any = tree
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(parts[-1], None)


def _get(tree: Mapping[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _set(tree: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = tree
    for part in parents:
        node = node[part]
    node[last] = value


@dataclass(frozen=True)
class Entry:
    """One finished run, as ``row`` writes it."""

    config_hash: str
    experiment: str
    algo: str
    mode: str
    env: str
    seed: int
    commit: str
    finished_at: str
    wall_time_s: float
    seeds_in_process: int
    run_id: str
    params: dict[str, str]
    metrics: dict[str, float]
    # metric -> [(step, value), ...]
    curves: dict[str, list[tuple[int, float]]]
    # Set on a row that reuses another experiment's run of the same config (``adopt``): that
    # experiment's name. Empty on a run's own row.
    same_as: str = ""

    def row(self) -> dict[str, str]:
        return {
            "config_hash": self.config_hash,
            "experiment": self.experiment,
            "algo": self.algo,
            "mode": self.mode,
            "env": self.env,
            "seed": str(self.seed),
            "commit": self.commit,
            "finished_at": self.finished_at,
            "wall_time_s": f"{self.wall_time_s:.1f}",
            "seeds_in_process": str(self.seeds_in_process),
            "run_id": self.run_id,
            "params": json.dumps(self.params, sort_keys=True),
            "metrics": json.dumps({k: _short(v) for k, v in sorted(self.metrics.items())}),
            "same_as": self.same_as,
            "curves": json.dumps(
                {k: [[s, _short(v)] for s, v in points] for k, points in sorted(self.curves.items())}
            ),
        }

    @classmethod
    def from_row(cls, row: Mapping[str, str]) -> Entry:
        return cls(
            config_hash=row["config_hash"],
            experiment=row["experiment"],
            algo=row["algo"],
            mode=row["mode"],
            env=row["env"],
            seed=int(row["seed"]),
            commit=row["commit"],
            finished_at=row["finished_at"],
            wall_time_s=float(row["wall_time_s"]),
            seeds_in_process=int(row["seeds_in_process"]),
            run_id=row["run_id"],
            params={str(k): str(v) for k, v in json.loads(row["params"]).items()},
            metrics={str(k): float(v) for k, v in json.loads(row["metrics"]).items()},
            curves=_curves(json.loads(row["curves"])),
            same_as=row["same_as"],
        )


def _short(value: float) -> float:
    """Seven significant digits: more than any metric is worth, and a ledger git can diff."""
    return float(f"{value:.7g}")


def entry(
    cfg: DictConfig,
    *,
    history: Mapping[str, Sequence[tuple[int, float]]],
    key_metric: str,
    wall_time_s: float,
    seeds_in_process: int,
    run_id: str | None,
) -> Entry:
    """The row of a run of ``cfg`` (a single seed's config) that just finished."""
    tree = _tree(cfg)
    params = {key: str(value) for key in ROW_PARAMS if (value := _get(tree, key)) is not None}
    params.update({key: Path(params[key]).name for key in FOLDER_KEYS if key in params})
    metrics = {k: pts[-1][1] for k, pts in history.items() if pts and not k.startswith(UNKEPT_PREFIXES)}
    curves: dict[str, list[tuple[int, float]]] = {}
    if history.get(key_metric):
        curves[key_metric] = [(int(s), float(v)) for s, v in history[key_metric]]
        steps = {s for s, _ in curves[key_metric]}
        # perf/env_steps is logged with each evaluation and each log window: one point a step.
        at = {int(s): float(v) for s, v in history.get(ENV_STEPS, []) if s in steps}
        curves[ENV_STEPS] = sorted(at.items())
    return Entry(
        config_hash=config_hash(cfg),
        experiment=str(cfg.tracking.experiment),
        algo=str(cfg.algo.name),
        mode=str(cfg.mode.name),
        env=str(cfg.env.name),
        seed=int(cfg.seed),
        commit=git_commit(),
        finished_at=time.strftime(STAMP, time.gmtime()),
        wall_time_s=wall_time_s,
        seeds_in_process=seeds_in_process,
        run_id=run_id or "",
        params=params,
        metrics=metrics,
        curves=curves,
    )


# What a result can depend on. Only these make a run's commit ``-dirty``: the ledger itself, the
# piece times and the generated page are tracked files that `make paper` rewrites as it goes.
CODE_PATHS = ("src", "conf", "scripts", "Makefile", "pyproject.toml")


def git_commit() -> str:
    """HEAD of the repository the run was launched in, ``-dirty`` when tracked code or config
    (:data:`CODE_PATHS`) differs from it, so the run's code is not that commit's; ``unknown``
    outside a repository."""
    try:
        head = _git("rev-parse", "HEAD")
        dirty = _git(
            "status", "--porcelain", "--untracked-files=no", "--", *(f":(top){p}" for p in CODE_PATHS)
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, check=True)
    return done.stdout.strip()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[TextIO]:
    """The ledger opened for appending under an exclusive lock: the jobs of a sweep finish
    concurrently, and each row must land whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", newline="", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def append(path: str | Path, item: Entry) -> None:
    with _locked(Path(path)) as handle:
        handle.seek(0, io.SEEK_END)
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        if handle.tell() == 0:
            writer.writeheader()
        writer.writerow(item.row())


def read(path: str | Path) -> list[Entry]:
    """Every row of the ledger at ``path`` (none when it does not exist yet). A malformed row
    is an error naming its line: a ledger is committed, and a bad merge must not pass silently."""
    file = Path(path)
    if not file.exists():
        return []
    with file.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is not None and tuple(reader.fieldnames) != COLUMNS:
            raise ConfigError(
                f"{file}: its header is not the ledger's ({','.join(COLUMNS)}); fix or move the file"
            )
        entries = []
        for row in reader:
            try:
                entries.append(Entry.from_row(row))
            except (KeyError, TypeError, ValueError) as err:
                raise ConfigError(
                    f"{file}, line {reader.line_num}: not a ledger row ({type(err).__name__}: {err}); "
                    "fix or delete that line (the run is then trained again)"
                ) from None
    return entries


def recorded(path: str | Path) -> dict[str, list[Entry]]:
    """The ledger at ``path`` by config hash."""
    rows: dict[str, list[Entry]] = {}
    for entry in read(path):
        rows.setdefault(entry.config_hash, []).append(entry)
    return rows


def adopt(path: str | Path, cfg: DictConfig, rows: dict[str, list[Entry]]) -> None:
    """Makes a recorded run of ``cfg`` count for ``cfg``'s experiment too. Two presets may ask
    for the same config (Fig. 5's hidden size 128 is Fig. 4's DDPG-E): the run is not repeated,
    and the experiment that asked again gets a copy of its row, marked ``same_as`` the
    experiment that ran it, so that each preset's page section finds every row it needs."""
    key, experiment = config_hash(cfg), str(cfg.tracking.experiment)
    found = rows.get(key, [])
    if not found or any(e.experiment == experiment for e in found):
        return
    copy = dataclasses.replace(
        found[0], experiment=experiment, same_as=found[0].same_as or found[0].experiment
    )
    append(path, copy)
    found.append(copy)


def _curves(raw: Mapping[str, Any]) -> dict[str, list[tuple[int, float]]]:
    return {str(k): [(int(s), float(v)) for s, v in points] for k, points in raw.items()}
