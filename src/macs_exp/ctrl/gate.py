"""CTRL's quality gate: the fitted model's counterfactuals against the env's own answers.

Before each fit, ``ctrl.gate_pairs`` real transitions are held out, and for each the env is
asked (from a snapshot, in a probe env whose steps are no cost of the run) what the alternative
action a' would have given: on VirtualTaobao the same random draws (the simulator's u), on the
rating env the user's logged answer. The model's counterfactual reward for (s, a') is scored
against that answer, beside a model-free yardstick: a reward regressor on (s, a') that ignores
the SCM. A failing gate is logged and tagged; the model is used either way, as CTRL has no gate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class GatePairs:
    """Held-out real transitions and the env's answers for their alternative actions: contexts
    and outcomes (model units), the observations, the env's reward and next observation, and
    on a binary-outcome env the next observation a' would have had if accepted."""

    context: torch.Tensor
    outcome: torch.Tensor
    alt_context: torch.Tensor
    obs: torch.Tensor
    env_reward: torch.Tensor
    env_next_obs: torch.Tensor
    alt_accepted: torch.Tensor

    @classmethod
    def cat(cls, parts: list[GatePairs]) -> GatePairs:
        return cls(*(torch.cat([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__))


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    """The area under the ROC curve (Mann-Whitney, ties counted half); None with one class."""
    positive, negative = scores[labels], scores[~labels]
    if len(positive) == 0 or len(negative) == 0:
        return None
    greater = (positive[:, None] > negative[None, :]).double().mean()
    ties = (positive[:, None] == negative[None, :]).double().mean()
    return float(greater + 0.5 * ties)


@dataclass(frozen=True)
class Prediction:
    """The model's counterfactual for every pair: reward, a score ranking rewards (the gate's
    logit on binary outcomes, else the reward), next observation with and without u; and the
    reference's reward and score (its regression output)."""

    reward: torch.Tensor
    score: torch.Tensor
    next_obs: torch.Tensor
    next_obs_no_u: torch.Tensor
    reference: torch.Tensor
    reference_score: torch.Tensor


def gate_metrics(pairs: GatePairs, pred: Prediction, tolerance: float, binary: bool) -> dict[str, float]:
    """``ctrl/cf_reward_accuracy`` (share of counterfactual rewards within ``tolerance`` of the
    env's), the reference's, and the ``ctrl/gate_*`` figures; ``ctrl/gate_pass`` is 1 when the model
    is at least as accurate as the reference and, on binary rewards, ranks at least as well (AUC)
    with a positive rate within 20% of the env's, and otherwise when using u predicts the env's
    next states better than ignoring it."""
    right = (pred.reward - pairs.env_reward).abs() <= tolerance
    reference_right = (pred.reference - pairs.env_reward).abs() <= tolerance
    metrics = {
        "ctrl/cf_reward_accuracy": float(right.float().mean()),
        "ctrl/gate_reference_accuracy": float(reference_right.float().mean()),
        "ctrl/gate_reward_mae": float((pred.reward - pairs.env_reward).abs().mean()),
        "ctrl/gate_reference_mae": float((pred.reference - pairs.env_reward).abs().mean()),
        "ctrl/gate_state_mse": float((pred.next_obs - pairs.env_next_obs).pow(2).sum(1).mean()),
        "ctrl/gate_state_mse_no_u": float((pred.next_obs_no_u - pairs.env_next_obs).pow(2).sum(1).mean()),
        "ctrl/gate_pairs": float(len(right)),
    }
    passed = metrics["ctrl/cf_reward_accuracy"] >= metrics["ctrl/gate_reference_accuracy"]
    if binary:
        labels = pairs.env_reward > 0.5
        env_rate, rate = float(labels.float().mean()), float((pred.reward > 0.5).float().mean())
        metrics.update({"ctrl/gate_positive_rate": rate, "ctrl/gate_env_positive_rate": env_rate})
        passed = passed and abs(rate - env_rate) <= 0.2 * env_rate
        model_auc, reference_auc = auc(pred.score, labels), auc(pred.reference_score, labels)
        if model_auc is not None and reference_auc is not None:
            metrics.update({"ctrl/gate_auc": model_auc, "ctrl/gate_reference_auc": reference_auc})
            passed = passed and model_auc >= reference_auc
    else:
        passed = passed and metrics["ctrl/gate_state_mse"] <= metrics["ctrl/gate_state_mse_no_u"]
    metrics["ctrl/gate_pass"] = float(passed)
    return metrics
