"""Learning-curve figures saved next to the run (and logged as artifacts)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def plot_learning_curve(
    history: Mapping[str, Sequence[tuple[int, float]]], path: str | Path, title: str
) -> Path:
    """One panel per metric, each a list of ``(user_step, value)`` points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name, points in history.items() if points]
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(5 * max(1, len(names)), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        steps, values = zip(*history[name], strict=True)
        ax.plot(steps, values, marker="o", markersize=3)
        ax.set_xlabel("user-steps")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
