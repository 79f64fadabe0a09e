"""Runs a study on this machine with Optuna: each trial a `trainer.main` process, resumable.

Under the study's root directory:

    study.db                 Optuna's record of the study (SQLite): what each trial got, how it ended
    trials/<id>/             trial <id>'s workdir (ids count from 1, as Vertex AI's do)
    trials/<id>.metrics      its metric file, written by the trainer as on Vertex AI
    trials/<id>.log          its output
    study.md, study.json     the table of trials and the best one (`trainer.tuning.report`)
    tensorboard/             HParams of every trial: tensorboard --logdir ROOT/tensorboard

Each trial runs exactly as a Vertex AI trial does: the study's trainer flags
and its parameters as `--config.<id>=<value>`, with CLOUD_ML_TRIAL_ID and
CLOUD_ML_HP_METRIC_FILE set, and its result is what the trainer reported there
(the last evaluation's, or the best with BEST_MEASUREMENT). Up to
`parallelTrialCount` trials run at once.

Rerunning the same command resumes: finished trials are kept; a trial that was
running when the study stopped continues from its checkpoint with the
parameters it had; new trials fill up to `maxTrialCount`. Algorithms: RANDOM_SEARCH
is Optuna's RandomSampler, GRID_SEARCH its GridSampler, ALGORITHM_UNSPECIFIED
(Vertex AI's Bayesian default) its TPESampler, which samples at random for its
first 10 trials.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time

from absl import logging
import optuna

from trainer import errors
from trainer.cloud import hypertune
from trainer.tuning import report
from trainer.tuning import study as study_lib

STORAGE_FILENAME = "study.db"
TRIALS_DIRNAME = "trials"
# Optuna's study name inside study.db; the spec it was made with is kept beside.
_STUDY_NAME = "study"
_SPEC_ATTRIBUTE = "study_file"
_POLL_SECONDS = 0.5


@dataclasses.dataclass
class _Running:
  trial_id: str
  number: int
  process: subprocess.Popen
  log: object


def trial_paths(root: str, trial_id: str) -> tuple[str, str, str]:
  """(workdir, metric file, log file) of trial `trial_id` under the study root."""
  base = os.path.join(root, TRIALS_DIRNAME, trial_id)
  return base, base + ".metrics", base + ".log"


def format_value(value) -> str:
  """A parameter value as a trainer flag value: 64.0 as 64 (an int field accepts only that)."""
  if isinstance(value, float):
    return str(int(value)) if value.is_integer() else repr(value)
  return str(value)


def trial_command(study: study_lib.Study, workdir: str, params: dict) -> list[str]:
  """The trainer command of one trial: the study's flags, then the trial's parameters."""
  return [sys.executable, "-m", "trainer.main", *study.trainer_args(), f"--workdir={workdir}",
          *(f"--config.{name}={format_value(value)}" for name, value in params.items())]


def _distribution(parameter: study_lib.Parameter) -> optuna.distributions.BaseDistribution:
  if parameter.kind == "double":
    return optuna.distributions.FloatDistribution(*parameter.bounds, log=parameter.log_scale)
  if parameter.kind == "integer":
    return optuna.distributions.IntDistribution(*parameter.bounds, log=parameter.log_scale)
  return optuna.distributions.CategoricalDistribution(parameter.values)


def _grid(study: study_lib.Study) -> dict[str, list]:
  return {parameter.id: (list(range(parameter.bounds[0], parameter.bounds[1] + 1))
                         if parameter.kind == "integer" else list(parameter.values))
          for parameter in study.parameters}


def max_trials(study: study_lib.Study) -> int:
  """maxTrialCount, or fewer for a grid with fewer points: each point is tried once."""
  if study.algorithm != "GRID_SEARCH":
    return study.max_trial_count
  return min(study.max_trial_count, math.prod(len(values) for values in _grid(study).values()))


class _GridSampler(optuna.samplers.GridSampler):
  """Optuna's grid, without its `study.stop()` once the grid is covered.

  That call works only inside `Study.optimize`; the runner asks and tells
  itself and stops at `max_trials` instead.
  """

  def after_trial(self, study, trial, state, values):
    del study, trial, state, values


def _sampler(study: study_lib.Study, seed: int) -> optuna.samplers.BaseSampler:
  if study.algorithm == "GRID_SEARCH":
    return _GridSampler(_grid(study), seed=seed)
  if study.algorithm == "RANDOM_SEARCH":
    return optuna.samplers.RandomSampler(seed=seed)
  return optuna.samplers.TPESampler(seed=seed, constant_liar=study.parallel_trial_count > 1)


def open_study(study: study_lib.Study, root: str) -> optuna.Study:
  """The Optuna study in `root`, created on the first run; StudyError if `root` holds another."""
  os.makedirs(os.path.join(root, TRIALS_DIRNAME), exist_ok=True)
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  storage = f"sqlite:///{os.path.abspath(os.path.join(root, STORAGE_FILENAME))}"
  optuna_study = optuna.create_study(
      storage=storage, study_name=_STUDY_NAME, load_if_exists=True,
      direction="maximize" if study.goal == "MAXIMIZE" else "minimize")
  spec = json.dumps({"studySpec": study.study_spec, "config": study.config_file,
                     "overrides": study.overrides}, sort_keys=True, default=str)
  earlier = optuna_study.user_attrs.get(_SPEC_ATTRIBUTE)
  if earlier is None:
    optuna_study.set_user_attr(_SPEC_ATTRIBUTE, spec)
  elif earlier != spec:
    raise errors.StudyError(
        f"{root} holds a study with another studySpec or trainer section; rerun it with its "
        "own study file, or choose a new --root")
  # Seeded by how far the study got, so a resumed study does not redraw its first trials.
  optuna_study.sampler = _sampler(study, seed=len(optuna_study.trials))
  return optuna_study


def _result(study: study_lib.Study, metric_file: str) -> float | None:
  """The trial's measurement from its metric file, or None if it reported nothing."""
  values = [float(entry[study.metric]) for entry in hypertune.read_metric_file(metric_file)
            if study.metric in entry]
  if not values:
    return None
  if study.measurement_selection == "LAST_MEASUREMENT":
    return values[-1]
  return max(values) if study.goal == "MAXIMIZE" else min(values)


def _launch(study, root, repository, trial_id, number, params) -> _Running:
  workdir, metric_file, log_file = trial_paths(root, trial_id)
  env = dict(os.environ, **{hypertune.TRIAL_ID_VARIABLE: trial_id,
                            hypertune.METRIC_FILE_VARIABLE: metric_file})
  log = open(log_file, "a")  # pylint: disable=consider-using-with
  logging.info("trial %s: %s", trial_id, " ".join(
      f"{name}={format_value(value)}" for name, value in params.items()))
  process = subprocess.Popen(trial_command(study, workdir, params), cwd=repository, env=env,
                             stdout=log, stderr=subprocess.STDOUT)
  return _Running(trial_id, number, process, log)


def _finish(optuna_study, study, root, trial: _Running | None, number: int, trial_id: str,
            exit_code: int) -> bool:
  """Records how a trial ended; True if it succeeded."""
  if trial is not None:
    trial.log.close()
  _, metric_file, log_file = trial_paths(root, trial_id)
  value = _result(study, metric_file) if exit_code == 0 else None
  if value is None:
    optuna_study.tell(number, state=optuna.trial.TrialState.FAIL)
    logging.warning("trial %s failed (exit code %d); its output: %s", trial_id, exit_code,
                    log_file)
    return False
  optuna_study.tell(number, value)
  logging.info("trial %s: %s=%.4f", trial_id, study.metric, value)
  return True


def run_study(study: study_lib.Study, root: str, repository: str,
              parallel: int | None = None) -> report.StudyReport:
  """Runs (or resumes) `study` under `root`; returns its report, also written to `root`.

  Args:
    study: a checked study (`study_lib.load_study`, `study_lib.check_against_config`).
    root: the study's directory.
    repository: where trials start (the config paths are relative to it).
    parallel: trials at once; the study's parallelTrialCount by default.

  Raises:
    errors.StudyError: `root` holds another study, or more trials failed than
      maxFailedTrialCount allows (0: any number may fail).
  """
  optuna_study = open_study(study, root)
  parallel = parallel or study.parallel_trial_count
  distributions = {parameter.id: _distribution(parameter) for parameter in study.parameters}
  # Trials a stopped run left running: continued with their own parameters.
  pending = [(trial.number, trial.params) for trial in optuna_study.get_trials(
      deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]
  running: list[_Running] = []
  failed = len(optuna_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)))
  try:
    while True:
      too_many_failures = 0 < study.max_failed_trial_count <= failed
      while len(running) < parallel and not too_many_failures:
        if pending:
          number, params = pending.pop(0)
        elif len(optuna_study.trials) < max_trials(study):
          trial = optuna_study.ask(distributions)
          number, params = trial.number, trial.params
        else:
          break
        trial_id = str(number + 1)
        workdir, metric_file, _ = trial_paths(root, trial_id)
        if (os.path.exists(os.path.join(workdir, "metrics.json"))
            and _result(study, metric_file) is not None):
          # Finished before the study stopped, but not yet recorded.
          failed += not _finish(optuna_study, study, root, None, number, trial_id, 0)
          continue
        running.append(_launch(study, root, repository, trial_id, number, params))
      if not running:
        break
      time.sleep(_POLL_SECONDS)
      for trial in [trial for trial in running if trial.process.poll() is not None]:
        running.remove(trial)
        failed += not _finish(optuna_study, study, root, trial, trial.number, trial.trial_id,
                              trial.process.returncode)
        report.write_report(study, root, optuna_study)
  finally:
    # Stopped (Ctrl-C, an error): the trials still running save a checkpoint (SIGTERM) and
    # exit; the rerun continues them.
    for trial in running:
      trial.process.terminate()
    for trial in running:
      trial.process.wait()
      trial.log.close()
  study_report = report.write_report(study, root, optuna_study)
  if 0 < study.max_failed_trial_count <= failed:
    raise errors.StudyError(
        f"{failed} trials failed (maxFailedTrialCount {study.max_failed_trial_count}); see "
        f"{os.path.join(root, TRIALS_DIRNAME)}/<id>.log, fix the cause and rerun to continue")
  return study_report
