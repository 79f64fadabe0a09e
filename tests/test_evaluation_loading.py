"""Which model and which training run the evaluation scores (trainer/evaluation/loading.py): the
workdir around a SavedModel, an export swapped in during the load, a workdir still in training.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests import evaluation_fakes
from trainer import errors
from configs import test as test_config
from input_pipeline import data_source
from trainer import checkpoints
from trainer.evaluation import loading
from trainer.evaluation import report as report_lib
from trainer import export
from trainer import models
from trainer import workdir_lock
from tests.helpers import REPO_ROOT

IMAGE_SHAPE = data_source.IMAGE_SHAPE


def test_training_run_is_read_from_the_workdir_around_the_saved_model(tmp_path):
  assert loading.training_run(str(tmp_path / "saved_model")) is None
  (tmp_path / "metrics.json").write_text(json.dumps(
      {"epochs": 30.0, "step": 14040, "num_parameters": 437777, "psnr": 22.4}))
  (tmp_path / "config.json").write_text(json.dumps(
      {"model": {"type": "conv"}, "noise": {"type": "gaussian", "factor": 0.4}}))
  assert loading.training_run(str(tmp_path / "saved_model") + "/") == {
      "model_type": "conv", "num_parameters": 437777, "epochs": 30.0, "step": 14040,
      "noise": {"type": "gaussian", "factor": 0.4}}
  (tmp_path / "metrics.json").write_text("{not json")
  assert loading.training_run(str(tmp_path / "saved_model")) is None


def _export_at_step(workdir, step, seed):
  """A dense model exported into `workdir`/saved_model as trainer.main does at `step`."""
  model = models.create_model(test_config.get_config().model, IMAGE_SHAPE, seed=seed)
  export.export_saved_model(model, str(workdir / "saved_model"),
                            training_run={"step": step, "model_type": "dense"})
  return model


def _write_later_run_files(workdir):
  """metrics.json and config.json of a later run of `workdir`, at step 64."""
  (workdir / "metrics.json").write_text(json.dumps({"epochs": 2.0, "step": 64}))
  (workdir / "config.json").write_text(json.dumps({"model": {"type": "conv"}}))


def test_the_training_run_is_the_one_the_export_records_not_the_workdirs_latest(tmp_path):
  # A resumed run has rewritten the workdir's files (step 64); the export is from step 32.
  model = _export_at_step(tmp_path, 32, seed=0)
  _write_later_run_files(tmp_path)
  loaded = loading.load_model("run", str(tmp_path / "saved_model"))
  assert loaded.training_run == {"step": 32, "model_type": "dense",
                                 "weights_fingerprint": checkpoints.weights_fingerprint(model)}


@pytest.fixture
def trainer_holding(tmp_path):
  """`tmp_path` locked as a running trainer locks its workdir (this process holds it)."""
  assert workdir_lock.holder(str(tmp_path)) is None
  lock = workdir_lock.acquire(str(tmp_path))
  yield str(os.getpid())
  lock.release()
  assert workdir_lock.holder(str(tmp_path)) is None


def test_a_workdir_in_training_scores_its_last_export_and_says_so_in_one_line(
    tmp_path, trainer_holding, caplog):
  assert workdir_lock.holder(str(tmp_path)) == trainer_holding
  model = _export_at_step(tmp_path, 32, seed=0)
  _write_later_run_files(tmp_path)
  loaded = loading.load_model("run", str(tmp_path / "saved_model"))
  fingerprint = checkpoints.weights_fingerprint(model)
  assert loaded.training_run == {"step": 32, "model_type": "dense",
                                 "weights_fingerprint": fingerprint,
                                 "trainer_pid": trainer_holding}
  warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
  assert warnings == [(f"{tmp_path} is being trained (PID {trainer_holding} holds trainer.lock): "
                       f"evaluating its last complete export, from step 32 (weights "
                       f"{fingerprint}).")]
  markdown = report_lib.format_markdown({
      "dataset": {"name": "mnist", "num_examples": 1, "splits": {
          "test": "test", "tuning": "t", "wiener_fit": "w"}},
      "models": {"run": loaded.path}, "training_runs": {"run": loaded.training_run},
      "baselines": [], "slow_baselines": {}, "reference": {"type": "gaussian", "level": 0.4},
      "results": {"gaussian": {"0.4": {"num_examples": 1, "metrics": {"run": {
          "psnr_mean_db": 20.0, "psnr_pooled_db": 19.0, "ssim": 0.5, "bce": 0.1, "mse": 0.01}},
          "margin_over_best_baseline": {"run": None}}}},
      "representation": {"skipped": "no labels"}, "timings_seconds": {}})
  assert f"run ({loaded.path}, step 32, weights {fingerprint})" in markdown
  assert (f"- run's workdir was being trained (PID {trainer_holding}) during this evaluation: "
          "its last complete export was scored.") in markdown


def test_an_export_swapped_in_during_the_load_is_loaded_again(
    tmp_path, trainer_holding, monkeypatch):
  del trainer_holding
  _export_at_step(tmp_path, 32, seed=0)
  newer = models.create_model(test_config.get_config().model, IMAGE_SHAPE, seed=1)
  real_load = tf.saved_model.load
  loads = []

  def load_while_the_trainer_exports(path, *args, **kwargs):
    # The first load reads the record of step 32, then the weights of the
    # export of step 64 that the trainer renamed into place meanwhile.
    if not loads:
      export.export_saved_model(newer, path, training_run={"step": 64})
    loads.append(path)
    return real_load(path, *args, **kwargs)

  monkeypatch.setattr(tf.saved_model, "load", load_while_the_trainer_exports)
  monkeypatch.setattr(loading, "_RETRY_SECONDS", 0.0)
  loaded = loading.load_model("run", str(tmp_path / "saved_model"))
  assert len(loads) == 2
  assert loaded.training_run["step"] == 64
  assert loaded.training_run["weights_fingerprint"] == checkpoints.weights_fingerprint(newer)
  np.testing.assert_allclose(loaded.denoise(evaluation_fakes.train_images(2), batch_size=2),
                             newer(evaluation_fakes.train_images(2), training=False).numpy(), atol=1e-6)


def test_weights_that_do_not_match_the_exports_record_are_one_line(tmp_path):
  _export_at_step(tmp_path, 32, seed=0)
  record = tmp_path / "saved_model" / export.EXPORT_INFO_PATH
  record.write_text(json.dumps({"weights_fingerprint": "0123456789abcdef",
                                "training_run": {"step": 32}}))
  with pytest.raises(errors.EvaluationError,
                     match=r"holds weights [0-9a-f]{16}, but its assets.extra/export.json records "
                           r"0123456789abcdef: it changed while it was loaded"):
    loading.load_model("run", str(tmp_path / "saved_model"))


def test_a_workdir_in_training_without_an_export_yet_names_its_trainer(
    tmp_path, trainer_holding, monkeypatch):
  monkeypatch.setattr(loading, "_RETRY_SECONDS", 0.0)
  with pytest.raises(errors.EvaluationError,
                     match=rf"No SavedModel at .*saved_model \(model 'run'\) yet: .* is being "
                           rf"trained \(PID {trainer_holding} holds trainer.lock\), and its "
                           r"trainer exports at the end of its run"):
    loading.load_model("run", str(tmp_path / "saved_model"))


def test_an_export_without_a_record_is_described_by_its_workdir_unless_in_training(tmp_path):
  model = models.create_model(test_config.get_config().model, IMAGE_SHAPE, seed=0)
  export.export_saved_model(model, str(tmp_path / "saved_model"))
  os.remove(tmp_path / "saved_model" / export.EXPORT_INFO_PATH)
  _write_later_run_files(tmp_path)
  assert loading.load_model("run", str(tmp_path / "saved_model")).training_run == {
      "model_type": "conv", "num_parameters": None, "epochs": 2.0, "step": 64, "noise": None}
  # A trainer may be rewriting those files: they describe no export then.
  lock = workdir_lock.acquire(str(tmp_path))
  try:
    assert loading.load_model("run", str(tmp_path / "saved_model")).training_run == {
        "trainer_pid": str(os.getpid())}
  finally:
    lock.release()


@pytest.mark.slow
def test_a_real_trainer_resuming_the_workdir_is_detected_and_its_last_export_scored(tmp_path):
  """trainer.main trains to step 32, then resumes towards step 640; meanwhile the evaluation
  loads the step-32 export and names the running trainer."""
  workdir = tmp_path / "run"
  command = [sys.executable, "-m", "trainer.main", "--config=configs/test.py",
             f"--workdir={workdir}"]
  environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  subprocess.run(command, cwd=REPO_ROOT, env=environment, check=True, capture_output=True,
                 timeout=300)
  trainer = subprocess.Popen(command + ["--config.train.num_epochs=20"], cwd=REPO_ROOT,
                             env=environment, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 120
    while workdir_lock.holder(str(workdir)) != str(trainer.pid):
      assert trainer.poll() is None and time.time() < deadline, "the trainer never held the lock"
      time.sleep(0.1)
    loaded = loading.load_model("run", str(workdir / "saved_model"))
    assert loaded.training_run["step"] == 32
    assert loaded.training_run["trainer_pid"] == str(trainer.pid)
  finally:
    # It may not have installed its SIGTERM handler yet (it locks the workdir first).
    trainer.terminate()
    trainer.wait(timeout=120)


@pytest.mark.slow  # An evaluate process: CI runs it in make test-slow.
def test_missing_eval_extra_is_one_line_naming_it(tmp_path):
  # A stand-in scikit-learn that cannot be imported, as on an install without the extra.
  (tmp_path / "sklearn").mkdir()
  (tmp_path / "sklearn" / "__init__.py").write_text(
      "raise ModuleNotFoundError(\"No module named 'sklearn'\", name='sklearn')\n")
  result = subprocess.run(
      [sys.executable, "-m", "trainer.evaluate", "--saved_model=/nonexistent"], cwd=REPO_ROOT,
      env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), REPO_ROOT])),
      capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      "dae-trainer evaluate: the evaluation needs sklearn, which is not installed; install the "
      "eval extra: pip install '.[eval]' (or 'dae-trainer[eval]').")
  assert "Traceback" not in result.stderr


def test_more_examples_than_the_split_score_the_whole_split_with_a_warning(caplog):
  config = evaluation_fakes.small_config()
  config.split = "test[:40]"
  config.num_examples = 100_000
  data = loading.load_data(config)
  assert len(data.test_images) == 40 and data.splits["test"] == "test[:40]"
  assert any("num_examples=100000 is more than the 40 images of split 'test[:40]': scoring all 40"
             in record.getMessage() for record in caplog.records)
