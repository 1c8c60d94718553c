"""Trackers: what a run and a sweep report to the tools users already have (MLflow, TensorBoard).

The run dir stays the source of truth and a tracker holds a copy: one that fails is logged once
and left behind while the run goes on (``fastlab.callbacks.tracker.Tracker``, the base of the
tracker callbacks). Modules: ``names`` (what ``trainer.logger`` takes, and the extras),
``mlflow_store`` (tracking URI, experiment, tags, params), ``mlflow_logger`` (a run as an MLflow
run), ``hparams`` (TensorBoard's HParams summary of a sweep) and ``sweep`` (a sweep as a parent
run with nested trials; called around the driver by ``fastlab.sweep.hydra_glue``).
"""
