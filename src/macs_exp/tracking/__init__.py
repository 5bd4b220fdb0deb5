"""Experiment tracking: MLflow runs with batched metric logging, or nothing at all."""

from macs_exp.tracking.mlflow_tracker import MlflowTracker, NullTracker, Tracker, flatten, tracked_run
from macs_exp.tracking.plots import plot_learning_curve

__all__ = ["MlflowTracker", "NullTracker", "Tracker", "flatten", "plot_learning_curve", "tracked_run"]
