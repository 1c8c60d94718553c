"""One training run, split by what it does: ``plan`` (the schedule's stages, the LR finder,
resuming), ``fit`` (an attempt at the run, retried under ``trainer.auto_bs``), ``outputs`` (what
a finished run writes), ``metrics`` (the ``metrics.json`` contract) and ``resources`` (CPU
threads). ``fastlab.run.train`` composes them."""
