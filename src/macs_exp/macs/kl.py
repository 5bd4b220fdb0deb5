"""The synthesis policy's reward (Eqs. 10-12): how far an intervention moves the reward
distribution, measured between histograms of observed and intervened rewards.

Everything is batched over users: each user of a batched env is one copy of the paper's
single-env loop, with its own windows R and R' and so its own KL and reward.
"""

from __future__ import annotations

import torch

KL_DIRECTIONS = ("eq11", "algorithm2")


def reward_histograms(
    rewards: torch.Tensor, reward_range: tuple[float, float], bins: int, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-row counts ``(N, bins)`` of ``rewards (N, W)`` over ``reward_range``; rewards outside
    it fall into the edge bins, and ``weights`` (0/1) leaves entries out.

    Equal-width bins put each integer of a 0..K reward into its own bin when bins = K + 1.
    """
    low, high = reward_range
    index = ((rewards.double() - low) * (bins / (high - low))).floor().clamp_(0, bins - 1).long()
    counts = torch.zeros((rewards.shape[0], bins), dtype=torch.float64)
    src = torch.ones_like(index, dtype=torch.float64) if weights is None else weights.double()
    return counts.scatter_add_(1, index, src)


def kl_divergence(p_counts: torch.Tensor, q_counts: torch.Tensor, smoothing: float) -> torch.Tensor:
    """KL(P || Q) in nats between histograms (last dim = bins), each smoothed by adding
    ``smoothing`` to every bin so that an empty bin cannot make the divergence infinite."""
    bins = p_counts.shape[-1]
    p = (p_counts + smoothing) / (p_counts.sum(-1, keepdim=True) + smoothing * bins)
    q = (q_counts + smoothing) / (q_counts.sum(-1, keepdim=True) + smoothing * bins)
    return torch.where(p > 0, p * (p / q).log(), 0.0).sum(-1)


def reward_kl(
    observed: torch.Tensor,
    intervened: torch.Tensor,
    reward_range: tuple[float, float],
    bins: int,
    smoothing: float,
    direction: str,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-row KL between the intervened (R') and observed (R) reward windows, ``(N, W)`` each.

    ``eq11`` is KL(R' || R) as Eqs. 10-11 write it; ``algorithm2`` is KL(R || R'), the order
    Algorithm 2's pseudo-code uses. ``valid`` marks the intervened rewards that exist.
    """
    r = reward_histograms(observed, reward_range, bins)
    r_prime = reward_histograms(intervened, reward_range, bins, valid)
    if direction == "eq11":
        return kl_divergence(r_prime, r, smoothing)
    if direction == "algorithm2":
        return kl_divergence(r, r_prime, smoothing)
    raise ValueError(f"macs.kl_direction={direction!r} is invalid: choose one of {KL_DIRECTIONS}")


def synthesis_reward(
    kl: torch.Tensor, epsilon: float, scaled_reward: torch.Tensor | None = None
) -> torch.Tensor:
    """Eq. 11, ``1 / (KL + epsilon)``; with ``scaled_reward`` (the observed reward scaled to
    [0, 1]) Eq. 12, ``scaled_reward + 1 / (KL + epsilon)``, as joint training uses."""
    base = (1.0 / (kl + epsilon)).float()
    return base if scaled_reward is None else scaled_reward.float() + base


def scale_rewards(rewards: torch.Tensor, reward_range: tuple[float, float]) -> torch.Tensor:
    low, high = reward_range
    return ((rewards.float() - low) / (high - low)).clamp_(0.0, 1.0)
