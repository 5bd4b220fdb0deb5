"""The schema of the ``ctrl`` group: CTRL's causal model, its fitting schedule and its gate."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from macs_exp.schema import Rules, Schema


@dataclass
class CtrlConfig(Schema):
    """CTRL's structural causal model s' = f(s, a, u) and how the run fits and uses it."""

    # Hidden widths of the generator, encoder, discriminator and reward heads.
    net_arch: list[int] = MISSING
    # Hidden widths of the monotone noise branch, one small network per outcome coordinate (each
    # coordinate has its own scalar noise u_j; the rating env's binary outcome has one).
    noise_arch: list[int] = MISSING
    # Whether the context enters the noise branch (heteroscedastic noise), or u acts additively.
    noise_context: bool = MISSING
    # Adam learning rates of the generator and encoder, and of the discriminator.
    learning_rate: float = MISSING
    disc_learning_rate: float = MISSING
    # Adam's betas, as the GAN literature sets them.
    betas: list[float] = MISSING
    batch_size: int = MISSING
    # Gradient steps of the first fit's pretraining (the generator by MSE with u = 0).
    pretrain_steps: int = MISSING
    # Adversarial gradient steps of every fit (the refits continue from the last model).
    fit_steps: int = MISSING
    # Weights of the reconstruction G(s, a, E(s, a, s')) ~ s' and of the latent cycle
    # E(s, a, G(s, a, u)) ~ u beside the adversarial terms.
    reconstruction_weight: float = MISSING
    cycle_weight: float = MISSING
    # Gradient-norm clip of every update.
    max_grad_norm: float = MISSING
    # Temperature of the binary-outcome gate sigma(l / temperature).
    temperature: float = MISSING
    # The first fit after this share of the budget's user-steps, a refit after every further share.
    warmup_frac: float = MISSING
    refit_frac: float = MISSING
    # Real transitions kept for fitting (the latest ones).
    capacity: int = MISSING
    # Counterfactual transitions made from every real one, once the model is fitted.
    per_transition: int = MISSING
    # Alternative action a' = a + N(0, (action_noise x half the action range)^2).
    action_noise: float = MISSING
    # Real transitions before each fit whose counterfactual the env answers, held out for the gate.
    gate_pairs: int = MISSING
    # A counterfactual reward counts as right within this share of the env's reward range.
    gate_tolerance: float = MISSING

    def rules(self) -> Rules:
        return {
            "net_arch": (len(self.net_arch) >= 1 and min(self.net_arch) >= 1, "at least one positive width"),
            "noise_arch": (
                len(self.noise_arch) >= 1 and min(self.noise_arch) >= 1,
                "at least one positive width",
            ),
            "learning_rate": (self.learning_rate > 0, "positive"),
            "disc_learning_rate": (self.disc_learning_rate > 0, "positive"),
            "betas": (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "two values in [0, 1)"),
            "batch_size": (self.batch_size >= 2, "at least 2"),
            "pretrain_steps": (self.pretrain_steps >= 0, "at least 0"),
            "fit_steps": (self.fit_steps >= 1, "at least 1"),
            "reconstruction_weight": (self.reconstruction_weight >= 0, "at least 0"),
            "cycle_weight": (self.cycle_weight >= 0, "at least 0"),
            "max_grad_norm": (self.max_grad_norm > 0, "positive"),
            "temperature": (self.temperature > 0, "positive"),
            "warmup_frac": (0 < self.warmup_frac < 1, "in (0, 1)"),
            "refit_frac": (0 < self.refit_frac <= 1, "in (0, 1]"),
            "capacity": (self.capacity >= self.batch_size, f"at least ctrl.batch_size={self.batch_size}"),
            "per_transition": (self.per_transition >= 1, "at least 1"),
            "action_noise": (self.action_noise > 0, "positive"),
            "gate_pairs": (self.gate_pairs >= 2, "at least 2"),
            "gate_tolerance": (self.gate_tolerance > 0, "positive"),
        }
