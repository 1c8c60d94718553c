"""fastlab's Hydra sweeper: ``hydra/sweeper=fastlab``. The logic lives in ``fastlab.sweep``."""
