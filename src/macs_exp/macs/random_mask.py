"""The random-mask ablation (Sec. IV-D): counterfactual-looking states made without a policy."""

from __future__ import annotations

import torch


def random_mask(obs: torch.Tensor, mask_prob: float, generator: torch.Generator) -> torch.Tensor:
    """Zeroes exactly round(mask_prob x dim) randomly chosen elements of each row (at least one
    when mask_prob > 0, so small states are not copied unchanged), so every masked state
    differs from its original by the same share of elements."""
    n, dim = obs.shape
    k = max(round(mask_prob * dim), 1) if mask_prob > 0 else 0
    if k == 0:
        return obs.clone()
    chosen = torch.rand((n, dim), generator=generator).topk(k, dim=1).indices
    return obs.scatter(1, chosen, 0.0)
