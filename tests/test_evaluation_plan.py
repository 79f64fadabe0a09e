"""The evaluation's plan (trainer/evaluation/plan.py): levels, keys, costs, cache hits, without TensorFlow."""

import types

import numpy as np

from configs import evaluate as evaluate_config
from tests import evaluation_fakes
from trainer.evaluation import cache as cache_lib
from trainer.evaluation import plan as plan_lib
from trainer.evaluation import progress as progress_lib

CODE = {"sources": "digest", "libraries": {}}


def _data(num_test=30):
  images = np.random.default_rng(0).uniform(size=(num_test + 12, 28, 28, 1)).astype(np.float32)
  return types.SimpleNamespace(
      test_images=images[:num_test], tune_images=images[num_test:num_test + 6],
      fit_images=images[num_test + 6:], dataset_version="3.0.1",
      splits={"tuning": "train[10:16]", "wiener_fit": "train[4:10]"})


def _config():
  config = evaluate_config.get_config()
  config.slow_baseline_max_images = 10
  config.num_images_to_show = 4
  return config


def _plan(cache, levels=None, data=None):
  return plan_lib.make_plan(_config(), data or _data(),
                            levels or {"gaussian": (0.2, 0.4), "masking": (0.5,)},
                            ("noisy", "median", "bm3d", "wiener"), ("bm3d",), cache, CODE,
                            num_models=2)


def test_the_plan_lists_every_level_in_order_with_its_baselines_counts_and_costs(tmp_path):
  plan = _plan(cache_lib.Cache(str(tmp_path), enabled=True))
  assert [(level.noise_type, level.level) for level in plan.levels] == [
      ("gaussian", 0.2), ("gaussian", 0.4), ("masking", 0.5)]
  assert [level.index for level in plan.levels] == [0, 1, 2]
  assert (plan.num_examples, plan.subset_size, plan.shown, plan.stored_outputs) == (30, 10, 4, 10)
  assert plan.shown_levels == {"gaussian": 0.4, "masking": 0.5}
  assert plan.reference == ("gaussian", 0.4)
  level = plan.levels[1]
  assert [entry.name for entry in level.baselines] == ["noisy", "median", "bm3d", "wiener"]
  assert {entry.name: entry.count for entry in level.baselines}["bm3d"] == 10
  assert not any(entry.cached for entry in level.baselines)
  assert level.baselines[2].cost == progress_lib.baseline_cost("bm3d", 10)
  assert level.cost == progress_lib.level_cost(2, 30) + sum(
      progress_lib.baseline_cost(entry.name, entry.count) for entry in level.baselines)
  assert plan.cost == sum(level.cost for level in plan.levels)
  # Keys: what the result depends on, and only that.
  keys = [entry.key for entry in level.baselines]
  assert "fit" in keys[3] and "fit" not in keys[1]
  assert keys[1]["noise"]["stream_seeds"]["test"] == plan_lib.noise_seed(
      0, "gaussian", 0.4, "test").tolist()
  assert keys[1]["test"]["num_images"] == 30 and keys[2]["test"]["num_images"] == 10
  assert plan.levels[0].baselines[1].key != keys[1]  # Another level, another key.


def test_an_entry_in_the_cache_is_planned_as_a_cheap_read(tmp_path):
  cache = cache_lib.Cache(str(tmp_path), enabled=True)
  entry = _plan(cache).levels[0].baselines[1]
  cache.store(entry.kind, entry.key, {"params": {}}, {})
  replanned = _plan(cache).levels[0].baselines
  assert replanned[1].cached and replanned[1].cost == progress_lib.cached_cost()
  assert not replanned[0].cached and not replanned[2].cached
  # A disabled cache plans every baseline as computed.
  disabled = _plan(cache_lib.Cache(str(tmp_path), enabled=False)).levels[0].baselines
  assert not any(entry.cached for entry in disabled)


def test_the_keys_follow_the_test_images(tmp_path):
  cache = cache_lib.Cache(str(tmp_path), enabled=False)
  data = _data()
  changed = _data()
  changed.test_images = changed.test_images.copy()
  changed.test_images[0, 0, 0, 0] += 0.5
  key = _plan(cache, data=data).levels[0].baselines[1].key
  assert _plan(cache, data=changed).levels[0].baselines[1].key != key
  assert _plan(cache, data=_data()).levels[0].baselines[1].key == key


def test_planning_imports_no_tensorflow():
  code = ("import sys, types, numpy as np\n"
          "from trainer.evaluation import plan, cache\n"
          "from configs import evaluate\n"
          "assert 'tensorflow' not in sys.modules, 'imported by the modules'\n"
          "images = np.zeros((8, 28, 28, 1), np.float32)\n"
          "data = types.SimpleNamespace(test_images=images, tune_images=images, "
          "fit_images=images, dataset_version='v', splits={'tuning': 't', 'wiener_fit': 'f'})\n"
          "p = plan.make_plan(evaluate.get_config(), data, {'gaussian': (0.4,)}, ('noisy',), (), "
          "cache.Cache(enabled=False), {}, 1)\n"
          "assert len(p.levels) == 1\n"
          "assert 'tensorflow' not in sys.modules, 'imported by planning'\n")
  evaluation_fakes.assert_python_runs(code)
