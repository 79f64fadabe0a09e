"""Running as a trial of a hyperparameter tuning job: Vertex AI's arguments, directories and metric.

A Vertex AI HyperparameterTuningJob starts each trial as
`python -m trainer.main <the trial spec's args> --<parameterId> <value> ...`
(space-separated), with CLOUD_ML_TRIAL_ID set, and learns the trial's result
from the JSON lines the trial writes to $CLOUD_ML_HP_METRIC_FILE (default
/tmp/hypertune/output.metrics), as the `cloudml-hypertune` package writes them.
This module is the trainer's side of that:

- `normalize_vertex_args`: `--config.a.b VALUE` -> `--config.a.b=VALUE`
  (absl would read `--config.flag False` as `--config.flag` plus a stray `False`);
- `trial_workdir`: every trial gets its own workdir (Vertex passes all trials the
  same `--workdir`), as it gets its own AIP_* directories (`<base>/<trial id>/model/`);
- `MetricReporter`: after each evaluation, the configured eval metric, in
  cloudml-hypertune's exact format, only inside a trial.

The local study runner (`trainer.tuning.local`) starts its trials the same way.
"""

from __future__ import annotations

import collections
import json
import os
import re
import tempfile
import time
from typing import Mapping, Sequence

from trainer import errors

# Set by Vertex AI in each trial's containers (and by the local study runner).
TRIAL_ID_VARIABLE = "CLOUD_ML_TRIAL_ID"
METRIC_FILE_VARIABLE = "CLOUD_ML_HP_METRIC_FILE"
# cloudml-hypertune's defaults (hypertune/hypertune.py).
DEFAULT_METRIC_FILE = "/tmp/hypertune/output.metrics"
_MAX_ENTRIES = 100
# Eval metrics a study may optimise (trainer.steps.EVAL_METRICS without
# noisy_psnr, which does not depend on the model), with the better direction.
METRIC_GOALS = {"loss": "MINIMIZE", "mse": "MINIMIZE", "psnr": "MAXIMIZE", "ssim": "MAXIMIZE"}

_CONFIG_FLAG = re.compile(r"--config\.[A-Za-z_][\w.]*$")
_INTEGRAL_FLOAT = re.compile(r"-?\d+\.0*$")


def check_metric_name(name: str) -> None:
  """Raises errors.ConfigError unless `name` is an eval metric the trainer reports."""
  if name not in METRIC_GOALS:
    raise errors.ConfigError(f"runtime.hypertune_metric={name!r} is not an eval metric of the trainer; "
                             f"use one of {', '.join(METRIC_GOALS)}.")


def normalize_vertex_args(argv: Sequence[str]) -> list[str]:
  """Joins Vertex AI's `--config.a.b VALUE` pairs into `--config.a.b=VALUE`.

  Both forms then parse alike, booleans included. A value that is an integral
  float (`64.0`, how a DISCRETE parameter's number may arrive) loses its
  fraction, so an int field accepts it (a float field reads `64` as 64.0).
  """
  argv = list(argv)
  result = argv[:1]
  index = 1
  while index < len(argv):
    argument = argv[index]
    value = argv[index + 1] if index + 1 < len(argv) else None
    if _CONFIG_FLAG.match(argument) and value is not None and not value.startswith("--"):
      if _INTEGRAL_FLOAT.match(value):
        value = value.split(".")[0]
      result.append(f"{argument}={value}")
      index += 2
    else:
      result.append(argument)
      index += 1
  return result


def trial_id(environ: Mapping[str, str] | None = None) -> str | None:
  """The tuning trial this process runs (CLOUD_ML_TRIAL_ID), or None outside a trial."""
  environ = os.environ if environ is None else environ
  return environ.get(TRIAL_ID_VARIABLE) or None


def trial_workdir(workdir: str, environ: Mapping[str, str] | None = None) -> str:
  """`workdir/<trial id>` inside a trial, else `workdir`.

  Every trial of a Vertex AI tuning job gets the same `--workdir`; its
  config.json, history.json, metrics.json and lock would collide. The trial's
  AIP_* directories already end in its id (`<base>/<trial id>/model/`).
  A workdir already named after the trial (the local runner's) stays.
  """
  trial = trial_id(environ)
  if trial is None or os.path.basename(os.path.normpath(workdir)) == trial:
    return workdir
  return os.path.join(workdir, trial)


def metric_entry(tag: str, value: float, step: int, trial: str, timestamp: float) -> dict:
  """One line of the metric file, as cloudml-hypertune 0.1.0.dev6 (PyPI) writes it.

  Every value but the timestamp is a string; `checkpoint_path` (for warm
  starts) is left empty, as `report_hyperparameter_tuning_metric` leaves it
  by default.
  """
  return {"timestamp": timestamp, "trial": str(trial), tag: str(float(value)),
          "global_step": str(int(step) if step else 0), "checkpoint_path": ""}


def read_metric_file(path: str) -> list[dict]:
  """The entries of a metric file (for the local runner); [] if there is none."""
  if not os.path.exists(path):
    return []
  with open(path) as file:
    return [json.loads(line) for line in file if line.strip()]


class MetricReporter:
  """Reports `metric` after each evaluation when the process is a tuning trial.

  Like `hypertune.HyperTune().report_hyperparameter_tuning_metric`, it keeps
  the last 100 entries and rewrites the whole file at each report (sorted
  keys, one JSON object a line); unlike it, through a temporary file and a
  rename, so the reader never sees half a file. Outside a trial (no
  CLOUD_ML_TRIAL_ID) or on a non-chief task it does nothing.
  """

  def __init__(self, metric: str, environ: Mapping[str, str] | None = None,
               enabled: bool = True):
    environ = os.environ if environ is None else environ
    self.metric = metric
    self.trial = trial_id(environ)
    self.path = environ.get(METRIC_FILE_VARIABLE) or DEFAULT_METRIC_FILE
    self.active = enabled and self.trial is not None
    self._entries = collections.deque(maxlen=_MAX_ENTRIES)

  def report(self, step: int, eval_metrics: Mapping[str, float]) -> None:
    """Called after each evaluation with the global step and the eval metrics."""
    if not self.active:
      return
    self._entries.append(metric_entry(self.metric, eval_metrics[self.metric], step,
                                      self.trial, time.time()))
    directory = os.path.dirname(self.path) or "."
    os.makedirs(directory, exist_ok=True)
    # A local file of the trial's container, never gs://: plain os suffices.
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".hypertune-")
    with os.fdopen(descriptor, "w") as file:
      file.writelines(json.dumps(entry, sort_keys=True) + "\n" for entry in self._entries)
    os.replace(temporary, self.path)
