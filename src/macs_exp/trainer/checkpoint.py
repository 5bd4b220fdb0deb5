"""A run's full training state on disk, so that a killed run continues where it stopped.

A checkpoint is one file, ``checkpoint.pt`` in the run's folder, written atomically (a
temporary file renamed over the old one: a kill mid-write leaves the previous checkpoint). It
holds tensors, numbers, strings and containers of them only, so it loads with
``torch.load(weights_only=True)``: opening a checkpoint never runs code from it.

Env snapshots are dataclasses and named tuples of tensors and arrays. ``pack`` turns such a
state into plain containers; ``unpack`` rebuilds it from a live state of the same env (a
*template*, e.g. ``env.snapshot()`` after a reset), which supplies the types: the file names
no class.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from macs_exp.schema import ResumeError

CHECKPOINT_FILE = "checkpoint.pt"
# Bump when the layout of the training state changes: older checkpoints are then refused.
CHECKPOINT_FORMAT = 1

_PLAIN = (bool, int, float, str, type(None))


def pack(state: Any) -> Any:
    """``state`` (nested dataclasses, named tuples, tuples, lists, dicts, tensors, numpy arrays,
    plain values) as plain containers of tensors and plain values."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, np.ndarray):
        return torch.from_numpy(state.copy())
    if isinstance(state, _PLAIN):
        return state
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        return {f.name: pack(getattr(state, f.name)) for f in dataclasses.fields(state)}
    if isinstance(state, Mapping):
        return {str(k): pack(v) for k, v in state.items()}
    if isinstance(state, tuple | list):
        return [pack(v) for v in state]
    raise TypeError(f"{type(state).__name__} cannot be saved in a checkpoint (tensors and containers only)")


def unpack(template: Any, packed: Any) -> Any:
    """The inverse of ``pack``, with the types (and numpy dtypes) of ``template``."""
    if isinstance(template, torch.Tensor):
        return packed.to(template.device)
    if isinstance(template, np.ndarray):
        return packed.numpy().astype(template.dtype, copy=False)
    if isinstance(template, _PLAIN):
        return packed
    if dataclasses.is_dataclass(template) and not isinstance(template, type):
        fields = {
            f.name: unpack(getattr(template, f.name), packed[f.name]) for f in dataclasses.fields(template)
        }
        return dataclasses.replace(template, **fields)
    if isinstance(template, Mapping):
        return {k: unpack(template[k], v) for k, v in packed.items()}
    if isinstance(template, tuple):
        values = [unpack(t, v) for t, v in zip(template, packed, strict=True)]
        # A named tuple takes its fields as arguments, a plain tuple one iterable.
        return type(template)(*values) if hasattr(template, "_fields") else tuple(values)
    if isinstance(template, list):
        return [unpack(t, v) for t, v in zip(template, packed, strict=True)]
    raise TypeError(f"{type(template).__name__} cannot be restored from a checkpoint")


@dataclass
class Checkpointing:
    """Where and how often a trainer writes checkpoints, and the one it resumes from."""

    path: Path
    # User-steps between checkpoints; 0: only when SIGTERM stops the run.
    every: int
    # Written into every checkpoint beside the state: the MLflow run id, the resolved config.
    meta: dict[str, str]
    resume: dict[str, Any] | None = None


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Writes ``state`` to ``path`` atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ResumeError(
            f"{path} does not exist: the run was stopped before its first checkpoint "
            f"(trainer.checkpoint_every user-steps), so there is nothing to resume; start it afresh"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ResumeError(
            f"{path} is not a checkpoint of this version of macs-exp (format "
            f"{state.get('format') if isinstance(state, dict) else '?'}, expected {CHECKPOINT_FORMAT})"
        )
    return state
