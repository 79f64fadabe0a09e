"""The evaluation (trainer/evaluation/, python -m trainer.evaluate) on tiny SavedModels.

One module-scoped evaluation of two exported models (a few steps of the dense
DAE, and an exact identity) on 24 real MNIST test images backs most checks;
the baselines and representation modules are the stand-ins of
tests/evaluation_fakes.py, so the numbers are cheap and deterministic.
"""

import glob
import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from tests import evaluation_fakes
from trainer import errors
from configs import test as test_config
from input_pipeline import data_source
from trainer.evaluation import loading
from trainer.evaluation import report as report_lib
from trainer.evaluation import runner
from trainer.evaluation import plan as plan_lib
from trainer.evaluation import scoring
from trainer import export
from trainer import models
from input_pipeline import noise as noise_lib
from tests.helpers import REPO_ROOT
# pylint: enable=g-import-not-at-top,g-bad-import-order

IMAGE_SHAPE = data_source.IMAGE_SHAPE
NUM_EXAMPLES = evaluation_fakes.NUM_EXAMPLES
SLOW_SUBSET = evaluation_fakes.SLOW_SUBSET


def _export_trained_dae(path):
  """The test config's dense DAE after a few Adam steps on noisy MNIST."""
  model = models.create_model(test_config.get_config().model, IMAGE_SHAPE, seed=0)
  clean = evaluation_fakes.train_images(256)
  noisy = np.clip(clean + 0.4 * np.random.default_rng(0).normal(size=clean.shape), 0, 1)
  model.compile(keras.optimizers.Adam(3e-3), "binary_crossentropy")
  model.fit(noisy.astype(np.float32), clean, batch_size=64, epochs=2, verbose=0)
  export.export_saved_model(model, path)


def _export_identity(path):
  """A model whose output is its input exactly, and whose encoding is the raw pixels."""
  images = keras.Input(shape=IMAGE_SHAPE, name="images")
  encoder = keras.Model(images, keras.layers.Flatten()(images), name="encoder")
  inputs = keras.Input(shape=IMAGE_SHAPE)
  export.export_saved_model(
      keras.Model(inputs, keras.layers.Reshape(IMAGE_SHAPE)(encoder(inputs))), path)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
  root = tmp_path_factory.mktemp("models")
  paths = {"dae": str(root / "dae" / "saved_model"), "identity": str(root / "identity")}
  _export_trained_dae(paths["dae"])
  _export_identity(paths["identity"])
  return paths


# The stand-ins of the real baselines and scorers, handed to every evaluation here.
FAKES = evaluation_fakes.registry()


def _evaluate(config, model_paths, output_dir):
  return runner.evaluate_and_report(config, model_paths, output_dir, registry=FAKES)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def evaluated(saved_models, cache_dir, tmp_path_factory):
  """(report, output_dir) of one evaluation of both models, with an empty baseline cache."""
  output_dir = str(tmp_path_factory.mktemp("eval") / "out")
  report = _evaluate(evaluation_fakes.small_config(cache_dir), saved_models, output_dir)
  return report, output_dir


def _all_level_results(report):
  return [(noise_type, key, result) for noise_type, by_level in report["results"].items()
          for key, result in by_level.items()]


def test_every_metric_is_finite_and_psnr_mean_is_at_least_pooled(evaluated):
  report, _ = evaluated
  assert [key for _, key, _ in _all_level_results(report)] == ["0.2", "0.4", "0.1", "0.25"]
  for _, _, result in _all_level_results(report):
    assert set(result["metrics"]) == {"dae", "identity", "noisy", "median", "bm3d"}
    for method, scores in result["metrics"].items():
      assert set(scores) == {*scoring.METRICS, "num_examples"}
      assert all(math.isfinite(scores[name]) for name in scoring.METRICS), (method, scores)
      # Jensen: the mean of the per-image PSNRs is never below the pooled PSNR.
      assert scores["psnr_mean_db"] >= scores["psnr_pooled_db"] - 1e-9
  for scores in report["representation"]["features"].values():
    assert all(math.isfinite(value) for value in scores.values())


def test_identity_model_scores_exactly_the_noisy_input(evaluated):
  report, _ = evaluated
  for _, _, result in _all_level_results(report):
    assert result["metrics"]["identity"] == result["metrics"]["noisy"]
    # Not a trivial equality: the trained model does differ from its input.
    assert result["metrics"]["dae"] != result["metrics"]["noisy"]
  # The identity's encoding is the flattened image: the raw-pixels row, exactly.
  features = report["representation"]["features"]
  assert features["identity"] == features[scoring.RAW_PIXELS]
  assert features["dae"]["dim"] == test_config.get_config().model.latent_dim


def test_clean_images_as_output_give_the_documented_cap():
  clean = np.random.default_rng(1).uniform(size=(5, *IMAGE_SHAPE)).astype(np.float32)
  per_example = scoring.per_example_metrics(clean, clean.copy())
  np.testing.assert_array_equal(per_example["psnr_db"], scoring.MAX_PSNR_DB)
  scores = scoring.summarize(per_example)
  assert scores["psnr_mean_db"] == scores["psnr_pooled_db"] == scoring.MAX_PSNR_DB == 100.0
  assert scores["mse"] == 0.0
  assert scores["ssim"] == pytest.approx(1.0)
  # The cap is the floor of the MSE, not a clip of finite values below it.
  assert scoring.psnr_db(1e-4) == pytest.approx(40.0)


def test_metrics_match_a_direct_numpy_computation():
  rng = np.random.default_rng(2)
  clean = rng.uniform(size=(6, *IMAGE_SHAPE)).astype(np.float32)
  denoised = np.clip(clean + rng.normal(scale=0.2, size=clean.shape), 0, 1).astype(np.float32)
  denoised[0] = 0.0  # Saturated outputs: BCE clips them as Keras does.
  scores = scoring.summarize(scoring.per_example_metrics(clean, denoised, batch_size=4))

  error = clean.astype(np.float64) - denoised.astype(np.float64)
  mse = (error ** 2).reshape(6, -1).mean(axis=1)
  assert scores["mse"] == pytest.approx(mse.mean(), rel=1e-12)
  assert scores["psnr_mean_db"] == pytest.approx(np.mean(10 * np.log10(1 / mse)), rel=1e-12)
  assert scores["psnr_pooled_db"] == pytest.approx(10 * np.log10(1 / mse.mean()), rel=1e-12)
  # Clipped in float32, as the training loss does (1 - 1e-7 rounds to 1 - 2**-23).
  probabilities = np.clip(denoised, np.float32(1e-7), np.float32(1 - 1e-7)).astype(np.float64)
  bce = -(clean * np.log(probabilities) + (1 - clean) * np.log(1 - probabilities))
  assert scores["bce"] == pytest.approx(bce.mean(), rel=1e-5)
  expected_ssim = tf.image.ssim(clean, denoised, max_val=1.0).numpy().mean()
  assert scores["ssim"] == pytest.approx(expected_ssim, rel=1e-6)
  assert scores["num_examples"] == 6
  # The first k images alone, as for the slow baselines' subset.
  first = scoring.summarize(scoring.per_example_metrics(clean, denoised), 2)
  assert first["psnr_pooled_db"] == pytest.approx(10 * np.log10(1 / mse[:2].mean()), rel=1e-12)


def test_noise_is_fixed_per_type_and_level_and_per_image():
  clean = np.random.default_rng(3).uniform(size=(8, *IMAGE_SHAPE)).astype(np.float32)
  seed = plan_lib.noise_seed(0, "gaussian", 0.4, "test")
  spec = noise_lib.NoiseSpec("gaussian", 0.4)
  noisy = scoring.add_fixed_noise(clean, spec, seed)
  np.testing.assert_array_equal(noisy, scoring.add_fixed_noise(clean, spec, seed))
  # An image's noise does not depend on how many images are scored.
  np.testing.assert_array_equal(noisy[:3], scoring.add_fixed_noise(clean[:3], spec,
                                                                       seed))
  assert noisy.min() >= 0.0 and noisy.max() <= 1.0 and not np.array_equal(noisy, clean)
  seeds = {tuple(plan_lib.noise_seed(0, noise_type, level, stream))
           for noise_type, level, stream in [("gaussian", 0.4, "test"), ("gaussian", 0.2, "test"),
                                             ("masking", 0.4, "test"), ("gaussian", 0.4, "tune")]}
  assert len(seeds) == 4
  assert tuple(plan_lib.noise_seed(1, "gaussian", 0.4, "test")) not in seeds


def test_slow_baseline_runs_on_a_subset_and_the_models_are_compared_there(evaluated):
  report, output_dir = evaluated
  assert report["slow_baselines"] == {"bm3d": SLOW_SUBSET}
  result = report["results"]["gaussian"]["0.4"]
  assert result["metrics"]["bm3d"]["num_examples"] == SLOW_SUBSET
  assert result["metrics"]["dae"]["num_examples"] == NUM_EXAMPLES
  subset = result["subset"]
  assert subset["num_examples"] == SLOW_SUBSET
  assert subset["metrics"]["bm3d"] == result["metrics"]["bm3d"]
  assert subset["metrics"]["dae"]["num_examples"] == SLOW_SUBSET
  # The margin is the smallest over the baselines, each on the images it denoised.
  margin = result["margin_over_best_baseline"]["dae"]
  candidates = {name: (subset if name == "bm3d" else result)["metrics"]
                for name in ("noisy", "median", "bm3d")}
  expected = min(candidates[name]["dae"]["psnr_mean_db"] - candidates[name][name]["psnr_mean_db"]
                 for name in candidates)
  assert margin["margin_db"] == pytest.approx(expected)
  with open(os.path.join(output_dir, report_lib.REPORT_MD)) as file:
    markdown = file.read()
  assert f"| bm3d (first {SLOW_SUBSET} images) | baseline |" in markdown
  assert f"On the first {SLOW_SUBSET} images" in markdown


def test_baseline_params_and_tuning_are_recorded(evaluated):
  report, _ = evaluated
  for _, _, result in _all_level_results(report):
    assert set(result["baselines"]) == {"noisy", "median", "bm3d"}
    assert result["baselines"]["bm3d"]["params"]["size"] in (3, 5)
    assert all(math.isfinite(entry["tuning_psnr_db"]) for entry in result["baselines"].values())
  assert report["dataset"]["splits"]["tuning"] == "train[59984:60000]"
  assert report["dataset"]["splits"]["wiener_fit"] == "train[59968:59984]"


def test_report_plots_and_tensorboard_are_written(evaluated):
  report, output_dir = evaluated
  with open(os.path.join(output_dir, report_lib.REPORT_JSON)) as file:
    assert json.load(file) == json.loads(json.dumps(report))
  assert report["psnr_conventions"]["max_psnr_db"] == scoring.MAX_PSNR_DB
  assert set(report["timings_seconds"]) >= {"load models", "load data", "gaussian/0.4: tune bm3d"}
  with open(os.path.join(output_dir, report_lib.REPORT_MD)) as file:
    markdown = file.read()
  assert "## Headline: gaussian noise 0.4, 24 test images" in markdown
  assert ("| method | kind | PSNR mean (dB) | PSNR pooled (dB) | SSIM | BCE | MSE | "
          "margin over the best baseline (dB) |") in markdown
  headline = report["results"]["gaussian"]["0.4"]
  dae_margin = headline["margin_over_best_baseline"]["dae"]
  assert (f"| dae | model | {headline['metrics']['dae']['psnr_mean_db']:.2f} | "
          f"{headline['metrics']['dae']['psnr_pooled_db']:.2f} |") in markdown
  assert f"{dae_margin['margin_db']:+.2f} vs {dae_margin['best_baseline']}" in markdown
  for noise_type in ("gaussian", "salt_and_pepper", "masking"):
    assert f"## PSNR mean (dB) against the {noise_type} noise level" in markdown
    for name in (f"psnr_vs_level_{noise_type}.png", f"examples_{noise_type}.png"):
      with open(os.path.join(output_dir, name), "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n", name
  assert "| raw_pixels | 784 |" in markdown
  # Each model named with the weights its export records (these exports record no step).
  fingerprint = report["training_runs"]["dae"]["weights_fingerprint"]
  assert f"dae ({report['models']['dae']}, weights {fingerprint})" in markdown
  assert not glob.glob(os.path.join(output_dir, "**", "*.tmp*"), recursive=True)

  dae_run = os.path.join(output_dir, report_lib.TENSORBOARD_DIRNAME, "dae")
  events = event_accumulator.EventAccumulator(dae_run)
  events.Reload()
  psnr = events.Tensors("gaussian/psnr_mean_db")
  assert [event.step for event in psnr] == [200, 400]
  assert tf.make_ndarray(psnr[1].tensor_proto) == pytest.approx(
      headline["metrics"]["dae"]["psnr_mean_db"])
  root = event_accumulator.EventAccumulator(
      os.path.join(output_dir, report_lib.TENSORBOARD_DIRNAME))
  root.Reload()
  assert "examples/gaussian" in root.Tags()["tensors"]


def _baseline_results(report):
  """{(type, level): {baseline: (its metrics, its subset metrics, its params)}}."""
  return {(noise_type, key): {
      name: (result["metrics"][name], result.get("subset", {}).get("metrics", {}).get(name),
             result["baselines"][name]["params"], result["baselines"][name]["tuning_psnr_db"])
      for name in result["baselines"]} for noise_type, key, result in _all_level_results(report)}


def _from_cache(report):
  return {(noise_type, key): {name: entry["from_cache"]
                              for name, entry in result["baselines"].items()}
          for noise_type, key, result in _all_level_results(report)}


def _one_type(config, gaussian_levels):
  config.levels.gaussian = gaussian_levels
  config.levels.salt_and_pepper = ()
  config.levels.masking = ()
  return config


def test_first_evaluation_computes_and_caches_every_baseline(evaluated, cache_dir):
  report, _ = evaluated
  assert report["baseline_cache"] == {"directory": str(cache_dir), "enabled": True,
                                      "from_cache": 0, "computed": 12, "invalid": 0}
  assert all(not flag for flags in _from_cache(report).values() for flag in flags.values())
  assert report["representation"]["raw_pixels_from_cache"] is False
  for name in ("noisy", "median", "bm3d"):
    assert len(list((cache_dir / f"baseline-{name}").glob("*.npz"))) == 4


def test_second_evaluation_with_another_model_computes_no_baseline(
    evaluated, saved_models, cache_dir, tmp_path, caplog):
  report, _ = evaluated
  with caplog.at_level("INFO", logger="absl"):
    second = _evaluate(evaluation_fakes.small_config(cache_dir),
                                        {"identity": saved_models["identity"]},
                                        str(tmp_path / "out"))
  assert second["baseline_cache"]["computed"] == 0
  assert second["baseline_cache"]["from_cache"] == 12
  assert all(flag for flags in _from_cache(second).values() for flag in flags.values())
  assert not [stage for stage in second["timings_seconds"] if ": tune " in stage]
  # The very numbers of the first evaluation, and the models' scores on top of them.
  assert _baseline_results(second) == _baseline_results(report)
  for _, key, result in _all_level_results(second):
    assert result["metrics"]["identity"] == result["metrics"]["noisy"], key
  assert second["representation"]["raw_pixels_from_cache"] is True
  assert (second["representation"]["features"][scoring.RAW_PIXELS]
          == report["representation"]["features"][scoring.RAW_PIXELS])
  # One progress line per level, with the time left.
  lines = [line for line in caplog.text.splitlines() if " done in " in line]
  assert len(lines) == 4, caplog.text
  assert "Level 1/4 gaussian 0.2 done in" in lines[0] and "3 baselines from the cache" in lines[0]
  assert all(" elapsed, " in line and " left." in line for line in lines[1:]), lines


def test_changed_level_or_seed_recomputes(evaluated, saved_models, cache_dir, tmp_path):
  del evaluated  # It filled the cache.
  models = {"identity": saved_models["identity"]}
  # 0.3 is new; 0.2 and the reference 0.4 are in the cache.
  levels_changed = _evaluate(
      _one_type(evaluation_fakes.small_config(cache_dir), (0.2, 0.3)), models, str(tmp_path / "levels"))
  assert {key: set(flags.values()) for key, flags in _from_cache(levels_changed).items()} == {
      ("gaussian", "0.2"): {True}, ("gaussian", "0.3"): {False}, ("gaussian", "0.4"): {True}}
  assert levels_changed["baseline_cache"]["computed"] == 3
  config = _one_type(evaluation_fakes.small_config(cache_dir), (0.4,))
  config.seed = 1
  seed_changed = _evaluate(config, models, str(tmp_path / "seed"))
  assert seed_changed["baseline_cache"]["computed"] == 3
  assert seed_changed["representation"]["raw_pixels_from_cache"] is False


def test_truncated_cache_entry_is_recomputed_with_a_warning(evaluated, saved_models, cache_dir,
                                                           tmp_path, caplog):
  report, _ = evaluated
  def noise(path):
    with np.load(path) as contents:
      key_noise = json.loads(str(contents["meta"][()]))["key"]["noise"]
    return key_noise["type"], key_noise["level"], key_noise["seed"]

  paths = [path for path in (cache_dir / "baseline-median").glob("*.npz")
           if noise(path) == ("gaussian", 0.4, 0)]
  assert len(paths) == 1
  content = paths[0].read_bytes()
  paths[0].write_bytes(content[:len(content) // 3])
  with caplog.at_level("WARNING"):
    again = _evaluate(_one_type(evaluation_fakes.small_config(cache_dir), (0.4,)),
                                       {"identity": saved_models["identity"]},
                                       str(tmp_path / "out"))
  assert f"Ignoring the unusable cache entry {paths[0]}" in caplog.text
  assert again["baseline_cache"]["invalid"] == 1
  assert _from_cache(again) == {("gaussian", "0.4"): {"noisy": True, "median": False,
                                                      "bm3d": True}}
  assert (_baseline_results(again)[("gaussian", "0.4")]
          == _baseline_results(report)[("gaussian", "0.4")])
  assert paths[0].read_bytes() != content[:len(content) // 3]  # Whole again.


@pytest.mark.slow  # Worker processes: CI runs it in make test-slow, with test_evaluation_parallel.py.
def test_evaluation_in_two_worker_processes_reports_the_same_numbers(evaluated, saved_models,
                                                                     tmp_path):
  report, _ = evaluated
  in_parallel = _evaluate(evaluation_fakes.small_config(num_workers=2), saved_models,
                                           str(tmp_path / "out"))
  assert in_parallel["workers"] == 2
  assert in_parallel["baseline_cache"]["enabled"] is False
  assert in_parallel["results"] == report["results"]
  assert in_parallel["representation"] == {**report["representation"],
                                           "raw_pixels_from_cache": False}


@pytest.mark.parametrize("change, message", [
    (lambda config: setattr(config, "baselines", ("noisy", "bilateral")),
     "Unknown baseline 'bilateral' in baselines; valid baselines are noisy, median, bm3d"),
    (lambda config: config.levels.__setattr__("masking", (0.25, 1.5)),
     r"levels.masking holds 1.5, not a valid masking level: masking levels are fractions of "
     r"pixels in \[0, 1\]; set --config.levels.masking="),
    (lambda config: config.levels.__setattr__("speckle", (0.1,)),
     "levels.speckle: unknown noise type 'speckle'; valid types are gaussian, salt_and_pepper"),
    (lambda config: setattr(config.reference, "level", -0.4),
     "reference.level holds -0.4, not a valid gaussian level"),
    (lambda config: setattr(config, "batch_size", 0), r"batch_size=0 must be an integer >= 1"),
], ids=["baseline", "level", "noise_type", "reference", "batch_size"])
def test_bad_config_fails_with_one_line_and_writes_nothing(tmp_path, change, message):
  config = evaluation_fakes.small_config()
  with config.unlocked():
    change(config)
  output_dir = str(tmp_path / "out")
  with pytest.raises(errors.EvaluationError, match=message) as error:
    _evaluate(config, {"m": str(tmp_path / "nowhere")}, output_dir)
  assert "\n" not in str(error.value)
  assert not os.path.exists(output_dir)


def test_missing_saved_model_names_the_path_and_the_fix(tmp_path):
  output_dir = str(tmp_path / "out")
  with pytest.raises(errors.EvaluationError,
                     match=r"No SavedModel at .*/run/saved_model \(model 'run'\); train first "
                           r"\(python -m trainer.main .*--workdir=.*/run\) or pass "
                           r"--saved_model=PATH"):
    _evaluate(
        evaluation_fakes.small_config(), loading.model_paths([str(tmp_path / "run")], []), output_dir)
  assert not os.path.exists(output_dir)


def test_model_paths_name_each_model():
  assert loading.model_paths(["/runs/dense/", "gs://b/conv"], ["best=/x/y", "/x/z/saved_model",
                                                                  "/x/plain"]) == {
      "dense": "/runs/dense/saved_model", "conv": "gs://b/conv/saved_model", "best": "/x/y",
      "z": "/x/z/saved_model", "plain": "/x/plain"}
  assert loading.default_output_dir(["/runs/dense/", "/runs/conv"]) == "/runs/dense/eval"
  with pytest.raises(errors.EvaluationError, match="Two models are named 'dense'"):
    loading.model_paths(["/a/dense", "/b/dense"], [])
  with pytest.raises(errors.EvaluationError, match="'median', which is reserved"):
    loading.model_paths([], ["median=/a"])
  with pytest.raises(errors.EvaluationError, match="No model to evaluate"):
    loading.model_paths([], [])
  with pytest.raises(errors.EvaluationError, match="Pass --output_dir"):
    loading.default_output_dir([])


def _run_cli(args):
  """`python -m trainer.evaluate ARGS` (the real baselines)."""
  return subprocess.run([sys.executable, "-m", "trainer.evaluate", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                        timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


@pytest.mark.slow
def test_command_line_end_to_end_reproduces_the_numbers(saved_models, evaluated, tmp_path):
  report, _ = evaluated
  output_dir = str(tmp_path / "cli")
  common = [f"--saved_model=dae={saved_models['dae']}", f"--output_dir={output_dir}",
            f"--config.num_examples={NUM_EXAMPLES}", "--config.levels.gaussian=(0.4,)",
            "--config.levels.salt_and_pepper=()", "--config.levels.masking=()",
            "--config.tuning_examples=16", "--config.wiener_fit_examples=16",
            "--config.representation.train_examples=100", "--config.batch_size=16"]
  bad = _run_cli(common + ["--config.baselines=noisy,bilateral"])
  assert bad.returncode == 1, bad.stderr[-2000:]
  last_line = bad.stderr.strip().splitlines()[-1]
  assert last_line.startswith("dae-trainer evaluate: Unknown baseline 'bilateral'"), bad.stderr
  assert not os.path.exists(output_dir)

  good = _run_cli(common + ["--config.baselines=noisy,median",
                            f"--config.cache_dir={tmp_path / 'cache'}"])
  assert good.returncode == 0, good.stderr[-3000:]
  # The progress line (no bar: stderr is not a terminal).
  assert "Level 1/1 gaussian 0.4 done in" in good.stderr
  assert "2 baselines computed" in good.stderr
  with open(os.path.join(output_dir, report_lib.REPORT_JSON)) as file:
    cli_report = json.load(file)
  # The same noisy images in another process: the very same scores.
  for method in ("dae", "noisy"):
    assert (cli_report["results"]["gaussian"]["0.4"]["metrics"][method]
            == report["results"]["gaussian"]["0.4"]["metrics"][method]), method
  assert list(cli_report["results"]) == ["gaussian"]
  assert os.path.exists(os.path.join(output_dir, report_lib.REPORT_MD))
