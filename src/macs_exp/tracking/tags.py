"""The values of the ``role`` tag, which says what an MLflow run is for: written by the
composition root, the expert cache, the sweeps and the evaluation of saved agents, read by
every report."""

# A training job: the runs tables and figures are made of.
ROLE_RUN = "run"
# An expert trained on a run's behalf (expert mode), nested under that run.
ROLE_EXPERT = "expert"
# A sweep's parent run.
ROLE_SWEEP = "sweep"
# A saved agent evaluated again (``macs_exp.evaluate``), tagged trained_by_run_id.
ROLE_EVAL = "eval"

# The tags that link the runs one seed-parallel process trained (``macs_exp.trainer.parallel``):
# an id of the group, and its seeds ("0,1,2,3,4").
GROUP_TAG = "seed_group"
GROUP_SEEDS_TAG = "seed_group_seeds"
