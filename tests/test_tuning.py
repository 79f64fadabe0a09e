"""Local tuning (scripts/tune.py): the study file's checks, and a real 3-trial study on
configs/test.py that is killed after its first trial and resumed."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf
from tensorboard.plugins.hparams import metadata as hparams_metadata
import yaml

from trainer import errors
from trainer.tuning import local
from trainer.tuning import study as study_lib
from tests.helpers import REPO_ROOT

_TUNE = os.path.join(REPO_ROOT, "scripts", "tune.py")


def _study(**changes):
  """A 3-trial learning-rate study on a slice of configs/test.py; `changes` replace parts."""
  job = {
      "displayName": "test-lr",
      "studySpec": {
          "metrics": [{"metricId": "psnr", "goal": "MAXIMIZE"}],
          "parameters": [{"parameterId": "train.learning_rate",
                          "doubleValueSpec": {"minValue": 0.0003, "maxValue": 0.03},
                          "scaleType": "UNIT_LOG_SCALE"}],
          "algorithm": "RANDOM_SEARCH"},
      "maxTrialCount": 3, "parallelTrialCount": 2,
      "trainer": {"config": "configs/test.py",
                  "overrides": {"train_split": "train[:512]", "eval_split": "test[:128]"}}}
  job.update(changes)
  return job


def _checked(job):
  study = study_lib.parse_study(job)
  study_lib.check_against_config(study, REPO_ROOT)
  return study


def test_the_docs_study_file_is_valid():
  study = study_lib.load_study(os.path.join(REPO_ROOT, "studies", "dense_lr_latent.yaml"))
  study_lib.check_against_config(study, REPO_ROOT)
  assert [parameter.id for parameter in study.parameters] == ["train.learning_rate",
                                                               "model.latent_dim"]
  assert study.parameters[1].values == (16, 32, 64, 128) and study.parameters[0].log_scale


def _with_parameter(**parameter):
  job = _study()
  job["studySpec"]["parameters"] = [{"parameterId": "train.learning_rate", **parameter}]
  return job


@pytest.mark.parametrize("job, message", [
    (_with_parameter(parameterId="train.learning_rat",
                     doubleValueSpec={"minValue": 0.001, "maxValue": 0.01}),
     "parameter train.learning_rat: 'train.learning_rat' is not a config field; did you mean "
     "train.learning_rate?"),
    (_with_parameter(doubleValueSpec={"minValue": "1e-4", "maxValue": 0.01}),
     "parameter train.learning_rate: doubleValueSpec.minValue '1e-4' is not a number (YAML "
     "reads 1e-4 as text; write 0.0001 or 1.0e-4)"),
    (_with_parameter(integerValueSpec={"minValue": 1, "maxValue": 3}, parameterId="noise.type"),
     "parameter noise.type: a integer range does not fit this str field (its value is "
     "'gaussian'); use categoricalValueSpec"),
    (_with_parameter(doubleValueSpec={"minValue": 0.0, "maxValue": 0.01}),
     "parameter train.learning_rate: the value 0.0 fails the trainer's checks: "
     "train.learning_rate=0.0 must be > 0"),
    (_study(studySpec={**_study()["studySpec"], "metrics": [{"metricId": "accuracy",
                                                             "goal": "MAXIMIZE"}]}),
     "studySpec.metrics[0]: metricId 'accuracy' is not an eval metric the trainer produces; "
     "use one of loss, mse, psnr, ssim"),
    (_study(studySpec={**_study()["studySpec"], "algorithm": "GRID_SEARCH"}),
     "studySpec.algorithm: GRID_SEARCH needs INTEGER, DISCRETE or CATEGORICAL parameters"),
    (_study(maxTrialCount=0), "maxTrialCount: 0 must be an integer >= 1"),
])
def test_bad_study_files_are_refused_with_one_line(job, message):
  with pytest.raises(errors.StudyError) as error:
    _checked(job)
  assert str(error.value).startswith(message), str(error.value)
  assert "\n" not in str(error.value)


def test_the_command_refuses_a_bad_study_before_any_trial(tmp_path):
  study_file = tmp_path / "study.yaml"
  study_file.write_text(yaml.safe_dump(_study(studySpec={
      **_study()["studySpec"], "metrics": [{"metricId": "val_loss", "goal": "MINIMIZE"}]})))
  result = subprocess.run([sys.executable, _TUNE, f"--study={study_file}",
                           f"--root={tmp_path / 'root'}"], capture_output=True, text=True,
                          timeout=120, check=False)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      "tune: studySpec.metrics[0]: metricId 'val_loss' is not an eval metric the trainer "
      "produces; use one of loss, mse, psnr, ssim"]
  assert not (tmp_path / "root").exists()


def test_trial_commands_pass_parameters_as_config_overrides():
  study = _checked(_study())
  command = local.trial_command(study, "/s/trials/2", {"train.learning_rate": 0.003,
                                                       "model.latent_dim": 32.0})
  assert command[1:] == [
      "-m", "trainer.main", "--config=configs/test.py", "--config.train_split=train[:512]",
      "--config.eval_split=test[:128]", "--config.runtime.hypertune_metric=psnr",
      "--workdir=/s/trials/2", "--config.train.learning_rate=0.003", "--config.model.latent_dim=32"]


def _hparams_sessions(tensorboard_dir):
  """{trial id: hparams} from the session start infos in the study's TensorBoard directory."""
  sessions = {}
  for path in glob.glob(os.path.join(tensorboard_dir, "*", "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == hparams_metadata.SESSION_START_INFO_TAG:
          info = hparams_metadata.parse_session_start_info_plugin_data(
              value.metadata.plugin_data.content)
          sessions[os.path.basename(os.path.dirname(path))] = {
              name: hparam.number_value for name, hparam in info.hparams.items()}
  return sessions


# Three trainer processes and a killed study: about a minute; CI runs it in make test-slow.
@pytest.mark.slow
def test_a_study_killed_after_its_first_trial_resumes_with_only_the_missing_trials(tmp_path):
  """THE end-to-end check: 3 trials of a 512-image slice of configs/test.py, 2 at a time."""
  study_file, root = tmp_path / "study.yaml", tmp_path / "root"
  study_file.write_text(yaml.safe_dump(_study()))
  command = [sys.executable, _TUNE, f"--study={study_file}", f"--root={root}"]
  first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
  deadline = time.time() + 300
  while not (root / "study.json").exists() and first.poll() is None and time.time() < deadline:
    time.sleep(0.2)
  # The first trial is recorded: kill the study and its running trial, as a lost machine would.
  os.killpg(first.pid, signal.SIGKILL)
  first.wait()
  finished = [row["trial"] for row in json.loads((root / "study.json").read_text())["trials"]
              if row["state"] == "COMPLETE"]
  assert finished, "no trial had finished"
  logs_before = {trial: (root / "trials" / f"{trial}.log").read_text() for trial in finished}

  result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((root / "study.json").read_text())
  assert [(row["trial"], row["state"]) for row in report["trials"]] == [
      ("1", "COMPLETE"), ("2", "COMPLETE"), ("3", "COMPLETE")]
  for trial in finished:  # Kept, not trained again.
    assert (root / "trials" / f"{trial}.log").read_text() == logs_before[trial]
  # The best trial is the best by the trials' own metrics.json.
  final_psnr = {row["trial"]: json.loads((root / "trials" / row["trial"] / "metrics.json")
                                         .read_text())["psnr"] for row in report["trials"]}
  assert report["best"]["trial"] == max(final_psnr, key=final_psnr.get)
  assert {row["trial"]: row["psnr"] for row in report["trials"]} == pytest.approx(final_psnr)
  rates = [row["train.learning_rate"] for row in report["trials"]]
  assert len(set(rates)) == 3 and all(0.0003 <= rate <= 0.03 for rate in rates)
  for row in report["trials"]:
    config = json.loads((root / "trials" / row["trial"] / "config.json").read_text())
    assert config["train"]["learning_rate"] == row["train.learning_rate"]
  assert f"Best: trial {report['best']['trial']}, psnr" in (root / "study.md").read_text()
  assert result.stdout.startswith("Study test-lr: maximize psnr")
  assert _hparams_sessions(root / "tensorboard") == {
      row["trial"]: {"train.learning_rate": pytest.approx(row["train.learning_rate"])}
      for row in report["trials"]}


@pytest.mark.parametrize("selection, goal, metric, expected", [
    ("LAST_MEASUREMENT", "MAXIMIZE", "psnr", 13.0),
    ("BEST_MEASUREMENT", "MAXIMIZE", "psnr", 14.0),
    ("BEST_MEASUREMENT", "MINIMIZE", "loss", 0.2),
])
def test_a_trials_result_is_its_last_or_best_report(tmp_path, selection, goal, metric, expected):
  job = _study()
  job["studySpec"] = {**job["studySpec"], "measurementSelectionType": selection,
                      "metrics": [{"metricId": metric, "goal": goal}]}
  study = study_lib.parse_study(job)
  metric_file = tmp_path / "1.metrics"
  values = {"psnr": (12.0, 14.0, 13.0), "loss": (0.3, 0.2, 0.25)}[metric]
  metric_file.write_text("".join(json.dumps({metric: str(value), "global_step": str(step)}) + "\n"
                                 for step, value in zip((8, 16, 24), values)))
  assert local._result(study, str(metric_file)) == expected  # pylint: disable=protected-access
  assert local._result(study, str(tmp_path / "missing")) is None  # pylint: disable=protected-access


def test_grid_search_proposes_every_combination_once():
  job = _study(maxTrialCount=10, studySpec={
      "metrics": [{"metricId": "loss", "goal": "MINIMIZE"}], "algorithm": "GRID_SEARCH",
      "parameters": [
          {"parameterId": "model.latent_dim", "integerValueSpec": {"minValue": 31, "maxValue": 33}},
          {"parameterId": "train.loss", "categoricalValueSpec": {"values": ["bce", "mse"]}}]})
  study = _checked(job)
  optuna_study = local.optuna.create_study(sampler=local._sampler(study, seed=0))  # pylint: disable=protected-access
  distributions = {parameter.id: local._distribution(parameter)  # pylint: disable=protected-access
                   for parameter in study.parameters}
  assert local.max_trials(study) == 6
  proposed = []
  for _ in range(6):
    trial = optuna_study.ask(distributions)
    proposed.append((trial.params["model.latent_dim"], trial.params["train.loss"]))
    optuna_study.tell(trial, 1.0)
  assert sorted(proposed) == [(31, "bce"), (31, "mse"), (32, "bce"), (32, "mse"), (33, "bce"),
                              (33, "mse")]
