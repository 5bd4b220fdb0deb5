"""Simulated recommendation environments.

Importing this package (or just ``macs_exp``) registers them with gymnasium. The entry points
are strings so that registration stays cheap and the simulators load only when an env is made.
Synthetic-v0, Session-v0 and Rating-v0 exist only as batched envs (``gym.make_vec``); their
single-env entry points raise an error that shows the ``gym.make_vec`` call (``envs.vector_only``).
"""

import gymnasium as gym

VIRTUAL_TAOBAO_ID = "MACS/VirtualTaobao-v0"
SYNTHETIC_ID = "MACS/Synthetic-v0"
SESSION_ID = "MACS/Session-v0"
RATING_ID = "MACS/Rating-v0"

# Guarded because gymnasium warns when an id is registered twice (e.g. on module reload).
if VIRTUAL_TAOBAO_ID not in gym.registry:
    gym.register(
        id=VIRTUAL_TAOBAO_ID,
        entry_point="macs_exp.envs.virtual_taobao:VirtualTaobaoEnv",
        vector_entry_point="macs_exp.envs.virtual_taobao:VirtualTaobaoVecEnv",
    )
if SYNTHETIC_ID not in gym.registry:
    gym.register(
        id=SYNTHETIC_ID,
        entry_point="macs_exp.envs.vector_only:synthetic",
        vector_entry_point="macs_exp.envs.synthetic:SyntheticVecEnv",
    )
if SESSION_ID not in gym.registry:
    gym.register(
        id=SESSION_ID,
        entry_point="macs_exp.envs.vector_only:session",
        vector_entry_point="macs_exp.envs.session:SessionVecEnv",
    )
# Vector only: a test slot is tied to one evaluation user (see envs/rating.py).
if RATING_ID not in gym.registry:
    gym.register(
        id=RATING_ID,
        entry_point="macs_exp.envs.vector_only:rating",
        vector_entry_point="macs_exp.envs.rating:RatingVecEnv",
    )
