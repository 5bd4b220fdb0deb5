"""MACS: the model-agnostic counterfactual synthesis policy (Wang et al., TNNLS 2023).

Its modes (``expert``, ``joint``) and the random-mask ablation are augmenters, each registered
as a ``mode`` option by its own module here.
"""

from macs_exp.macs.kl import kl_divergence, reward_histograms, reward_kl, scale_rewards, synthesis_reward
from macs_exp.macs.random_mask import random_mask
from macs_exp.macs.schedule import ThresholdSchedule
from macs_exp.macs.synthesis import Counterfactuals, Synthesizer, intervene

__all__ = [
    "Counterfactuals",
    "Synthesizer",
    "ThresholdSchedule",
    "intervene",
    "kl_divergence",
    "random_mask",
    "reward_histograms",
    "reward_kl",
    "scale_rewards",
    "synthesis_reward",
]
