"""Simulated recommendation environments.

Importing this package registers them with gymnasium. The entry points are strings so that
registration stays cheap and the simulators load only when an env is made.
"""

import gymnasium as gym

VIRTUAL_TAOBAO_ID = "MACS/VirtualTaobao-v0"
SYNTHETIC_ID = "MACS/Synthetic-v0"
RATING_ID = "MACS/Rating-v0"

# Guarded because gymnasium warns when an id is registered twice (e.g. on module reload).
if VIRTUAL_TAOBAO_ID not in gym.registry:
    gym.register(
        id=VIRTUAL_TAOBAO_ID,
        entry_point="macs_exp.envs.virtual_taobao:VirtualTaobaoEnv",
        vector_entry_point="macs_exp.envs.virtual_taobao:VirtualTaobaoVecEnv",
    )
if SYNTHETIC_ID not in gym.registry:
    gym.register(id=SYNTHETIC_ID, vector_entry_point="macs_exp.envs.synthetic:SyntheticVecEnv")
# Vector only: a test slot is tied to one evaluation user (see envs/rating.py).
if RATING_ID not in gym.registry:
    gym.register(id=RATING_ID, vector_entry_point="macs_exp.envs.rating:RatingVecEnv")
