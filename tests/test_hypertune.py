"""The trainer as a Vertex AI tuning trial: Vertex's argument form, its own workdir, and its
metric reported after each evaluation in cloudml-hypertune's exact format (and only in a trial)."""

import json
import os
import re
import subprocess
import sys

import hypertune as cloudml_hypertune  # The real cloudml-hypertune package (test extra).
import pytest

from trainer import train
from trainer.cloud import hypertune
from tests.helpers import REPO_ROOT



def test_space_separated_config_flags_are_joined():
  argv = ["prog", "--config=configs/test.py", "--workdir", "/w",
          "--config.train.learning_rate", "0.0031", "--config.runtime.jit_compile", "False",
          "--config.model.latent_dim", "32.0", "--config.noise.type=masking",
          "--config.model.type", "conv"]
  assert hypertune.normalize_vertex_args(argv) == [
      "prog", "--config=configs/test.py", "--workdir", "/w",
      "--config.train.learning_rate=0.0031", "--config.runtime.jit_compile=False",
      "--config.model.latent_dim=32", "--config.noise.type=masking", "--config.model.type=conv"]
  # A flag followed by another flag is left as it is.
  assert hypertune.normalize_vertex_args(["p", "--config.a.b", "--config.c=1"]) == [
      "p", "--config.a.b", "--config.c=1"]


def test_trial_workdir_is_the_trials_own_only_inside_a_trial():
  assert hypertune.trial_workdir("gs://b/run/workdir", {}) == "gs://b/run/workdir"
  trial = {"CLOUD_ML_TRIAL_ID": "7"}
  assert hypertune.trial_workdir("gs://b/run/workdir", trial) == "gs://b/run/workdir/7"
  assert hypertune.trial_workdir("/study/trials/7", trial) == "/study/trials/7"


def test_reports_exactly_what_cloudml_hypertune_writes(tmp_path, monkeypatch):
  ours, theirs = tmp_path / "ours" / "output.metrics", tmp_path / "theirs" / "output.metrics"
  monkeypatch.setenv("CLOUD_ML_TRIAL_ID", "3")
  monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(ours))
  reporter = hypertune.MetricReporter("psnr")
  monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(theirs))
  reference = cloudml_hypertune.HyperTune()
  for step, value in ((32, 14.5), (64, 16.25), (0, 17)):
    reporter.report(step, {"loss": 0.2, "psnr": value})
    reference.report_hyperparameter_tuning_metric(
        hyperparameter_metric_tag="psnr", metric_value=value, global_step=step)

  def without_timestamps(path):
    lines = path.read_text().splitlines()
    assert all(json.loads(line)["timestamp"] > 0 for line in lines)
    return [re.sub(r'"timestamp": [0-9.e+-]+', '"timestamp": T', line) for line in lines]

  assert without_timestamps(ours) == without_timestamps(theirs)
  assert [json.loads(line) | {"timestamp": 0} for line in ours.read_text().splitlines()][0] == {
      "checkpoint_path": "", "global_step": "32", "psnr": "14.5", "timestamp": 0, "trial": "3"}
  assert [path.name for path in ours.parent.iterdir()] == ["output.metrics"]  # No temp left.


def test_outside_a_trial_or_off_the_chief_nothing_is_written(tmp_path):
  path = tmp_path / "output.metrics"
  for environ, enabled in (({"CLOUD_ML_HP_METRIC_FILE": str(path)}, True),
                           ({"CLOUD_ML_HP_METRIC_FILE": str(path), "CLOUD_ML_TRIAL_ID": "1"},
                            False)):
    hypertune.MetricReporter("psnr", environ, enabled=enabled).report(10, {"psnr": 12.0})
  assert not path.exists()


def test_a_metric_the_trainer_does_not_produce_is_refused(config, tmp_path):
  config.runtime.hypertune_metric = "accuracy"
  with pytest.raises(ValueError, match="runtime.hypertune_metric='accuracy' is not an eval "
                     "metric of the trainer; use one of loss, mse, psnr, ssim"):
    train.train_and_evaluate(config, str(tmp_path / "workdir"))
  assert not (tmp_path / "workdir").exists()


def _tiny(config, num_epochs):
  config.train_split = "train[:256]"
  config.eval_split = "test[:128]"
  config.train.num_epochs = num_epochs
  return config


# A whole (tiny) training run, about 15 s here, for what the reporter's own test above already
# shows (no trial id, nothing written): make test-slow.
@pytest.mark.slow
def test_a_run_outside_a_trial_writes_no_metric_file(config, tmp_path, monkeypatch):
  path = tmp_path / "output.metrics"
  monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(path))
  monkeypatch.delenv("CLOUD_ML_TRIAL_ID", raising=False)
  train.train_and_evaluate(_tiny(config, 1), str(tmp_path / "workdir"))
  assert (tmp_path / "workdir" / "metrics.json").exists() and not path.exists()


@pytest.mark.slow  # A trainer process of two epochs: CI runs it in make test-slow.
def test_a_trial_run_takes_vertex_arguments_and_reports_each_evaluation(tmp_path):
  """The command Vertex AI runs: space-separated config flags, a trial id and a metric file."""
  metric_file = tmp_path / "hypertune" / "output.metrics"
  command = [sys.executable, "-m", "trainer.main", "--config=configs/test.py",
             f"--workdir={tmp_path / 'workdir'}", "--config.train_split=train[:256]",
             "--config.eval_split=test[:128]", "--config.runtime.hypertune_metric=ssim",
             "--config.train.num_epochs", "2", "--config.runtime.jit_compile", "False",
             "--config.train.learning_rate", "0.003", "--config.model.latent_dim", "32.0"]
  env = dict(os.environ, CLOUD_ML_TRIAL_ID="4", CLOUD_ML_HP_METRIC_FILE=str(metric_file),
             TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  workdir = tmp_path / "workdir" / "4"  # The trial's own workdir.
  config = json.loads((workdir / "config.json").read_text())
  assert config["train"]["learning_rate"] == 0.003 and config["train"]["num_epochs"] == 2
  assert config["model"]["latent_dim"] == 32 and config["runtime"]["jit_compile"] is False
  history = json.loads((workdir / "history.json").read_text())
  entries = hypertune.read_metric_file(str(metric_file))
  assert [(entry["trial"], entry["global_step"], float(entry["ssim"])) for entry in entries] == [
      ("4", str(epoch["step"]), epoch["eval_ssim"]) for epoch in history]
  assert len(entries) == 2
  assert float(entries[-1]["ssim"]) == json.loads((workdir / "metrics.json").read_text())["ssim"]
