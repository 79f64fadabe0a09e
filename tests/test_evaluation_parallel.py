"""The baselines in worker processes: the same numbers as serially, for every baseline.

Real baselines (trainer/evaluation/baselines.py) on a few real MNIST images, so
this is also the check that each of them denoises an image the same way in
any chunk and any process.
"""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import evaluate as evaluate_config
from input_pipeline import data_source
from trainer.evaluation import baselines
from trainer.evaluation import cache as cache_lib
from trainer.evaluation import loading
from trainer.evaluation import parallel
from trainer.evaluation import plan as plan_lib
from trainer.evaluation import progress as progress_lib
from trainer.evaluation import registry as registry_lib
from trainer.evaluation import schedule

NUM_TEST = 120  # Two chunks per baseline with two workers.
SLOW_SUBSET = 8


@pytest.fixture(scope="module")
def data():
  builder = data_source.get_builder("mnist", None)
  images = tfds.as_numpy(builder.as_dataset(split="train[:200]", batch_size=-1))["image"]
  images = images.astype(np.float32) / 255.0
  return loading.EvalData(
      test_images=images[:NUM_TEST], test_labels=None, tune_images=images[NUM_TEST:NUM_TEST + 10],
      fit_images=images[NUM_TEST + 10:], probe_images=images[:0], probe_labels=None,
      num_classes=0, splits={"tuning": "train[120:130]", "wiener_fit": "train[130:200]"},
      dataset_version="test")


def _config(num_workers):
  config = evaluate_config.get_config()
  config.num_workers = num_workers
  config.slow_baseline_max_images = SLOW_SUBSET
  config.batch_size = 64
  return config


def _evaluate(data, num_workers, tmp_path):
  config = _config(num_workers)
  config.num_images_to_show = 4
  cache = cache_lib.Cache(str(tmp_path / f"cache{num_workers}"), enabled=False)
  registry = registry_lib.default_registry()
  plan = plan_lib.make_plan(config, data, {"gaussian": (0.3,), "salt_and_pepper": (0.2,)},
                            baselines.BASELINE_NAMES, registry.slow_baselines, cache,
                            schedule.code_key(registry), num_models=0)
  return schedule.evaluate_levels(plan, config, data, [], registry, progress_lib.Progress(),
                                  cache, parallel.worker_count(num_workers))


@pytest.mark.slow  # Worker processes; tests/test_evaluation.py runs two workers in make test.
def test_every_baseline_gives_the_same_numbers_in_two_processes_as_serially(data, tmp_path):
  serial = _evaluate(data, 1, tmp_path)
  in_parallel = _evaluate(data, 2, tmp_path)
  assert in_parallel.results == serial.results
  assert in_parallel.cache == serial.cache == {"from_cache": 0, "computed": 16, "invalid": 0}
  for noise_type, by_level in serial.results.items():
    for result in by_level.values():
      assert set(result["metrics"]) == set(baselines.BASELINE_NAMES)
      assert result["metrics"]["bm3d"]["num_examples"] == SLOW_SUBSET
      for name in baselines.BASELINE_NAMES:
        if name != "noisy":  # Every baseline does denoise, at both levels.
          assert (result["metrics"][name]["psnr_mean_db"]
                  > result["metrics"]["noisy"]["psnr_mean_db"]), (noise_type, name)
    # The example rows too: the same images from the same methods.
  for noise_type, example in serial.examples.items():
    other = in_parallel.examples[noise_type]
    assert [title for title, _ in example["rows"]] == [title for title, _ in other["rows"]]
    for (_, images), (_, other_images) in zip(example["rows"], other["rows"]):
      np.testing.assert_array_equal(images, other_images)


def test_chunks_cover_the_images_once():
  assert parallel.chunks(500, 1) == [slice(0, 500)]
  for count, workers in [(500, 2), (10_000, 2), (120, 2), (49, 2), (10_000, 8)]:
    parts = parallel.chunks(count, workers)
    assert parts[0].start == 0 and parts[-1].stop == count
    assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))
    assert len(parts) <= 2 * workers
  assert len(parallel.chunks(500, 2)) == 4 and len(parallel.chunks(49, 2)) == 1


def test_the_task_queue_runs_tasks_by_priority_and_hands_results_back():
  order = []
  with parallel.TaskQueue(parallel.InlineExecutor, max_in_flight=1) as queue:
    for priority in [(2, 0), (0, 1), (1, 0), (0, 0)]:
      queue.push(priority, lambda value: value, (priority,), order.append)
    # A callback may queue more work, which then goes by its priority too.
    queue.push((0, 2), lambda: None, (), lambda _: queue.push((0, 3), str, (7,), order.append))
    while queue.pending():
      queue.wait()
  assert order == [(0, 0), (0, 1), "7", (1, 0), (2, 0)]


def test_a_failing_task_raises_in_the_caller():
  with parallel.TaskQueue(lambda: parallel.make_executor(1), max_in_flight=2) as queue:
    queue.push(0, plan_lib.level_key, ("not a level",), lambda _: None)
    with pytest.raises(ValueError):
      queue.wait()


def test_worker_count_defaults_to_the_cores_this_process_may_use():
  cores = parallel.worker_count(0)
  assert cores >= 1
  assert parallel.worker_count(1) == 1
  assert parallel.worker_count(cores + 1) == cores  # Bounded: tests/test_evaluation_reliability.py.
