"""Hyperparameter tuning: one study file, run here or as a Vertex AI HyperparameterTuningJob.

- `study`: the study file (Vertex AI's StudySpec fields, config fields as parameter ids),
  read and checked before any trial starts;
- `local`: runs a study on this machine with Optuna, each trial a `trainer.main`
  process in its own workdir, resumable (`scripts/tune.py`);
- `report`: the table of trials and the best one (markdown, JSON) and TensorBoard HParams.

The trainer's side of a trial (arguments, workdir, metric file) is `trainer.cloud.hypertune`.
"""
