"""macs-exp: config-driven experiments for RL recommenders with MACS counterfactual synthesis."""

__version__ = "0.1.0"
