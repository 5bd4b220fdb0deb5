"""macs-exp: config-driven experiments for RL recommenders with MACS counterfactual synthesis.

Importing the package registers the ``MACS/*`` gymnasium ids, so that ``gym.make`` finds them
after ``import macs_exp`` (and ``gym.make("macs_exp:MACS/VirtualTaobao-v0")`` imports it
itself). That costs only gymnasium's import: the simulators and torch load when an env is made.
"""

from macs_exp import envs  # noqa: F401  (registers the MACS/* ids)

__version__ = "0.1.0"
