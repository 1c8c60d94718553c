"""A Hydra app with a planted optimum whose jobs log to MLflow through fastlab's own MlflowLogger,
as fastlab-train's do: the MLflow experiment a fastlab sweep makes, without training anything.

The response is ``fastlab.analysis.sources.synthetic.planted_response``: a peak at schedule.lr_ratio = 2.6
and schedule.lr_max = 3e-3; schedule.pct_start does nothing. Each job writes the run-dir contract's
``metrics.json``, then the logger finishes from it, exactly as ``fastlab.run.fit`` does.
"""

import json
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fastlab.analysis.sources.synthetic import planted_response
from fastlab.callbacks.mlflow import MlflowLogger
from fastlab.callbacks.tracker import finish_tracking
from fastlab.config import MlflowConfig


@hydra.main(version_base="1.3", config_path="planted_conf", config_name="config")
def main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    s = cfg.schedule
    value = float(planted_response(np.array([s.lr_ratio]), np.array([s.lr_max]))[0])
    logger = MlflowLogger(MlflowConfig(experiment=cfg.trainer.mlflow.experiment), run_dir, OmegaConf.to_container(cfg))
    logger.before_fit()
    (run_dir / "metrics.json").write_text(json.dumps({
        "objective_name": "accuracy", "direction": "maximize", "status": "completed",
        "objective": value, "final": {"accuracy": value}, "epochs": 1}))
    finish_tracking([logger], run_dir)
    return value


if __name__ == "__main__":
    main()
