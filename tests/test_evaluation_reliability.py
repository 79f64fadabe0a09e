"""The evaluation's rough edges (issue 25, items 4 and 6-10): each ends in one line, or is bounded.

Models with unusable outputs, more workers than cores, an output directory
that cannot be written, and worker processes that outlive their evaluation.
(Item 6, a cache entry of the wrong JSON type: tests/test_evaluation_cache.py.)
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from configs import evaluate as evaluate_config
from tests import evaluation_fakes
from trainer import errors
from trainer.evaluation import parallel
from trainer.evaluation import runner

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_config():
  config = evaluate_config.get_config()
  config.num_workers = 1
  config.use_cache = False
  config.num_examples = 8
  config.levels.gaussian = (0.4,)
  config.levels.salt_and_pepper = ()
  config.levels.masking = ()
  config.baselines = ("noisy",)
  config.tuning_examples = 4
  config.wiener_fit_examples = 0
  config.representation.train_examples = 0
  return config


def _flat(images):
  return tf.reshape(images, [-1, 784])


@pytest.mark.parametrize("denoise, encode, latent_key, message", [
    (tf.identity, _flat, "code", r"returns \['code'\] from its encode signature, not 'latent'"),
    (tf.identity, lambda images: _flat(images) / 0.0,
     "latent", r"returned \d+ non-finite values \(NaN or infinity\) of \d+ from its encode"),
    (lambda images: images * np.nan, _flat,
     "latent", r"returned 1568 non-finite values \(NaN or infinity\) of 1568 from its "
               "serving_default"),
])
def test_a_model_with_unusable_outputs_is_one_line_before_any_work(
    tmp_path, denoise, encode, latent_key, message):
  path = evaluation_fakes.save_signatures(str(tmp_path / "bad"), denoise, encode,
                                          latent_key=latent_key)
  output_dir = tmp_path / "out"
  with pytest.raises(errors.EvaluationError, match=message):
    runner.evaluate_and_report(_tiny_config(), {"bad": path}, str(output_dir),
                               registry=evaluation_fakes.registry())
  assert not output_dir.exists()


def test_nan_on_the_test_images_alone_is_one_line_too(tmp_path):
  # Finite on the blank images of the load-time check, NaN on real digits.
  path = evaluation_fakes.save_signatures(
      str(tmp_path / "nan"), lambda images: images + tf.math.log(-tf.reduce_max(images)),
      _flat)
  with pytest.raises(errors.EvaluationError, match="non-finite values .* serving_default"):
    runner.evaluate_and_report(_tiny_config(), {"nan": path}, str(tmp_path / "out"),
                               registry=evaluation_fakes.registry())


def test_more_workers_than_cores_are_bounded_with_a_warning(monkeypatch, caplog):
  monkeypatch.setattr(parallel, "_cores", lambda: 2)
  with caplog.at_level("WARNING"):
    assert parallel.worker_count(12) == 2
  assert "num_workers=12 is more than the 2 cores" in caplog.text
  caplog.clear()
  assert parallel.worker_count(2) == 2 and parallel.worker_count(0) == 2
  assert parallel.worker_count(1) == 1
  assert not caplog.text


def test_an_output_dir_that_cannot_be_written_fails_before_any_work(tmp_path):
  # /proc takes no new directory, even for root (os.access says it is writable then).
  with pytest.raises(errors.EvaluationError, match="--output_dir=/proc/dae-eval cannot be written"):
    # A missing model fails later: this line must come first.
    runner.evaluate_and_report(_tiny_config(), {"m": str(tmp_path / "nowhere")},
                               "/proc/dae-eval", registry=evaluation_fakes.registry())


def _children(pid: int) -> list[int]:
  children = []
  for entry in os.listdir("/proc"):
    if entry.isdigit():
      try:
        with open(f"/proc/{entry}/stat") as file:
          fields = file.read().rsplit(")", 1)[1].split()
      except OSError:
        continue
      if int(fields[1]) == pid:
        children.append(int(entry))
  return children


def _alive(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat") as file:
      return file.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


def _start_evaluation_with_workers(tmp_path, new_session=False):
  """An evaluation with 2 worker processes, once both are running: (process, worker pids).

  With `new_session`, it leads a process group of its own, as a command in a terminal does.
  """
  model = evaluation_fakes.save_signatures(str(tmp_path / "identity"), tf.identity, _flat)
  process = subprocess.Popen(
      [sys.executable, "-m", "trainer.evaluate", f"--saved_model=m={model}",
       f"--output_dir={tmp_path / 'out'}", "--config.num_workers=2", "--config.use_cache=false",
       "--config.num_examples=500", "--config.levels.gaussian=0.4",
       "--config.levels.salt_and_pepper=()", "--config.levels.masking=()",
       "--config.baselines=bm3d,nl_means", "--config.representation.train_examples=0",
       "--config.wiener_fit_examples=0"],
      cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), start_new_session=new_session)
  deadline = time.monotonic() + 120
  while time.monotonic() < deadline and process.poll() is None:
    # The pool's workers (spawn also starts a resource tracker: it has no "-c ... spawn_main").
    workers = [pid for pid in _children(process.pid)
               if b"spawn_main" in open(f"/proc/{pid}/cmdline", "rb").read()]
    if len(workers) == 2:
      time.sleep(3)  # Past their start: into the tasks.
      return process, workers
    time.sleep(0.2)
  process.kill()
  pytest.fail(f"no two workers started: {process.communicate()[1][-2000:]}")


def _gone_within(pids, seconds: float) -> list[int]:
  deadline = time.monotonic() + seconds
  while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
    time.sleep(0.1)
  return [pid for pid in pids if _alive(pid)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.slow  # An evaluation process and its workers, killed: CI runs it in make test-slow.
def test_killing_the_evaluation_leaves_no_worker_process(tmp_path):
  # THE check of issue 25 item 4: after kill -9 no worker may be left (they were, 111 s later).
  process, workers = _start_evaluation_with_workers(tmp_path)
  process.kill()
  process.wait(timeout=30)
  assert _gone_within(workers, 5.0) == []


@pytest.mark.slow  # A second evaluation process with workers (about 15 s of CPU).
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_ends_the_evaluation_and_its_workers_with_one_line(tmp_path):
  process, workers = _start_evaluation_with_workers(tmp_path)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=60)
  assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
  assert stderr.strip().splitlines()[-1].startswith(
      "dae-trainer evaluate: stopped by SIGTERM before the report was written"), stderr[-2000:]
  assert "Traceback" not in stderr
  assert _gone_within(workers, 5.0) == []
  assert not (tmp_path / "out").exists()


def test_a_worker_process_imports_no_tensorflow():
  # How spawn starts a worker of `python -m trainer.evaluate`: it imports the entry point under
  # this name. TensorFlow there cost each worker seconds of CPU and hundreds of MiB (item 9).
  code = ("import runpy, sys\n"
          "runpy.run_module('trainer.evaluate', run_name='__mp_main__')\n"
          "from trainer.evaluation import tuning\n"
          "heavy = [name for name in ('tensorflow', 'sklearn', 'keras') if name in sys.modules]\n"
          "assert not heavy, heavy\n")
  evaluation_fakes.assert_python_runs(code)


@pytest.mark.slow  # A third evaluation process with workers (about 10 s of CPU).
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_to_the_process_group_is_one_line_and_no_worker_traceback(tmp_path):
  process, workers = _start_evaluation_with_workers(tmp_path, new_session=True)
  os.killpg(process.pid, signal.SIGINT)  # What Ctrl-C in a terminal does: the whole group.
  _, stderr = process.communicate(timeout=60)
  assert process.returncode == 128 + signal.SIGINT, stderr[-2000:]
  assert stderr.strip().splitlines()[-1].startswith(
      "dae-trainer evaluate: stopped by SIGINT before the report was written"), stderr[-2000:]
  assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
  assert _gone_within(workers, 5.0) == []
