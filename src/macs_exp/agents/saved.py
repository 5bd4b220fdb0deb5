"""Saved agents: one file per agent, ``torch.save``'d state with the algorithm's name and the
sizes of the env it was trained for, read back with ``weights_only=True`` and checked against
the agent that loads it, so that a checkpoint of another algorithm or env fails by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def save_agent(path: str | Path, name: str, sizes: dict[str, int], state: dict[str, Any]) -> None:
    torch.save({"algo": name, **sizes, **state}, path)


def load_agent(
    path: str | Path, name: str, sizes: dict[str, int], device: torch.device | str
) -> dict[str, Any]:
    """The state saved at ``path``, if it is a ``name`` agent of these ``sizes``."""
    checkpoint: dict[str, Any] = torch.load(path, map_location=device, weights_only=True)
    if checkpoint.get("algo") != name:
        raise ValueError(f"{path} holds a {checkpoint.get('algo')!r} agent, not {name!r}")
    saved = {key: checkpoint.get(key) for key in sizes}
    if saved != sizes:
        raise ValueError(f"{path} was trained for {_sizes(saved)}; this env has {_sizes(sizes)}")
    return checkpoint


def _sizes(sizes: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sizes.items())
