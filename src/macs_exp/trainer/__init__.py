"""The trainer: the one place that orchestrates envs, agents and tracking."""

from macs_exp.trainer.run import run_experiment
from macs_exp.trainer.trainer import Trainer, TrainResult, evaluate

__all__ = ["TrainResult", "Trainer", "evaluate", "run_experiment"]
