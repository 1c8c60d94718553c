"""The logic behind ``hydra/sweeper=fastlab``: search spaces, strategies, the trial store.

Nothing here is imported at package import time: Hydra imports every plugin module at start-up,
so the plugin imports these modules only when a sweep actually runs. The modules:

- ``settings``: the sweeper's settings (the dataclass the plugin's config extends)
- ``direction``: the objective's direction, given or fastlab-train's task's
- ``space``: Hydra's override grammar -> dimensions (``choice``, ``range``, ``interval``, ...)
- ``strategies``: ``grid``, ``random`` (scrambled Sobol) and the ``forest`` proposals
- ``forest``: the random-forest surrogate and expected improvement
- ``store``: ``trials.db`` (SQLite, WAL), the sweep's memory for resume; its one reader and writer
- ``export``: ``trials.csv``, ``best.yaml`` and the best-trials table
- ``driver``: the loop (propose, launch, record) independent of Hydra
- ``backends``, ``lease``, ``link``, ``pruners``: SQLite or PostgreSQL, live drivers, a job's
  reports, the pruning decisions
- ``compose``: the config loader that composes a sweep's shared part once per process
- ``shipping``: what a launcher ships to every job, pickled once per sweep
- ``hydra_glue``: adapts Hydra's launcher and job returns to the driver
- ``hydra_private``: every use of Hydra's private API, each checked, with its public fallback
"""
