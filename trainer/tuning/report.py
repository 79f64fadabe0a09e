"""A study's results: the table of trials and the best one (markdown, JSON), and TensorBoard HParams.

`write_report` rewrites, after every finished trial and at the end,
ROOT/study.md, ROOT/study.json and ROOT/tensorboard/: one HParams session
per trial (its parameters, and the study's metric at each evaluation it
reported), so `tensorboard --logdir ROOT/tensorboard` compares them all in the
HParams tab. Every file is written under a temporary name and renamed.
"""

from __future__ import annotations

import dataclasses
import os

import optuna
from tensorboard.plugins.hparams import api as hparams_api
import tensorflow as tf

from trainer.cloud import hypertune
from trainer.tuning import study as study_lib
from trainer import fileio

MARKDOWN_FILENAME = "study.md"
JSON_FILENAME = "study.json"
TENSORBOARD_DIRNAME = "tensorboard"


@dataclasses.dataclass(frozen=True)
class StudyReport:
  """The rows of the table (one a trial, by id) and the best trial's row (None before any succeeds)."""
  rows: list[dict]
  best: dict | None


def _row(study: study_lib.Study, root: str, trial: optuna.trial.FrozenTrial) -> dict:
  trial_id = str(trial.number + 1)
  seconds = ((trial.datetime_complete - trial.datetime_start).total_seconds()
             if trial.datetime_complete and trial.datetime_start else None)
  return {"trial": trial_id, "state": trial.state.name,
          **{parameter.id: trial.params.get(parameter.id) for parameter in study.parameters},
          study.metric: trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None,
          "seconds": None if seconds is None else round(seconds, 1),
          "workdir": os.path.join(root, "trials", trial_id)}


def _cell(value, column: str = "") -> str:
  if value is None:
    return "-"
  if column == "seconds":
    return f"{value:.0f}"
  if isinstance(value, float):
    return f"{value:.4g}" if abs(value) < 0.01 else f"{value:.4f}"
  return str(value)


def markdown(study: study_lib.Study, study_report: StudyReport) -> str:
  """The study as markdown: what it searched, one row per trial, and the best trial."""
  columns = ["trial", "state", *(parameter.id for parameter in study.parameters), study.metric,
             "seconds"]
  lines = [f"Study {study.display_name}: {study.goal.lower()} {study.metric} "
           f"({study.measurement_selection.lower().replace('_', ' ')}), {study.algorithm}, "
           f"{len(study_report.rows)} of {study.max_trial_count} trials, "
           f"config {study.config_file}.", "",
           "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(_cell(row[column], column) for column in columns) + " |"
            for row in study_report.rows]
  if study_report.best:
    best = study_report.best
    lines += ["", f"Best: trial {best['trial']}, {study.metric} {_cell(best[study.metric])}, "
              + ", ".join(f"{parameter.id}={_cell(best[parameter.id])}"
                          for parameter in study.parameters) + "."]
  return "\n".join(lines) + "\n"


def _hparam(parameter: study_lib.Parameter) -> hparams_api.HParam:
  if parameter.kind in ("double", "integer"):
    low, high = parameter.bounds
    domain = (hparams_api.RealInterval(float(low), float(high)) if parameter.kind == "double"
              else hparams_api.IntInterval(int(low), int(high)))
  else:
    domain = hparams_api.Discrete(list(parameter.values))
  return hparams_api.HParam(parameter.id, domain)


def write_hparams(study: study_lib.Study, root: str, trials) -> str:
  """ROOT/tensorboard: the experiment (parameters, metric) and one session per trial that reported."""
  directory = os.path.join(root, TENSORBOARD_DIRNAME)
  temporary = directory + ".tmp"
  if tf.io.gfile.exists(temporary):
    tf.io.gfile.rmtree(temporary)
  with tf.summary.create_file_writer(temporary).as_default():
    hparams_api.hparams_config(
        hparams=[_hparam(parameter) for parameter in study.parameters],
        metrics=[hparams_api.Metric(study.metric, display_name=f"eval {study.metric}")])
  for trial in trials:
    trial_id = str(trial.number + 1)
    entries = hypertune.read_metric_file(os.path.join(root, "trials", f"{trial_id}.metrics"))
    if not trial.params or not entries:
      continue
    with tf.summary.create_file_writer(os.path.join(temporary, trial_id)).as_default():
      hparams_api.hparams(trial.params, trial_id=trial_id)
      for entry in entries:
        tf.summary.scalar(study.metric, float(entry[study.metric]),
                          step=int(entry["global_step"]))
  fileio.replace_directory(temporary, directory)
  return directory


def write_report(study: study_lib.Study, root: str, optuna_study: optuna.Study) -> StudyReport:
  """Writes study.md, study.json and tensorboard/ under `root`; returns the table."""
  trials = sorted(optuna_study.get_trials(deepcopy=False), key=lambda trial: trial.number)
  rows = [_row(study, root, trial) for trial in trials]
  complete = [row for row in rows if row["state"] == "COMPLETE"]
  pick = max if study.goal == "MAXIMIZE" else min
  best = pick(complete, key=lambda row: row[study.metric]) if complete else None
  study_report = StudyReport(rows, best)
  fileio.write_json(os.path.join(root, JSON_FILENAME), {
      "study": study.display_name, "metric": study.metric, "goal": study.goal,
      "algorithm": study.algorithm, "measurement_selection": study.measurement_selection,
      "config": study.config_file, "overrides": study.overrides,
      "max_trial_count": study.max_trial_count, "trials": rows, "best": best})
  fileio.write_text(os.path.join(root, MARKDOWN_FILENAME), markdown(study, study_report))
  write_hparams(study, root, trials)
  return study_report
