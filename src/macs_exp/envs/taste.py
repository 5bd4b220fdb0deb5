"""What the ground-truth envs (Synthetic-v0, Session-v0) share: a page of 10 items scored
against the user's taste, and the metadata MACS reads about such pages.

Both envs reward the same thing so that their ground-truth checks differ only in how the
state moves, not in what a click means.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

ITEMS_PER_PAGE = 10


def page_clicks(items: torch.Tensor, taste: torch.Tensor, sharpness: float) -> torch.Tensor:
    """Clicks on a page of ``items`` (N, d) shown to users of ``taste`` (N, d):
    ``round(10 * exp(-sharpness * mean((items - taste)^2)))``, 10 for a perfect match.

    Deterministic, so that a counterfactual's reward differs from the real one only through
    the state, never through noise."""
    match = torch.exp(-sharpness * (items - taste).square().mean(1))
    return (ITEMS_PER_PAGE * match).round()


def page_metadata(trivial_mask: np.ndarray) -> dict[str, Any]:
    """The MACS contract (envs/base.py) for 0..10 clicks per page: one histogram bin per click
    count, the score is clicks per page, and ``trivial_mask`` marks the observation elements
    that by design never affect the reward."""
    return {
        "items_per_page": ITEMS_PER_PAGE,
        "reward_range": (0.0, float(ITEMS_PER_PAGE)),
        "reward_bins": ITEMS_PER_PAGE + 1,
        "score": "mean_reward",
        "score_range": (0.0, float(ITEMS_PER_PAGE)),
        "trivial_mask": trivial_mask,
    }
