"""The sweeper's settings: what ``hydra.sweeper.*`` holds besides the search space.

The plugin's config dataclass extends ``SweepSettings`` (adding ``_target_`` and ``params``), so the
fields, their defaults and their documentation live in one place.
"""

from dataclasses import dataclass

from fastlab.sweep.direction import DIRECTIONS, HOW_TO_SET
from fastlab.sweep.errors import SweepError

STRATEGIES = ("grid", "random", "forest")

# Trials a random or forest sweep runs when ``n_trials`` is not set (a grid runs all its points).
DEFAULT_N_TRIALS = 20


@dataclass
class SweepSettings:
    """Settings of a fastlab sweep (``hydra.sweeper.<field>``)."""

    # grid: every combination, in order; random: scrambled Sobol points from `seed`;
    # forest: `n_initial` random trials, then a random-forest surrogate proposes by expected
    # improvement, with a fraction `random_fraction` of random proposals interleaved.
    strategy: str = "forest"
    # maximize or minimize the task function's return value (a float; NaN = diverged). None:
    # the direction of fastlab-train's task.objective; other apps must set it (see direction.py).
    direction: str | None = None
    # The total for the sweep, resumes included (None: the whole grid, or 20 trials otherwise).
    n_trials: int | None = None
    # Trials handed to the launcher at once (None: the joblib launcher's n_jobs, otherwise 1).
    batch_size: int | None = None
    # Seeds the Sobol sequence and the forest (None: drawn once and kept in trials.db).
    seed: int | None = None
    # forest: random trials before the surrogate takes over.
    n_initial: int = 8
    # forest: fraction of later proposals drawn at random, so the surrogate cannot get stuck.
    random_fraction: float = 0.2
    # Stop once more than this fraction of n_trials has failed (0: the first failure stops).
    max_failure_rate: float = 0.25
    # On resume, run failed trials again (for example after fixing a bug in the task).
    retry_failed: bool = False
    # Rows of the best-trials table printed at the end.
    top_k: int = 5

    def validate(self) -> "SweepSettings":
        """Check every field; raise ``SweepError`` naming the bad one and the fix."""
        if self.strategy not in STRATEGIES:
            raise SweepError(
                f"hydra.sweeper.strategy={self.strategy!r} is unknown; use one of "
                f"{', '.join(STRATEGIES)}"
            )
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise SweepError(
                f"hydra.sweeper.direction={self.direction!r} is unknown; use maximize or minimize"
            )
        for name in ("n_trials", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SweepError(f"hydra.sweeper.{name}={value} must be at least 1 (or null)")
        if self.n_initial < 1:
            raise SweepError(f"hydra.sweeper.n_initial={self.n_initial} must be at least 1")
        for name in ("random_fraction", "max_failure_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SweepError(f"hydra.sweeper.{name}={value} must lie in [0, 1]")
        if self.top_k < 0:
            raise SweepError(f"hydra.sweeper.top_k={self.top_k} must be at least 0")
        return self

    @property
    def sign(self) -> float:
        """+1 to maximize, -1 to minimize: strategies always maximize ``sign * value``."""
        if self.direction is None:  # hydra_glue resolves it before the driver runs
            raise SweepError(f"hydra.sweeper.direction is not set; {HOW_TO_SET}")
        return 1.0 if self.direction == "maximize" else -1.0
