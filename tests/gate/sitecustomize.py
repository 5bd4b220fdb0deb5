"""Registers the gated env in every Python process a kill test starts.

The tests put this directory on their subprocesses' PYTHONPATH only. Python imports a
``sitecustomize`` at start-up, so the env is registered in the run's own process and, in a sweep,
in the launcher's workers and in the fork server whose children run the jobs: processes that no
``env.id`` override can reach, since gymnasium only looks an id up in the registry of the
process that makes the env. The string entry point keeps this cheap: VirtualTaobao (and torch)
load only in a process that makes the env.
"""

import gymnasium as gym

gym.register(id="Test/GatedVirtualTaobao-v0", vector_entry_point="gated_env:GatedVirtualTaobaoVecEnv")
