"""Trackers' ground floor: what a run and a sweep report to the tools users already have (MLflow,
TensorBoard), kept free of the training loop and the sweep so both can use it.

The run dir stays the source of truth and a tracker holds a copy: one that fails is logged once
and left behind while the run goes on. Modules: ``names`` (what ``trainer.logger`` takes, and the
extras), ``mlflow_store`` (tracking URI, experiment, tags, params) and ``hparams`` (TensorBoard's
HParams summary of a sweep). The trackers that act are above: the callbacks
``fastlab.callbacks.mlflow.MlflowLogger`` and ``fastlab.callbacks.tensorboard`` for a run, and
``fastlab.sweep.trackers`` for a sweep (a parent run with nested trials, around the driver).
"""
