"""``mode=random_mask``, the ablation of Sec. IV-D: counterfactual-looking states made without a
policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import MISSING

from macs_exp import plugins
from macs_exp.agents import Transitions
from macs_exp.macs.augment import CounterfactualStats
from macs_exp.schema import Rules
from macs_exp.trainer.augmenter import AugmenterContext, ModeConfig, NoAugmentation


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


@dataclass
class RandomMaskConfig(ModeConfig):
    """The random-mask ablation of Sec. IV-D."""

    # Share of the state's elements zeroed in each extra transition.
    mask_prob: float = MISSING

    def rules(self) -> Rules:
        return {"mask_prob": (0 <= self.mask_prob <= 1, "in [0, 1]")}


class RandomMaskAugmenter(NoAugmentation):
    """Every real transition also gets a twin whose state is masked (same action, reward and
    next state): augmentation of the same volume as MACS's, made without a policy."""

    def __init__(self, mask_prob: float, seed: int) -> None:
        self.mask_prob = mask_prob
        self.generator = torch.Generator().manual_seed(seed)
        self.stats = CounterfactualStats()

    def after_step(self, real: Transitions) -> list[Transitions]:
        masked = random_mask(real.obs, self.mask_prob, self.generator)
        self.stats.add(len(real), len(real), states=(masked, real.obs))
        return [real.derived(torch.ones(len(real), dtype=torch.bool), continues_real=True, obs=masked)]

    def metrics(self) -> dict[str, float]:
        return self.stats.metrics()

    def training_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "stats": self.stats.state()}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.stats.load_state(state["stats"])


@plugins.mode("random_mask", RandomMaskConfig, suffix="-RM", order=90)
def random_mask_mode(context: AugmenterContext) -> RandomMaskAugmenter:
    mode: RandomMaskConfig = context.cfg.mode
    return RandomMaskAugmenter(mode.mask_prob, context.seed)
