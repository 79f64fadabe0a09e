"""The benchmark's measurements on the tiny test config: right sizes, right FLOP counts, finite rates."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from configs import conv as conv_config
from input_pipeline import data_source
from trainer import models
from trainer import resources
from trainer.benchmarking import harness
from trainer.benchmarking import tutorial
from tests.helpers import REPO_ROOT



@pytest.fixture
def data(config):
  return data_source.create_data_source(config)


def test_dense_flops_are_the_tutorials_multiply_adds(config):
  model = models.create_model(config.model, (28, 28, 1))
  sizes = [784, 256, 128, 64, 128, 256, 784]
  forward = sum(2 * fan_in * fan_out for fan_in, fan_out in zip(sizes, sizes[1:]))
  assert harness.forward_flops_per_example(model) == forward == 966_656
  # Backward: every layer's weight gradient, and every input gradient but the image's.
  assert harness.training_flops_per_example(model) == 3 * forward - 2 * 784 * 256


def test_conv_flops_count_every_convolution():
  config = conv_config.get_config()
  # A dense-bottleneck conv: every layer kind (Conv2D, Conv2DTranspose, Dense) once.
  config.model.conv_filters = (32, 16)
  config.model.conv_blocks_per_level = 1
  config.model.conv_bottleneck = "dense"
  config.model.latent_dim = 256
  model = models.create_model(config.model, (28, 28, 1))
  expected = (2 * 9 * 1 * 32 * 14 * 14        # Conv2D 28 -> 14, 32 filters.
              + 2 * 9 * 32 * 32 * 14 * 14     # Conv2D at 14.
              + 2 * 9 * 32 * 16 * 7 * 7       # Conv2D 14 -> 7, 16 filters.
              + 2 * 9 * 16 * 16 * 7 * 7       # Conv2D at 7.
              + 2 * 7 * 7 * 16 * 256          # Dense to the 256-d latent.
              + 2 * 256 * 7 * 7 * 16          # Dense back.
              + 2 * 9 * 16 * 16 * 7 * 7       # Conv2DTranspose 7 -> 14 (its input: 7 x 7).
              + 2 * 9 * 16 * 16 * 14 * 14     # Conv2D at 14.
              + 2 * 9 * 16 * 32 * 14 * 14     # Conv2DTranspose 14 -> 28, 32 filters.
              + 2 * 9 * 32 * 32 * 28 * 28     # Conv2D at 28.
              + 2 * 9 * 32 * 1 * 28 * 28)     # Conv2D to one channel.
  assert harness.forward_flops_per_example(model) == expected
  first_convolution = 2 * 9 * 1 * 32 * 14 * 14
  assert harness.training_flops_per_example(model) == 3 * expected - first_convolution


def test_tutorial_arrays_draw_clipped_noise_once_from_the_seed(config, data):
  noisy, clean = tutorial.tutorial_arrays(data, "test[:64]", 0.4, seed=0)
  again, _ = tutorial.tutorial_arrays(data, "test[:64]", 0.4, seed=0)
  other, _ = tutorial.tutorial_arrays(data, "test[:64]", 0.4, seed=1)
  assert noisy.shape == clean.shape == (64, 28, 28, 1) and noisy.dtype == np.float32
  assert noisy.min() >= 0.0 and noisy.max() <= 1.0 and clean.max() <= 1.0
  np.testing.assert_array_equal(noisy, again)
  assert (noisy != other).mean() > 0.3
  # On mid-gray pixels, far from both clip bounds, the residual is the noise.
  mid = (clean > 0.45) & (clean < 0.55)
  assert abs((noisy - clean)[mid].std() - 0.4) < 0.1


def test_rates_are_positive_and_finite(config, data):
  strategy = tf.distribute.get_strategy()
  noisy, clean = tutorial.tutorial_arrays(data, data.train_split, 0.4, seed=0)
  tutorial_rate, total_seconds = tutorial.time_tutorial_fit(
      tutorial.tutorial_model(config.model, data.image_shape, 0), noisy, clean, 64, 1)
  rates = [tutorial_rate,
           *harness.time_input_pipeline(data, config, 1),
           harness.matmul_flops_per_second(size=256, repeats=2),
           harness.time_evaluation(strategy, data, config, num_passes=1)]
  assert all(math.isfinite(rate) and rate > 0 for rate in rates), rates
  assert total_seconds > 0


def test_alternating_measurements_continue_where_they_left_off(config, data):
  """(a) and (b) are built once and timed round after round, as the benchmark alternates them."""
  trainer = harness.TrainingLoop(tf.distribute.get_strategy(), data, config, max_epochs=2)
  assert trainer.steps_trained == 8  # One chunk of steps_per_loop at construction.
  model = tutorial.tutorial_model(config.model, data.image_shape, 0)
  noisy, clean = tutorial.tutorial_arrays(data, data.train_split, 0.4, seed=0)
  tutorial_fit = tutorial.TutorialFit(model, noisy, clean, batch_size=64)
  assert int(model.optimizer.iterations) == 32  # Its first epoch: 2,048 images, batch 64.
  rates = [trainer.examples_per_second(1), tutorial_fit.examples_per_second(1),
           trainer.examples_per_second(1), tutorial_fit.examples_per_second(1)]
  assert all(math.isfinite(rate) and rate > 0 for rate in rates), rates
  assert int(model.optimizer.iterations) == 3 * 32
  assert trainer.steps_trained == 8 + 2 * 32  # An epoch of 32 steps, twice, in chunks of 8.


def test_psnr_matches_a_direct_computation():
  clean = np.zeros((2, 28, 28, 1), np.float32)
  denoised = np.full((2, 28, 28, 1), 0.1, np.float32)
  assert tutorial.mean_psnr(clean, denoised) == pytest.approx(20.0, abs=1e-4)


def test_machine_and_memory_are_described():
  machine = harness.machine_description()
  assert machine["cores"] >= 1 and machine["tensorflow"] == tf.__version__
  assert any("CPU" in device for device in machine["devices"]) and machine["cpu"]
  assert resources.peak_rss_mb() > 100  # TensorFlow alone takes more.
  assert 100 < resources.rss_mb() <= resources.peak_rss_mb() + 1


@pytest.mark.slow
def test_benchmark_script_prints_its_json_with_the_mirrored_laptop_recipe(tmp_path):
  """The README's recipe used to crash: TF ops ran before the CPU could be split."""
  result = subprocess.run(
      [sys.executable, "scripts/benchmark.py", "--config=configs/test.py", "--num_epochs=1",
       "--rounds=2", "--data_service_workers=2", "--config.runtime.strategy=mirrored",
       "--config.runtime.num_cpu_devices=2", "--config.runtime.devices=CPU:0,CPU:1"],
      cwd=REPO_ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True,
      text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads(result.stdout.strip().splitlines()[-1])
  assert results["replicas"] == 2 and results["strategy"] == "mirrored"
  for key in ("tutorial_examples_per_sec", "trainer_examples_per_sec",
              "pipeline_examples_per_sec", "pipeline_core_us_per_example",
              "data_service_examples_per_sec", "data_service_core_us_per_example",
              "speedup_vs_tutorial", "pipeline_over_trainer",
              "model_flops_per_example", "flops_utilization", "peak_rss_mb", "eval_seconds",
              "eval_share_of_epoch"):
    assert math.isfinite(results[key]) and results[key] > 0, key
  assert results["machine"]["cores"] >= 1 and results["rounds"] == 2
  for key in ("pipeline_examples_per_sec_by_generator", "pipeline_core_us_per_example_by_generator"):
    assert sorted(results[key]) == ["philox", "table"], key
    assert all(math.isfinite(value) and value > 0 for value in results[key].values()), key
  assert (results["pipeline_core_us_per_example_by_generator"]["philox"]
          == results["pipeline_core_us_per_example"])
  assert "noise.generator=table" in result.stdout
  assert len(results["speedup_vs_tutorial_by_round"]) == 2
  assert "(a) tutorial" in result.stdout and "speedup vs tutorial" in result.stdout
  assert results["eval_share_of_epoch"] < 1.0 and "(e) one evaluation pass" in result.stdout


def test_the_pipeline_is_timed_with_each_generator_the_noise_allows(config, data):
  timings = harness.time_input_pipeline_by_generator(data, config, 1)
  assert list(timings) == ["philox", "table"]
  assert all(math.isfinite(value) and value > 0 for timing in timings.values() for value in timing)
  config.noise.type, config.noise.factor = "masking", 0.2
  assert list(harness.time_input_pipeline_by_generator(data, config, 1)) == ["philox"]


@pytest.mark.slow
def test_time_to_quality_trains_to_the_target_and_reports_the_median_ratio():
  """--time_to_quality on a tiny target: two rounds (the trainer first in the second)."""
  result = subprocess.run(
      [sys.executable, "scripts/benchmark.py", "--config=configs/test.py", "--time_to_quality",
       "--target_psnr=5.0", "--rounds=2", "--tutorial_epochs=2",
       "--config.train.num_epochs=3"],
      cwd=REPO_ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True,
      text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads(result.stdout.strip().splitlines()[-1])
  assert results["target_psnr"] == 5.0 and not results["target_is_tutorial_psnr"]
  assert len(results["rounds"]) == 2
  for entry in results["rounds"]:
    # The run stopped at its first evaluation, which met the target.
    assert entry["trainer_epochs_to_target"] == 1 and entry["trainer_best_psnr"] >= 5.0
    assert entry["trainer_seconds_trained"] == entry["trainer_seconds_to_target"] > 0
    assert entry["ratio"] == pytest.approx(
        entry["trainer_seconds_to_target"] / entry["tutorial_seconds"])
    assert entry["tutorial_test_psnr"] > 5.0 and entry["tutorial_seconds"] > 0
    assert [point[0] for point in entry["trainer_curve"]] == [1]
  assert results["time_to_quality_ratio"] == pytest.approx(
      np.median([entry["ratio"] for entry in results["rounds"]]))
  assert "round 2: tutorial" in result.stdout and "ratio" in result.stdout

  unreachable = subprocess.run(
      [sys.executable, "scripts/benchmark.py", "--config=configs/test.py", "--time_to_quality",
       "--target_psnr=60.0", "--rounds=1", "--tutorial_epochs=2", "--config.train.num_epochs=2"],
      cwd=REPO_ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True,
      text=True, timeout=300)
  assert unreachable.returncode == 0, unreachable.stderr[-3000:]
  results = json.loads(unreachable.stdout.strip().splitlines()[-1])
  assert results["time_to_quality_ratio"] is None and "never reached 60.00 dB" in unreachable.stdout
  # Trained to the config's end, every evaluation on the curve.
  assert [point[0] for point in results["rounds"][0]["trainer_curve"]] == [1, 2]

  # A bad target: one line, before the tutorial's minutes of training.
  bad = subprocess.run(
      [sys.executable, "scripts/benchmark.py", "--config=configs/test.py", "--time_to_quality",
       "--target_psnr=-3"], cwd=REPO_ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
      capture_output=True, text=True, timeout=120)
  assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1] == (
      "dae-trainer: --target_psnr=-3.0 must be a number of dB > 0, e.g. --target_psnr=23.0 (or "
      "leave it out: the tutorial's own PSNR).")
