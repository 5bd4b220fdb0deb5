"""``trainer.resume``: finding the checkpoint a stopped run continues from, and refusing a
resume whose config is not the run's own.

A resumed run must be the same experiment: every config value but the budget
(``trainer.total_steps``) and how progress is shown must equal the checkpoint's, or the
continued history would mix two experiments under one run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from macs_exp.schema import ResumeError
from macs_exp.tracking import flatten
from macs_exp.tracking.config import TrackingConfig
from macs_exp.tracking.mlflow_tracker import tracking_uri
from macs_exp.trainer.checkpoint import CHECKPOINT_FILE, load_checkpoint

# The keys a resume may change.
FREE_KEYS = ("trainer.total_steps", "trainer.resume", "trainer.progress")
_RUN_ID = re.compile(r"[0-9a-f]{32}")
# Differences listed in full in the refusal; the rest are counted.
_SHOWN_CHANGES = 8


@dataclass
class Resume:
    """A checkpoint to continue from, and the run folder it belongs to."""

    folder: Path
    state: dict[str, Any]

    @property
    def run_id(self) -> str | None:
        return str(self.state["run_id"]) or None

    @property
    def steps(self) -> int:
        return int(self.state["loop"]["steps"])


def find_checkpoint(value: str | None, output_dir: Path, tracking: TrackingConfig) -> Resume | None:
    """The checkpoint ``trainer.resume=value`` names: a run folder (or its checkpoint file), an
    MLflow run id, or ``auto`` (``output_dir``'s own checkpoint, if any); None to start afresh."""
    if value is None:
        return None
    if value == "auto":
        found = output_dir / CHECKPOINT_FILE
        return Resume(output_dir, load_checkpoint(found)) if found.is_file() else None
    path = Path(value)
    if path.is_file():
        path = path.parent
    if not path.is_dir() and _RUN_ID.fullmatch(value):
        path = _run_folder(value, tracking)
    if not path.is_dir():
        raise ResumeError(
            f"trainer.resume={value!r} is neither a run folder nor an MLflow run id; give the folder "
            f"of the run to continue (it holds {CHECKPOINT_FILE} and config.yaml)"
        )
    if not (path / CHECKPOINT_FILE).is_file() and (path / "agent.pt").is_file():
        raise ResumeError(
            f"trainer.resume: the run in {path} finished (agent.pt is there); nothing to resume"
        )
    return Resume(path, load_checkpoint(path / CHECKPOINT_FILE))


def _run_folder(run_id: str, tracking: TrackingConfig) -> Path:
    """The folder of MLflow run ``run_id``, from the ``run_dir`` tag every run gets."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        run = MlflowClient(tracking_uri=tracking_uri(tracking)).get_run(run_id)
    except MlflowException as err:
        raise ResumeError(
            f"trainer.resume={run_id}: no such MLflow run in {tracking_uri(tracking)}; resume with the "
            f"tracking.* settings the run was started with, or give its folder"
        ) from err
    folder = run.data.tags.get("run_dir")
    if folder is None:
        raise ResumeError(f"trainer.resume={run_id}: the run has no run_dir tag; give its folder instead")
    return Path(folder)


def check_resumable(resume: Resume, config_yaml: str) -> None:
    """Refuses, naming the keys, a config that differs from the checkpoint's in anything but
    the free keys."""
    saved, now = _flat(str(resume.state["config"])), _flat(config_yaml)
    changed = sorted(
        k for k in saved.keys() | now.keys() if k not in FREE_KEYS and saved.get(k) != now.get(k)
    )
    if not changed:
        return
    shown = ", ".join(
        f"{k} (checkpoint {saved.get(k, '<absent>')}, now {now.get(k, '<absent>')})"
        for k in changed[:_SHOWN_CHANGES]
    )
    more = f" and {len(changed) - _SHOWN_CHANGES} more" if len(changed) > _SHOWN_CHANGES else ""
    raise ResumeError(
        f"trainer.resume: this config differs from the checkpoint's in {shown}{more}. Resume with the run's "
        f"own overrides{_overrides_hint(resume.folder)}; only {FREE_KEYS[0]} may change. To start "
        f"afresh in {resume.folder} instead, pass trainer.resume=null"
    )


def _flat(config_yaml: str) -> dict[str, str]:
    tree = OmegaConf.to_container(OmegaConf.create(config_yaml))
    return flatten({str(k): v for k, v in tree.items()} if isinstance(tree, dict) else {})


def _overrides_hint(folder: Path) -> str:
    """The overrides Hydra recorded for the run, to copy onto the resume's command line."""
    recorded = folder / ".hydra" / "overrides.yaml"
    if not recorded.is_file():
        return ""
    overrides = OmegaConf.load(recorded)
    return f" ({' '.join(str(o) for o in overrides)})" if overrides else ""
